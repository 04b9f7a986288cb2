"""``vaqf train``: quantization-aware training of a frontend model on the user's images, exported for
``vaqf compile``.

The schedule (each phase AdamW, linear warm-up over ``warmup`` of its steps, then cosine decay to zero):

1. ``float`` (``float_epochs``; default 0 with a float checkpoint, else 30): float training, cross entropy
   with label smoothing 0.1 and weight decay 0.05. Its result is the teacher and the float accuracy.
2. ``activations`` (``act_epochs``, DeiT): the quantized copy (``quantize_vit``: ``act_bits``-bit activations,
   scales calibrated on ``calib_samples`` training images, then learned as LSQ does) with float weights.
3. ``weights`` (``epochs``, DeiT): weights quantized too (``--weights`` for the encoder, 8-bit patch
   embedding and head), distilled from the float model (``distill``, default 0.5 for binary weights).

Activations first, then weights, each starting from the previous phase's result, is the progressive order in
which VAQF (arXiv 2201.06618) brings a ViT to binary weights and low-precision activations; the distillation
loss is Hinton et al.'s (arXiv 1503.02531): KL divergence between temperature-T softmaxes of student and
teacher, times T², mixed with the cross entropy as ``(1 - distill) * CE + distill * KD``.

The CNNs of the zoo have no activation quantizers: they train in float (one phase of ``epochs``) and export
float ONNX with calibration images, quantized at ``vaqf compile`` (``--weights``, ``--act-bits``, ``--calib``).

Rank 0 writes the model (QONNX for a DeiT), its state dict (``<stem>.pt``, what ``vaqf export --checkpoint``
reads), checkpoints (``<stem>.ckpt/last.pt``), the JSON-lines log and a summary (``<stem>.train.json``); at
the end it measures the float and the QAT model's validation accuracy in PyTorch and the simulator's on the
exported file (the number the compiled accelerator gives).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vaqf.errors import VaqfError
from vaqf.frontend.torch.datasets import ImageSet, load_images
from vaqf.frontend.torch.distributed import (
    CHECKPOINT_FORMAT,
    DistEnv,
    JsonLog,
    Phase,
    PhaseContext,
    barrier,
    evaluate,
    init_distributed,
    load_training_checkpoint,
    phase_steps,
    rng_state,
    save_checkpoint,
    say,
    set_rng_state,
    shutdown,
    train_phase,
)

log = logging.getLogger(__name__)

WEIGHTS = ("binary", "int8", "int4")
FLOAT_EPOCHS_FROM_SCRATCH = 30.0
CALIB_FILE_IMAGES = 256


@dataclass
class TrainOptions:
    """Everything ``vaqf train`` takes (see ``vaqf train --help`` for each)."""

    model: str
    data: str
    output: Path
    checkpoint: str | None = None
    weights: str = "binary"
    act_bits: int = 8
    epochs: float = 10.0
    act_epochs: float = 2.0
    float_epochs: float | None = None
    batch_size: int = 128
    lr: float = 1e-3
    act_lr: float = 2e-4
    float_lr: float = 2e-3
    weight_decay: float = 0.0
    float_weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup: float = 0.05
    distill: float | None = None
    temperature: float = 2.0
    shift: int = 0
    val_fraction: float = 0.2
    val_data: str | None = None
    resize: str = "stretch"
    mean: list[float] | str | None = None
    std: list[float] | None = None
    img_size: int | None = None
    in_chans: int | None = None
    num_classes: int | None = None
    vit: dict = field(default_factory=dict)
    calib_samples: int = 512
    seed: int = 0
    checkpoint_every: int = 500
    checkpoint_dir: Path | None = None
    resume: str | None = None
    stop_after: int | None = None
    log: Path | None = None
    sim_images: int | None = 1000
    deterministic: bool = False
    dist_timeout: float = 300.0
    device: str | None = None
    force: bool = False

    #: options that do not change what is computed (a resumed run may change them)
    NOT_COMPUTED = ("output", "checkpoint_dir", "resume", "stop_after", "log", "sim_images", "checkpoint_every",
                    "dist_timeout", "device", "force", "deterministic")

    def computed(self) -> dict:
        """The options that decide the result, as plain values (stored in checkpoints, checked on resume)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in self.NOT_COMPUTED}


def _plain(v: object) -> object:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in sorted(v.items())}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


@dataclass
class TrainResult:
    """What ``vaqf train`` wrote and measured."""

    model: Path | None
    format: str
    state_dict: Path | None
    checkpoint: Path
    log: Path
    summary: Path | None
    name: str
    act_bits: int | None
    weights: str | None
    phases: list[dict]
    steps: int
    stopped: bool
    train_images: int
    val_images: int
    float_accuracy: float | None = None
    qat_accuracy: float | None = None
    sim_accuracy: float | None = None
    sim_agreement: float | None = None
    sim_images: int = 0
    calib: Path | None = None
    seconds: float = 0.0
    world: int = 1

    def to_json(self) -> dict:
        out = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


# ---- pieces ------------------------------------------------------------------------------------------
def _is_deit(name: str) -> bool:
    from vaqf.frontend.torch.zoo import DEIT_MODELS

    return name in DEIT_MODELS


def _build(opts: TrainOptions, num_classes: int | None) -> tuple[nn.Module, list[int]]:
    from vaqf.frontend.torch.zoo import build_model

    return build_model(opts.model, img_size=opts.img_size, in_chans=opts.in_chans, num_classes=num_classes,
                       **opts.vit)


def read_data(opts: TrainOptions, shape: list[int], num_classes: int | None) -> tuple[ImageSet, ImageSet]:
    """The training and validation images, as the model takes them."""
    kw = {"in_chans": shape[1], "img_size": shape[2], "num_classes": num_classes, "resize": opts.resize,
          "mean": opts.mean, "std": opts.std}
    images = load_images(opts.data, **kw)
    if opts.val_data is not None:
        return images, load_images(opts.val_data, **kw)
    return images.split(opts.val_fraction, opts.seed)


def phases_of(opts: TrainOptions) -> list[Phase]:
    """The schedule (module docstring)."""
    if opts.weights not in WEIGHTS:
        raise VaqfError(f"unknown --weights {opts.weights!r}; choose one of {', '.join(WEIGHTS)}")
    for what, v in (("--epochs", opts.epochs), ("--act-epochs", opts.act_epochs),
                    ("--float-epochs", opts.float_epochs or 0.0)):
        if v < 0:
            raise VaqfError(f"{what} must not be negative, got {v}")
    if not 0 <= opts.warmup < 1:
        raise VaqfError(f"--warmup is a fraction of each phase's steps in [0, 1), got {opts.warmup}")
    common = {"warmup": opts.warmup, "temperature": opts.temperature}
    if not _is_deit(opts.model):
        return [Phase("float", opts.epochs, opts.float_lr, opts.float_weight_decay, opts.label_smoothing, **common)]
    if not 2 <= opts.act_bits <= 16:
        raise VaqfError(f"--act-bits must be within 2..16, got {opts.act_bits}")
    distill = opts.distill if opts.distill is not None else (0.5 if opts.weights == "binary" else 0.0)
    if not 0 <= distill <= 1:
        raise VaqfError(f"--distill is the weight of the distillation loss in [0, 1], got {distill}")
    float_epochs = opts.float_epochs if opts.float_epochs is not None else (
        0.0 if opts.checkpoint else FLOAT_EPOCHS_FROM_SCRATCH)
    out = []
    if float_epochs > 0:
        out.append(Phase("float", float_epochs, opts.float_lr, opts.float_weight_decay, opts.label_smoothing,
                         **common))
    if opts.act_epochs > 0:
        out.append(Phase("activations", opts.act_epochs, opts.act_lr, opts.weight_decay, 0.0, distill, **common))
    if opts.epochs > 0:
        out.append(Phase("weights", opts.epochs, opts.lr, opts.weight_decay, 0.0, distill, **common))
    if not out:
        raise VaqfError("nothing to train: --float-epochs, --act-epochs and --epochs are all 0")
    return out


def _calibration_batches(x: torch.Tensor, count: int, seed: int) -> list[torch.Tensor]:
    # the same images on every process (a seeded permutation of the whole training set), so every process
    # sets the same scales without exchanging anything
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:count]
    return [x[idx[i:i + 64]] for i in range(0, len(idx), 64)]


def _quantized(float_model: nn.Module, opts: TrainOptions, weights_on: bool) -> nn.Module:
    from vaqf.frontend.torch.qat import quantize_vit, set_weight_quantization

    q = quantize_vit(copy.deepcopy(float_model), act_bits=opts.act_bits, weights=opts.weights)
    set_weight_quantization(q, weights_on)
    return q


def _load_float_checkpoint(model: nn.Module, opts: TrainOptions, num_classes: int, env: DistEnv) -> None:
    """Load the float checkpoint; a classifier trained for another number of classes (timm's 1,000 ImageNet
    classes) is left out, so the model's new classifier starts from its initialization (fine-tuning)."""
    from vaqf.frontend.torch.checkpoint import load_checkpoint, read_state_dict

    sd = read_state_dict(opts.checkpoint)
    own = model.state_dict()
    classifier = [k for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)
                  and own[k].shape[0] == num_classes and v.ndim >= 1 and v.shape[1:] == own[k].shape[1:]]
    theirs = int(sd[classifier[0]].shape[0]) if classifier else 0
    for k in classifier:
        del sd[k]
    load_checkpoint(model, sd, what=f"{opts.model} (from {opts.checkpoint})", optional=lambda k: k in classifier)
    if classifier and env.main:
        say(f"{opts.checkpoint}: {', '.join(classifier)} classify {theirs} classes; the classifier for {num_classes} "
            "classes starts from its initialization")


def _check_resume(saved: dict, opts: TrainOptions) -> None:
    old, new = saved["options"], opts.computed()
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now" for k in diff[:6])
        raise VaqfError(f"--resume: the checkpoint was made with other training options ({shown}); resume with the "
                        "same options (only the output, logging and checkpoint options may change)")


def _output_paths(opts: TrainOptions) -> tuple[Path, Path, Path, Path]:
    out = Path(opts.output)
    stem = out.with_suffix("")
    ckpt_dir = Path(opts.checkpoint_dir) if opts.checkpoint_dir is not None else stem.with_name(stem.name + ".ckpt")
    log_path = Path(opts.log) if opts.log is not None else stem.with_name(stem.name + ".log.jsonl")
    return out, ckpt_dir, log_path, stem.with_name(stem.name + ".pt")


def _check_outputs(opts: TrainOptions, out: Path, ckpt_dir: Path) -> None:
    if out.is_dir():
        raise VaqfError(f"{out} is a folder; give the path of the model file to write (-o model.onnx)")
    if opts.resume is None and not opts.force:
        if out.exists():
            raise VaqfError(f"{out} already exists; pass --force to replace it")
        if (ckpt_dir / "last.pt").exists():
            raise VaqfError(f"{ckpt_dir / 'last.pt'} exists from an earlier run; continue it with --resume "
                            f"{ckpt_dir / 'last.pt'}, or pass --force to start over")


def simulate_accuracy(path: Path, x: np.ndarray, y: np.ndarray, reference: np.ndarray | None = None,
                      load_kw: dict | None = None) -> tuple[float, float | None]:
    """Accuracy of vaqf's bit-accurate simulator on the exported file (and its agreement with ``reference``
    predictions)."""
    import vaqf
    from vaqf.sim.simulator import Simulator

    graph = vaqf.load_model(path, **(load_kw or {}))
    sim = Simulator(graph)
    preds = np.concatenate([sim.run([x[i:i + 100]]).dequantized[0].argmax(1) for i in range(0, len(x), 100)])
    acc = float((preds == y).mean())
    agree = float((preds == reference).mean()) if reference is not None else None
    return acc, agree


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)]).numpy()


# ---- the run ------------------------------------------------------------------------------------------
def run_train(opts: TrainOptions) -> TrainResult:
    """Train as ``vaqf train`` does (under torchrun, on every process); rank 0 returns the full result."""
    env = init_distributed(opts.dist_timeout, opts.device)
    try:
        return _run(opts, env)
    finally:
        shutdown(env)


def _run(opts: TrainOptions, env: DistEnv) -> TrainResult:
    started = time.perf_counter()
    if opts.deterministic:
        torch.use_deterministic_algorithms(True)
    deit = _is_deit(opts.model)
    if not deit and opts.float_epochs:
        raise VaqfError(f"{opts.model} trains in float only: give its epochs with --epochs, not --float-epochs")
    phases = phases_of(opts)
    out, ckpt_dir, log_path, sd_path = _output_paths(opts)
    if opts.batch_size < 1:
        raise VaqfError(f"--batch-size must be at least 1, got {opts.batch_size}")
    if opts.checkpoint_every < 1:
        raise VaqfError(f"--checkpoint-every must be at least 1 step, got {opts.checkpoint_every}")
    saved = load_training_checkpoint(opts.resume) if opts.resume is not None else None
    if saved is not None:
        _check_resume(saved, opts)
    _check_outputs(opts, out, ckpt_dir)

    # the data first when the classes are not given: the model's head follows the labels
    probe_classes = opts.num_classes if opts.num_classes is not None else 2
    _, shape = _build(opts, probe_classes)
    train, val = read_data(opts, shape, opts.num_classes)
    num_classes = opts.num_classes or int(max(train.y.max(), val.y.max())) + 1
    torch.manual_seed(opts.seed)
    float_model, shape = _build(opts, num_classes)
    if opts.checkpoint is not None:
        _load_float_checkpoint(float_model, opts, num_classes, env)
    float_model.to(env.device)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    x_val, y_val = torch.from_numpy(val.x), torch.from_numpy(val.y)
    jlog = JsonLog(log_path, env.main)
    totals = [phase_steps(p, len(x), opts.batch_size) for p in phases]
    offsets = np.concatenate([[0], np.cumsum(totals)]).astype(int).tolist()
    if env.main:
        say(f"{opts.model}: {len(x)} training and {len(x_val)} validation images {list(shape[1:])}, {num_classes} "
            f"classes; {env.world} process{'es' if env.world > 1 else ''}; phases "
            + ", ".join(f"{p.name} {p.epochs:g} epochs ({t} steps)" for p, t in zip(phases, totals, strict=True)))
        jlog.write("start", options=opts.computed(), world=env.world, resumed=opts.resume,
                   phases=[{**p.to_json(), "steps": t} for p, t in zip(phases, totals, strict=True)],
                   train_images=len(x), val_images=len(x_val), num_classes=num_classes)

    # state: which phase, the model in its current form, the teacher
    start_phase, start_step = 0, 0
    model: nn.Module = float_model
    teacher: nn.Module | None = None
    float_accuracy: float | None = None
    resume_opt: dict | None = None
    if saved is not None:
        start_phase, start_step = int(saved["phase"]), int(saved["step"])
        float_accuracy = saved.get("float_accuracy")
        if phases[start_phase].name != "float":
            if saved.get("float_model") is not None:
                float_model.load_state_dict(saved["float_model"])
            model = _quantized(float_model, opts, phases[start_phase].name == "weights").to(env.device)
        model.load_state_dict(saved["model"])
        set_rng_state(saved["rng"], env)
        resume_opt = saved
        if env.main:
            say(f"resuming from {opts.resume}: phase {phases[start_phase].name}, step {start_step} of "
                f"{totals[start_phase]} (step {offsets[start_phase] + start_step} of {offsets[-1]})")
    stopped = False
    for index in range(start_phase, len(phases)):
        phase = phases[index]
        resuming = index == start_phase and saved is not None
        if not resuming:  # entering the phase: the transitions an uninterrupted run makes
            if phase.name != "float" and model is float_model:
                model = _quantized(float_model, opts, phase.name == "weights").to(env.device)
                from vaqf.frontend.torch.qat import calibrate

                calibrate(model, [b.to(env.device) for b in _calibration_batches(x, opts.calib_samples, opts.seed)])
            elif phase.name == "weights":
                from vaqf.frontend.torch.qat import set_weight_quantization

                set_weight_quantization(model, True)
        if phase.name != "float" and float_accuracy is None:
            float_accuracy = evaluate(float_model, x_val, y_val, env)
        if phase.name != "float" and phase.distill > 0 and teacher is None:
            teacher = copy.deepcopy(float_model).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        in_qat = phase.name != "float"

        def after_step(step: int, opt: torch.optim.Optimizer, sched: object, index: int = index,
                       in_qat: bool = in_qat, model: nn.Module = model,
                       float_acc: float | None = float_accuracy) -> bool:
            g = offsets[index] + step
            stop = opts.stop_after is not None and g >= opts.stop_after
            if env.main and (g % opts.checkpoint_every == 0 or step == totals[index] or stop):
                save_checkpoint({"format": CHECKPOINT_FORMAT, "options": opts.computed(), "phase": index,
                                 "phase_name": phases[index].name, "step": step, "global_step": g,
                                 "model": model.state_dict(),
                                 "float_model": float_model.state_dict() if in_qat else None,
                                 "float_accuracy": float_acc, "optimizer": opt.state_dict(),
                                 "scheduler": sched.state_dict(), "rng": rng_state(env), "world": env.world},
                                ckpt_dir / "last.pt")
                jlog.write("checkpoint", path=str(ckpt_dir / "last.pt"), global_step=g)
            return stop

        ctx = PhaseContext(env, x, y, x_val, y_val, opts.batch_size, opts.seed, opts.shift, jlog, after_step)
        stopped, _ = train_phase(model, phase, index, ctx, teacher if in_qat else None,
                                 start_step if resuming else 0, resume_opt if resuming and start_step else None)
        if not stopped and opts.stop_after is not None and offsets[index + 1] >= opts.stop_after \
                and index + 1 < len(phases):
            stopped = True
        if stopped:
            break
    steps_done = min(offsets[-1], opts.stop_after) if stopped and opts.stop_after is not None else offsets[-1]
    qat = any(p.name != "float" for p in phases)
    result = TrainResult(None, "qonnx" if qat else "onnx", None, ckpt_dir / "last.pt", log_path, None, opts.model,
                         opts.act_bits if qat else None, opts.weights, [p.to_json() for p in phases], steps_done,
                         stopped, len(x), len(x_val), world=env.world)
    if stopped:
        if env.main:
            say(f"stopped after step {steps_done} of {offsets[-1]} (--stop-after); continue with --resume "
                f"{ckpt_dir / 'last.pt'}")
            jlog.write("stopped", global_step=steps_done)
        result.seconds = time.perf_counter() - started
        return result
    if float_accuracy is None:
        float_accuracy = evaluate(float_model, x_val, y_val, env)
    qat_accuracy = evaluate(model, x_val, y_val, env) if model is not float_model else None
    barrier(env)
    result.float_accuracy, result.qat_accuracy = float_accuracy, qat_accuracy
    if not env.main:
        return result
    _finish(opts, result, model, deit and qat, deit, shape, train, val, out, sd_path)
    result.seconds = time.perf_counter() - started
    summary = out.with_suffix("").with_name(out.stem + ".train.json")
    result.summary = summary
    summary.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    jlog.write("end", **{k: v for k, v in result.to_json().items() if k != "phases"})
    return result


def _finish(opts: TrainOptions, result: TrainResult, model: nn.Module, quantized: bool, deit: bool,
            shape: list[int], train: ImageSet, val: ImageSet, out: Path, sd_path: Path) -> None:
    """Rank 0: export, state dict, the simulator's accuracy (of the QONNX file; of a float file quantized after
    training with ``--weights``/``--act-bits`` on calibration images, as ``vaqf compile --calib`` would)."""
    from vaqf import progress

    model = model.cpu().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), sd_path)
    result.state_dict = sd_path
    n_sim = len(val) if opts.sim_images is None else min(len(val), opts.sim_images)
    xs, ys = val.x[:n_sim], val.y[:n_sim]
    if quantized:
        from vaqf.frontend.torch.export import export_qonnx

        with progress.stage(f"exporting QONNX to {out}"):
            export_qonnx(model, out, torch.zeros(shape))
        load_kw: dict = {}
    else:
        with progress.stage(f"exporting ONNX to {out}"):
            if deit:
                import warnings

                from vaqf.frontend.torch.deit import export_onnx as export_vit_onnx

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
                    export_vit_onnx(model, str(out), img_size=shape[2], in_chans=shape[1])
            else:
                from vaqf.frontend.torch.prune import export_onnx

                export_onnx(model, out, torch.zeros(shape), summary=False)
        calib = out.with_suffix("").with_name(out.stem + ".calib.npy")
        np.save(calib, train.x[:CALIB_FILE_IMAGES])
        result.calib = calib
        load_kw = {"weights": opts.weights, "act_bits": opts.act_bits, "calib": train.x[:CALIB_FILE_IMAGES]}
    result.model = out
    if n_sim:
        ref = _predict(model, torch.from_numpy(xs))
        with progress.stage(f"simulating {n_sim} validation images bit-accurately"):
            result.sim_accuracy, result.sim_agreement = simulate_accuracy(out, xs, ys, ref, load_kw)
        result.sim_images = n_sim
    say(f"validation accuracy: float {result.float_accuracy:.4f}"
        + (f", QAT {result.qat_accuracy:.4f}" if result.qat_accuracy is not None else "")
        + (f", simulator {result.sim_accuracy:.4f} on {n_sim} images (agreement with PyTorch "
           f"{result.sim_agreement:.4f})" if n_sim else ""))

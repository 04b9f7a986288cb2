"""Training helper: float pre-training, then quantization-aware fine-tuning in two phases (activations
quantized with float weights, then binary weights too), with optional distillation from the float model.

Data are in-memory tensors (images [N, C, H, W], labels [N]); progress bars come from tqdm.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from tqdm.auto import tqdm

from vaqf.frontend.torch.qat import (
    ActQuant,
    act_quantizers,
    calibrate,
    clamp_scales_,
    quantize_vit,
    set_weight_quantization,
)

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: float = 10.0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.05            # fraction of the steps with a linear learning-rate warm-up
    label_smoothing: float = 0.0
    shift: int = 0                  # random translation of the images by up to this many pixels
    scale_lr: float = 1e-3          # quantizer scales move by about this fraction of themselves per step
    distill: float = 0.0            # weight of the distillation loss (needs a teacher)
    temperature: float = 2.0
    max_steps: int | None = None    # stop early (tests)
    seed: int = 0
    progress: bool = True


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels in each direction (zero fill)."""
    if max_shift <= 0:
        return x
    b, c, h, w = x.shape
    m = max_shift
    xp = F.pad(x, (m, m, m, m))
    di = torch.randint(0, 2 * m + 1, (b,), generator=gen)
    dj = torch.randint(0, 2 * m + 1, (b,), generator=gen)
    rows = (di[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dj[:, None] + torch.arange(w))[:, None, None, :]
    return xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    scales = {id(q.scale) for q in act_quantizers(model)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in scales:
            continue
        if p.ndim >= 2 and not name.endswith(("cls_token", "pos_embed")):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr, "base_lr": cfg.lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr, "base_lr": cfg.lr}]
    for q in act_quantizers(model):
        if q.scale.requires_grad:
            # Adam's steps are about lr in size whatever the gradient: relative to the scale's own magnitude
            lr = cfg.scale_lr * float(q.scale.detach().abs()) if cfg.scale_lr > 0 else 0.0
            groups.append({"params": [q.scale], "weight_decay": 0.0, "lr": lr, "base_lr": lr})
    return [g for g in groups if g["params"]]


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, teacher: nn.Module | None = None,
        desc: str = "train") -> list[float]:
    """Train with AdamW and a cosine schedule; returns the loss of every step."""
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(x)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr)
    warmup = int(cfg.warmup * total)
    if teacher is not None:
        teacher.eval()
    model.train()
    losses: list[float] = []
    bar = tqdm(total=total, desc=desc, disable=not cfg.progress, leave=False, dynamic_ncols=True)
    step = 0
    while step < total:
        order = torch.randperm(n, generator=gen)
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            xb, yb = random_shift(x[idx], cfg.shift, gen), y[idx]
            f = _lr_factor(step, total, warmup)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * f
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            if teacher is not None and cfg.distill > 0:
                with torch.no_grad():
                    t_logits = teacher(xb)
                t = cfg.temperature
                kd = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(t_logits / t, -1), log_target=True,
                              reduction="batchmean") * t * t
                loss = (1 - cfg.distill) * loss + cfg.distill * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clamp_scales_(model)
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    bar.close()
    model.eval()
    return losses


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Logits [N, classes] in eval mode."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    return float((predict(model, x, batch_size).argmax(1) == y.numpy()).mean())


def train_float(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> nn.Module:
    """Float pre-training (in place); returns the model."""
    fit(model, x, y, cfg, desc="float")
    return model


def _calibration_batches(x: torch.Tensor, count: int, batch_size: int, seed: int) -> Iterable[torch.Tensor]:
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:count]
    return [x[idx[i:i + batch_size]] for i in range(0, len(idx), batch_size)]


def train_qat(model: nn.Module, x: torch.Tensor, y: torch.Tensor, act_bits: int = 8, weights: str = "binary",
              act_cfg: TrainConfig | None = None, weight_cfg: TrainConfig | None = None,
              teacher: nn.Module | None = None, keep: Iterable[str] = ("patch_embed", "head"),
              calib_samples: int = 512) -> nn.Module:
    """Quantization-aware fine-tuning of a float ViT, returned as a new quantized model (the float model,
    the teacher by default when ``weight_cfg.distill`` is set, is left alone).

    Phase 1 quantizes activations (scales calibrated on ``calib_samples`` images, then learned) with float
    weights; phase 2 quantizes the weights too (binary encoder, 8-bit patch embedding and head).
    """
    act_cfg = act_cfg or TrainConfig(epochs=2, lr=2e-4, weight_decay=0.0)
    weight_cfg = weight_cfg or TrainConfig(epochs=6, lr=5e-4, weight_decay=0.0)
    needs_teacher = act_cfg.distill > 0 or weight_cfg.distill > 0
    if teacher is None and needs_teacher:
        teacher = copy.deepcopy(model).eval()
    qmodel = quantize_vit(copy.deepcopy(model), act_bits=act_bits, weights=weights, keep=keep)
    set_weight_quantization(qmodel, False)
    calibrate(qmodel, _calibration_batches(x, calib_samples, 256, act_cfg.seed))
    if act_cfg.epochs > 0:
        fit(qmodel, x, y, act_cfg, teacher if act_cfg.distill > 0 else None, desc=f"QAT a{act_bits} activations")
    set_weight_quantization(qmodel, True)
    # the weight quantizers change the activations' ranges; re-calibrate the quantizers that have not
    # learned yet (all of them when phase 1 was skipped)
    if act_cfg.epochs <= 0:
        calibrate(qmodel, _calibration_batches(x, calib_samples, 256, weight_cfg.seed))
    fit(qmodel, x, y, replace(weight_cfg), teacher if weight_cfg.distill > 0 else None,
        desc=f"QAT a{act_bits} {weights} weights")
    return qmodel


def scales(model: nn.Module) -> dict[str, float]:
    """The scale of every activation quantizer, by module name."""
    return {name: float(m.scale) for name, m in model.named_modules() if isinstance(m, ActQuant)}

"""The frontend's models by name, and their export to a file ``vaqf compile`` reads (what ``vaqf export`` runs).

- ``deit-tiny``, ``deit-small``, ``deit-base``: DeiT with timm's parameter names (``deit.py``), 224x224 RGB
  images and 1,000 classes unless overridden; ``deit-custom`` builds any ViT shape from ``ViTConfig``'s
  defaults and the overrides (image size, patch, channels, classes, width, depth, heads, MLP ratio).
- ``resnet20``, ``resnet18``, ``vgg11``/``vgg13``/``vgg16``, ``small_vgg``, ``small_resnet``: the CNNs of
  ``cnn.py`` (32x32 RGB images and 10 classes unless overridden).

:func:`export_model` builds one, optionally loads a checkpoint into it (by name: see ``checkpoint.py``) and
writes float ONNX, or for a DeiT QONNX: ``quantize_vit`` (binary or integer encoder weights, 8-bit patch
embedding and head, ``act_bits``-bit activations), calibrated on given images, or on random ones, unless the
checkpoint is a quantization-aware one whose quantizers are already set; ``vaqf compile`` reads the QONNX file
with no flags. A float file needs ``vaqf compile --calib`` (and, for a DeiT, ``--weights``/``--act-bits``).
The QONNX export quantizes after training: accurate binary-weight models come from quantization-aware
training (``train_qat``), whose state dict this export also loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vaqf import progress
from vaqf.errors import VaqfError
from vaqf.frontend.calibrate import load_calibration
from vaqf.frontend.torch.checkpoint import load_checkpoint
from vaqf.frontend.torch.cnn import VGG_CONFIGS, build_cnn
from vaqf.frontend.torch.deit import FAMILY, deit
from vaqf.frontend.torch.deit import export_onnx as export_vit_onnx

log = logging.getLogger(__name__)

DEIT_MODELS = tuple(f"deit-{n}" for n in (*FAMILY, "custom"))
CNN_MODELS = ("resnet20", "resnet18", *VGG_CONFIGS, "small_vgg", "small_resnet")
MODELS = (*DEIT_MODELS, *CNN_MODELS)
#: options that only a DeiT has: ViTConfig field names and the `vaqf export` options that set them
VIT_ONLY = {"patch_size": "--patch", "embed_dim": "--embed-dim", "depth": "--depth", "num_heads": "--heads",
            "mlp_ratio": "--mlp-ratio"}
WEIGHTS = ("binary", "int8", "int4")
RANDOM_CALIB_IMAGES = 16


@dataclass
class ExportResult:
    """What :func:`export_model` wrote."""

    model: Path
    format: str                     # "onnx" (float) or "qonnx"
    name: str
    parameters: int
    input_shape: list[int]
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"model": str(self.model), "format": self.format, "parameters": self.parameters, "name": self.name,
                "input_shape": self.input_shape, **self.details}


def build_model(name: str, *, img_size: int | None = None, in_chans: int | None = None,
                num_classes: int | None = None, **vit: float | int | None) -> tuple[nn.Module, list[int]]:
    """A float model by name (:data:`MODELS`) and the shape of one input image ``[1, C, H, W]``. ``vit`` takes
    ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio`` (DeiT only; None: the default)."""
    vit = {k: v for k, v in vit.items() if v is not None}
    unknown = set(vit) - set(VIT_ONLY)
    if unknown:
        raise TypeError(f"unknown model options {sorted(unknown)}")
    if name in DEIT_MODELS:
        overrides = {k: v for k, v in (("img_size", img_size), ("in_chans", in_chans),
                                        ("num_classes", num_classes)) if v is not None}
        try:
            model = deit(name[len("deit-"):], **overrides, **vit)
        except (ValueError, TypeError) as e:
            raise VaqfError(f"{name}: {e}") from None
        cfg = model.cfg
        return model, [1, cfg.in_chans, cfg.img_size, cfg.img_size]
    if name in CNN_MODELS:
        if vit:
            raise VaqfError(f"{', '.join(VIT_ONLY[k] for k in vit)} appl{'ies' if len(vit) == 1 else 'y'} to DeiT "
                            f"models only, not {name}")
        size, chans = img_size or 32, in_chans or 3
        model = build_cnn(name, num_classes=num_classes or 10, in_channels=chans)
        shape = [1, chans, size, size]
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(shape))
        except RuntimeError as e:
            raise VaqfError(f"{name} cannot take {size}x{size} images ({str(e).splitlines()[0]}); pass a larger "
                            "--img-size") from None
        return model, shape
    raise VaqfError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def _load_images(path: str | Path, shape: list[int]) -> torch.Tensor:
    p = Path(path)
    x = load_calibration(p)  # exists, readable, numeric
    if x.ndim == 3 and shape[1] == 1:
        x = x[:, None]
    if x.ndim != 4 or list(x.shape[1:]) != shape[1:]:
        raise VaqfError(f"calibration file {p} holds an array {list(x.shape)}; the model takes images "
                        f"[N, {', '.join(map(str, shape[1:]))}]")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def export_model(name: str, output: str | Path, *, checkpoint: str | Path | None = None, qonnx: bool = False,
                 act_bits: int = 8, weights: str = "binary", calib: str | Path | None = None, force: bool = False,
                 img_size: int | None = None, in_chans: int | None = None, num_classes: int | None = None,
                 **vit: float | int | None) -> ExportResult:
    """Build ``name``, load ``checkpoint`` into it and write ``output``: float ONNX, or QONNX with ``qonnx``
    (DeiT models; ``weights`` for the encoder's linear layers, ``act_bits`` for activations, quantizers
    calibrated on the images in ``calib`` [N, C, H, W] or, without it, on random ones in [0, 1] unless the
    checkpoint sets them). Refuses to replace ``output`` unless ``force``."""
    from vaqf.frontend.torch.export import export_qonnx
    from vaqf.frontend.torch.prune import export_onnx as export_cnn_onnx
    from vaqf.frontend.torch.qat import ActQuant, act_quantizers, calibrate, quantize_vit

    path = Path(output)
    if path.exists() and not force:
        raise VaqfError(f"{path} already exists; pass --force to replace it")
    if path.is_dir():
        raise VaqfError(f"{path} is a folder; give the path of the model file to write")
    if qonnx and name not in DEIT_MODELS:
        raise VaqfError(f"QONNX export is for the DeiT models (their activation quantizers); export {name} as float "
                        "ONNX and compile it with `vaqf compile --calib`")
    if qonnx and weights not in WEIGHTS:
        raise VaqfError(f"unknown weight quantization {weights!r}; choose one of {', '.join(WEIGHTS)}")
    if qonnx and not 2 <= act_bits <= 16:
        raise VaqfError(f"activation bits must be within 2..16, got {act_bits}")
    with progress.stage(f"building {name}"):
        model, shape = build_model(name, img_size=img_size, in_chans=in_chans, num_classes=num_classes, **vit)
    parameters = int(sum(p.numel() for p in model.parameters()))
    details: dict = {"checkpoint": str(checkpoint) if checkpoint is not None else None}
    if qonnx:
        model = quantize_vit(model, act_bits=act_bits, weights=weights)
        details.update(act_bits=act_bits, weights=weights)
    quant_names = {n for n, m in model.named_modules() if isinstance(m, ActQuant)}
    if checkpoint is not None:
        with progress.stage(f"loading {checkpoint}"):
            try:
                load_checkpoint(model, checkpoint, what=name, optional=lambda k: k.rpartition(".")[0] in quant_names)
            except VaqfError as e:
                if not qonnx and "_quant.scale" in str(e):
                    raise VaqfError(f"{e} (a quantization-aware checkpoint: add --qonnx)") from None
                raise
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    if qonnx:
        quants = list(act_quantizers(model))
        if calib is not None:
            x, source = _load_images(calib, shape), f"file {calib}"
        elif all(q.initialized for q in quants):
            x, source = None, "checkpoint"
        else:
            x = torch.rand(RANDOM_CALIB_IMAGES, *shape[1:], generator=torch.Generator().manual_seed(0))
            source = f"{RANDOM_CALIB_IMAGES} random images"
            log.warning("activation quantizers calibrated on random images in [0, 1]; pass calibration images "
                        "(--calib) for scales that fit real data")
        if x is not None:
            with progress.stage(f"calibrating {len(quants)} activation quantizers on {source}"):
                calibrate(model, [x[i:i + 32] for i in range(0, len(x), 32)])
        details["calibration"] = source
        with progress.stage(f"exporting QONNX to {path}"):
            export_qonnx(model, path, torch.zeros(shape))
    else:
        with progress.stage(f"exporting ONNX to {path}"):
            if name in DEIT_MODELS:
                export_vit_onnx(model, str(path), img_size=shape[2], in_chans=shape[1])
            else:
                export_cnn_onnx(model, path, torch.zeros(shape), summary=False)
    return ExportResult(path, "qonnx" if qonnx else "onnx", name, parameters, shape, details)

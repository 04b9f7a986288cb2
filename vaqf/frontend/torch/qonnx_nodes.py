"""The QONNX nodes a quantization-aware model writes when exported: ``Quant`` for activations and integer
weights, ``BipolarQuant`` for binary weights, each an ``autograd.Function`` whose ``symbolic`` emits the node
(as Brevitas does) and whose ``forward`` computes what the node means.

The layers of :mod:`vaqf.frontend.torch.qat` call these while ``torch.onnx.export`` traces them;
:mod:`vaqf.frontend.torch.export` drives the export. Both import this module, which imports neither.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

QONNX_DOMAIN = "qonnx.custom_op.general"


def int_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """QONNX's integer range: narrow drops the bottom value of a signed range, the top of an unsigned one."""
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow)


class _QuantFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,  # type: ignore[override]
                bit_width: torch.Tensor, signed: int, narrow: int) -> torch.Tensor:
        lo, hi = int_range(int(bit_width), bool(signed), bool(narrow))
        q = torch.clamp(torch.round(x.double() / scale.double() + zero_point.double()), lo, hi)
        return ((q - zero_point.double()) * scale.double()).to(x.dtype)

    @staticmethod
    def symbolic(g, x, scale, zero_point, bit_width, signed: int, narrow: int):  # noqa: ANN001, ANN205
        out = g.op(f"{QONNX_DOMAIN}::Quant", x, scale, zero_point, bit_width, signed_i=int(signed),
                   narrow_i=int(narrow), rounding_mode_s="ROUND")
        out.setType(x.type())
        return out


class _BipolarFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype) * scale

    @staticmethod
    def symbolic(g, w, scale):  # noqa: ANN001, ANN205
        out = g.op(f"{QONNX_DOMAIN}::BipolarQuant", w, scale)
        out.setType(w.type())
        return out


def quant_node(x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool, narrow: bool) -> torch.Tensor:
    """A QONNX ``Quant`` of an activation (zero point 0, half-to-even rounding)."""
    return _QuantFn.apply(x, scale, torch.tensor(0.0), torch.tensor(float(bits)), int(signed), int(narrow))


def _frozen(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    frozen = getattr(layer, "_export_weight", None)
    if frozen is None:
        raise RuntimeError("quantized layers are exported through vaqf.frontend.torch.export_qonnx, which writes "
                           "their weights in the layout vaqf imports; call it instead of torch.onnx.export")
    return frozen


def _weight_node(layer: nn.Module, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    if layer.mode == "binary":
        return _BipolarFn.apply(w, scale)
    bits = int(layer.mode[3:])
    return _QuantFn.apply(w, scale, torch.tensor(0.0), torch.tensor(float(bits)), 1, 1)


def linear_node(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    w, scale, bias = _frozen(layer)
    y = torch.matmul(x, _weight_node(layer, w, scale))
    return y + bias if bias is not None else y


def conv_node(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    w, scale, bias = _frozen(layer)
    return F.conv2d(x, _weight_node(layer, w, scale), bias, layer.stride, layer.padding, layer.dilation,
                    layer.groups)

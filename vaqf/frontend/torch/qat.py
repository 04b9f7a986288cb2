"""Quantization-aware training modules: activation quantizers, binary and integer weight layers.

Every quantizer computes, in the forward pass, exactly what the exported QONNX node means
(``scale * clip(round_half_even(x / scale))``, ``scale * sign(w)`` with sign(0) = +1), with a float32 scale
that is exported bit for bit, so the compiled accelerator and the PyTorch model differ only by the
compiler's integer arithmetic (requantization rounding, integer LayerNorm/softmax approximations).
Gradients are straight-through: rounding passes the gradient unchanged inside the clipping range and
blocks it outside (clipped STE); the scale of an activation quantizer learns as in LSQ (Esser et al.,
2020), whose gradient this formulation reproduces.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from vaqf.frontend.torch.deit import QuantPoint
from vaqf.frontend.torch.qonnx_nodes import conv_node, int_range, linear_node, quant_node

log = logging.getLogger(__name__)

#: bits of the constants vaqf's importer quantizes on its own range (the position embedding of a QONNX
#: model: ``Importer._internal_bits`` is 8 when the model fixes its own precision)
CONST_BITS = 8
#: the softmax unit's output: unsigned 8 bits, scale 2**-8 (``Importer._op_Softmax`` for a QONNX model)
SOFTMAX_BITS = 8
WEIGHT_MODES = ("binary", "int8", "int4", "float")


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even forward; identity backward."""
    return x + (torch.round(x) - x).detach()


class _SignSTE(torch.autograd.Function):
    """sign with sign(0) = +1 forward; gradient passed where |w| <= clip (clipped straight-through)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, clip: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(w)
        ctx.clip = clip
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= ctx.clip).to(grad.dtype), None


def sign_ste(w: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    return _SignSTE.apply(w, clip)


# ---- activations ---------------------------------------------------------------------------------
class ActQuant(nn.Module):
    """k-bit activation quantizer with a per-tensor scale (zero point 0).

    The scale is calibrated (``calibrating`` mode records ranges, ``finish_calibration`` sets it) and then
    learned (``learn_scale``) or kept. ``signed=None`` takes the sign from calibration. ``fixed_scale``
    pins the scale (the softmax output). Before calibration the first batch initializes the scale.
    """

    def __init__(self, bits: int = 8, signed: bool | None = None, narrow: bool = False,
                 fixed_scale: float | None = None, learn_scale: bool = True, percentile: float = 99.99,
                 role: str = "matmul") -> None:
        super().__init__()
        if not 2 <= bits <= 16:
            raise ValueError(f"activation bits must be within 2..16, got {bits}")
        self.bits = int(bits)
        self.narrow = bool(narrow)
        self.role = role
        self.percentile = float(percentile)
        self.fixed = fixed_scale is not None
        self.scale = nn.Parameter(torch.tensor(float(fixed_scale) if fixed_scale else 1.0),
                                  requires_grad=learn_scale and fixed_scale is None)
        # the calibrated sign and whether the scale is set travel with the state dict as buffers (a module's
        # "extra state" would be simpler, but the TorchScript tracer behind the ONNX export cannot handle it)
        self.register_buffer("sign_code", torch.tensor(-1, dtype=torch.int8))
        self.register_buffer("ready", torch.tensor(False))
        self._signed: bool | None = None
        self._initialized = False
        self.signed = signed
        self.initialized = self.fixed
        self.calibrating = False
        self.enabled = True
        self._lo = float("inf")
        self._hi = float("-inf")

    def extra_repr(self) -> str:
        sign = {None: "auto", True: "signed", False: "unsigned"}[self.signed]
        return f"bits={self.bits}, {sign}, role={self.role}, scale={float(self.scale.detach()):.6g}"

    @property
    def qrange(self) -> tuple[int, int]:
        return int_range(self.bits, bool(self.signed), self.narrow)

    @property
    def signed(self) -> bool | None:
        return self._signed

    @signed.setter
    def signed(self, value: bool | None) -> None:
        self._signed = None if value is None else bool(value)
        self.sign_code.fill_(-1 if value is None else int(bool(value)))

    @property
    def initialized(self) -> bool:
        return self._initialized

    @initialized.setter
    def initialized(self, value: bool) -> None:
        self._initialized = bool(value)
        self.ready.fill_(bool(value))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        code = int(self.sign_code)
        self._signed = None if code < 0 else bool(code)
        self._initialized = bool(self.ready) or self.fixed

    # calibration
    def _observe(self, x: torch.Tensor) -> None:
        a = x.detach().float().reshape(-1)
        self._lo = min(self._lo, float(a.min()))
        if self.percentile >= 100.0:
            self._hi = max(self._hi, float(a.abs().max()))
            return
        if a.numel() > 2**20:  # quantile's input limit; a strided sample is enough for a range
            a = a[:: a.numel() // 2**20 + 1]
        self._hi = max(self._hi, float(torch.quantile(a.abs(), self.percentile / 100.0)))

    def reset_range(self) -> None:
        self._lo, self._hi = float("inf"), float("-inf")

    def finish_calibration(self) -> None:
        """Set the sign (when automatic) and the scale from the recorded range."""
        if self._hi == float("-inf"):
            raise RuntimeError("no calibration data reached this quantizer")
        if self.signed is None:
            self.signed = self._lo < 0
        if not self.fixed:
            top = self.qrange[1]
            scale = max(self._hi, 1e-8) / top
            with torch.no_grad():
                self.scale.fill_(scale)
        self.initialized = True
        self.calibrating = False

    def clamp_scale_(self, floor: float = 1e-8) -> None:
        with torch.no_grad():
            self.scale.clamp_(min=floor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.calibrating:
            self._observe(x)
            return x
        if not self.initialized:
            log.debug("activation quantizer initialized from its first batch")
            self._observe(x)
            self.finish_calibration()
        if torch.onnx.is_in_onnx_export():
            return quant_node(x, self.scale, self.bits, bool(self.signed), self.narrow)
        lo, hi = self.qrange
        s = self.scale
        if not self.training:
            # float64 division: the same rounding decision as vaqf's host-side input quantization
            q = torch.clamp(torch.round(x.double() / s.double()), lo, hi)
            return (q * s.double()).to(x.dtype)
        return round_ste(torch.clamp(x / s, lo, hi)) * s


class ConstQuant(nn.Module):
    """A constant quantized as vaqf's importer quantizes a constant operand of an addition: symmetric
    narrow ``bits``-bit range over its own maximum magnitude, half-to-even rounding (straight-through).
    Not exported: the importer does it (``Importer._const_value``)."""

    def __init__(self, bits: int = CONST_BITS) -> None:
        super().__init__()
        self.bits = bits
        self.enabled = True
        self.calibrating = False

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if not self.enabled or self.calibrating:
            return c
        top = 2 ** (self.bits - 1) - 1
        amax = float(c.detach().abs().max())
        # vaqf.frontend.ptq.activation_quant: max|c| / top in float64, rounded to float32
        scale = float(torch.tensor(amax / top if amax > 0 else 1.0 / top, dtype=torch.float32))
        q = torch.clamp(torch.round(c.double() / scale), -top, top)
        return c + ((q * scale).to(c.dtype) - c).detach()


# ---- weights -------------------------------------------------------------------------------------
def _weight_quant(w: torch.Tensor, mode: str, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(quantized weight, per-output-channel scale shaped to broadcast against w)."""
    reduce = tuple(range(1, w.dim()))
    if mode == "binary":
        scale = w.abs().mean(dim=reduce, keepdim=True)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return sign_ste(w, clip) * scale, scale
    if mode.startswith("int"):
        top = 2 ** (int(mode[3:]) - 1) - 1
        scale = (w.detach().abs().amax(dim=reduce, keepdim=True) / top)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return round_ste(torch.clamp(w / scale, -top, top)) * scale, scale
    raise ValueError(f"unknown weight quantization {mode!r}; choose one of {', '.join(WEIGHT_MODES)}")


class _WeightQuantMixin:
    """Weight quantization shared by the linear and the patch-embedding layer.

    When the layer knows the quantizer of its input (``set_input_quant``), the bias is rounded to the
    accumulator's grid (input scale × weight scale of the channel), as vaqf stores it (an integer added to
    the accumulator); otherwise it stays float.
    """

    weight: nn.Parameter
    bias: nn.Parameter | None
    mode: str
    clip: float
    quantize_weights: bool
    _input_quant: tuple[ActQuant, ...] = ()

    def set_input_quant(self, quant: ActQuant | None) -> None:
        # a tuple, not an attribute holding the module: the quantizer is not a child of this layer
        self._input_quant = (quant,) if quant is not None else ()

    def quantized_weight(self) -> torch.Tensor:
        if self.mode == "float" or not self.quantize_weights:
            return self.weight
        return _weight_quant(self.weight, self.mode, self.clip)[0]

    def quantized_bias(self) -> torch.Tensor | None:
        """The bias on the accumulator's grid (straight-through), or the float bias."""
        b = self.bias
        if b is None or self.mode == "float" or not self.quantize_weights or not self._input_quant:
            return b
        q = self._input_quant[0]
        if not q.enabled or q.calibrating or not q.initialized:
            return b
        grid = q.scale.detach().double() * self.weight_scale().double().reshape(-1)
        ints = torch.clamp(torch.round(b.detach().double() / grid), -(2**31) + 1, 2**31 - 1)
        return b + ((ints * grid).to(b.dtype) - b).detach()

    def weight_scale(self) -> torch.Tensor:
        with torch.no_grad():
            return _weight_quant(self.weight, self.mode, self.clip)[1]

    def integer_weight(self) -> torch.Tensor:
        """The integers the accelerator stores (±1 for binary), as a float tensor."""
        with torch.no_grad():
            wq, scale = _weight_quant(self.weight, self.mode, self.clip)
            return torch.round(wq / scale)


class QuantLinear(nn.Linear, _WeightQuantMixin):
    """A linear layer with binary (sign × per-output-channel mean |w|) or k-bit integer (per-output-channel
    symmetric, narrow range) weights. Parameter names stay ``weight``/``bias`` (timm checkpoints load)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, mode: str = "binary",
                 clip: float = 1.0) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if mode not in WEIGHT_MODES and not (mode.startswith("int") and mode[3:].isdigit()):
            raise ValueError(f"unknown weight quantization {mode!r}; choose one of {', '.join(WEIGHT_MODES)}")
        self.mode = mode
        self.clip = clip
        self.quantize_weights = True

    @classmethod
    def from_float(cls, layer: nn.Linear, mode: str) -> QuantLinear:
        q = cls(layer.in_features, layer.out_features, layer.bias is not None, mode)
        with torch.no_grad():
            q.weight.copy_(layer.weight)
            if layer.bias is not None:
                q.bias.copy_(layer.bias)
        return q.to(layer.weight.device)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weights={self.mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() and self.mode != "float":
            return linear_node(self, x)
        return F.linear(x, self.quantized_weight(), self.quantized_bias())


class BinaryLinear(QuantLinear):
    """A linear layer with binary weights: sign(w) (sign(0) = +1) times the per-output-channel mean |w|;
    clipped straight-through gradient (passed where |w| <= ``clip``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, mode: str = "binary",
                 clip: float = 1.0) -> None:
        if mode != "binary":
            raise ValueError(f"BinaryLinear has binary weights, not {mode!r}; use QuantLinear")
        super().__init__(in_features, out_features, bias, mode, clip)


class QuantConv2d(nn.Conv2d, _WeightQuantMixin):
    """The patch embedding's convolution with quantized weights (per output channel)."""

    def __init__(self, *args, mode: str = "int8", clip: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mode = mode
        self.clip = clip
        self.quantize_weights = True

    @classmethod
    def from_float(cls, conv: nn.Conv2d, mode: str) -> QuantConv2d:
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, mode=mode)
        with torch.no_grad():
            q.weight.copy_(conv.weight)
            if conv.bias is not None:
                q.bias.copy_(conv.bias)
        return q.to(conv.weight.device)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weights={self.mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() and self.mode != "float":
            return conv_node(self, x)
        return self._conv_forward(x, self.quantized_weight(), self.quantized_bias())


# ---- converting a model --------------------------------------------------------------------------
def _act_quant_for(point: QuantPoint, act_bits: int, internal_bits: int) -> nn.Module:
    if point.role == "const":
        return ConstQuant()
    if point.role == "softmax":
        return ActQuant(SOFTMAX_BITS, signed=False, fixed_scale=2.0**-SOFTMAX_BITS, role="softmax")
    if point.role == "input":
        return ActQuant(8, signed=point.signed, role="input", percentile=100.0)
    if point.role == "internal":
        return ActQuant(internal_bits, signed=point.signed, role="internal")
    if point.role == "probs":
        if act_bits >= SOFTMAX_BITS:  # the softmax unit's own quantization: no second rounding
            return ActQuant(SOFTMAX_BITS, signed=False, fixed_scale=2.0**-SOFTMAX_BITS, role="probs")
        return ActQuant(act_bits, signed=False, role="probs")
    return ActQuant(act_bits, signed=point.signed, role="matmul")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def quantize_vit(model: nn.Module, act_bits: int = 8, weights: str = "binary",
                 keep: Iterable[str] = ("patch_embed", "head"), keep_weights: str = "int8",
                 internal_bits: int | None = None) -> nn.Module:
    """Convert a float ``VisionTransformer`` (or any model built from ``QuantPoint``s) in place.

    Linear layers become ``QuantLinear`` with ``weights`` ("binary", "int8", "int4" or "float"); layers under a
    name in ``keep`` (the patch embedding and the head by default) get ``keep_weights`` (8-bit integers).
    Each ``QuantPoint`` becomes the activation quantizer of its role: ``act_bits`` for inputs of matrix
    products, ``internal_bits`` (default ``max(8, act_bits)``) for the residual stream and the inputs of
    non-linearities, 8 bits for the image. Quantizers still need calibration (``calibrate``) or they
    initialize from their first batch. Returns the model.
    """
    if not 2 <= act_bits <= 16:
        raise ValueError(f"act_bits must be within 2..16, got {act_bits}")
    internal = internal_bits if internal_bits is not None else max(8, act_bits)
    keep = tuple(keep)
    for name, m in list(model.named_modules()):
        if name and isinstance(m, QuantPoint):
            _replace(model, name, _act_quant_for(m, act_bits, internal))
        elif isinstance(m, nn.Linear) and not isinstance(m, QuantLinear):
            mode = keep_weights if _under(name, keep) else weights
            _replace(model, name, (BinaryLinear if mode == "binary" else QuantLinear).from_float(m, mode))
        elif isinstance(m, nn.Conv2d) and not isinstance(m, QuantConv2d):
            _replace(model, name, QuantConv2d.from_float(m, keep_weights if _under(name, keep) else weights))
    for owner in model.modules():
        for layer_name, quant_name in getattr(owner, "linear_inputs", {}).items():
            layer, quant = owner.get_submodule(layer_name), owner.get_submodule(quant_name)
            if isinstance(layer, (QuantLinear, QuantConv2d)) and isinstance(quant, ActQuant):
                layer.set_input_quant(quant)
    model.qat_config = {"act_bits": act_bits, "internal_bits": internal, "weights": weights, "keep": list(keep),
                        "keep_weights": keep_weights}
    return model


def act_quantizers(model: nn.Module) -> Iterator[ActQuant]:
    return (m for m in model.modules() if isinstance(m, ActQuant))


def weight_layers(model: nn.Module) -> Iterator[QuantLinear | QuantConv2d]:
    return (m for m in model.modules() if isinstance(m, (QuantLinear, QuantConv2d)))


def set_weight_quantization(model: nn.Module, enabled: bool) -> None:
    """Turn weight quantization on or off (QAT's first phase trains with float weights)."""
    for m in weight_layers(model):
        m.quantize_weights = enabled


def set_activation_quantization(model: nn.Module, enabled: bool) -> None:
    for m in model.modules():
        if isinstance(m, (ActQuant, ConstQuant)):
            m.enabled = enabled


@contextmanager
def calibrating(model: nn.Module) -> Iterator[None]:
    """Within the block, activation quantizers pass values through and record their ranges; on exit the
    scales are set from the ranges. Quantizers run in calibration order, so each sees the float values of
    the float model (weights keep their current quantization)."""
    quants = list(act_quantizers(model))
    consts = [m for m in model.modules() if isinstance(m, ConstQuant)]
    for q in quants:
        q.reset_range()
        q.calibrating = True
    for c in consts:
        c.calibrating = True
    try:
        yield
    finally:
        for c in consts:
            c.calibrating = False
        for q in quants:
            q.calibrating = False
    for q in quants:
        q.finish_calibration()


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Set every activation quantizer's scale (and sign) from the ranges seen on ``batches``."""
    was_training = model.training
    model.eval()
    with calibrating(model):
        for x in batches:
            model(x)
    model.train(was_training)


def clamp_scales_(model: nn.Module) -> None:
    for q in act_quantizers(model):
        q.clamp_scale_()

"""DeiT / ViT definitions whose parameter names follow timm's VisionTransformer.

A timm DeiT checkpoint (a state_dict) loads with ``load_state_dict``; nothing here imports timm or
torchvision. Besides the DeiT family (tiny, small, base), ``custom`` builds non-uniform transformers:
per-block head counts and MLP widths, and any depth (removed blocks), as ViT compression and
auto-scaling methods produce.

Every tensor the compiler stores at activation precision passes a ``QuantPoint``: an identity in a float
model (no parameters, so timm checkpoints load strictly), replaced by an activation quantizer by
``vaqf.frontend.torch.qat.quantize_vit``. Their places are the ones vaqf's QONNX importer needs: the
input of every matrix product, the residual stream, the inputs and outputs of LayerNorm and GELU, and
the outputs of the layers that feed an addition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class ViTConfig:
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    block_heads: Sequence[int] | None = None       # per-block heads (overrides num_heads)
    block_mlp_dims: Sequence[int] | None = None    # per-block MLP hidden widths (overrides mlp_ratio)
    qkv_bias: bool = True
    eps: float = 1e-6
    extra: dict = field(default_factory=dict)

    def heads(self, i: int) -> int:
        return int(self.block_heads[i]) if self.block_heads is not None else self.num_heads

    def mlp_dim(self, i: int) -> int:
        return int(self.block_mlp_dims[i]) if self.block_mlp_dims is not None else int(self.embed_dim * self.mlp_ratio)

    def validate(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"image size {self.img_size} is not a multiple of the patch size {self.patch_size}")
        for name, seq in (("block_heads", self.block_heads), ("block_mlp_dims", self.block_mlp_dims)):
            if seq is not None and len(seq) != self.depth:
                raise ValueError(f"{name} has {len(seq)} entries for {self.depth} blocks")
        for i in range(self.depth):
            if self.embed_dim % self.heads(i):
                raise ValueError(f"block {i}: {self.heads(i)} heads do not divide dim {self.embed_dim}")


class QuantPoint(nn.Identity):
    """Where an activation quantizer goes; an identity until ``quantize_vit`` replaces it.

    ``role`` says which precision the compiler gives the tensor:

    - ``"input"``: the image (8 bits);
    - ``"matmul"``: an input of a matrix product (the activation precision, ``act_bits``);
    - ``"internal"``: the residual stream, the inputs of LayerNorm/GELU/softmax, the outputs feeding an
      addition (``max(8, act_bits)``, as vaqf's importer keeps them);
    - ``"softmax"``: the softmax output as vaqf's softmax unit writes it (unsigned 8 bits, scale 2**-8);
    - ``"probs"``: the attention probabilities as the A.V product reads them (unsigned ``act_bits``; at 8
      bits or more the softmax unit's own quantization);
    - ``"const"``: a constant added to an activation (the position embedding), quantized as the importer
      quantizes it (8 bits, symmetric, on its own range); not exported.

    ``signed`` fixes the sign of the range (None: decided by calibration).
    """

    def __init__(self, role: str, signed: bool | None = None) -> None:
        super().__init__()
        if role not in QUANT_ROLES:
            raise ValueError(f"unknown quantization role {role!r}; choose one of {', '.join(QUANT_ROLES)}")
        self.role = role
        self.signed = signed

    def extra_repr(self) -> str:
        return f"role={self.role}, signed={self.signed}"


QUANT_ROLES = ("input", "matmul", "internal", "softmax", "probs", "const")


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.patch_size)
        self.num_patches = (cfg.img_size // cfg.patch_size) ** 2
        self.out_quant = QuantPoint("internal")  # also quantizes the class token (the importer's concat does)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_quant(self.proj(x)).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.qkv_quant = QuantPoint("matmul")                 # q, k and v: operands of Q.K^T and A.V
        self.scores_quant = QuantPoint("internal")            # attention scores: softmax input
        self.softmax_quant = QuantPoint("softmax", signed=False)
        self.attn_quant = QuantPoint("probs", signed=False)  # attention probabilities: operand of A.V
        self.proj_quant = QuantPoint("matmul")                # input of proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv_quant(self.qkv(x)).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = self.scores_quant((q * self.scale) @ k.transpose(-2, -1))
        attn = self.attn_quant(self.softmax_quant(attn.softmax(dim=-1)))
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(self.proj_quant(x))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.fc1_quant = QuantPoint("internal")             # GELU input
        self.act_quant = QuantPoint("matmul", signed=False)  # GELU output, input of fc2 (GELU >= -0.17: clipped)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_quant(self.act(self.fc1_quant(self.fc1(x)))))


class Block(nn.Module):
    #: the quantizer that feeds each linear layer (its bias is rounded to that input's grid, as vaqf does)
    linear_inputs = {"attn.qkv": "norm1_quant", "attn.proj": "attn.proj_quant", "mlp.fc1": "norm2_quant",
                     "mlp.fc2": "mlp.act_quant"}

    def __init__(self, dim: int, heads: int, mlp_dim: int, qkv_bias: bool, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim)
        self.norm1_quant = QuantPoint("matmul")     # input of qkv
        self.attn_out_quant = QuantPoint("internal")
        self.res1_quant = QuantPoint("internal")
        self.norm2_quant = QuantPoint("matmul")     # input of fc1
        self.mlp_out_quant = QuantPoint("internal")
        self.res2_quant = QuantPoint("internal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res1_quant(x + self.attn_out_quant(self.attn(self.norm1_quant(self.norm1(x)))))
        return self.res2_quant(x + self.mlp_out_quant(self.mlp(self.norm2_quant(self.norm2(x)))))


class VisionTransformer(nn.Module):
    """A ViT/DeiT classifier on the class token (timm layout and names)."""

    linear_inputs = {"patch_embed.proj": "input_quant", "head": "norm_quant"}

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, cfg.embed_dim))
        self.blocks = nn.Sequential(*[Block(cfg.embed_dim, cfg.heads(i), cfg.mlp_dim(i), cfg.qkv_bias, cfg.eps)
                                      for i in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.eps)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self.input_quant = QuantPoint("input")
        self.pos_quant = QuantPoint("const")
        self.embed_quant = QuantPoint("internal")   # residual stream after the position embedding
        self.norm_quant = QuantPoint("matmul")      # input of the head
        self._init()

    def _init(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.input_quant(x))
        frozen = getattr(self, "_export_constants", None)
        cls, pos = frozen if frozen is not None and _exporting() else self.quantized_constants()
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.embed_quant(x + pos)
        return self.norm_quant(self.norm(self.blocks(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[:, 0])

    def quantized_constants(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The class token (quantized like the patch tokens it is concatenated with) and the position
        embedding (quantized on its own range), as vaqf's importer quantizes these constants. A QONNX export
        writes them already quantized, so every reader of the file computes with the same values."""
        return self.patch_embed.out_quant(self.cls_token), self.pos_quant(self.pos_embed)


FAMILY = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
}


def deit(name: str, **overrides) -> VisionTransformer:
    """``deit("tiny" | "small" | "base", num_classes=..., img_size=...)`` or ``deit("custom", ...)``."""
    if name == "custom":
        return VisionTransformer(ViTConfig(**overrides))
    if name not in FAMILY:
        raise ValueError(f"unknown DeiT {name!r}; choose tiny, small, base or custom")
    return VisionTransformer(ViTConfig(**{**FAMILY[name], **overrides}))


def trained_magnitudes(model: VisionTransformer, head_gain: float = 20.0) -> VisionTransformer:
    """Give a randomly initialized ViT the magnitudes of a trained one, in place: a class token and a
    position embedding the size of the patch tokens (N(0, 1) and N(0, 0.5)) and a head with a real margin
    (weights x ``head_gain``), so that comparisons of outputs (argmax agreement) mean something for
    models that were never trained (benchmarks, tests)."""
    with torch.no_grad():
        model.cls_token.normal_(0.0, 1.0)
        model.pos_embed.normal_(0.0, 0.5)
        model.head.weight.mul_(head_gain)
    return model


def export_onnx(model: nn.Module, path: str, img_size: int | None = None, in_chans: int = 3,
                opset: int = 17) -> str:
    """Export with the TorchScript-based exporter, a dynamic batch axis, and an IR version onnxruntime reads."""
    import onnx

    size = img_size or model.cfg.img_size
    x = torch.zeros(1, in_chans, size, size)
    model.eval()
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load(path)
    if m.ir_version > 10:
        m.ir_version = 10
        onnx.save(m, path)
    return path

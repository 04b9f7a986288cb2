"""DeiT / ViT definitions whose parameter names follow timm's VisionTransformer.

A timm DeiT checkpoint (a state_dict) loads with ``load_state_dict``; nothing here imports timm or
torchvision. Besides the DeiT family (tiny, small, base), ``custom`` builds non-uniform transformers:
per-block head counts and MLP widths, and any depth (removed blocks), as ViT compression and
auto-scaling methods produce.
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


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.patch_size)
        self.num_patches = (cfg.img_size // cfg.patch_size) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, qkv_bias: bool, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """A ViT/DeiT classifier on the class token (timm layout and names)."""

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
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[:, 0])


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

"""DeiT definitions: timm's parameter names (a timm checkpoint loads strictly), the family, custom shapes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vaqf.frontend.torch import ActQuant, QuantPoint, deit, quantize_vit  # noqa: E402
from vaqf.frontend.torch.deit import FAMILY  # noqa: E402


def timm_deit_state_dict(dim: int, depth: int, mlp: int, classes: int, tokens: int, patch: int,
                         rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A state dict as timm's ``deit_*_patch16_224`` writes it: names and shapes spelled out by hand here,
    not read from our model, so a renamed parameter fails the test."""
    def t(*shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.normal(0, 0.02, size=shape).astype(np.float32))

    sd = {"cls_token": t(1, 1, dim), "pos_embed": t(1, tokens, dim),
          "patch_embed.proj.weight": t(dim, 3, patch, patch), "patch_embed.proj.bias": t(dim)}
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + t(dim), b + "norm1.bias": t(dim),
                   b + "attn.qkv.weight": t(3 * dim, dim), b + "attn.qkv.bias": t(3 * dim),
                   b + "attn.proj.weight": t(dim, dim), b + "attn.proj.bias": t(dim),
                   b + "norm2.weight": 1 + t(dim), b + "norm2.bias": t(dim),
                   b + "mlp.fc1.weight": t(mlp, dim), b + "mlp.fc1.bias": t(mlp),
                   b + "mlp.fc2.weight": t(dim, mlp), b + "mlp.fc2.bias": t(dim)})
    sd.update({"norm.weight": 1 + t(dim), "norm.bias": t(dim), "head.weight": t(classes, dim),
               "head.bias": t(classes)})
    return sd


@pytest.fixture(scope="module")
def tiny_checkpoint() -> dict[str, torch.Tensor]:
    return timm_deit_state_dict(192, 12, 768, 1000, 197, 16, np.random.default_rng(0))


def test_timm_checkpoint_loads_strictly_into_deit_tiny(tiny_checkpoint: dict[str, torch.Tensor]) -> None:
    model = deit("tiny")
    model.load_state_dict(tiny_checkpoint, strict=True)
    got = model.state_dict()
    for name, value in tiny_checkpoint.items():
        assert torch.equal(got[name], value), name
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(5.7e6, rel=0.02)  # DeiT-tiny: 5.7 M


def test_timm_checkpoint_loads_into_a_quantized_model(tiny_checkpoint: dict[str, torch.Tensor]) -> None:
    """After quantize_vit only the quantizers' scales are new; every timm weight still has its place."""
    model = quantize_vit(deit("tiny"), act_bits=8)
    missing, unexpected = model.load_state_dict(tiny_checkpoint, strict=False)
    assert unexpected == []
    assert missing and all(k.endswith(("_quant.scale", "_quant.sign_code", "_quant.ready")) for k in missing)
    assert torch.equal(model.blocks[3].attn.qkv.weight, tiny_checkpoint["blocks.3.attn.qkv.weight"])


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_family_shapes(name: str) -> None:
    cfg = FAMILY[name]
    model = deit(name, num_classes=10, img_size=32, patch_size=16)  # small images keep this fast
    assert model.cfg.embed_dim == cfg["embed_dim"] and len(model.blocks) == cfg["depth"]
    assert model.blocks[0].attn.num_heads == cfg["num_heads"]
    assert model.blocks[0].mlp.fc1.out_features == 4 * cfg["embed_dim"]


def test_custom_per_block_heads_and_mlp_widths() -> None:
    model = deit("custom", img_size=32, patch_size=8, embed_dim=48, depth=3, block_heads=[1, 2, 4],
                 block_mlp_dims=[16, 96, 32], num_classes=7)
    assert [b.attn.num_heads for b in model.blocks] == [1, 2, 4]
    assert [b.mlp.fc1.out_features for b in model.blocks] == [16, 96, 32]
    assert model.pos_embed.shape == (1, 17, 48)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="heads do not divide"):
        deit("custom", embed_dim=48, depth=1, num_heads=5)
    with pytest.raises(ValueError, match="block_heads has 2 entries"):
        deit("custom", embed_dim=48, depth=3, block_heads=[1, 2])
    with pytest.raises(ValueError, match="unknown DeiT"):
        deit("huge")


def test_float_model_quant_points_are_identities() -> None:
    """A float model's quantization points hold nothing and change nothing."""
    torch.manual_seed(0)
    model = deit("custom", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, num_classes=5).eval()
    points = [m for m in model.modules() if isinstance(m, QuantPoint)]
    assert len(points) == 5 + 13 * len(model.blocks) and all(not list(p.parameters()) for p in points)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ref = model.head(model.norm(model.blocks(torch.cat(
            [model.cls_token.expand(3, -1, -1), model.patch_embed.proj(x).flatten(2).transpose(1, 2)], 1)
            + model.pos_embed))[:, 0])
        assert torch.allclose(model(x), ref, atol=1e-6)
    assert not any(isinstance(m, ActQuant) for m in model.modules())

"""QAT modules: activation quantizers, binary and integer weights, quantize_vit's placement."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vaqf.frontend.ptq import activation_quant, quantize_weight  # noqa: E402
from vaqf.frontend.torch import (  # noqa: E402
    ActQuant,
    BinaryLinear,
    ConstQuant,
    QuantConv2d,
    QuantLinear,
    calibrate,
    deit,
    quantize_vit,
)
from vaqf.frontend.torch.qat import int_range, set_weight_quantization  # noqa: E402
from vaqf.ir.qarith import round_real  # noqa: E402


@pytest.mark.parametrize(("bits", "signed", "narrow", "lo", "hi"),
                         [(8, True, False, -128, 127), (8, True, True, -127, 127), (4, False, False, 0, 15),
                          (4, False, True, 0, 14), (6, True, False, -32, 31)])
def test_int_range_is_qonnx(bits: int, signed: bool, narrow: bool, lo: int, hi: int) -> None:
    assert int_range(bits, signed, narrow) == (lo, hi)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("bits", "signed"), [(8, True), (4, False), (6, True)])
def test_act_quant_values(rng: np.random.Generator, bits: int, signed: bool, training: bool) -> None:
    q = ActQuant(bits, signed=signed, fixed_scale=0.0625)
    q.train(training)
    x = torch.from_numpy(rng.normal(0, 3, size=1000).astype(np.float32))
    x[:4] = torch.tensor([0.03125, 0.09375, -0.03125, 0.15625])  # exact ties: half to even
    lo, hi = int_range(bits, signed, False)
    want = np.clip(round_real(x.numpy().astype(np.float64) / 0.0625), lo, hi) * 0.0625
    np.testing.assert_array_equal(q(x).detach().numpy(), want.astype(np.float32))


def test_act_quant_straight_through_and_lsq_gradients() -> None:
    q = ActQuant(4, signed=True, fixed_scale=None)
    q.scale.data.fill_(0.5)
    q.initialized = True
    x = torch.tensor([0.3, -1.1, 3.0, -5.0, 10.0], requires_grad=True)  # v = x/s: 0.6, -2.2, 6, -10, 20
    q.train()(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1, 1, 1, 0, 0])  # clipped outside [-8, 7]
    # LSQ: d/ds of s*round(clamp(x/s)) = round(v) - v inside, the bound outside
    want = (1 - 0.6) + (-2 + 2.2) + 0.0 + (-8) + 7
    assert float(q.scale.grad) == pytest.approx(want, abs=1e-5)


def test_calibration_sets_sign_and_scale() -> None:
    signed, unsigned = ActQuant(8, percentile=100.0), ActQuant(4, percentile=100.0)
    model = torch.nn.Sequential(signed, torch.nn.ReLU(), unsigned)
    calibrate(model, [torch.linspace(-2.0, 3.0, 101), torch.linspace(-1.0, 6.35, 50)])
    assert signed.signed is True and float(signed.scale.detach()) == pytest.approx(6.35 / 127)
    assert unsigned.signed is False and float(unsigned.scale.detach()) == pytest.approx(6.35 / 15)
    x = torch.tensor([-1.0, 0.5, 100.0])
    assert float(model.eval()(x)[-1].detach()) == pytest.approx(15 * float(unsigned.scale.detach()))


def test_uncalibrated_quantizer_initializes_from_first_batch() -> None:
    q = ActQuant(8, signed=None, percentile=100.0)
    q(torch.tensor([-0.5, 1.27]))
    assert q.initialized and q.signed is True and float(q.scale.detach()) == pytest.approx(0.01)


def test_binary_linear_weights_and_gradient(rng: np.random.Generator) -> None:
    layer = BinaryLinear(6, 4)
    w = rng.normal(0, 0.5, size=(4, 6)).astype(np.float32)
    w[0, 0] = 0.0     # sign(0) = +1, as QONNX BipolarQuant and vaqf
    w[1, 1] = 1.5     # beyond the STE clip: no gradient
    layer.weight.data = torch.from_numpy(w)
    wq = layer.quantized_weight()
    scale = np.abs(w).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(wq.detach().numpy(), np.where(w >= 0, 1, -1) * scale, rtol=1e-6)
    ints, vaqf_scale, _ = quantize_weight(w, "binary")  # the importer's own binarization agrees
    np.testing.assert_array_equal(layer.integer_weight().numpy(), ints)
    np.testing.assert_allclose(layer.weight_scale().reshape(-1).numpy(), vaqf_scale, rtol=1e-6)
    wq.sum().backward()
    # d/dw of sum(sign(w) * mean|w|): the scale where the clipped STE passes, plus the scale's own gradient
    signs = np.where(w >= 0, 1.0, -1.0)
    want = scale * (np.abs(w) <= 1.0) + signs.sum(axis=1, keepdims=True) * np.sign(w) / w.shape[1]
    np.testing.assert_allclose(layer.weight.grad.numpy(), want, rtol=1e-5, atol=1e-6)
    assert float(layer.weight.grad[1, 1]) == pytest.approx(float(want[1, 1]))  # no STE term beyond the clip


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_integer_weights_match_vaqf(rng: np.random.Generator, mode: str) -> None:
    layer = QuantLinear(16, 8, mode=mode)
    layer.weight.data = torch.from_numpy(rng.normal(0, 0.3, size=(8, 16)).astype(np.float32))
    ints, scale, _ = quantize_weight(layer.weight.detach().numpy(), mode)
    np.testing.assert_array_equal(layer.integer_weight().numpy(), ints)
    np.testing.assert_allclose(layer.weight_scale().reshape(-1).numpy(), scale, rtol=1e-6)


def test_const_quant_matches_importer(rng: np.random.Generator) -> None:
    c = torch.from_numpy(rng.normal(0, 0.4, size=(1, 17, 32)).astype(np.float32))
    qt, scale = activation_quant(min(float(c.min()), -1e-30), float(c.abs().max()), 8)
    want = np.clip(round_real(c.numpy().astype(np.float64) / scale), qt.min, qt.max) * scale
    np.testing.assert_array_equal(ConstQuant()(c).numpy(), want.astype(np.float32))


def test_quantize_vit_places_quantizers_by_role() -> None:
    torch.manual_seed(0)
    model = quantize_vit(deit("custom", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                              num_classes=5), act_bits=4)
    assert isinstance(model.patch_embed.proj, QuantConv2d) and model.patch_embed.proj.mode == "int8"
    assert model.head.mode == "int8"
    for b in model.blocks:
        assert {b.attn.qkv.mode, b.attn.proj.mode, b.mlp.fc1.mode, b.mlp.fc2.mode} == {"binary"}
        assert isinstance(b.mlp.fc2, BinaryLinear)
        assert b.norm1_quant.bits == b.norm2_quant.bits == b.attn.qkv_quant.bits == b.attn.proj_quant.bits == 4
        assert b.mlp.act_quant.bits == 4 and b.mlp.act_quant.signed is False
        assert b.attn.attn_quant.bits == 4 and b.attn.attn_quant.signed is False
        assert b.res1_quant.bits == b.mlp.fc1_quant.bits == b.attn_out_quant.bits == 8  # max(8, act_bits)
        assert b.attn.softmax_quant.fixed and float(b.attn.softmax_quant.scale.detach()) == 2.0**-8
        assert b.attn.qkv._input_quant[0] is b.norm1_quant and b.mlp.fc2._input_quant[0] is b.mlp.act_quant
    assert model.input_quant.bits == 8 and model.norm_quant.bits == 4
    assert isinstance(model.pos_quant, ConstQuant)
    assert model.head._input_quant[0] is model.norm_quant
    model8 = quantize_vit(deit("custom", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2), 8)
    probs = model8.blocks[0].attn.attn_quant
    assert probs.fixed and float(probs.scale.detach()) == 2.0**-8  # 8 bits: the softmax unit's own quantization


def test_quantized_bias_is_on_the_accumulator_grid(rng: np.random.Generator) -> None:
    q_in = ActQuant(8, signed=True, fixed_scale=0.05)
    layer = QuantLinear(8, 4, mode="binary")
    layer.set_input_quant(q_in)
    layer.bias.data = torch.from_numpy(rng.normal(0, 1, size=4).astype(np.float32))
    grid = 0.05 * layer.weight_scale().reshape(-1).double()
    ints = layer.quantized_bias().detach().double() / grid
    np.testing.assert_allclose(ints.numpy(), np.round(ints.numpy()), atol=1e-4)
    set_weight_quantization(layer, False)
    assert layer.quantized_bias() is layer.bias


def test_quantized_model_state_dict_round_trip() -> None:
    """Calibrated scales and signs survive save/load: a fresh quantize_vit model loads them and computes
    the same outputs (its quantizers do not re-initialize from the first batch)."""
    cfg = {"img_size": 16, "patch_size": 4, "in_chans": 1, "embed_dim": 32, "depth": 1, "num_heads": 2,
           "num_classes": 5}
    torch.manual_seed(0)
    model = quantize_vit(deit("custom", **cfg), act_bits=6)
    x = torch.rand(8, 1, 16, 16)
    calibrate(model, [x])
    want = model.eval()(x)
    fresh = quantize_vit(deit("custom", **cfg), act_bits=6)
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert fresh.blocks[0].mlp.fc1_quant.signed is True and fresh.input_quant.signed is False
    assert torch.equal(fresh.eval()(x * 0.5 + 0.25), model(x * 0.5 + 0.25))
    assert torch.equal(fresh(x), want)

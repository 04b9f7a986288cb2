"""Measured error of vaqf's integer-only non-linearities against float, and of a small ViT end to end.

    .venv/bin/python bench/bench_numerics.py

Prints two tables (recorded in docs/numerics.md): per approximation, the worst error over its whole
input range at typical scales; per activation precision, the simulator's output error against the
float model (onnxruntime) for a 2-block ViT (dim 64, 4 heads, 32x32 input, patch 8).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaqf.ir import IntType, TensorInfo  # noqa: E402
from vaqf.ops.layernorm import layernorm_attrs  # noqa: E402
from vaqf.ops.lut import gelu_erf, lut_attrs  # noqa: E402
from vaqf.ops.softmax import softmax_attrs  # noqa: E402
from vaqf.sim.fast import layernorm_fast, softmax_fast  # noqa: E402


def softmax_errors(rng: np.random.Generator) -> list[tuple[str, float, float]]:
    rows = []
    for scale, bits, n in [(0.05, 8, 197), (0.01, 8, 197), (0.003, 8, 64), (0.05, 6, 197), (0.05, 4, 197)]:
        x = rng.integers(-2000, 2001, size=(400, n))
        a = softmax_attrs(scale, bits)
        got = softmax_fast(x, a["table"], a["idx_mantissa"], a["idx_shift"], bits) * 2.0**-bits
        r = x * scale
        e = np.exp(r - r.max(axis=-1, keepdims=True))
        ref = e / e.sum(axis=-1, keepdims=True)
        rows.append((f"softmax in-scale {scale:g}, {bits}-bit out, rows of {n}", float(np.abs(got - ref).max()),
                     2.0**-bits))
    return rows


def gelu_errors() -> list[tuple[str, float, float]]:
    rows = []
    for in_scale, out_scale in [(0.05, 0.04), (0.02, 0.02), (0.1, 0.05)]:
        info = TensorInfo((1, 1, 256), IntType(8, True), np.array([in_scale]))
        a = lut_attrs("gelu", info, IntType(8, True), out_scale, 0)
        q = np.arange(-128, 128)
        got = a["table"][q + 128] * out_scale
        ref = np.clip(gelu_erf(q * in_scale), -128 * out_scale, 127 * out_scale)
        rows.append((f"GELU table, 8-bit in (scale {in_scale:g}), 8-bit out (scale {out_scale:g})",
                     float(np.abs(got - ref).max()), out_scale))
    return rows


def layernorm_errors(rng: np.random.Generator) -> list[tuple[str, float, float]]:
    rows = []
    for d, in_bits in [(64, 8), (192, 9), (768, 9)]:
        gamma, beta = rng.uniform(0.5, 1.5, d), rng.uniform(-0.2, 0.2, d)
        s_in, s_out = 0.02, 4.0 / 127
        a = layernorm_attrs(gamma, beta, 1e-6, s_in, s_out, IntType(8, True), 0, "ln")
        lo = -(2 ** (in_bits - 1))
        x = rng.integers(lo, -lo, size=(200, d))
        got = layernorm_fast(x, a) * s_out
        r = x * s_in
        ref = (r - r.mean(-1, keepdims=True)) / np.sqrt(r.var(-1, keepdims=True) + 1e-6) * gamma + beta
        ref = np.clip(ref, -128 * s_out, 127 * s_out)
        rows.append((f"LayerNorm D={d}, {in_bits}-bit in, 8-bit out", float(np.abs(got - ref).max()), s_out))
    return rows


def vit_errors() -> list[tuple[str, float, float]]:
    try:
        import onnxruntime as ort
        import torch

        import vaqf
        from vaqf.frontend.torch.deit import deit, export_onnx, trained_magnitudes
        from vaqf.sim.simulator import Simulator
    except ImportError:
        return []
    torch.manual_seed(0)
    model = deit("custom", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0,
                 num_classes=10)
    trained_magnitudes(model)
    rows = []
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "vit.onnx"
        export_onnx(model, str(path))
        calib = np.random.default_rng(1).normal(size=(64, 3, 32, 32)).astype(np.float32)
        x = np.random.default_rng(2).normal(size=(200, 3, 32, 32)).astype(np.float32)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ref = sess.run(None, {"x": x})[0]
        for weights in ("int8", "binary"):
            for bits in (8, 6, 4):
                g = vaqf.load_model(path, weights=weights, act_bits=bits, calib=calib)
                got = Simulator(g).run([x]).dequantized[0]
                rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
                agree = float((got.argmax(1) == ref.argmax(1)).mean())
                rows.append((f"ViT 2x64, {weights} weights, {bits}-bit activations", rel, agree))
    return rows


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'approximation':<66} {'max abs error':>14} {'output step':>12}")
    for name, err, step in softmax_errors(rng) + gelu_errors() + layernorm_errors(rng):
        print(f"{name:<66} {err:14.5f} {step:12.5f}")
    rows = vit_errors()
    if rows:
        print()
        print(f"{'model':<66} {'rel. L2':>14} {'argmax agree':>12}")
        for name, rel, agree in rows:
            print(f"{name:<66} {rel:14.4f} {agree:12.3f}")


if __name__ == "__main__":
    main()

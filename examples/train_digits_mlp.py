"""Train the built-in example: a quantization-aware MLP on scikit-learn's 8x8 digits, in numpy.

    python examples/train_digits_mlp.py --out vaqf/data/mlp_digits.npz

Layers 64-64-32-10; weights int8 / binary / int4 with straight-through gradients; ReLU activations
quantized to 8 bits unsigned. Needs scikit-learn (for the data set only).
"""

from __future__ import annotations

import argparse

import numpy as np

QUANT = ["int8", "binary", "int4"]
SIZES = [64, 64, 32, 10]
ACT_BITS = 8


def quant_weight(w: np.ndarray, mode: str) -> np.ndarray:
    if mode == "binary":
        return np.where(w >= 0, 1.0, -1.0) * np.abs(w).mean(axis=0, keepdims=True)
    top = 2 ** (int(mode[3:]) - 1) - 1
    s = np.maximum(np.abs(w).max(axis=0, keepdims=True) / top, 1e-8)
    return np.clip(np.round(w / s), -top, top) * s


def quant_act(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.round(x / scale), 0, 2**ACT_BITS - 1) * scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(args.seed)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float64)
    idx = rng.permutation(len(x))
    test, train = idx[:360], idx[360:]
    ws = [rng.normal(0, np.sqrt(2 / a), (a, b)) for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)]
    bs = [np.zeros(b) for b in SIZES[1:]]
    act_scales = [4.0 / 255] * (len(ws) - 1)
    params = ws + bs
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, step = 3e-3, 0
    in_scale = 1.0 / 255
    for epoch in range(args.epochs):
        qat = epoch >= args.epochs // 3
        for batch in np.array_split(rng.permutation(train), len(train) // 64):
            h = quant_act(x[batch], in_scale) if qat else x[batch]
            cache = []
            for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
                wq = quant_weight(w, QUANT[i]) if qat else w
                z = h @ wq + b
                cache.append((h, wq, z))
                if i < len(ws) - 1:
                    h = np.maximum(z, 0)
                    if qat:
                        h = quant_act(h, act_scales[i])
                else:
                    h = z
            p = np.exp(h - h.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            g = p
            g[np.arange(len(batch)), y[batch]] -= 1
            g /= len(batch)
            grads_w, grads_b = [None] * len(ws), [None] * len(ws)
            for i in reversed(range(len(ws))):
                hin, wq, z = cache[i]
                grads_w[i] = hin.T @ g  # straight-through: d wq / d w = 1
                grads_b[i] = g.sum(axis=0)
                if i > 0:
                    g = (g @ wq.T) * (cache[i - 1][2] > 0)
            step += 1
            for j, (prm, gr) in enumerate(zip(params, grads_w + grads_b, strict=True)):
                m[j] = 0.9 * m[j] + 0.1 * gr
                v[j] = 0.999 * v[j] + 0.001 * gr * gr
                prm -= lr * (m[j] / (1 - 0.9**step)) / (np.sqrt(v[j] / (1 - 0.999**step)) + 1e-8)
        if qat and epoch == args.epochs // 3:
            # calibrate activation scales once, from the float network's ranges
            h = x[train]
            for i in range(len(ws) - 1):
                h = np.maximum(h @ ws[i] + bs[i], 0)
                act_scales[i] = float(np.float32(np.percentile(h, 99.9) / (2**ACT_BITS - 1)))
    # evaluate the quantized network
    h = quant_act(x[test], in_scale)
    for i in range(len(ws)):
        h = h @ quant_weight(ws[i], QUANT[i]) + bs[i]
        if i < len(ws) - 1:
            h = quant_act(np.maximum(h, 0), act_scales[i])
    acc = float((h.argmax(axis=1) == y[test]).mean())
    print(f"quantized test accuracy: {acc:.4f} on {len(test)} held-out digits")
    out = {f"w{i}": w.astype(np.float32) for i, w in enumerate(ws)}
    out.update({f"b{i}": b.astype(np.float32) for i, b in enumerate(bs)})
    np.savez_compressed(args.out, layers=len(ws), quant=np.array(QUANT), act_bits=ACT_BITS, in_scale=in_scale,
                        act_scales=np.array(act_scales), test_x=x[test].astype(np.float32),
                        test_y=y[test].astype(np.int64), qat_accuracy=acc, **out)


if __name__ == "__main__":
    main()

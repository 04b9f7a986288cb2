"""The search spans both architectures with one objective: a small model on a big board streams (dataflow), a
model whose weights cannot stay on chip, or that does not stream (attention, LayerNorm), runs on the engine;
--arch forces one; the design records the architecture and the report says why."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import add_dense, add_requant, small_graph
from vaqf.dse.design import Design
from vaqf.dse.search import Candidate, search, select
from vaqf.errors import VaqfError
from vaqf.hw.board import get_board
from vaqf.ir import BinaryType, Graph, IntType, TensorInfo
from vaqf.passes import optimize

ZCU102 = get_board("zcu102")


def _big_binary_mlp(rng: np.random.Generator) -> Graph:
    """197 tokens through 8192 x 4096 bipolar weights (33.6 Mbit, more than the ZCU102's BRAM18 hold) and back."""
    g = Graph("big")
    x = g.add_input("x", TensorInfo((1, 197, 4096), IntType(8), [0.05], 0))
    d0 = add_dense(g, x, np.where(rng.random((8192, 4096)) < 0.5, -1, 1), w_type=BinaryType(), name="up")
    q0 = add_requant(g, d0.outputs[0], 4.0, IntType(8), name="up_q")
    d1 = add_dense(g, q0.outputs[0], np.where(rng.random((16, 8192)) < 0.5, -1, 1), w_type=BinaryType(), name="down")
    g.outputs.append(d1.outputs[0])
    g.verify()
    return optimize(g).graph


def test_small_model_on_a_big_board_streams(rng):
    g = optimize(small_graph(rng)).graph
    assert search(g, ZCU102).arch == "engine"  # the default architecture
    d = search(g, ZCU102, arch="auto")
    assert d.arch == "dataflow"
    assert d.estimate["arch"] == "dataflow" and d.estimate["latency_cycles"] > d.estimate["cycles"]
    assert "dataflow chosen" in d.objective and "the engine" in d.objective
    forced = search(g, ZCU102, arch="engine")
    assert forced.arch == "engine" and d.estimate["fps"] > forced.estimate["fps"]
    assert forced.estimate["interval_cycles"] == forced.estimate["latency_cycles"] == forced.estimate["cycles"]
    # with a target both meet, the fewer LUTs win (the engine's fixed shell alone is 3,500 LUT)
    t = search(g, ZCU102, target_fps=0.5 * forced.estimate["fps"], arch="auto")
    assert t.arch == "dataflow" and t.estimate["resources"]["lut"] < forced.estimate["resources"]["lut"]
    back = Design.from_json(json.loads(json.dumps(d.to_json())))
    assert back.arch == "dataflow" and back.knobs == d.knobs


def test_weights_that_do_not_fit_on_chip_run_on_the_engine(rng):
    g = _big_binary_mlp(rng)
    cand = Candidate.build(g, ZCU102)
    flow = cand.dataflow(ZCU102)
    assert flow is not None and flow.fastest(0.8) is None  # it streams, but its weights exceed the BRAM18
    d, _ = select([cand], ZCU102, arch="auto")
    assert d.arch == "engine"
    assert "no dataflow pipeline fits" in d.objective or "dataflow pipeline" not in d.objective.split("against")[0]
    with pytest.raises(VaqfError, match="not reachable|no design fits"):
        select([cand], ZCU102, arch="dataflow")


def test_a_transformer_runs_on_the_engine(tmp_path):
    """A small ViT (the DeiT layout: LayerNorm, attention, GELU, residual adds) does not stream: the engine,
    and the report names why."""
    torch = pytest.importorskip("torch")
    from vaqf.api import load_model
    from vaqf.frontend.torch.deit import deit, export_onnx

    torch.manual_seed(0)
    model = deit("custom", img_size=16, patch_size=8, embed_dim=16, depth=1, block_heads=[1], block_mlp_dims=[16],
                 num_classes=4)
    path = tmp_path / "vit.onnx"
    export_onnx(model, str(path))
    calib = np.random.default_rng(1).normal(size=(4, 3, 16, 16)).astype(np.float32)
    g = load_model(path, "binary", 8, calib)
    cand = Candidate.build(g, ZCU102)
    assert cand.dataflow(ZCU102) is None and cand.dataflow_reason.startswith("/patch_embed")  # names the node
    d, _ = select([cand], ZCU102, arch="auto")
    assert d.arch == "engine" and "no dataflow pipeline" in d.objective
    with pytest.raises(VaqfError, match="--arch dataflow"):
        select([cand], ZCU102, arch="dataflow")


def test_cli_arch_dataflow_writes_a_pipeline_project(tmp_path, capsys):
    from vaqf.cli import main

    out = tmp_path / "mlp"
    assert main(["compile", "--example", "mlp", "-o", str(out), "--arch", "auto", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["design"]["arch"] == "dataflow"
    assert summary["estimate"]["latency_cycles"] > summary["estimate"]["cycles"]
    assert (out / "src" / "vaqf" / "dataflow" / "mvau.h").is_file() and list((out / "src" / "params").glob("*.h"))
    io = json.loads((out / "data" / "io.json").read_text())
    assert io["arch"] == "dataflow" and sorted(io["inputs"][0]["stream_order"]) == list(range(64))
    report = (out / "report.md").read_text()
    assert "streaming dataflow pipeline" in report and "Dataflow chosen" in report
    assert Design.load(out / "design.json").arch == "dataflow"

"""passes.sparsity: constant channels folded downstream, unused im2col channels dropped, dense blocks found.

Every case checks exactness: the graph after the passes computes the same integers as before them, on
random integers over the whole input range."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import ONNX_IR_VERSION, OPSET
from vaqf.api import load_model
from vaqf.backend.emit import random_int_inputs
from vaqf.hw.board import get_board
from vaqf.ops.blocks import group_rows
from vaqf.ops.dense import block_list, lane_slots
from vaqf.passes import FindDenseBlocks, FoldConstantChannels, PassManager, default_pipeline, optimize
from vaqf.passes.sparsity import densified, has_sparsity
from vaqf.sim.simulator import Simulator
from vaqf.units import get_unit

C = 8


def cnn(rng: np.random.Generator, zero: dict[str, list[int]], bias: dict[str, float] | None = None,
        blocks3: bool = False, size: int = 8) -> onnx.ModelProto:
    """x[1,1,size,size] -> c1 -> relu -> c2 -> relu -> add(c1, c2) -> maxpool 2 -> c3 -> relu -> global avg pool
    -> flatten -> fc. ``zero[conv]`` lists output channels whose weights are zeroed, with bias ``bias[conv]``
    (default 0); ``blocks3`` makes c3 group-sparse (two groups of 4 output channels, each reading 4 input
    channels: 0, 2, 5, 6 and 1, 3, 4, 7)."""
    bias = bias or {}
    shapes = {"c1": (C, 1, 3, 3), "c2": (C, C, 3, 3), "c3": (C, C, 3, 3)}
    inits, nodes = [], []
    for name, shp in shapes.items():
        w = rng.normal(0, 0.4, size=shp).astype(np.float32)
        b = rng.normal(0, 0.1, size=shp[0]).astype(np.float32)
        for ch in zero.get(name, []):
            w[ch] = 0
            b[ch] = bias.get(name, 0.0)
        if name == "c3" and blocks3:  # interleaved groups: the gathered columns are irregular
            group_a = [0, 2, 5, 6]
            group_b = [1, 3, 4, 7]
            w[np.ix_(range(C // 2), group_b)] = 0
            w[np.ix_(range(C // 2, C), group_a)] = 0
        inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
    inits += [numpy_helper.from_array(rng.normal(0, 0.5, size=(4, C)).astype(np.float32), "fc_w"),
              numpy_helper.from_array(np.zeros(4, np.float32), "fc_b")]
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes += [helper.make_node("Conv", ["x", "c1_w", "c1_b"], ["c1"], name="c1", **conv),
              helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
              helper.make_node("Conv", ["r1", "c2_w", "c2_b"], ["c2"], name="c2", **conv),
              helper.make_node("Relu", ["c2"], ["r2"], name="r2"),
              helper.make_node("Add", ["r1", "r2"], ["s"], name="add"),
              helper.make_node("MaxPool", ["s"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Conv", ["p", "c3_w", "c3_b"], ["c3"], name="c3", **conv),
              helper.make_node("Relu", ["c3"], ["r3"], name="r3"),
              helper.make_node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flat"),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 1, size, size])
    graph = helper.make_graph(nodes, "cnn", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = ONNX_IR_VERSION
    return model


def _pipeline_without_sparsity():
    return [p for p in default_pipeline() if not isinstance(p, (FoldConstantChannels, FindDenseBlocks))]


def compiled(model: onnx.ModelProto, sparsity: bool = True):
    """The imported graph after the default pipeline, with or without the sparsity passes."""
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    calib = np.random.default_rng(3).normal(size=(32, 1, size, size)).astype(np.float32)
    g = load_model(model, weights="int8", act_bits=8, calib=calib, optimize=False)
    passes = default_pipeline() if sparsity else _pipeline_without_sparsity()
    return PassManager(passes, max_iterations=4)(g).graph


def assert_same(before, after, seed: int = 5) -> None:
    ints = random_int_inputs(before, 300, seed=seed)
    a, b = Simulator(before).run_int(ints), Simulator(after).run_int(ints)
    for x, y in zip(a.outputs, b.outputs, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.dequantized, b.dequantized, strict=True):
        np.testing.assert_array_equal(x, y)


def dense_of(graph, name):
    return next(n for n in graph.nodes if n.op == "dense" and n.name == name)


def im2col_of(graph, name):
    return next(n for n in graph.nodes if n.op == "im2col" and n.name.startswith(name))


def test_pruned_channels_through_add_and_pool_drop_im2col_channels(rng):
    """c1 and c2 lose channels 0..3 (zero weights and bias): the residual add's channels 0..3 are the zero
    point, max pooling keeps them, so c3's im2col sweeps 4 channels and its GEMM has K = 4 * 9."""
    model = cnn(rng, {"c1": [0, 1, 2, 3], "c2": [0, 1, 2, 3]})
    before, after = compiled(model, False), compiled(model)
    assert dense_of(before, "c3").attrs["weight"].shape == (C, C * 9)
    assert dense_of(after, "c3").attrs["weight"].shape == (C, 4 * 9)
    assert im2col_of(after, "c3").attrs["channels"].tolist() == [4, 5, 6, 7]
    assert dense_of(after, "c3").attrs["k_full"] == C * 9
    # c2 reads c1's channels: the pruned ones hold the zero point everywhere, padding included
    assert dense_of(after, "c2").attrs["weight"].shape == (C, 4 * 9)
    assert_same(before, after)
    assert optimize(after).modified is False


def test_add_with_one_constant_side_keeps_the_channel(rng):
    """Only c2's channels are pruned: the add's channels still carry c1, so nothing downstream changes."""
    model = cnn(rng, {"c2": [0, 1, 2, 3]})
    before, after = compiled(model, False), compiled(model)
    assert dense_of(after, "c3").attrs["weight"].shape == (C, C * 9)
    assert im2col_of(after, "c3").attrs.get("channels") is None
    np.testing.assert_array_equal(dense_of(after, "c3").attrs["bias"], dense_of(before, "c3").attrs["bias"])
    assert_same(before, after)


def test_nonzero_constant_channel_is_folded_only_where_uniform(rng):
    """Pruned channels with a positive bias are a non-zero constant after ReLU. c3 reads them through
    zero padding (the border rows see the zero point, the others the constant): not one value per column,
    so c3 keeps them. c3's own pruned rows (bias 0.3) reach the classifier through global pooling: one
    value per column there, folded into the classifier's bias."""
    model = cnn(rng, {"c1": [0, 1], "c2": [0, 1], "c3": [0, 1, 2]}, bias={"c1": 0.2, "c2": 0.3, "c3": 0.3})
    before, after = compiled(model, False), compiled(model)
    assert dense_of(after, "c3").attrs["weight"].shape == (C, C * 9)
    assert np.any(dense_of(after, "c3").attrs["weight"][3:, :18] != 0)  # channels 0, 1 still read
    fc_before, fc_after = dense_of(before, "fc"), dense_of(after, "fc")
    assert np.all(fc_after.attrs["weight"][:, :3] == 0) and np.any(fc_before.attrs["weight"][:, :3] != 0)
    assert not np.array_equal(fc_after.attrs["bias"], fc_before.attrs["bias"])
    assert_same(before, after)


def test_known_elements_follow_the_reference(rng):
    """The analysis claims only what holds: every element it calls known equals that value on any input."""
    from vaqf.passes.sparsity import known_elements

    model = cnn(rng, {"c1": [0, 1, 2, 3], "c2": [0, 1, 2, 3], "c3": [5]}, bias={"c3": 0.3})
    g = compiled(model, False)
    known = known_elements(g)
    assert known, "pruned channels are known constants"
    res = Simulator(g).run_int(random_int_inputs(g, 50, seed=9), trace=True)
    for name, k in known.items():
        got = np.asarray(res.trace[name])
        want = np.broadcast_to(np.where(k.mask, k.values, 0), got.shape)
        np.testing.assert_array_equal(np.where(k.mask, got, 0), want, err_msg=name)


def test_group_sparse_layer_gets_blocks(rng):
    """c3's two groups become dense blocks, and with PE 4, SIMD 8 the GEMM unit runs them over gathered
    columns (hls/vaqf/dense.h, the block form), faster than its row-skipping form."""
    model = cnn(rng, {}, blocks3=True, size=16)
    before, after = compiled(model, False), compiled(model)
    c3 = dense_of(after, "c3")
    groups = group_rows(c3.attrs["weight"])
    assert groups is not None and len(groups) == 2
    blocks = block_list(c3)
    assert len(blocks) == 2
    assert sorted(r.tolist() for r, _ in blocks) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    for r, c in blocks:
        assert c.size == 4 * 9
        assert np.mean(c3.attrs["weight"][np.ix_(r, c)] != 0) > 0.9  # int8 rounds a few small weights to 0
    assert get_unit("gemm").mode(c3, {"pe": 4, "simd": 8, "epi": 1}, get_board("zcu102")) == "blocks"
    assert_same(before, after)
    assert has_sparsity(after)
    d = densified(after)
    assert dense_of(d, "c3").attrs.get("blocks") is None
    assert np.all(dense_of(d, "c3").attrs["weight"] != 0)
    assert FindDenseBlocks()(after).modified is False


def test_group_rows_exact_and_bounded_waste(rng):
    w = np.zeros((12, 30), dtype=np.int64)
    w[0:5, 0:10] = rng.integers(1, 5, size=(5, 10))
    w[5:10, 10:30] = -2
    w[10, 3:11] = 1  # close to the first group's columns: merged if the waste stays under 25%
    groups = group_rows(w)
    covered = np.zeros(w.shape, dtype=bool)
    for r, c in groups:
        covered[np.ix_(r, c)] = True
    assert not np.any((w != 0) & ~covered)
    assert sorted(np.concatenate([r for r, _ in groups]).tolist()) == list(range(11))
    assert len(groups) == 2
    assert group_rows(np.zeros((3, 4))) is None


@pytest.mark.parametrize("simd", [1, 4, 8, 16])
def test_lane_slots_one_column_per_bank_and_step(simd, rng):
    cols = np.sort(rng.choice(100, size=37, replace=False))
    slots = lane_slots(cols, simd).reshape(-1, simd)
    used = slots[slots >= 0]
    assert sorted(used.tolist()) == cols.tolist()
    for s in range(simd):
        assert np.all((slots[:, s] < 0) | (slots[:, s] % simd == s))
    assert slots.shape[0] == max(np.bincount(cols % simd))

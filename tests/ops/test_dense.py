"""dense and the GEMM unit (hls/vaqf/dense.h): the op's constructor, reference and fast path; one-dense graphs
at several lane counts, C-simulated bit-exact against the simulator and the reference, with the kernel's cycle
counters equal to the cost model (tests.helpers.assert_cycles_match), the cost on known layers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.helpers import add_dense, assert_cycles_match
from tests.ops.opgraph import assert_fast_equals_reference
from vaqf.backend.emit import write_project
from vaqf.dse.search import design_for_knobs
from vaqf.errors import VaqfError
from vaqf.hw.board import Board, get_board
from vaqf.hw.cost import dsp48e2_per_product
from vaqf.ir import BinaryType, Graph, IntType, TensorInfo
from vaqf.ops import get_spec
from vaqf.ops.common import requant_params
from vaqf.ops.dense import Dense, block_list, dense_attrs, finalize_dense_attrs, reference, requant_out_info
from vaqf.units import get_unit, instance_of
from vaqf.units.gemm import dense_stream, folded_bias, layer_cycles


def dense_graph(rng: np.random.Generator, rows: int, k: int, n: int, w_bits: int | None = 4,
                requant: bool = True, relu: bool = True, zp_in: int = 0, signed_in: bool = False,
                dead_rows: int = 0, rounding: str = "HALF_EVEN") -> Graph:
    """x [1, rows, k] -> dense (n outputs) with relu and requantization fused, as passes.fuse leaves it.
    ``w_bits`` None: bipolar weights. ``dead_rows``: that many output rows get all-zero weights."""
    g = Graph("single_dense")
    qt = IntType(8, signed=signed_in)
    x = g.add_input("x", TensorInfo((1, rows, k), qt, np.array([0.05]), zp_in))
    if w_bits is None:
        w = np.where(rng.random((n, k)) < 0.5, -1, 1)
        w_type = BinaryType()
    else:
        top = 2 ** (w_bits - 1) - 1
        w = rng.integers(-top, top + 1, size=(n, k))
        w_type = IntType(w_bits, True, narrow=True)
    if dead_rows:
        w[rng.choice(n, dead_rows, replace=False)] = 0
    node = add_dense(g, x, w, rng.integers(-400, 400, size=n), w_type, rng.uniform(0.01, 0.05, size=n))
    node.attrs["relu"] = relu
    if requant:
        acc = node.outputs[0].info
        rq = requant_params(acc.scale, 0.25, n, IntType(8, signed=False), 3, rounding, node.name)
        node.attrs["requant"] = rq
        node.outputs[0].info = requant_out_info(acc.shape, rq)
    g.outputs = [node.outputs[0]]
    g.verify()
    return g


def board_with_words(word_bits: int) -> Board:
    """A board whose DDR words have ``word_bits`` bits: the PYNQ-Z2 at 64 (its real 64-bit HP ports), the
    ZCU102 at 128, and the ZCU102 with 256-bit ports (a wider AXI bundle) for words past the constants."""
    if word_bits == 64:
        return get_board("pynqz2")
    return dataclasses.replace(get_board("zcu102"), axi_bits=word_bits)


def build(graph: Graph, folder, pe: int, lanes: int, epi: int = 1, word_bits: int = 128):
    board = board_with_words(word_bits)
    knobs = {instance_of(n): {"pe": pe, "simd": lanes, "epi": epi} for n in graph.nodes}
    design = design_for_knobs(graph, board, knobs)
    write_project(graph, design, folder, force=True)
    return folder


CASES = [  # (rows, k, n, w_bits, pe, lanes, epi, options)
    (3, 12, 10, 4, 4, 1, 1, {}),
    (3, 12, 10, 4, 4, 4, 2, {"zp_in": 7}),
    (2, 40, 24, 8, 8, 16, 4, {"signed_in": True, "zp_in": -3}),
    (2, 20, 6, 8, 2, 32, 2, {}),                             # L larger than both rows
    (2, 20, 9, 4, 4, 4, 4, {"requant": False}),              # the accumulator out
    (3, 33, 17, None, 4, 8, 4, {"zp_in": 100}),              # bipolar, partial words and blocks
    (2, 16, 12, 8, 2, 4, 2, {"dead_rows": 7}),               # pruned rows: the scatter form
    (2, 24, 8, 2, 1, 16, 1, {"rounding": "UP", "relu": False}),
]


@pytest.mark.cxx
@pytest.mark.parametrize("case", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_dense_csim_bit_exact_and_cycles(rng, tmp_path, case):
    rows, k, n, w_bits, pe, lanes, epi, opts = case
    g = dense_graph(rng, rows, k, n, w_bits, **opts)
    res = assert_cycles_match(build(g, tmp_path / "p", pe, lanes, epi), tol=0.0, inputs=3)
    assert res.bit_exact == 3


#: DDR words narrower and wider than a slot's 128 constant bits: 64-bit words take two beats per constant
#: (in the block loads and in the dead-row loop), 256-bit words one, the lanes past the four zero
WORD_CASES = [  # (word_bits, case index in CASES)
    (64, 0), (64, 1), (64, 2), (64, 3), (64, 5), (64, 6), (64, 7),
    (256, 1), (256, 2), (256, 6),
]


@pytest.mark.cxx
@pytest.mark.parametrize("word_bits,case", WORD_CASES, ids=[f"w{w}-c{c}" for w, c in WORD_CASES])
def test_dense_csim_word_widths(rng, tmp_path, word_bits, case):
    rows, k, n, w_bits, pe, lanes, epi, opts = CASES[case]
    g = dense_graph(rng, rows, k, n, w_bits, **opts)
    res = assert_cycles_match(build(g, tmp_path / "p", pe, lanes, epi, word_bits), tol=0.0, inputs=3)
    assert res.bit_exact == 3


def test_narrow_words_count_the_constant_beats(rng):
    """PE 2, 7 pruned rows of 12, rows 2, K 16 at SIMD 4 (steps 4), 8-bit weights (a 32-bit weight word):
    at 64-bit words each slot's constants are two words, each pruned row's constant two beats."""
    node = dense_graph(rng, 2, 16, 12, 8, dead_rows=7).nodes[0]
    c128, w128 = layer_cycles(node, 2, 4, 2, 128, "skip")
    c64, w64 = layer_cycles(node, 2, 4, 2, 64, "skip")
    blocks = 3  # 5 live rows over PE 2
    # per block 2 constant words (128) or 4 (64); 2 x 4 weight words of 32 bits in 2 or 4 DDR words
    assert w128 == blocks * (2 + 2) + 7 and w64 == blocks * (4 + 4) + 2 * 7
    # the loads read one more beat per slot: 2 per block; the dead-row loop one more per pruned row
    span = max(4, 2)
    load128, load64 = 2 + 2 * 4, 4 + 2 * 4
    assert c128 == 64 + load128 + 3 + 2 * (max(3 * span, load128) + 13) + 3 * span + 13 + 7 * 2 + 8
    assert c64 == 64 + load64 + 3 + 2 * (max(3 * span, load64) + 13) + 3 * span + 13 + 7 * 3 + 8
    stream = dense_stream(node, 2, 4, 64, "skip")
    assert stream.size * 32 // 64 == w64


def test_skip_form_is_chosen_when_it_pays(rng):
    g = dense_graph(rng, 2, 16, 12, 8, dead_rows=7)
    node = g.nodes[0]
    board = get_board("zcu102")
    gemm = get_unit("gemm")
    assert gemm.mode(node, {"pe": 2, "simd": 4, "epi": 2}, board) == "skip"
    assert gemm.mode(dense_graph(rng, 2, 16, 12, 8).nodes[0], {"pe": 2, "simd": 4, "epi": 2}, board) == "all"


def test_cycles_formula_on_a_known_layer(rng):
    """rows 3, K 33, N 17, PE 4, SIMD 8, EPI 4, binary: steps 5, span max(5, 1) = 5, compute (3 + 1) x 5 = 20,
    load 4 + 4 x 5 = 24 (a 8-bit weight word, 16 per DDR word), 5 blocks: 64 + (24 + 3) + 4 x (24 + 14) + (20 + 14)."""
    node = dense_graph(rng, 3, 33, 17, None).nodes[0]
    cycles, words = layer_cycles(node, 4, 8, 4, 128, "all")
    assert cycles == 64 + 27 + 4 * 38 + 34
    assert words == 5 * (4 + 2)  # per block 4 constant words, 4 x 5 weight words of 8 bits in 2 DDR words


def test_folded_bias_matches_the_zero_point(rng):
    node = dense_graph(rng, 2, 12, 5, 4, zp_in=9).nodes[0]
    w = node.attrs["weight"].astype(np.int64)
    x = rng.integers(0, 256, size=12)
    assert np.array_equal(w @ (x - 9) + node.attrs["bias"], w @ x + folded_bias(node))


def test_knobs_offer_every_lane_count(rng):
    from vaqf.hw.layout import LANE_CHOICES

    node = dense_graph(rng, 2, 12, 5, 4).nodes[0]
    assert get_unit("gemm").knobs(node)["simd"] == list(LANE_CHOICES)


def test_cost_monotone_in_pe(rng):
    node = dense_graph(rng, 8, 64, 64, 8).nodes[0]
    board = get_board("zcu102")
    gemm = get_unit("gemm")
    costs = [gemm.cost(node, {"pe": pe, "simd": 16, "epi": 1}, board) for pe in (1, 2, 4, 8)]
    assert all(a.cycles > b.cycles for a, b in zip(costs, costs[1:], strict=False))
    assert all(a.dsp < b.dsp for a, b in zip(costs, costs[1:], strict=False))
    # one DSP per 8 x 8-bit product (no packing), and the requantizer's acc x 25-bit multiply
    assert costs[0].dsp == 16 + dsp48e2_per_product(int(node.attrs["acc_bits"]), 25)


def block_graph(rng: np.random.Generator, rows: int = 3, k: int = 40, n: int = 12) -> Graph:
    """A group-sparse dense: output rows in two interleaved groups, each reading its own irregular column set
    (columns spread over the lanes unevenly), one all-zero row; blocks recorded by find_blocks."""
    g = dense_graph(rng, rows, k, n, 8, zp_in=5)
    node = g.nodes[0]
    w = np.zeros((n, k), dtype=np.int64)
    cols_a = np.array([0, 3, 4, 5, 9, 17, 21, 22, 30, 31, 38])
    cols_b = np.array([1, 2, 7, 8, 16, 24, 25, 26, 32, 33, 39, 12])
    top = 127
    for r in range(n - 1):
        cols = cols_a if r % 2 == 0 else cols_b
        w[r, cols] = rng.integers(1, top + 1, size=cols.size) * rng.choice([-1, 1], size=cols.size)
    node.attrs["weight"] = w
    finalize_dense_attrs(node, node.inputs[0].info)
    get_spec("dense").find_blocks(node, get_unit("gemm").blocks_pay_off)
    g.verify()
    return g


#: (pe, lanes, word bits, the form the cost model picks): at L = 64 > K the whole row is one word, so
#: gathering saves no step and the plain form wins
BLOCK_CASES = [(4, 1, 128, "blocks"), (4, 4, 128, "blocks"), (2, 16, 128, "blocks"), (4, 64, 128, "all"),
               (4, 4, 64, "blocks")]


@pytest.mark.cxx
@pytest.mark.parametrize("pe,lanes,word_bits,form", BLOCK_CASES,
                         ids=[f"pe{p}-l{s}-w{w}" for p, s, w, _ in BLOCK_CASES])
def test_block_form_csim_bit_exact_and_cycles(rng, tmp_path, pe, lanes, word_bits, form):
    g = block_graph(rng)
    node = g.nodes[0]
    assert len(block_list(node)) == 2
    assert get_unit("gemm").mode(node, {"pe": pe, "simd": lanes, "epi": 1}, board_with_words(word_bits)) == form
    folder = build(g, tmp_path / "p", pe, lanes, 1, word_bits)
    blocks = 2 if form == "blocks" else 0
    assert f"/*n_blocks*/ {blocks}" in "".join(p.read_text() for p in (folder / "src").glob("*.*"))
    res = assert_cycles_match(folder, tol=0.0, inputs=3)
    assert res.bit_exact == 3


# ---- the op: constructor, reference, fast path, derived attributes ------------------------------------

def sample() -> Graph:
    return dense_graph(np.random.default_rng(0), 3, 12, 10)


def test_make_derives_and_types_the_output() -> None:
    g = Graph("made")
    x = g.add_input("x", TensorInfo((1, 4, 3), IntType(8, False), np.array([0.5]), 10))
    node = Dense.make(g, [x], dense_attrs(np.array([[1, -2, 3], [0, 0, 1]]), IntType(4, True, narrow=True),
                                          np.array([0.25, 0.5]), np.array([7, -7])), name="fc")
    # |w| sums 6 and 1 times max|x - 10| = 245, plus |bias| 7: 1477, within a 12-bit signed accumulator (2047)
    assert node.attrs["zp_in"] == 10 and node.attrs["rows"] == 4 and node.attrs["acc_bound"] == 2047
    assert node.attrs["acc_bits"] == 12 and node.attrs["in_bits"] == 9
    out = node.outputs[0].info
    assert out.shape == (1, 4, 2) and out.qtype == IntType(12, True) and list(out.scale) == [0.125, 0.25]


def test_reference_by_hand() -> None:
    x = np.array([[3, 5]])                         # zero point 1: x - zp = [2, 4]
    w = np.array([[1, -1], [2, 3]])
    np.testing.assert_array_equal(reference(x, w, np.array([10, 0]), 1), [[8, 16]])
    np.testing.assert_array_equal(reference(x, w, np.array([-10, 0]), 1, relu=True), [[0, 16]])
    rq = {"mantissa": np.array([1, 3]), "shift": np.array([2, 3]), "zero_point": 2, "qtype": IntType(4, False),
          "scale": np.array([1.0]), "rounding": "HALF_EVEN"}
    # [8 / 4 = 2, 16 * 3 / 8 = 6] + 2; then saturation at 15 for a larger input
    np.testing.assert_array_equal(reference(x, w, np.array([10, 0]), 1, requant=rq), [[4, 8]])
    np.testing.assert_array_equal(reference(np.array([[1, 50]]), w, np.array([0, 0]), 1, requant=rq), [[0, 15]])


@pytest.mark.parametrize("case", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_fast_path_equals_reference(rng, case) -> None:
    rows, k, n, w_bits, _, _, _, opts = case
    assert_fast_equals_reference(dense_graph(rng, rows, k, n, w_bits, **opts), rng, count=30)


@pytest.mark.parametrize("signed_in", [False, True])
def test_fast_path_equals_reference_on_large_batches(rng, signed_in) -> None:
    """Batches past the integer kernel's size: the float BLAS path and MLAS's integer GEMM."""
    g = dense_graph(rng, 4, 64, 48, 8, signed_in=signed_in, zp_in=-3 if signed_in else 9)
    assert_fast_equals_reference(g, rng, count=300)


def test_verify_catches_a_stale_accumulator() -> None:
    """A pass that retypes the input without re-deriving the cached attributes fails verify, naming them."""
    from vaqf.errors import IRError

    g = sample()
    x = g.inputs[0]
    x.info = TensorInfo(x.info.shape, IntType(8, signed=True), x.info.scale, 0)
    with pytest.raises(IRError, match="node dense \\(dense\\): attribute 'in_bits' is 9 but its input gives 8"):
        g.verify()
    finalize_dense_attrs(g.nodes[0], x.info)
    g.nodes[0].attrs["acc_bits"] = 40
    with pytest.raises(IRError, match="attribute 'acc_bits' is 40 but its input gives"):
        g.verify()


def test_make_leaves_the_graph_as_it_was_when_a_check_fails() -> None:
    g = Graph("made")
    x = g.add_input("x", TensorInfo((1, 4, 3), IntType(8, False), np.array([0.5]), 10))
    with pytest.raises(VaqfError, match="fc: input has 3 features, weights expect 2"):
        Dense.make(g, [x], dense_attrs(np.ones((2, 2)), IntType(4, True, narrow=True), 0.25), name="fc")
    assert g.nodes == [] and [v.name for v in g.values()] == ["x"]

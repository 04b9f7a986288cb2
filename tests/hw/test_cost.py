"""The dense unit's cost model: cross-checked against FINN-R's MVAU LUT estimate, and monotone in PE/SIMD.

FINN-R reference (FACTS.md section 3; FINN's ``MatrixVectorActivation.lut_estimation``, from the paper
"FINN-R", Blott et al. 2018):

    LUT = 300 + 1.1 * PE * (mult + adder + acc + thr + comp) + c2
    adder = (W + A) * (2 * SIMD - 1)
    mult  = SIMD * (2 * ceil((W + A) / 6) - 1) * (W + A)   for LUT multipliers, else 0

The values we use for the free terms, and why:
- mult = 0. Binary weights: the product is a sign selection, no multiplier (the brief's XNOR-popcount
  case). Integer weights: our unit puts the products on DSP48E2 slices, which is FINN's
  ``resType == "dsp"`` branch, where FINN also sets mult_luts = 0.
- acc: FINN's own minimum accumulator width, ``alpha = log2(MW) + W + A - 1 - signed(A)``,
  ``acc = min(32, ceil(alpha + log2(1 + 2**-alpha) + 1))`` (arXiv:2301.13376, as in FINN's source).
- thr = comp = 0: FINN prices thresholding activations there; our unit requantizes with a
  multiply-shift epilogue instead, which is a separate term of our estimate (``epilogue``) and is left out
  of the comparison, as is FINN's ``noActivation`` MVAU.
- c2 = 0: FINN's c2 prices weights kept in LUTRAM; our unit streams its weights and holds one row per PE,
  priced separately (``weight_lutram`` / BRAM18) and also left out.

The sweep covers every PE and SIMD in 1..64 that the unit offers (``knobs``): integer units whose
products pack two to a DSP48E2 start at PE = 2 (PE = 1 would need as many DSP slices at half the speed).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from vaqf.hw.board import get_board
from vaqf.hw.cost import (
    Cost,
    adder_tree_luts,
    bram18_for,
    dsp48e2_per_product,
    memory_cost,
    mux_luts,
    signed_bits_for_range,
)
from vaqf.hw.layout import LANE_CHOICES
from vaqf.ir import BinaryType, Graph, IntType, Node, TensorInfo
from vaqf.ops import get_spec
from vaqf.ops.dense import finalize_dense_attrs
from vaqf.units import get_unit
from vaqf.units.gemm import MANTISSA_BITS, PE_CHOICES, dense_resources, dsp_packing, weight_container

TOLERANCE = 0.25
SWEEP = (1, 2, 4, 8, 16, 32, 64)


def finn_r_lut(pe: int, simd: int, w: int, a: int, a_signed: bool, mw: int) -> float:
    mult = 0
    adder = (w + a) * (2 * simd - 1)
    alpha = math.log2(mw) + w + a - 1 - int(a_signed)
    acc = min(32, math.ceil(alpha + math.log2(1 + 2**-alpha) + 1))
    thr = comp = c2 = 0
    return 300 + 1.1 * pe * (mult + adder + acc + thr + comp) + c2


def dense_node(k: int, n: int, w_bits: int | None, a_bits: int, a_signed: bool, rows: int = 1,
               worst_case: bool = True, rng: np.random.Generator | None = None) -> Node:
    """A dense layer [rows, k] -> [rows, n]; ``w_bits=None`` for bipolar weights.

    ``worst_case`` fills the weights with the most negative value, so the accumulator has the width of
    the worst case, which is what FINN's acc bound assumes.
    """
    g = Graph("one_dense")
    x = g.add_input("x", TensorInfo((rows, k), IntType(a_bits, a_signed), [0.05], 0))
    if w_bits is None:
        w_type = BinaryType()
        weight = -np.ones((n, k)) if worst_case else np.where(rng.random((n, k)) < 0.5, -1, 1)
    else:
        w_type = IntType(w_bits, True)
        weight = (np.full((n, k), w_type.min) if worst_case
                  else rng.integers(w_type.min, w_type.max + 1, size=(n, k)))
    attrs = {"weight": weight.astype(np.int8), "w_type": w_type, "w_scale": np.full(n, 0.01),
             "bias": np.zeros(n, np.int64), "relu": False, "requant": None}
    out = g.new_value("y", TensorInfo((rows, n), IntType(32)))
    node = g.add_node("dense", [x], [out], attrs, name="fc")
    finalize_dense_attrs(node, x.info)
    out.info = get_spec("dense").infer(node, [x.info])[0]
    g.outputs.append(out)
    return node


# ---- FINN-R cross-check -------------------------------------------------------------------------

#: bipolar weights only: the integer units put every product on a DSP48E2 (no LUT multipliers, no packing),
#: which FINN-R's LUT model of LUT-mapped products does not describe
CASES = [(None, a, s) for a in range(2, 9) for s in (False, True)]


@pytest.mark.parametrize(("w_bits", "a_bits", "a_signed"), CASES,
                         ids=[f"{'bin' if w is None else f'w{w}'}-{'s' if s else 'u'}a{a}" for w, a, s in CASES])
def test_mvu_lut_within_25_percent_of_finn_r(w_bits: int | None, a_bits: int, a_signed: bool) -> None:
    k, n = 256, 64
    node = dense_node(k, n, w_bits, a_bits, a_signed)
    knobs = get_unit("gemm").knobs(node)
    worst = []
    for pe in [p for p in knobs["pe"] if p in SWEEP]:
        for simd in [s for s in knobs["simd"] if s in SWEEP]:
            ours = dense_resources(node, pe, simd).mvu_lut
            ref = finn_r_lut(pe, simd, 1 if w_bits is None else w_bits, a_bits, a_signed, k)
            worst.append((abs(ours - ref) / ref, pe, simd, ours, round(ref)))
    err, pe, simd, ours, ref = max(worst)
    assert err <= TOLERANCE, f"PE={pe} SIMD={simd}: ours {ours} LUT, FINN-R {ref} LUT ({err:.1%} apart)"


def test_breakdown_adds_up_to_the_cost() -> None:
    board = get_board("zcu102")
    node = dense_node(768, 768, None, 8, False, rows=197)
    res = dense_resources(node, 16, 64)
    cost = get_unit("gemm").cost(node, {"pe": 16, "simd": 64}, board)
    assert cost.lut == res.lut == sum(res.lut_terms.values())
    assert res.mvu_lut < res.lut  # the epilogue and weight buffer come on top
    assert (cost.ff, cost.dsp, cost.bram18) == (res.ff, res.dsp, res.bram18)
    assert all(v >= 0 for v in res.lut_terms.values())


# ---- DSP48E2: one slice per product ---------------------------------------------------------------

@pytest.mark.parametrize(("w_bits", "a_bits", "a_signed"), [
    (None, 8, False), (4, 8, False), (8, 8, True), (8, 8, False), (8, 9, True), (16, 8, True), (16, 20, True),
])
def test_one_dsp_per_product(w_bits: int | None, a_bits: int, a_signed: bool) -> None:
    """No WP486 packing is written in the kernel, so none is charged (HLS-REVIEW C2): each product takes
    dsp48e2_per_product(W, activation bits) slices, the activation as its own integer (zero point in the
    bias); bipolar weights take none."""
    node = dense_node(64, 16, w_bits, a_bits, a_signed)
    assert dsp_packing(node) == (0 if w_bits is None else 1)
    board = get_board("zcu102")
    requant = dsp48e2_per_product(int(node.attrs["acc_bits"]), MANTISSA_BITS + 1)
    a_operand = signed_bits_for_range(*((-(2 ** (a_bits - 1)), 2 ** (a_bits - 1) - 1) if a_signed
                                        else (0, 2**a_bits - 1)))
    for pe in (1, 2, 3, 8):
        for simd in (1, 4):
            kn = {"pe": pe, "simd": simd}
            # the pruned-row form has the dead-row loop's own requantizer
            requantizers = 2 if get_unit("gemm").mode(node, kn, board) == "skip" else 1
            products = get_unit("gemm").cost(node, kn, board).dsp - requantizers * requant
            per = 0 if w_bits is None else dsp48e2_per_product(w_bits, a_operand)
            assert products == pe * simd * per


# ---- monotone in parallelism --------------------------------------------------------------------

SHAPES = [(64, 64, 1), (768, 768, 197), (768, 2304, 197), (3072, 768, 197), (32, 16, 1)]


@pytest.mark.parametrize("w_bits", [None, 4, 8])
@pytest.mark.parametrize(("k", "n", "rows"), SHAPES)
def test_cost_monotone_in_pe_and_simd(k: int, n: int, rows: int, w_bits: int | None) -> None:
    """More parallelism never costs more cycles nor fewer LUTs.

    Three exact exceptions, all real: a PE that does not divide N pads its last block (so only PEs that
    divide N are compared); once a row takes PE cycles anyway (ceil(K/SIMD) <= PE), a wider SIMD only
    deepens the adder tree, one pipeline stage per block and doubling; and double buffering hides every
    weight load but the first block's, which grows with PE (PE rows of weights plus 3 constants each).
    """
    board = get_board("zcu102")
    node = dense_node(k, n, w_bits, 8, False, rows=rows, worst_case=False, rng=np.random.default_rng(0))
    spec = get_unit("gemm")
    knobs = spec.knobs(node)
    pes = [p for p in knobs["pe"] if n % p == 0]
    table = {(p, s): spec.cost(node, {"pe": p, "simd": s}, board) for p in pes for s in knobs["simd"]}
    for p in pes:
        for a, b in itertools.pairwise(knobs["simd"]):
            slack = n // p + 1  # the adder tree's extra stage, once per block loop (gemm_depth)
            if b <= k:  # past K the idle lanes' zero weights stream from DDR too (one SIMD x W word per step)
                assert table[p, b].cycles <= table[p, a].cycles + slack, f"cycles up from SIMD {a} to {b} at PE {p}"
            assert table[p, b].lut >= table[p, a].lut, f"LUT down from SIMD {a} to {b} at PE {p}"
    sw = max(1, weight_container(node) * 1)
    for s in knobs["simd"]:
        beats = max(1, s * sw // board.axi_bits)
        for a, b in itertools.pairwise(pes):
            exposed = (b - a) * (1 + math.ceil(k / s) * beats)  # the larger first block's extra load items
            if rows > 1:  # one row is load-bound: PE x (1 + steps) load cycles per block against a 2-row compute
                assert table[b, s].cycles <= table[a, s].cycles + exposed, f"cycles up from PE {a} to {b} at SIMD {s}"
            assert table[b, s].lut >= table[a, s].lut, f"LUT down from PE {a} to {b} at SIMD {s}"


def test_knob_choices_are_powers_of_two_within_the_layer() -> None:
    spec = get_unit("gemm")
    binary = spec.knobs(dense_node(100, 10, None, 8, False))
    assert binary["pe"] == [p for p in PE_CHOICES if p <= 10]
    assert binary["simd"] == list(LANE_CHOICES)  # the design's lane count, whatever the layer's K
    assert spec.knobs(dense_node(100, 10, 8, 8, False))["pe"] == [p for p in PE_CHOICES if p <= 10]
    assert spec.knobs(dense_node(100, 1, 8, 8, False))["pe"] == [1]


# ---- building blocks ----------------------------------------------------------------------------

def test_adder_tree_counts_every_adder() -> None:
    assert adder_tree_luts(1, 8) == 0
    assert adder_tree_luts(2, 8) == 9
    assert adder_tree_luts(4, 8) == 2 * 9 + 10
    assert adder_tree_luts(3, 8) == 9 + 10  # the odd operand joins at the second level
    for n in range(1, 70):
        assert adder_tree_luts(n + 1, 6) > adder_tree_luts(n, 6)


def test_mux_and_memory_building_blocks() -> None:
    assert [mux_luts(n) for n in (1, 2, 4, 8, 16, 64)] == [0, 1, 1, 2, 4, 17]
    assert all(mux_luts(n + 1) >= mux_luts(n) for n in range(1, 300))
    assert memory_cost(16, 32) == Cost(lut=32)             # 512 bits: LUTRAM, one LUT per column
    assert memory_cost(512, 36) == Cost(bram18=1)          # exactly one BRAM18
    assert memory_cost(2048, 36) == Cost(bram18=bram18_for(2048, 36)) == Cost(bram18=4)
    assert signed_bits_for_range(-128, 127) == 8
    assert signed_bits_for_range(-255, 255) == 9
    assert signed_bits_for_range(0, 255) == 9


# ---- costing repeated layers once (hw.model.cost_key / unit_options) --------------------------------

def _chain_of_equal_layers(prune_last: bool) -> Graph:
    """Four 16->16 int8 dense layers of equal shape and accumulator width, with different weights, biases
    and scales; the last one with half its output rows zero when ``prune_last``."""
    from tests.helpers import add_dense, add_requant

    rng = np.random.default_rng(11)
    g = Graph("equal_layers")
    cur = g.add_input("x", TensorInfo((4, 16), IntType(8, signed=False), [0.05], 0))
    for i in range(4):
        w = rng.choice([-100, 100], size=(16, 16))
        if prune_last and i == 3:
            w[::2] = 0
        d = add_dense(g, cur, w, rng.permutation(np.arange(-8, 8)), w_scale=rng.uniform(0.01, 0.02, size=16),
                      name=f"fc{i}")
        cur = add_requant(g, d.outputs[0], 0.1 + i / 50, IntType(8, signed=False), name=f"q{i}").outputs[0]
    g.outputs.append(cur)
    g.verify()
    return g


@pytest.mark.parametrize("prune_last", [False, True])
def test_unit_options_equal_costing_every_node(prune_last: bool) -> None:
    from vaqf.hw.model import cost_key, unit_cost, unit_knob_space, unit_options, units_of

    g = _chain_of_equal_layers(prune_last)
    dense = [n for n in g.nodes if n.op == "dense"]
    keys = {cost_key(n) for n in dense}
    # equal shapes and types cost the same whatever the values; a zero pattern makes a layer different
    assert len(keys) == (2 if prune_last else 1)
    assert len({cost_key(n) for n in g.nodes if n.op == "requant"}) == 1
    board = get_board("zcu102")
    for nodes in units_of(g).values():
        space = unit_knob_space(nodes)
        names = sorted(space)
        combos = [dict(zip(names, c, strict=True)) for c in itertools.product(*(space[k] for k in names))]
        cycles, hws, ddr = unit_options(nodes, combos, board)
        for kn, cyc, hw, dd in zip(combos, cycles, hws, ddr, strict=True):
            ref_cycles, ref_hw, layers = unit_cost(nodes, kn, board)
            assert (cyc, hw, dd) == (ref_cycles, ref_hw, sum(layer.ddr_bytes for layer in layers))


def test_cost_key_tells_dense_blocks_apart() -> None:
    """Equal weight patterns with different recorded blocks (shapes and MAC steps) cost differently: the
    block form's cycles read them."""
    from vaqf.hw.model import cost_key

    g = _chain_of_equal_layers(False)
    a, b = (n for n in g.nodes if n.op == "dense" and n.name in ("fc1", "fc2"))
    assert cost_key(a) == cost_key(b)
    steps = np.ones((1, 9), dtype=np.int64)
    a.attrs["blocks"] = {"shape": np.array([[16, 16]]), "steps": steps}
    b.attrs["blocks"] = {"shape": np.array([[16, 16]]), "steps": 2 * steps}
    assert cost_key(a) != cost_key(b)
    b.attrs["blocks"]["steps"] = steps.copy()
    assert cost_key(a) == cost_key(b)


def test_cost_values_follow_the_fields() -> None:
    from dataclasses import fields

    from vaqf.hw.cost import Cost

    c = Cost(*range(1, len(fields(Cost)) + 1))
    assert c.values() == tuple(getattr(c, f.name) for f in fields(Cost))
    assert (c + c).values() == tuple(2 * v for v in c.values())
    assert c.max(Cost(lut=100)).values() == tuple(max(v, 100 if f.name == "lut" else 0)
                                                  for v, f in zip(c.values(), fields(Cost), strict=True))

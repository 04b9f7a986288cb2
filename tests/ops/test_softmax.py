"""softmax: inference, the reference on a hand-checked case, the fast path = the reference, closeness to the
float softmax, the unit's cost (monotone in lanes, equal to the C-simulation's counters) and the C++ = the
reference."""

import numpy as np
import pytest

from tests.helpers import assert_cycles_match
from tests.ops.opgraph import assert_fast_equals_reference, int_inputs, single_op
from vaqf.backend.emit import write_project
from vaqf.dse.search import design_for_knobs
from vaqf.errors import VaqfError
from vaqf.hw.board import get_board
from vaqf.hw.layout import LANE_CHOICES
from vaqf.ir import IntType, TensorInfo
from vaqf.ops.softmax import reference, softmax_attrs
from vaqf.sim.simulator import Simulator
from vaqf.units import get_unit
from vaqf.units.rowpipe import row_pipeline_cycles, row_pipeline_cycles_loop


def _graph(scale: float, bits: int = 8, n: int = 17, in_bits: int = 12, rows: int = 5):
    info = TensorInfo((1, 2, rows, n), IntType(in_bits, True), np.array([scale]))
    return single_op("softmax", [info], softmax_attrs(scale, bits))


@pytest.mark.parametrize("scale", [2.0**-4, 0.0123, 0.3, 3e-5])
@pytest.mark.parametrize("bits", [8, 4])
def test_softmax_close_to_float(rng, scale, bits):
    g = _graph(scale, bits)
    x = int_inputs(g, rng, 50)[0]
    got = Simulator(g).run_int([x]).dequantized[0]
    real = x * scale
    e = np.exp(real - real.max(axis=-1, keepdims=True))
    ref = e / e.sum(axis=-1, keepdims=True)
    step = 2.0**-bits
    # table step error (relative s_t/2 on each exponential) + one output step
    s_t = max(scale, 12.0 / 1023)
    bound = step + ref * (np.exp(s_t / 2) ** 2 - 1) + 2**-15
    assert np.all(np.abs(got - ref) <= bound + 1e-12)


def test_softmax_rows_sum_to_about_one(rng):
    g = _graph(0.05, 8, n=64)
    x = int_inputs(g, rng, 20)[0]
    got = Simulator(g).run_int([x]).outputs[0]
    sums = got.sum(axis=-1)
    assert np.all(np.abs(sums - 256) <= 64 / 2 + 1)  # each of 64 outputs rounds by at most half a step
    assert got.min() >= 0 and got.max() <= 255


def _project(graph, lanes: int, folder):
    design = design_for_knobs(graph, get_board("zcu102"), {"softmax": {"lanes": lanes}})
    write_project(graph, design, folder, force=True)
    return folder


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", [1, 4, 16, 32])
def test_softmax_cxx_bit_exact_and_cycles(tmp_path, lanes):
    """n = 17: L = 1 (17 words), 4 (a partial last word), 16 (two words), 32 (one word, 15 idle lanes)."""
    g = _graph(0.0123, 8, n=17, in_bits=9)
    res = assert_cycles_match(_project(g, lanes, tmp_path / "p"), inputs=8)
    est = get_unit("softmax").cost(g.nodes[0], {"lanes": lanes}, get_board("zcu102")).cycles
    layer = next(c for c in res.cycles if c.layer == g.nodes[0].name)
    assert layer.measured == est  # the counters and the model are one formula: exact, not only within 3%


@pytest.mark.cxx
def test_softmax_cxx_16_bit_output_and_dominant_entries(tmp_path):
    g = _graph(0.4, 16, n=33, in_bits=8, rows=3)
    assert_cycles_match(_project(g, 8, tmp_path / "p"), inputs=8)


def test_softmax_in_place_is_off():
    """The DATAFLOW kernel reads its input while writing its output: the buffer plan must separate them."""
    assert get_unit("softmax").in_place is False


def test_softmax_lane_knob_lists_every_choice():
    g = _graph(0.05, 8, n=17)
    assert get_unit("softmax").knobs(g.nodes[0])["lanes"] == list(LANE_CHOICES)


def test_row_pipeline_closed_form_equals_recurrence():
    rng = np.random.default_rng(3)
    for _ in range(200):
        times = [int(t) for t in rng.integers(0, 50, size=3)]
        lead = [int(t) for t in rng.integers(0, 300, size=3)]
        rows = int(rng.integers(0, 20))
        assert row_pipeline_cycles(rows, times, lead) == row_pipeline_cycles_loop(rows, times, lead)


def test_softmax_cost_monotone_in_lanes():
    g = _graph(0.05, 8, n=64)
    node = g.nodes[0]
    spec = get_unit("softmax")
    board = get_board("zcu102")
    costs = [spec.cost(node, {"lanes": lanes}, board) for lanes in LANE_CHOICES if lanes <= 64]
    assert all(a.cycles >= b.cycles for a, b in zip(costs, costs[1:], strict=False))
    assert all(a.lut <= b.lut for a, b in zip(costs, costs[1:], strict=False))


# ---- the op: inference, reference, fast path --------------------------------------------------------

def sample():
    return _graph(0.0123, 8, n=17, in_bits=9)


def test_infer_gives_unsigned_b_bit_probabilities() -> None:
    out = sample().outputs[0].info
    assert out.qtype == IntType(8, signed=False) and float(out.scale[0]) == 2.0**-8 and out.shape == (1, 2, 5, 17)
    with pytest.raises(VaqfError, match="op: softmax needs a per-tensor input scale"):
        single_op("softmax", [TensorInfo((1, 4), IntType(8, True), np.array([0.1, 0.2, 0.1, 0.1]))],
                  softmax_attrs(0.1, 8))


def test_reference_by_hand() -> None:
    """Table E = [65536, 32768, 16384, 8192] (step ln 2), index = d (m / 2**sh = 1). Row [3, 2, 1, 3]: d =
    [0, 1, 2, 0], e = [65536, 32768, 16384, 65536], sum 180224, R = floor(2**32 / 180224) = 23831; outputs at
    4 bits: round(e * R / 2**28) = [5.818.. -> 6, 2.909.. -> 3, 1.454.. -> 1, 6]."""
    table = np.array([65536, 32768, 16384, 8192])
    got = reference(np.array([[3, 2, 1, 3]]), table, 1, 0, 4)
    np.testing.assert_array_equal(got, [[6, 3, 1, 6]])
    # a row far below its maximum reads the last entry, and a single dominant entry saturates at 2**b - 1
    np.testing.assert_array_equal(reference(np.array([[100, 0]]), np.array([65536, 0]), 1, 0, 4), [[15, 0]])


@pytest.mark.parametrize("scale", [2.0**-4, 0.0123, 0.3])
@pytest.mark.parametrize("bits", [4, 8, 16])
def test_fast_path_equals_reference(rng, scale, bits):
    assert_fast_equals_reference(_graph(scale, bits, n=33, in_bits=8), rng, count=20)


# ---- the ROM (knob rom = 1) ---------------------------------------------------------------------------------

def _three_softmaxes():
    """Softmax at input scale 0.3 (a 41-entry table), then two at the 2**-8 scale of a softmax's output (equal
    1024-entry tables): two distinct tables for the unit's ROM."""
    from vaqf.ir import Graph

    g = Graph("three_softmaxes")
    v = g.add_input("x", TensorInfo((1, 3, 17), IntType(8, True), np.array([0.3])))
    for i in range(3):
        attrs = softmax_attrs(float(v.info.scale[0]), 8)
        out = g.new_value(f"p{i}", TensorInfo(v.info.shape, IntType(8, False), np.array([2.0**-8])))
        g.add_node("softmax", [v], [out], attrs, name=f"softmax{i}")
        v = out
    g.outputs.append(v)
    g.verify()
    return g


def test_rom_layout_shares_equal_tables():
    from vaqf.units.softmax import rom_layout

    g = _three_softmaxes()
    nodes = [n for n in g.topo()]
    tables, size, first = rom_layout(nodes)
    assert [t.size for t in tables] == [41, 1024] and size == 1065
    assert first == {"softmax0": 0, "softmax1": 41, "softmax2": 41}
    unit = get_unit("softmax")
    board = get_board("zcu102")
    shared = unit.shared_cost(nodes, {"lanes": 4, "rom": 1})
    assert shared.bram18 == 4 * 2 and shared.lut == 4 * 11  # 1065 x 17 bits: two BRAM18 a lane copy
    assert unit.shared_cost(nodes, {"lanes": 4, "rom": 0}) is None
    fill = unit.cost(nodes[1], {"lanes": 4, "rom": 0}, board)
    rom = unit.cost(nodes[1], {"lanes": 4, "rom": 1}, board)
    assert fill.cycles - rom.cycles >= 1024 and rom.ddr_bytes == 0 and fill.ddr_bytes == 4 * 1024


@pytest.mark.cxx
def test_softmax_rom_cxx_bit_exact_and_cycles(tmp_path):
    """Three layers on one instance reading two tables from the ROM: bit-exact, counters = the estimate
    (no fill), and no table in the DDR image."""
    g = _three_softmaxes()
    design = design_for_knobs(g, get_board("zcu102"), {"softmax": {"lanes": 4, "rom": 1}})
    folder = write_project(g, design, tmp_path / "p", force=True)
    res = assert_cycles_match(folder, inputs=6)
    board = get_board("zcu102")
    for node in g.topo():
        layer = next(c for c in res.cycles if c.layer == node.name)
        assert layer.measured == get_unit("softmax").cost(node, {"lanes": 4, "rom": 1}, board).cycles
    params = (folder / "src" / "vaqf_params.h").read_text()
    assert "vaqf::softmax_rom<" in params and params.count("65536, ") >= 2 * 4  # each table's E[0], every lane
    assert not any(blob == "table" for _, blob in design_offsets(g, design))


def design_offsets(graph, design):
    """The (node, blob) keys of the design's DDR image."""
    from vaqf.backend.emit import build_ddr_image

    return build_ddr_image(graph, design.word_bits, design.knobs, get_board("zcu102")).offsets


def test_the_search_takes_the_rom_for_one_softmax():
    """A classifier head (one table): the ROM costs the same BRAM and saves the fill, so the fastest design
    takes it."""
    from vaqf.dse.search import search

    g = _graph(0.05, 8, n=10, rows=1)
    design = search(g, get_board("zcu102"))
    assert design.knobs["softmax"]["rom"] == 1

"""Mutated and truncated models: the importer either succeeds or raises a VaqfError with a one-line
message. (bench/fuzz_import.py runs the same check on many more cases and reports the slowest; tests assert no
wall-clock times.)"""

from __future__ import annotations

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vaqf
from vaqf.examples import example_model
from vaqf.frontend.onnx_import import ImportOptions, import_onnx

SEED_BYTES = example_model("mlp").SerializeToString()


def import_bytes(data: bytes, tmp_path) -> str:
    """'ok' or the error message; anything but a VaqfError propagates and fails the test."""
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    try:
        import_onnx(path, ImportOptions())
        outcome = "ok"
    except vaqf.VaqfError as e:
        msg = str(e)
        assert msg and "\n" not in msg.strip(), f"multi-line message: {msg!r}"
        outcome = msg
    return outcome


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(SEED_BYTES) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_byte_mutations(tmp_path, edits):
    data = bytearray(SEED_BYTES)
    for pos, value in edits:
        data[pos] = value
    import_bytes(bytes(data), tmp_path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, len(SEED_BYTES) - 1))
def test_truncations(tmp_path, cut):
    import_bytes(SEED_BYTES[:cut], tmp_path)


def _model_with(mutate) -> onnx.ModelProto:
    m = example_model("mlp")
    mutate(m)
    return m


@pytest.mark.parametrize("mutate", [
    lambda m: m.graph.initializer[3].dims.extend([10**9, 10**9]),          # absurd initializer shape
    lambda m: m.graph.input[0].type.tensor_type.shape.dim[1].__setattr__("dim_value", 10**12),  # absurd input
    lambda m: m.graph.node[2].ClearField("input"),                         # node without inputs
    lambda m: m.graph.node.append(m.graph.node[0]),                        # duplicate producer
    lambda m: m.graph.ClearField("output"),                                # no outputs
    lambda m: m.graph.initializer[0].ClearField("raw_data"),               # data missing
])
def test_structural_damage_is_a_clear_error(tmp_path, mutate):
    model = _model_with(mutate)
    msg = import_bytes(model.SerializeToString(), tmp_path)
    assert msg != "ok"

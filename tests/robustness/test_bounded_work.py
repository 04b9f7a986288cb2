"""Bounded work on small hostile files: import linear in the node count, external data and constant folding
capped before anything large is allocated, a MemoryError reported as such."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import float_mlp_model, qonnx_model, relu_chain
from vaqf.errors import ModelError, VaqfError
from vaqf.frontend import onnx_import
from vaqf.frontend.onnx_import import ImportOptions, import_onnx
from vaqf.ir import Graph, IntType, TensorInfo


def python_calls(fn) -> int:  # noqa: ANN001
    """How many Python functions (generator steps included) ``fn()`` runs: a count of work, not a time."""
    count = 0

    def prof(frame, event, arg) -> None:  # noqa: ANN001
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def test_import_work_is_linear_in_the_node_count() -> None:
    # a per-node scan of the whole graph makes 4x the nodes cost 16x the calls; linear work costs 4x
    small = python_calls(lambda: import_onnx(relu_chain(300)))
    large = python_calls(lambda: import_onnx(relu_chain(1200)))
    assert large < 5 * small, (small, large)


def test_adding_nodes_does_not_scan_the_graph() -> None:
    class CountingDict(dict):
        scans = 0

        def values(self):  # noqa: ANN201
            CountingDict.scans += 1
            return super().values()

    g = Graph("chain")
    g._nodes = CountingDict()
    info = TensorInfo((1, 4), IntType(8))
    v = g.add_input("x", info)
    for i in range(200):
        out = g.new_value(f"t{i}", info)
        g.add_node("relu", [v], [out], name=f"r{i}")
        v = out
    g.outputs = [v]
    assert CountingDict.scans == 0
    g.verify()


# ---- external data -----------------------------------------------------------------------------------------
def _external_model(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, onnx.TensorProto]:
    """The QONNX MLP saved with its weights in 'weights.bin' next to it; returns the path and the first
    external tensor (entries editable, then save again with ``_resave``)."""
    model = qonnx_model(rng)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    saved = onnx.load(str(path), load_external_data=False)
    big = next(t for t in saved.graph.initializer if t.data_location == TensorProto.EXTERNAL and len(t.dims) == 2)
    return path, saved, big


def _set_entries(t: onnx.TensorProto, **entries: str) -> None:
    kept = {e.key: e.value for e in t.external_data}
    kept.update(entries)
    kept = {k: v for k, v in kept.items() if v is not None}
    del t.external_data[:]
    for k, v in kept.items():
        t.external_data.add(key=k, value=v)


def test_external_data_loads_when_consistent(tmp_path: Path, rng: np.random.Generator) -> None:
    path, _, _ = _external_model(tmp_path, rng)
    assert import_onnx(path).nodes


def test_external_data_without_length_pointing_at_a_large_file_is_refused_unread(
        tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    path, saved, big = _external_model(tmp_path, rng)
    _set_entries(big, length=None, offset=None, location="huge.bin")
    with open(tmp_path / "huge.bin", "wb") as f:  # sparse: 1 GiB that takes no disk
        f.truncate(2**30)
    onnx.save(saved, str(path))
    read = []
    monkeypatch.setattr(onnx, "load_external_data_for_model", lambda *a: read.append(a))
    with pytest.raises(ModelError, match="without a length") as e:
        onnx_import.load_model(path)
    assert not read and "huge.bin" in str(e.value) and "\n" not in str(e.value)


def test_external_data_length_that_does_not_match_the_shape_is_refused(tmp_path: Path,
                                                                     rng: np.random.Generator) -> None:
    path, saved, big = _external_model(tmp_path, rng)
    _set_entries(big, length=str(10**12))
    onnx.save(saved, str(path))
    with pytest.raises(ModelError, match="does not match"):
        onnx_import.load_model(path)


@pytest.mark.parametrize("location", ["a\0b.bin", "x" * 5000, "sub/" * 2000 + "w.bin", "line\nbreak.bin"])
def test_hostile_external_data_names_are_a_model_error(location: str, tmp_path: Path,
                                                       rng: np.random.Generator) -> None:
    path, saved, big = _external_model(tmp_path, rng)
    _set_entries(big, location=location)
    onnx.save(saved, str(path))
    with pytest.raises(ModelError) as e:
        onnx_import.load_model(path)
    assert len(str(e.value)) < 600 and "\n" not in str(e.value)


def test_tensor_size_is_checked_before_reading(tmp_path: Path, rng: np.random.Generator,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path, saved, big = _external_model(tmp_path, rng)
    del big.dims[:]
    big.dims.extend([2**15, 2**15])  # 2**30 elements declared (4 GiB), its file holds a few KiB
    onnx.save(saved, str(path))
    read = []
    monkeypatch.setattr(onnx, "load_external_data_for_model", lambda *a: read.append(a))
    with pytest.raises(ModelError, match="declares 1073741824 elements"):
        onnx_import.load_model(path)
    assert not read


# ---- constant folding -----------------------------------------------------------------------------------------
def _with_folded(model: onnx.ModelProto, nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray],
                 use: str) -> onnx.ModelProto:
    """``model`` with constant ``nodes`` in front whose result ``use`` scales the output (so it is folded)."""
    g = model.graph
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items())
    for i, n in enumerate(nodes):
        g.node.insert(i, n)
    g.node.append(helper.make_node("ReduceMax", [use], ["folded_scalar"], keepdims=0, name="fold_max"))
    g.node.append(helper.make_node("Mul", [g.output[0].name, "folded_scalar"], ["scaled"], name="fold_mul"))
    g.output[0].name = "scaled"
    return model


@pytest.mark.parametrize("op, inputs", [
    ("Expand", {"one": np.ones(1, np.float32), "shp": np.array([40000, 40000], np.int64)}),
    ("Tile", {"one": np.ones((1, 1), np.float32), "shp": np.array([40000, 40000], np.int64)}),
    ("ConstantOfShape", {"shp": np.array([40000, 40000], np.int64)}),
])
def test_constant_folding_is_capped_before_allocating(op: str, inputs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnx.reference import ReferenceEvaluator

    model = _with_folded(relu_chain(1), [helper.make_node(op, list(inputs), ["big"], name="grow")], inputs, "big")
    ran = []
    monkeypatch.setattr(ReferenceEvaluator, "run", lambda self, *a: ran.append(a))
    with pytest.raises(ModelError, match=r"'grow' \(" + op + r"\) would make a tensor of shape \[40000, 40000\]"):
        import_onnx(model)
    assert not ran  # refused from the inferred shape, not after 6 GiB were allocated


def test_small_constant_folding_still_works() -> None:
    inputs = {"one": np.full(1, 2.0, np.float32), "shp": np.array([3, 4], np.int64)}
    model = _with_folded(relu_chain(1), [helper.make_node("Expand", list(inputs), ["big"], name="grow")], inputs,
                         "big")
    g = import_onnx(model)
    assert g.outputs[0].info.shape == (1, 16)


def test_memory_error_while_folding_is_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnx.reference import ReferenceEvaluator

    inputs = {"one": np.full(1, 2.0, np.float32), "shp": np.array([3, 4], np.int64)}
    model = _with_folded(relu_chain(1), [helper.make_node("Expand", list(inputs), ["big"], name="grow")], inputs,
                         "big")

    def no_memory(self, *a) -> None:  # noqa: ANN001
        raise MemoryError

    monkeypatch.setattr(ReferenceEvaluator, "run", no_memory)
    with pytest.raises(ModelError, match="ran out of memory folding constant node 'grow'"):
        import_onnx(model)


def test_memory_error_anywhere_in_the_import_is_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(self, node) -> None:  # noqa: ANN001
        raise MemoryError

    monkeypatch.setattr(onnx_import.Importer, "_op_Relu", no_memory)
    with pytest.raises(ModelError, match="ran out of memory importing chain") as e:
        import_onnx(relu_chain(2))
    assert "unsupported" not in str(e.value)


# ---- ordinary mistakes in models ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_bias_is_a_model_error(bad: float, rng: np.random.Generator) -> None:
    model = float_mlp_model(rng)
    b = next(t for t in model.graph.initializer if len(t.dims) == 1)
    arr = numpy_helper.to_array(b).copy()
    arr[0] = bad
    b.CopyFrom(numpy_helper.from_array(arr, b.name))
    calib = rng.normal(size=(8, 8)).astype(np.float32)
    with pytest.raises(ModelError, match="NaN or infinite"):
        import_onnx(model, ImportOptions(calib=calib))


def test_quant_with_an_empty_input_name_is_a_model_error(rng: np.random.Generator) -> None:
    model = qonnx_model(rng)
    q = next(n for n in model.graph.node if n.op_type == "Quant" and n.input[0] == model.graph.input[0].name)
    q.input[0] = ""
    with pytest.raises(VaqfError) as e:
        import_onnx(model)
    assert "\n" not in str(e.value)

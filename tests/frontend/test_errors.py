"""User errors from the importer: each is a VaqfError subclass that says what and where."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.helpers import float_mlp_model, qonnx_model, with_node_after_first_layer
from vaqf.api import load_model
from vaqf.errors import CalibrationRequired, ModelError, UnsupportedOpError, VaqfError
from vaqf.frontend.onnx_import import import_onnx
from vaqf.sim.simulator import Simulator


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("op_type, domain, shown", [
    ("Sin", "", "Sin"),
    ("Softsign", "", "Softsign"),
    ("FancyActivation", "com.example", "com.example.FancyActivation"),
])
def test_unsupported_op_names_node_and_op_type(op_type: str, domain: str, shown: str,
                                               rng: np.random.Generator) -> None:
    model = with_node_after_first_layer(qonnx_model(rng), op_type, "my_strange_node", domain)
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    with pytest.raises(UnsupportedOpError) as e:
        import_onnx(model)
    assert e.value.node_name == "my_strange_node" and e.value.op_type == shown
    assert "my_strange_node" in str(e.value) and shown in str(e.value)
    assert isinstance(e.value, VaqfError)


def test_unsupported_op_without_a_name_is_still_located(rng: np.random.Generator) -> None:
    model = with_node_after_first_layer(qonnx_model(rng), "Sin", "")
    with pytest.raises(UnsupportedOpError, match=r"Sin\(relu0_sin\)"):
        import_onnx(model)


def test_unsupported_configuration_names_the_node(rng: np.random.Generator) -> None:
    model = qonnx_model(rng)
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.name == "fc1":
            n.op_type = "Gemm"
            n.attribute.append(helper.make_attribute("transA", 1))
    with pytest.raises(UnsupportedOpError, match="fc1") as e:
        import_onnx(model)
    assert "transA" in str(e.value)


@pytest.mark.parametrize("content", ["truncated", "garbage", "empty", "text"])
def test_unreadable_file_is_a_model_error_naming_the_file(content: str, tmp_path: Path,
                                                          rng: np.random.Generator) -> None:
    good = qonnx_model(rng).SerializeToString()
    data = {"truncated": good[: len(good) // 2], "garbage": rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes(),
            "empty": b"", "text": b"this is not an onnx model\n" * 10}[content]
    path = tmp_path / f"broken_{content}.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelError) as e:
        load_model(path)
    assert path.name in str(e.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="not a file"):
        load_model(tmp_path)


@pytest.mark.parametrize("batch", [2, 8])
def test_fixed_batch_larger_than_one_is_read_as_the_batch_axis(batch: int, tmp_path: Path, rng: np.random.Generator,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    model = qonnx_model(rng)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = batch
    with caplog.at_level("WARNING"):
        g = load_model(_save(model, tmp_path / "b.onnx"))
    assert g.inputs[0].info.shape == (1, 16)
    assert f"fixed leading dimension of {batch}: read as the batch axis" in caplog.text


def test_inputs_with_different_fixed_batches_are_rejected(rng: np.random.Generator) -> None:
    """Two inputs whose fixed leading dimensions differ: no batch axis to read, the input named."""
    model = qonnx_model(rng)
    extra = helper.make_tensor_value_info("aux", onnx.TensorProto.FLOAT, [3, 16])
    model.graph.input.append(extra)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    with pytest.raises(ModelError, match="'x' has a fixed batch of 2"):
        load_model(model)


def test_fixed_batch_of_one_is_accepted(rng: np.random.Generator) -> None:
    model = qonnx_model(rng)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = 1
    assert load_model(model).inputs[0].info.shape == (1, 16)


def test_symbolic_non_batch_axis_is_rejected(rng: np.random.Generator) -> None:
    model = qonnx_model(rng)
    dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_param = "features"
    with pytest.raises(ModelError, match="symbolic dimension"):
        load_model(model)


def _set_bit_width(model: onnx.ModelProto, name: str, bits: float) -> onnx.ModelProto:
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.asarray(bits, np.float32), name))
    return model


@pytest.mark.parametrize("bits, where", [(b, "act_bits") for b in (1, 32, 4.5, 0, 17)]  # activation quantizers
                         + [(b, "w0_bits") for b in (1, 33, 4.5, 0)])  # a weight quantizer: up to 32 bits
def test_quant_bit_width_out_of_range_is_rejected(bits: float, where: str, rng: np.random.Generator) -> None:
    model = _set_bit_width(qonnx_model(rng), where, bits)
    with pytest.raises(UnsupportedOpError, match="bit width") as e:
        import_onnx(model)
    assert "Quant" in str(e.value)
    assert ("quant_in" if where == "act_bits" else "wquant0") in str(e.value)


def test_a_wide_weight_quantizer_whose_integers_fit_is_accepted(rng: np.random.Generator) -> None:
    """A 32-bit quantizer on weights (as on Brevitas's Int32Bias biases) at the same scale: the same integers
    as the 8-bit one where nothing clips, so the same graph; integers beyond 16 bits are refused by name."""
    model = qonnx_model(rng)
    x = rng.normal(size=(32, 16)).astype(np.float32)
    want = Simulator(import_onnx(model)).run([x]).outputs[0]
    np.testing.assert_array_equal(Simulator(import_onnx(_set_bit_width(model, "w0_bits", 32))).run([x]).outputs[0],
                                  want)
    wide = _set_bit_width(qonnx_model(rng), "w0_bits", 32)
    scale = next(t for t in wide.graph.initializer if t.name == "w0_scale")
    scale.CopyFrom(numpy_helper.from_array(np.asarray(1e-7, np.float32), "w0_scale"))
    with pytest.raises(UnsupportedOpError, match="-bit weights \\(max 16\\)"):
        import_onnx(wide)


def test_float_model_without_calibration_requires_it(rng: np.random.Generator) -> None:
    with pytest.raises(CalibrationRequired, match="--calib") as e:
        load_model(float_mlp_model(rng))
    assert "gemm0" in str(e.value)


def test_unknown_rounding_mode_is_unsupported(rng: np.random.Generator) -> None:
    model = qonnx_model(rng)
    for n in model.graph.node:
        if n.name == "quant_act0":
            for a in n.attribute:
                if a.name == "rounding_mode":
                    a.s = b"STOCHASTIC"
    with pytest.raises(UnsupportedOpError, match="quant_act0") as e:
        import_onnx(model)
    assert "STOCHASTIC" in str(e.value)


def test_bad_import_options(rng: np.random.Generator) -> None:
    with pytest.raises(VaqfError, match="--weights"):
        load_model(qonnx_model(rng), weights="int3")
    with pytest.raises(VaqfError, match="--act-bits"):
        load_model(qonnx_model(rng), act_bits=1)

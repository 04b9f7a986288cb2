"""The example pipeline (examples/train_vit_mnist.py) end to end, in a few training steps."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "train_vit_mnist.py"


def _example():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("train_vit_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.cxx
def test_tiny_pipeline_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "run"
    results = _example().main(["--out", str(out), "--digits-8x8", "--max-steps", "6", "--bits", "8", "4",
                               "--dim", "32", "--depth", "1", "--heads", "2", "--test-images", "60", "--quiet",
                               "--fps", "1000", "--threads", "1", "--csim-images", "5"])
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["data"] == "digits_8x8" and on_disk["test_images"] == 60
    for key in ("float_accuracy", "qat_accuracy", "sim_agreement", "compile"):
        assert key in on_disk
    assert set(on_disk["qat_accuracy"]) == {"8", "4"}
    assert 0.0 <= on_disk["sim_agreement"] <= 1.0 and results["sim_agreement_bits"] == 8
    est = on_disk["compile"]["estimate"]
    assert est["fps"] >= 1000 and on_disk["compile"]["act_bits"] == 8
    assert (out / "vit_a8.onnx").is_file() and (out / "vit_a4.onnx").is_file()
    assert (out / "hls" / "design.json").is_file()
    assert on_disk["csim"]["images"] == 5 and on_disk["csim"]["bit_exact"] == 5  # real digits, g++ C-simulation

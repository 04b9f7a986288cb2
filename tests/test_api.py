"""The Python API: torch modules, the project object (reusable simulator, predict, csim), lazy imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vaqf
from vaqf import api
from vaqf.examples import example_model
from vaqf.hw.cost import RESOURCE_KEYS


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> vaqf.CompileResult:
    return vaqf.compile_model(example_model("mlp"), tmp_path_factory.mktemp("api") / "mlp")


def test_import_vaqf_is_light() -> None:
    code = ("import sys, vaqf; vaqf.Board; vaqf.VaqfError; "
            "print(' '.join(m for m in ('onnx', 'numba', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vaqf.nope  # noqa: B018
    assert vaqf.compile_model is api.compile_model and set(vaqf.__all__) <= set(dir(vaqf))


def test_project_simulator_is_reused_and_predict_matches_simulate(project: vaqf.CompileResult,
                                                                   rng: np.random.Generator) -> None:
    p = vaqf.load(project.project)
    assert p.simulator() is p.simulator()
    x = rng.standard_normal((5, 64)).astype(np.float32)
    y = p.predict(x)
    np.testing.assert_array_equal(y, vaqf.simulate(project.project, x).dequantized[0])
    np.testing.assert_array_equal(p.simulate(x).outputs[0], vaqf.simulate(p, x).outputs[0])
    assert y.shape == (5, 10)


def test_simulate_folder_caches_by_path_and_mtime(project: vaqf.CompileResult, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 64)).astype(np.float32)
    folder = project.project
    vaqf.simulate(folder, x)
    first = api._project_simulator(folder)
    vaqf.simulate(str(folder), x)
    assert api._project_simulator(folder) is first  # no reload, no re-plan
    st = (folder / "graph.npz").stat()
    os.utime(folder / "graph.npz", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # recompiled
    assert api._project_simulator(folder) is not first
    assert sum(1 for k in api._PROJECT_SIMS if k[0] == str(folder.resolve())) == 1


def test_estimate_keys_are_the_documented_ones(project: vaqf.CompileResult) -> None:
    est = project.design.estimate
    assert {"fps", "cycles", "resources", "utilization", "layers", "units"} <= set(est)
    assert set(est["resources"]) == set(RESOURCE_KEYS) == set(est["utilization"])
    assert {"node", "op", "unit", "cycles", "ddr_bytes"} <= set(est["layers"][0])
    doc = api.estimate_design.__doc__ or ""
    for key in ("fps", "cycles", "resources", "utilization", "layers", "units", "ddr_bytes", "mode", *RESOURCE_KEYS):
        assert f"``{key}``" in doc, key
    for obj in (vaqf.CompileResult, vaqf.Project, api.OutputError):
        assert obj.__doc__, obj


def test_example_input_is_for_a_module_only(tmp_path: Path) -> None:
    with pytest.raises(vaqf.VaqfError, match="example_input is for a torch.nn.Module"):
        vaqf.compile_model(example_model("mlp"), tmp_path / "p", example_input=np.zeros((1, 64)))


def test_compile_a_torch_module(tmp_path: Path, rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    with pytest.raises(vaqf.VaqfError, match="without example_input"):
        vaqf.compile_model(model, tmp_path / "a")
    calib = rng.standard_normal((32, 1, 4, 4)).astype(np.float32)
    res = vaqf.compile_model(model, tmp_path / "b", example_input=torch.zeros(1, 1, 4, 4), calib=calib)
    assert (res.project / "design.json").is_file()
    assert res.output_error is not None and res.output_error.rel_l2 < 0.05 and not res.warnings
    with torch.no_grad():
        ref = model(torch.from_numpy(calib[:4])).numpy()
    got = vaqf.load(res.project).predict(calib[:4])
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.05

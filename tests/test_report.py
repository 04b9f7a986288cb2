"""The project report: report.html renders in a browser with its plots, the Markdown twin and `vaqf report`
agree with the design, and report.json holds the per-layer figures."""

from __future__ import annotations

import contextlib
import html
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from vaqf.cli import main

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "mlp"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["compile", "--example", "mlp", "-o", str(out), "--board", "ultra96v2", "--quiet"]) == 0
    return out


def test_report_files_and_summary(project: Path, capsys: pytest.CaptureFixture) -> None:
    design = json.loads((project / "design.json").read_text())
    data = json.loads((project / "report" / "report.json").read_text())
    for name in ("report.html", "report.md", "report/pareto.png", "report/roofline.png"):
        assert (project / name).stat().st_size > 0, name
    assert (project / "report" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["design"]["knobs"] == design["knobs"]
    assert [layer["node"] for layer in data["layers"]] == ["fc0", "fc1", "fc2"]
    assert sum(layer["cycles"] for layer in data["layers"]) <= design["estimate"]["cycles"]
    md = (project / "report.md").read_text()
    assert "ultra96v2" in md and "![" in md and "report/pareto.png" in md
    assert main(["report", str(project)]) == 0
    out = capsys.readouterr().out
    assert "ultra96v2" in out and f"{design['act_bits']}-bit activations" in out
    assert main(["report", str(project), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["design"]["knobs"] == design["knobs"]


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to render the report")
def test_report_renders_in_headless_chromium_with_its_plots(project: Path, tmp_path: Path) -> None:
    """Load a copy of report.html (next to the original, so relative paths resolve) with a probe that
    records, after the load event, every image's decoded size and the page's headings."""
    probe = project / "_render_probe.html"
    script = ('<script>window.addEventListener("load", () => { document.body.setAttribute("data-probe", '
              'JSON.stringify({images: [...document.images].map(i => [i.id, i.complete, i.naturalWidth, '
              'i.naturalHeight]), headings: [...document.querySelectorAll("h1,h2")].map(h => h.textContent)})); '
              '});</script></body>')
    probe.write_text((project / "report.html").read_text().replace("</body>", script))
    try:
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                              probe.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    finally:
        probe.unlink()
    marker = 'data-probe="'
    assert marker in dom, "the page's load event never ran"
    start = dom.index(marker) + len(marker)
    found = json.loads(html.unescape(dom[start:dom.index('"', start)]))
    images = {i[0]: i[1:] for i in found["images"]}
    assert set(images) == {"pareto", "roofline"}
    for name, (complete, width, height) in images.items():
        assert complete and width > 200 and height > 100, f"{name} plot did not load: {images[name]}"
    assert {"Model", "Resources", "Where the time goes", "Design space", "Per layer"} <= set(found["headings"])


def _conv_relu_onnx(path: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    class ConvRelu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):  # noqa: ANN001, ANN202 - torch's signature
            x = torch.relu(self.c2(torch.relu(self.c1(x))))
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    torch.onnx.export(ConvRelu().eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}})


def test_quantization_error_compares_like_with_like_after_a_fused_relu(tmp_path: Path) -> None:
    """A conv followed by ReLU is one GEMM with a post-ReLU output named after the conv's tensor: the float
    side must be the ReLU's output too (the pre-ReLU tensor gave rel. L2 ~0.6 on healthy layers)."""
    import numpy as np

    import vaqf

    model = tmp_path / "conv_relu.onnx"
    _conv_relu_onnx(model)
    calib = np.random.default_rng(0).normal(size=(32, 1, 8, 8)).astype(np.float32)
    vaqf.compile_model(model, tmp_path / "p", weights="int8", act_bits=8, calib=calib)
    errors = json.loads((tmp_path / "p" / "report" / "report.json").read_text())["errors"]
    conv = [e for e in errors if e["value"].endswith("Conv_output_0")]
    assert conv, errors
    for e in errors:
        assert e["rel_l2"] < 0.05, e  # measured ~0.01 for every tensor; 0.62 before
    assert all("Relu" in e["reference"] for e in conv)
    assert {e["reference"] for e in errors if e not in conv} == {e["value"] for e in errors if e not in conv}
    md = (tmp_path / "p" / "report.md").read_text()
    assert "float tensor" in md and "`/Relu_output_0`" in md

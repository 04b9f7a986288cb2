"""`vaqf export` and `vaqf prune`: the PyTorch frontend on the command line, its files compiled by `vaqf compile`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import vaqf  # noqa: E402
from vaqf.cli import main  # noqa: E402
from vaqf.frontend.torch import calibrate, deit, quantize_vit  # noqa: E402
from vaqf.frontend.torch.export import QONNX_DOMAIN, qonnx_scales  # noqa: E402
from vaqf.frontend.torch.qat import act_quantizers  # noqa: E402

from .conftest import TINY, one_thread  # noqa: E402

#: the tiny ViT of the export tests on the command line (8x8 one-channel images, patch 2, 2 blocks of width 32)
TINY_ARGS = ["--img-size", "8", "--patch", "2", "--in-chans", "1", "--num-classes", "10", "--embed-dim", "32",
             "--depth", "2", "--heads", "2", "--mlp-ratio", "2"]


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    rc, out, err = run(capsys, *args, "--json")
    assert rc == 0, err
    return json.loads(out)


def _images(n: int = 32) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 8, 8), dtype=np.float32)


def test_help_lists_the_commands_with_examples(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "export" in out and "prune" in out
    for command in ("export", "prune"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "examples:" in out and f"vaqf {command} " in out and 'pip install "vaqf[torch]"' in out


def test_export_tiny_deit_float_and_qonnx_compile(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    calib = tmp_path / "images.npy"
    np.save(calib, _images())
    with one_thread():
        fl = run_json(capsys, "export", "deit-custom", "-o", str(tmp_path / "vit.onnx"), *TINY_ARGS)
        q = run_json(capsys, "export", "deit-custom", "-o", str(tmp_path / "vit_q.onnx"), *TINY_ARGS, "--qonnx",
                     "--act-bits", "6", "--weights", "binary", "--calib", str(calib))
    n_params = sum(p.numel() for p in deit("custom", **TINY).parameters())
    assert fl["format"] == "onnx" and fl["parameters"] == n_params and fl["input_shape"] == [1, 1, 8, 8]
    assert q["format"] == "qonnx" and q["parameters"] == n_params and q["act_bits"] == 6
    assert q["calibration"] == f"file {calib}" and q["next"].startswith("vaqf compile ")
    proto = onnx.load(fl["model"])
    assert proto.ir_version <= 10 and not any(n.domain == QONNX_DOMAIN for n in proto.graph.node)
    ort.InferenceSession(fl["model"], providers=["CPUExecutionProvider"]).run(None, {"x": _images(2)})
    assert any(n.op_type == "BipolarQuant" for n in onnx.load(q["model"]).graph.node)

    # QONNX: no quantization flags; float ONNX: post-training quantization from the command line
    res = run_json(capsys, "compile", q["model"], "-o", str(tmp_path / "hls_q"))
    assert res["estimate"]["fps"] > 0 and res["design"]["act_bits"] == 6  # the file's own encoder precision
    dense = [n for n in vaqf.load(tmp_path / "hls_q").graph.nodes if n.op == "dense"]
    assert sum(n.attrs["w_type"].bits == 1 for n in dense) == 4 * 2  # qkv, proj, fc1, fc2 of both blocks binary
    res = run_json(capsys, "compile", fl["model"], "-o", str(tmp_path / "hls_f"), "--weights", "binary",
                   "--act-bits", "8", "--calib", str(calib))
    assert res["design"]["act_bits"] == 8 and res["estimate"]["fps"] > 0


def test_export_checkpoint_round_trip(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """A float state dict (wrapped as timm's files are) gives the same logits in onnxruntime; a QAT state dict
    brings its quantizer scales, written bit for bit into the QONNX file without calibration."""
    torch.manual_seed(1)
    model = deit("custom", **TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "float.pt")
    x = _images(4)
    with one_thread():
        out = run_json(capsys, "export", "deit-custom", "-o", str(tmp_path / "f.onnx"), *TINY_ARGS,
                       "--checkpoint", str(tmp_path / "float.pt"))
        assert out["checkpoint"] == str(tmp_path / "float.pt")
        got = ort.InferenceSession(out["model"], providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

        qmodel = quantize_vit(deit("custom", **TINY), act_bits=4, weights="int8")
        qmodel.load_state_dict(model.state_dict(), strict=False)
        calibrate(qmodel, [torch.from_numpy(_images(16))])
        torch.save(qmodel.state_dict(), tmp_path / "qat.pt")
        out = run_json(capsys, "export", "deit-custom", "-o", str(tmp_path / "q.onnx"), *TINY_ARGS, "--qonnx",
                       "--act-bits", "4", "--weights", "int8", "--checkpoint", str(tmp_path / "qat.pt"))
    assert out["calibration"] == "checkpoint"
    in_file = sorted(float(s.reshape(-1)[0]) for s in qonnx_scales(out["model"]).values() if s.size == 1)
    for q in act_quantizers(qmodel):
        if q.role != "softmax":
            assert float(q.scale) in in_file


def test_export_bad_checkpoint_names_the_keys(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    sd = deit("custom", **{**TINY, "num_classes": 7}).state_dict()
    sd["dist_token"] = torch.zeros(1, 1, 32)
    del sd["blocks.1.norm2.bias"]
    torch.save(sd, tmp_path / "bad.pt")
    rc, out, err = run(capsys, "export", "deit-custom", "-o", str(tmp_path / "m.onnx"), *TINY_ARGS,
                       "--checkpoint", str(tmp_path / "bad.pt"))
    assert rc == 2 and out == "" and "Traceback" not in err
    error = err.strip().splitlines()[-1]  # the progress lines before it name the stages
    assert error.startswith("vaqf: ") and all(line.startswith("vaqf: ") for line in err.strip().splitlines())
    for text in ("head.weight [7, 32] in the file, [10, 32] in the model (see --num-classes)",
                 "unknown key: dist_token", "missing key: blocks.1.norm2.bias"):
        assert text in error
    assert not (tmp_path / "m.onnx").exists()

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    rc, _, err = run(capsys, "export", "resnet20", "-o", str(tmp_path / "r.onnx"), "--checkpoint",
                     str(tmp_path / "junk.pt"))
    assert rc == 2 and "is not a PyTorch checkpoint" in err and "Traceback" not in err
    assert "weights_only" not in err  # PyTorch's advice would run code and would not help a text file
    rc, _, err = run(capsys, "export", "resnet20", "-o", str(tmp_path / "r.onnx"), "--checkpoint",
                     str(tmp_path / "missing.pt"))
    assert rc == 2 and "does not exist" in err


def test_export_user_errors(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"x")
    cases = [(["deit-tiny", "-o", str(taken)], "--force"),
             (["deit-huge", "-o", str(tmp_path / "a.onnx")], "unknown model 'deit-huge'"),
             (["resnet20", "-o", str(tmp_path / "a.onnx"), "--qonnx"], "QONNX export is for the DeiT models"),
             (["resnet20", "-o", str(tmp_path / "a.onnx"), "--patch", "4"], "--patch applies to DeiT models only"),
             (["deit-tiny", "-o", str(tmp_path / "a.onnx"), "--act-bits", "4"], "add --qonnx"),
             (["deit-custom", "-o", str(tmp_path / "a.onnx"), *TINY_ARGS, "--qonnx", "--act-bits", "1"],
              "within 2..16"),
             (["deit-custom", "-o", str(tmp_path / "a.onnx"), *TINY_ARGS[:-2], "--heads", "3"], "do not divide")]
    for args, text in cases:
        rc, _, err = run(capsys, "export", *args)
        assert rc == 2 and text in err and "Traceback" not in err, (args, err)
    assert taken.read_bytes() == b"x"


@pytest.mark.parametrize("command", [["export", "deit-tiny"], ["prune", "small_vgg"]])
def test_without_torch_one_line_says_what_to_install(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path, command: list[str]) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError, as when not installed
    rc, out, err = run(capsys, *command, "-o", str(tmp_path / "m.onnx"))
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [f'vaqf: error: vaqf {command[0]} needs PyTorch, which is not installed: '
                                        'pip install "vaqf[torch]"']


def test_prune_a_few_steps_writes_onnx_that_compiles(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Two rounds of refill with two training steps per training call (tests/frontend/torch_prune trains as
    little); the ONNX has whole output channels removed, matches onnxruntime, and compiles."""
    pytest.importorskip("sklearn")
    out_file = tmp_path / "pruned" / "p.onnx"
    with one_thread():
        res = run_json(capsys, "prune", "small_vgg", "-o", str(out_file), "--rounds", "2", "--epochs", "2",
                       "--retrain-epochs", "1", "--max-steps", "2", "--rate", "0.3")
    assert res["model"] == str(out_file) and res["format"] == "onnx" and res["method"] == "refill"
    assert [r["round"] for r in res["rounds"]] == [1, 2]
    assert all(0 < r["sparsity"] < 1 and 0 <= r["metric"] <= 1 for r in res["rounds"])
    assert res["sparsity"] == pytest.approx(res["rounds"][-1]["sparsity"])
    assert res["sparsity"] == pytest.approx(1 - 0.7**2, abs=0.1)
    assert res["onnx_accuracy"] == pytest.approx(res["accuracy"], abs=0.01)
    assert res["data"]["name"] == "digits_8x8" and res["macs"] < res["dense_macs"]
    summary = json.loads(Path(res["summary"]).read_text())
    assert summary["rounds"] == res["rounds"] and "features.4" in summary["layers"]
    calib = np.load(res["calib"])
    assert calib.shape[1:] == (1, 8, 8)

    # refused without --force, including the files written next to the model
    rc, _, err = run(capsys, "prune", "small_vgg", "-o", str(out_file), "--max-steps", "1")
    assert rc == 2 and "--force" in err

    built = run_json(capsys, "compile", str(out_file), "-o", str(tmp_path / "hls"), "--calib", res["calib"])
    assert built["estimate"]["fps"] > 0


def test_prune_human_output_and_user_errors(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    with one_thread():
        rc, out, err = run(capsys, "prune", "small_resnet", "-o", str(tmp_path / "r.onnx"), "--method", "random",
                           "--epochs", "1", "--max-steps", "1")
    assert rc == 0, err
    assert "sparsity  0.48" in out and "next      vaqf compile" in out
    for args, text in [(["vgg16", "-o", str(tmp_path / "v.onnx")], "cannot take digits_8x8's 8x8 images"),
                       (["small_vgg", "-o", str(tmp_path / "v.onnx"), "--rewind-epoch", "5", "--epochs", "2"],
                        "rewind epoch"),
                       (["small_vgg", "-o", str(tmp_path / "v.onnx"), "--rate", "1.5"], "rate in (0, 1)"),
                       (["lenet", "-o", str(tmp_path / "v.onnx")], "unknown network 'lenet'")]:
        rc, _, err = run(capsys, "prune", *args, "--max-steps", "1")
        assert rc == 2 and text in err and "Traceback" not in err, (args, err)


def test_torch_is_not_imported_by_vaqf_or_the_other_commands() -> None:
    """`import vaqf`, the CLI module and a command without torch leave PyTorch unloaded (it takes seconds)."""
    import subprocess

    code = ("import sys, contextlib, io, vaqf, vaqf.cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert vaqf.cli.main(['boards']) == 0\n"
            "    try:\n"
            "        vaqf.cli.main(['export', '--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"

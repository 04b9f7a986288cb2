"""`vaqf train`: the schedule, checkpoints and --resume (bit-identical), the outputs, the command line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from vaqf.cli import main  # noqa: E402
from vaqf.errors import VaqfError  # noqa: E402
from vaqf.frontend.torch.driver import TrainOptions, phases_of, run_train  # noqa: E402

from .conftest import one_thread  # noqa: E402

#: a ViT small enough that a few dozen steps take a second or two on the 8x8 digits
VIT = {"patch_size": 2, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}
SHAPE = ["--img-size", "8", "--in-chans", "1", "--patch", "2", "--embed-dim", "16", "--depth", "1", "--heads", "2",
         "--mlp-ratio", "2"]


def tiny(out: Path, **kw: object) -> TrainOptions:
    base = {"model": "deit-custom", "data": "digits", "output": out, "img_size": 8, "in_chans": 1, "vit": VIT,
            "float_epochs": 0.2, "act_epochs": 0.2, "epochs": 0.3, "batch_size": 64, "sim_images": 40,
            "shift": 1, "checkpoint_every": 3}
    return TrainOptions(**{**base, **kw})


def _equal_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_schedule_phases_and_defaults() -> None:
    p = phases_of(TrainOptions("deit-tiny", "d", Path("m.onnx")))
    assert [(x.name, x.epochs, x.distill) for x in p] == [("float", 30.0, 0.0), ("activations", 2.0, 0.5),
                                                          ("weights", 10.0, 0.5)]
    p = phases_of(TrainOptions("deit-tiny", "d", Path("m.onnx"), checkpoint="f.pt", weights="int8"))
    assert [(x.name, x.distill) for x in p] == [("activations", 0.0), ("weights", 0.0)]  # KD on for binary only
    p = phases_of(TrainOptions("small_vgg", "d", Path("m.onnx"), epochs=3))
    assert [(x.name, x.epochs) for x in p] == [("float", 3)]
    with pytest.raises(VaqfError, match="nothing to train"):
        phases_of(TrainOptions("deit-tiny", "d", Path("m.onnx"), checkpoint="f", act_epochs=0, epochs=0))
    with pytest.raises(VaqfError, match="--act-bits"):
        phases_of(TrainOptions("deit-tiny", "d", Path("m.onnx"), act_bits=1))


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    """Train N steps in one go; train k steps, stop, resume to N: the same model, bit for bit (CPU, deterministic
    algorithms), across a phase boundary and in the middle of one."""
    before = torch.are_deterministic_algorithms_enabled()
    try:
        with one_thread():
            full = run_train(tiny(tmp_path / "full" / "m.onnx", deterministic=True))
            assert not full.stopped and full.steps == 15  # 22 batches per epoch: 4 + 4 + 7 steps
            for k in (6, 10):  # in the activations phase; in the weights phase after a checkpoint at step 9
                part = tmp_path / f"part{k}" / "m.onnx"
                first = run_train(tiny(part, deterministic=True, stop_after=k))
                assert first.stopped and first.steps == k and first.model is None
                saved = torch.load(first.checkpoint, weights_only=True)
                assert saved["global_step"] == k
                rest = run_train(tiny(part, deterministic=True, resume=str(first.checkpoint)))
                assert not rest.stopped
                _equal_state(torch.load(full.state_dict), torch.load(rest.state_dict))
                assert rest.qat_accuracy == full.qat_accuracy and rest.sim_accuracy == full.sim_accuracy
                assert part.read_bytes() == (tmp_path / "full" / "m.onnx").read_bytes()
    finally:
        torch.use_deterministic_algorithms(before)
    # the log: one JSON object a line, every step of the run once, an end record with the accuracies
    records = [json.loads(line) for line in full.log.read_text().splitlines()]
    steps = [r for r in records if r["event"] == "step"]
    assert [(r["phase"], r["step"]) for r in steps] == [("float", i) for i in range(1, 5)] + \
        [("activations", i) for i in range(1, 5)] + [("weights", i) for i in range(1, 8)]
    end = records[-1]
    assert end["event"] == "end" and end["sim_images"] == 40 and 0 <= end["sim_accuracy"] <= 1
    assert sum(r["event"] == "epoch" for r in records) == 3


def test_resume_refuses_other_options_and_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    with one_thread():
        first = run_train(tiny(out, stop_after=2))
    with pytest.raises(VaqfError, match=r"act_bits: 8 in the checkpoint, 6 now"):
        run_train(tiny(out, act_bits=6, resume=str(first.checkpoint)))
    with pytest.raises(VaqfError, match="continue it with --resume"):
        run_train(tiny(out))
    with pytest.raises(VaqfError, match="no checkpoint there"):
        run_train(tiny(out, resume=str(tmp_path / "nothing")))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "sd.pt")
    with pytest.raises(VaqfError, match="not a vaqf train checkpoint"):
        run_train(tiny(out, resume=str(tmp_path / "sd.pt")))


def test_cli_train_writes_qonnx_that_compiles(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vaqf.api import compile_model

    out = tmp_path / "vit.onnx"
    with one_thread():
        rc = main(["-q", "train", "deit-custom", "--data", "digits", *SHAPE, "--float-epochs", "0.2", "--act-epochs",
                   "0.1", "--epochs", "0.2", "--batch-size", "64", "--act-bits", "6", "--weights", "int4",
                   "--sim-images", "30", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert f"model     {out} (QONNX, int4 encoder weights, 6-bit activations)" in text
    assert "1438 training / 359 validation images" in text
    assert "simulator" in text and "on 30 images" in text
    summary = json.loads(out.with_name("vit.train.json").read_text())
    assert summary["act_bits"] == 6 and summary["sim_images"] == 30
    for f in ("vit.pt", "vit.ckpt/last.pt", "vit.log.jsonl"):
        assert (tmp_path / f).is_file(), f
    res = compile_model(out, tmp_path / "hls", board="zcu102")
    assert res.design.act_bits == 6
    # the state dict loads into `vaqf export` as a quantization-aware checkpoint
    rc = main(["-q", "export", "deit-custom", *SHAPE, "--num-classes", "10", "--checkpoint", str(tmp_path / "vit.pt"),
               "--qonnx", "--act-bits", "6", "--weights", "int4", "-o", str(tmp_path / "again.onnx")])
    assert rc == 0


def test_cli_train_a_cnn_in_float_with_calibration_images(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cnn.onnx"
    with one_thread():
        rc = main(["-q", "train", "small_vgg", "--data", "digits", "--img-size", "8", "--in-chans", "1", "--epochs",
                   "0.1", "--batch-size", "64", "--weights", "int8", "--sim-images", "20", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "(float ONNX)" in text and "--calib" in text
    calib = np.load(tmp_path / "cnn.calib.npy")
    assert calib.shape[1:] == (1, 8, 8)


def test_cli_train_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 1, 8, 8)))
    cases = [
        (["--data", str(tmp_path / "bad.npz")], "no 'labels' array"),
        (["--data", str(tmp_path / "missing")], "does not exist"),
        (["--data", "digits", "--batch-size", "5000"], "fewer than one batch"),
        (["--data", "digits", "--epochs", "-1"], "must not be negative"),
        (["--data", "digits", "--normalize", "imagenet"], "RGB"),
        (["--data", "digits", "--mean", "a,b"], "comma-separated numbers"),
    ]
    for extra, message in cases:
        rc = main(["-q", "train", "deit-custom", *SHAPE, *extra, "-o", str(tmp_path / "m.onnx")])
        err = capsys.readouterr().err
        assert rc == 2 and message in err, (extra, err)
        assert err.count("\n") == 1


def test_options_that_decide_the_result() -> None:
    a = tiny(Path("a.onnx"))
    b = replace(a, output=Path("b.onnx"), sim_images=3, checkpoint_every=9)
    assert a.computed() == b.computed()
    assert replace(a, lr=0.5).computed() != a.computed()


def test_help_has_examples_and_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, contextlib, io, vaqf.cli\n"
            "buf = io.StringIO()\n"
            "for command in ('train', 'build'):\n"
            "    with contextlib.redirect_stdout(buf):\n"
            "        try:\n"
            "            vaqf.cli.main([command, '--help'])\n"
            "        except SystemExit:\n"
            "            pass\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
            "print(buf.getvalue())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.splitlines()[0] == "[]"
    assert out.count("examples:") == 2 and "torchrun --nproc_per_node" in out and "--accuracy-floor" in out
    assert "--resize {stretch,crop}" in out and "--normalize {imagenet}" in out


def test_without_torch_one_line_says_what_to_install(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    for command in ("train", "build"):
        extra = ["--fps", "10"] if command == "build" else []
        assert main([command, "deit-tiny", "--data", "digits", *extra, "-o", str(tmp_path / "x")]) == 2
        assert f'vaqf {command} needs PyTorch' in capsys.readouterr().err


def test_fine_tuning_a_checkpoint_with_another_classifier(tmp_path: Path) -> None:
    """timm's checkpoints classify 1,000 classes: their head is left out and the new one starts fresh; any other
    mismatch is an error naming the keys."""
    from vaqf.frontend.torch import deit

    torch.manual_seed(3)
    src = deit("custom", img_size=8, in_chans=1, num_classes=3, **VIT)
    torch.save(src.state_dict(), tmp_path / "three.pt")
    with one_thread():
        res = run_train(tiny(tmp_path / "m.onnx", checkpoint=str(tmp_path / "three.pt"), float_epochs=None,
                             act_epochs=0.1, epochs=0.1, sim_images=0))
    assert [p["name"] for p in res.phases] == ["activations", "weights"]  # no float phase from a checkpoint
    sd = torch.load(res.state_dict)
    assert sd["head.weight"].shape == (10, 16)
    # the encoder came from the checkpoint (QAT moved it only a little)
    delta = (sd["blocks.0.mlp.fc1.weight"] - src.state_dict()["blocks.0.mlp.fc1.weight"]).abs().max()
    assert float(delta) < 0.05
    wide = deit("custom", img_size=8, in_chans=1, num_classes=10, **{**VIT, "embed_dim": 32})
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(VaqfError, match=r"shape mismatch.*cls_token \[1, 1, 32\] in the file"):
        run_train(tiny(tmp_path / "n.onnx", checkpoint=str(tmp_path / "wide.pt")))

"""`vaqf train` under torchrun: two processes with gloo on CPU compute what one process computes on the combined
batch, and a process that dies ends the run with an error instead of a hang."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from vaqf.frontend.torch.driver import TrainOptions, run_train  # noqa: E402

from .conftest import one_thread  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
ARGS = ["deit-custom", "--data", "digits", "--img-size", "8", "--in-chans", "1", "--patch", "2", "--embed-dim", "16",
        "--depth", "1", "--heads", "2", "--mlp-ratio", "2", "--batch-size", "64", "--weights", "int8", "--shift", "1",
        "--threads", "1", "--dist-timeout", "60"]
VIT = {"patch_size": 2, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--max_restarts",
            "0", "-m", "vaqf.cli", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_two_processes_equal_one_on_the_combined_batch(tmp_path: Path) -> None:
    """Each process takes 32 of the 64 images of a global batch; DDP averages the gradients of the two mean
    losses, which is the gradient of the mean over the 64. The losses agree to float rounding at every step.
    The parameters agree to float rounding except where Adam divides a gradient that is itself rounding noise
    by its own size (its first steps move a parameter by about the learning rate whatever the gradient's
    size): at most a few elements, by at most the learning rate per step."""
    two = tmp_path / "two.onnx"
    cmd = _torchrun(["train", *ARGS, "--float-epochs", "0.1", "--act-epochs", "0.1", "--epochs", "0.1",
                     "--sim-images", "20", "-q", "-o", str(two)])
    p = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "on 2 processes" in p.stdout and p.stdout.count("model     ") == 1  # rank 0 alone reports
    with one_thread():
        one = run_train(TrainOptions("deit-custom", "digits", tmp_path / "one.onnx", img_size=8, in_chans=1, vit=VIT,
                                     batch_size=64, weights="int8", shift=1, float_epochs=0.1, act_epochs=0.1,
                                     epochs=0.1, sim_images=20))
    assert one.steps == 6 and one.world == 1

    def losses(path: Path) -> list[float]:
        return [r["loss"] for r in map(json.loads, path.read_text().splitlines()) if r["event"] == "step"]

    a, b = losses(one.log), losses(tmp_path / "two.log.jsonl")
    assert len(a) == len(b) == 6
    assert a == pytest.approx(b, rel=1e-5)
    sa, sb = torch.load(one.state_dict), torch.load(tmp_path / "two.pt")
    assert sa.keys() == sb.keys()
    total = off = 0
    worst = 0.0
    for k in sa:
        d = (sa[k].double() - sb[k].double()).abs()
        total += d.numel()
        off += int((d > 1e-5).sum())
        worst = max(worst, float(d.max()))
    assert off <= total // 500, (off, total)
    assert worst <= 6 * 2e-3  # six steps at most at the largest learning rate (float phase, 0.002)
    summary = json.loads((tmp_path / "two.train.json").read_text())
    assert summary["world"] == 2 and summary["train_images"] == one.train_images


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(t) for t in text)
    return out


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for kv in env:
        if kv.startswith(b"RANK="):
            return int(kv[5:])
    return None


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker processes through /proc")
def test_a_killed_process_fails_the_run_cleanly(tmp_path: Path) -> None:
    log = tmp_path / "m.log.jsonl"
    cmd = _torchrun(["train", *ARGS, "--float-epochs", "500", "--act-epochs", "0", "--epochs", "0",
                     "--sim-images", "0", "-q", "-o", str(tmp_path / "m.onnx")])
    p = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (log.is_file() and '"event": "step"' in log.read_text()):
            assert p.poll() is None, p.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        victims = [c for c in _children(p.pid) if _rank_of(c) == 1]
        assert len(victims) == 1
        os.kill(victims[0], signal.SIGKILL)
        _, err = p.communicate(timeout=120)  # no hang: the launcher stops the others and exits
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode != 0
    assert "Signal 9 (SIGKILL)" in err or "exitcode  : -9" in err, err[-3000:]
    # the run wrote nothing final: no model, no summary
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.train.json").exists()

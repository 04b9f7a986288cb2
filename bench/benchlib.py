"""Shared helpers of the benchmarks in bench/: machine description, peak memory, cached DeiT exports, tables.

Not a benchmark itself, except for one entry point used to export a DeiT in a separate process (so that the
measuring process never imports torch):

    .venv/bin/python bench/benchlib.py export tiny /tmp/vaqf-bench/deit_tiny.onnx
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORK = Path(tempfile.gettempdir()) / "vaqf-bench"
DEIT_DIMS = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}  # embed dim, heads (depth 12, MLP 4x)


# ---- machine -------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _mem_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def machine() -> str:
    """One line: cores, CPU, memory, OS, Python and library versions, date, load average."""
    import numpy as np

    libs = [f"numpy {np.__version__}"]
    for mod in ("onnxruntime", "torch", "hls4ml"):
        try:
            libs.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001 - optional libraries; any import failure means "not reported"
            pass
    try:
        gxx = subprocess.run(["g++", "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        gxx = "g++ not found"
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "vaqf"],
                               capture_output=True, text=True, check=False).stdout.strip()
        rev = f"vaqf at {head}" + (" + uncommitted changes in vaqf/" if dirty else "")
    except OSError:
        rev = "vaqf revision unknown"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"{os.cpu_count()} cores ({_cpu_model()}), {_mem_gib():.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, {', '.join(libs)}, {gxx}; "
            f"{rev}; {now}; load average {load}")


# ---- peak memory ---------------------------------------------------------------------------------

def _vm_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process: writing 5 to /proc/self/clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Stage:
    name: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    rss_before_mib: float = 0.0
    peak_rss_mib: float = 0.0   # the process's peak resident set size during the stage (VmHWM)
    peak_method: str = ""

    def to_json(self) -> dict:
        return dict(self.__dict__)


@contextmanager
def stage(name: str, into: list[Stage]) -> Iterator[Stage]:
    """Time a block (wall and CPU seconds of this process) and measure its peak resident set size.

    Peak memory is the kernel's high-water mark of this process's RSS (``VmHWM`` in /proc/self/status),
    reset at the start of the block through /proc/self/clear_refs, so it is the peak *during* the block
    (including what earlier blocks still hold; ``rss_before_mib`` says how much that was). Where the reset is
    not available it falls back to ``getrusage(RUSAGE_SELF).ru_maxrss``, the peak since the process started.
    """
    st = Stage(name)
    st.rss_before_mib = (_vm_kib("VmRSS") or 0) / 1024
    st.peak_method = "VmHWM reset per stage" if _reset_peak() else "ru_maxrss since start"
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        yield st
    finally:
        st.wall_s = time.perf_counter() - t0
        st.cpu_s = time.process_time() - c0
        hwm = _vm_kib("VmHWM") if st.peak_method.startswith("VmHWM") else None
        st.peak_rss_mib = (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
        into.append(st)


# ---- models --------------------------------------------------------------------------------------

def deit_onnx(name: str, work: Path = DEFAULT_WORK, seed: int = 0) -> Path:
    """DeiT-``name`` (random init, 224x224, 1000 classes) exported to ONNX once, cached under ``work``.

    The class token, position embedding and head are rescaled to a trained model's magnitudes (see _export).

    The export runs in a child process, so the caller never imports torch (its memory would count in the
    caller's peak RSS)."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"deit_{name}_seed{seed}_v2.onnx"
    if not path.is_file():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "export", name, str(path), str(seed)],
                       check=True)
        print(f"# exported DeiT-{name} to {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


def _export(name: str, path: str, seed: int) -> None:
    import torch

    from vaqf.frontend.torch.deit import deit, export_onnx, trained_magnitudes

    torch.manual_seed(seed)
    model = deit(name)
    trained_magnitudes(model)
    tmp = path + ".part"
    export_onnx(model, tmp)
    os.replace(tmp, path)


def deit_workload(name: str) -> dict[str, float]:
    """MACs per image and weights of DeiT-``name`` at 224x224 (linear layers, patch embedding, head, Q.K^T, A.V)."""
    dim, _ = DEIT_DIMS[name]
    tokens, depth, hidden, patches = 197, 12, 4 * dim, 196
    lin_w = depth * (dim * 3 * dim + dim * dim + 2 * dim * hidden)
    encoder_macs = tokens * lin_w
    attn_macs = depth * 2 * tokens * tokens * dim
    embed_w, head_w = 3 * 16 * 16 * dim, dim * 1000
    return {"encoder_weights": lin_w, "weights": lin_w + embed_w + head_w,
            "macs": encoder_macs + attn_macs + patches * embed_w + head_w, "attn_macs": attn_macs}


def float_counterpart(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float model behind a QONNX model: every Quant/BipolarQuant/IntQuant becomes an Identity, so the same
    float weights and biases run unquantized (onnxruntime reads the result)."""
    import copy

    m = copy.deepcopy(model)
    for node in m.graph.node:
        if node.op_type in ("Quant", "BipolarQuant", "IntQuant"):
            src = node.input[0]
            node.ClearField("attribute")
            del node.input[:]
            node.input.append(src)
            node.op_type, node.domain = "Identity", ""
    keep = [o for o in m.opset_import if o.domain in ("", "ai.onnx")]
    del m.opset_import[:]
    m.opset_import.extend(keep)
    m.ir_version = min(m.ir_version, 10)
    return m


def ort_session(model: onnx.ModelProto | str | Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # no warnings about unused initializers
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def set_threads(argv: Sequence[str], default: int = 1) -> int:
    """Read ``--threads N`` from argv and cap the BLAS/OpenMP pools *before* numpy is imported."""
    n = default
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = int(argv[i + 1])
        elif a.startswith("--threads="):
            n = int(a.split("=", 1)[1])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    return n


# ---- output --------------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (pipes), columns padded for reading in a terminal."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths, strict=True))
              + " |" for r in cells[1:]]
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    head = cell.split(" ", 1)[0].rstrip("%x")
    try:
        float(head.replace(",", ""))
        return True
    except ValueError:
        return False


def run_child(script: Path, args: Sequence[str]) -> dict:
    """Run ``script args`` in a fresh interpreter; it prints one JSON object as its last stdout line."""
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "export":
        _export(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    else:
        print(__doc__)
        sys.exit(2)

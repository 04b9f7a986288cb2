"""Float reference runs (calibration, the output error, per-tensor errors) give the same bits on any machine:
onnxruntime's reductions are split over one thread per core by default, so their last bits, the calibration
scales computed from them and every integer constant of a project would depend on the core count."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from tests.helpers import float_mlp_model
from vaqf.frontend.calibrate import float_session

VAQF = Path(__file__).resolve().parents[2] / "vaqf"

#: sessions that run only integer arithmetic (exact whatever the thread count) or a user's own check
EXACT_SESSIONS = {"vaqf/sim/gemm.py", "vaqf/frontend/torch/lth.py"}


def test_float_sessions_run_on_one_thread_in_a_fixed_order(rng: np.random.Generator) -> None:
    import onnxruntime as ort

    sess = float_session(float_mlp_model(rng))
    opts = sess.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL


def test_every_float_session_is_made_by_float_session() -> None:
    """A new onnxruntime.InferenceSession on a float model elsewhere would bring the core count back."""
    makers = []
    for path in sorted(VAQF.rglob("*.py")):
        rel = path.relative_to(VAQF.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "InferenceSession":
                makers.append(rel)
    assert set(makers) - EXACT_SESSIONS == {"vaqf/frontend/calibrate.py"}
    assert makers.count("vaqf/frontend/calibrate.py") == 1

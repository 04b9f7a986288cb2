"""hls/vaqf/cycles.h: the counters the C-simulation reports per layer, driven directly.

A pipelined loop counts trips x II + depth; a DATAFLOW row pipeline counts the finish time of its last
row, finish[s][r] = max(finish[s][r-1], finish[s-1][r]) + t[s][r]; the counts land in the slot of the
layer that was running, and the file lists the top's own loops first.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from vaqf.backend.csim import CXXFLAGS, ap_include_dir, compiler
from vaqf.backend.package_files import hls_dir

HARNESS = r"""
#include <cstdio>
#include "vaqf/cycles.h"

// stdin: per layer "stages rows" then stages x rows per-row cycles, then "loop trips ii depth"
int main(int argc, char** argv) {
    int layers = 0, stages, rows;
    vaqf::cycles::reset();
    VAQF_LOOP(10, 1, 64);  // the top's own loop: slot "io"
    while (std::scanf("%d %d", &stages, &rows) == 2) {
        VAQF_LAYER(layers);
        VAQF_REGION_BEGIN();
        for (int s = 0; s < stages; s++)
            for (int r = 0; r < rows; r++) {
                long long t;
                std::scanf("%lld", &t);
                VAQF_ROW(s, t);
            }
        long long trips, ii, depth;
        std::scanf("%lld %lld %lld", &trips, &ii, &depth);
        VAQF_LOOP(trips, ii, depth);  // inside the region: added to the region's count
        VAQF_REGION_END(stages);
        VAQF_LOOP(trips, ii, depth);  // after it: added once more
        VAQF_LAYER_END();
        layers++;
    }
    return vaqf::cycles::dump(argv[1], layers) ? 0 : 1;
}
"""


def row_pipeline(t: np.ndarray) -> int:
    """The finish time of the last row of a row pipeline with per-stage, per-row times t[s, r]."""
    stages, rows = t.shape
    finish = np.zeros((stages + 1, rows + 1), dtype=np.int64)
    for s in range(stages):
        for r in range(rows):
            finish[s + 1, r + 1] = max(finish[s + 1, r], finish[s, r + 1]) + t[s, r]
    return int(finish[stages, rows])


@pytest.mark.cxx
def test_counters_add_loops_and_row_pipelines(tmp_path: Path) -> None:
    src = tmp_path / "harness.cpp"
    src.write_text(HARNESS)
    exe = tmp_path / "harness"
    subprocess.run([compiler(), *CXXFLAGS, f"-I{hls_dir().parent}", f"-I{ap_include_dir()}", str(src), "-o", str(exe)],
                   check=True, capture_output=True)
    rng = np.random.default_rng(0)
    cases = [np.array([[5, 5, 5]]), np.array([[3, 3], [10, 10], [2, 2]]), rng.integers(0, 50, size=(3, 7)),
             rng.integers(1, 9, size=(2, 1))]
    loops = [(4, 2, 7), (0, 1, 9), (100, 1, 12), (3, 3, 0)]
    text = ""
    for t, (trips, ii, depth) in zip(cases, loops, strict=True):
        text += f"{t.shape[0]} {t.shape[1]} " + " ".join(map(str, t.ravel())) + f" {trips} {ii} {depth}\n"
    out = tmp_path / "cycles.txt"
    subprocess.run([str(exe), str(out)], input=text, text=True, check=True)
    lines = out.read_text().split()
    counted = dict(zip(lines[0::2], (int(x) for x in lines[1::2]), strict=True))
    assert counted["io"] == 10 + 64
    for i, (t, (trips, ii, depth)) in enumerate(zip(cases, loops, strict=True)):
        loop = trips * ii + depth if trips > 0 else 0
        assert counted[str(i)] == row_pipeline(t) + 2 * loop, i
    # a stage slower than the others sets the pace: rows x slowest + the others' first and last rows
    assert row_pipeline(np.array([[3, 3], [10, 10], [2, 2]])) == 3 + 20 + 2

"""hls/vaqf/qarith.h against vaqf.ir.qarith, bit for bit, in every rounding mode.

The C-simulation tests of whole models only exercise the rounding mode their models use (half to even);
this drives the C++ rounding shift and requantization directly with edge cases of all eight modes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from vaqf.backend.csim import CXXFLAGS, ap_include_dir, compiler
from vaqf.backend.package_files import hls_dir
from vaqf.ir.qarith import Rounding, requantize, rshift_round

HARNESS = r"""
#include <cstdio>
#include "vaqf/qarith.h"

// stdin: "R x shift mode" or "Q acc mantissa shift zero_point lo hi mode"; stdout: one result per line
int main() {
    char op;
    while (std::scanf(" %c", &op) == 1) {
        if (op == 'R') {
            long long x; int shift, mode;
            std::scanf("%lld %d %d", &x, &shift, &mode);
            std::printf("%lld\n", (long long)vaqf::rshift_round(vaqf::wide_t(x), shift, mode).to_int64());
        } else {
            long long acc; int m, shift, zp, lo, hi, mode;
            std::scanf("%lld %d %d %d %d %d %d", &acc, &m, &shift, &zp, &lo, &hi, &mode);
            std::printf("%lld\n",
                        (long long)vaqf::requantize(vaqf::wide_t(acc), m, shift, zp, lo, hi, mode).to_int64());
        }
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("qarith_cxx")
    src = d / "harness.cpp"
    src.write_text(HARNESS)
    exe = d / "harness"
    cmd = [compiler(), *CXXFLAGS, f"-I{hls_dir().parent}", f"-I{ap_include_dir()}", str(src), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return exe


def _run(exe: Path, lines: list[str]) -> np.ndarray:
    proc = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    return np.array([int(v) for v in proc.stdout.split()], dtype=np.int64)


@pytest.mark.cxx
def test_rshift_round_cxx_equals_python(harness: Path, rng: np.random.Generator) -> None:
    shifts = np.concatenate([np.arange(0, 63), rng.integers(0, 63, size=600)])
    mags = rng.integers(0, 2**62, size=shifts.size) >> rng.integers(0, 62, size=shifts.size)
    x = np.where(rng.random(shifts.size) < 0.5, -mags, mags)
    # exact ties and off-by-one neighbours of ties, where modes disagree
    ties = (rng.integers(-1000, 1000, size=shifts.size) * 2 + 1) * (np.int64(1) << np.maximum(shifts - 1, 0))
    x = np.concatenate([x, ties, ties + 1, ties - 1, [2**62, -(2**62), -1, 1, 0] * 13])
    shifts = np.concatenate([shifts, shifts, shifts, shifts, np.repeat(np.arange(13) * 5 % 63, 5)])
    for mode in Rounding:
        lines = [f"R {int(v)} {int(s)} {mode.cpp_id}" for v, s in zip(x, shifts, strict=True)]
        np.testing.assert_array_equal(_run(harness, lines), rshift_round(x, shifts, mode), err_msg=mode.value)


@pytest.mark.cxx
def test_requantize_cxx_equals_python(harness: Path, rng: np.random.Generator) -> None:
    n = 800
    acc = rng.integers(-(2**31), 2**31, size=n)
    acc[:50] = rng.integers(-300, 300, size=50)
    mant = rng.integers(1, 2**31, size=n)
    mant[50:100] = 1 << rng.integers(0, 30, size=50)  # power-of-two multipliers produce exact ties
    shift = rng.integers(0, 63, size=n)
    shift[:100] = rng.integers(1, 12, size=100)
    zp = rng.integers(-128, 128, size=n)
    ranges = [(-128, 127), (0, 255), (-127, 127), (-8, 7), (0, 15), (-(2**15), 2**15 - 1)]
    pick = rng.integers(0, len(ranges), size=n)
    lo = np.array([ranges[i][0] for i in pick])
    hi = np.array([ranges[i][1] for i in pick])
    for mode in Rounding:
        lines = [f"Q {a} {m} {s} {z} {lo_} {hi_} {mode.cpp_id}"
                 for a, m, s, z, lo_, hi_ in zip(acc, mant, shift, zp, lo, hi, strict=True)]
        want = np.array([int(requantize(np.int64(a), int(m), int(s), int(z), int(lo_), int(hi_), mode))
                         for a, m, s, z, lo_, hi_ in zip(acc, mant, shift, zp, lo, hi, strict=True)])
        np.testing.assert_array_equal(_run(harness, lines), want, err_msg=mode.value)

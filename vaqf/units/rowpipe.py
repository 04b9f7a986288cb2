"""Cycles of a row-pipelined DATAFLOW region, as the kernels' counters count them (hls/vaqf/cycles.h).

A region of S processes that pass rows through FIFOs of at least two rows finishes process s on row r at
``finish[s][r] = max(finish[s][r-1], finish[s-1][r]) + t[s][r]`` (VAQF_REGION_END). The softmax and LayerNorm
kernels record one lead "row" first (the constant-table fill, in the process that does it; 0 elsewhere), then
``rows`` identical rows. This module gives the same number in closed form, so the search need not loop.
"""

from __future__ import annotations


def row_pipeline_cycles(rows: int, times: list[int], lead: list[int]) -> int:
    """Finish time of the last process on the last row: a lead row with per-process cycles ``lead``, then
    ``rows`` rows of per-process cycles ``times``.

    The recurrence is a longest path through the (process, row) grid. Entering the identical rows at
    process j (from the lead row's finish F_j there), a path through processes j..S-1 visits each once and
    repeats the slowest of them for the other rows - 1 rows.
    """
    s = len(times)
    finish_lead = []
    done = 0
    for t in lead:  # the lead row through the processes (no row before it)
        done += int(t)
        finish_lead.append(done)
    if rows <= 0:
        return finish_lead[-1] if finish_lead else 0
    best = 0
    for j in range(s):
        seg = [int(t) for t in times[j:]]
        best = max(best, finish_lead[j] + sum(seg) + (rows - 1) * max(seg))
    return best


def row_pipeline_cycles_loop(rows: int, times: list[int], lead: list[int]) -> int:
    """The same recurrence, row by row (the counters' own loop; tests hold the closed form to it)."""
    prev = [0] * (rows + 1)
    for s in range(len(times)):
        cur = []
        done = 0
        for r in range(rows + 1):
            t = int(lead[s]) if r == 0 else int(times[s])
            done = max(done, prev[r]) + t
            cur.append(done)
        prev = cur
    return prev[-1]

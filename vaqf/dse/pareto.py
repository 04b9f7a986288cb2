"""Compiled loops of the design-space search (numba): Pareto filtering and queries over a product space.

Both replace numpy formulations that materialize every comparison (an n x front x d Boolean array for the
Pareto filter, a designs x resources array per query); the loops here stop at the first deciding
comparison instead. The results are the same rows and the same design, ties included:
tests/dse/test_search.py compares them with the numpy formulations and with exhaustive enumeration.
"""

from __future__ import annotations

import numpy as np

from vaqf.jit import jit

#: query kinds of :func:`argmin_product`
FASTEST, CHEAPEST, CLOSEST_FASTER, FEWEST_CYCLES, CLOSEST = range(5)


#: kept rows are grouped in blocks of this many, each with its column-wise minimum
FRONT_BLOCK = 32


@jit
def pareto_sorted(rows):  # noqa: ANN001, ANN201
    """Keep-mask of lexicographically sorted rows (all columns minimized): a row is dropped when a kept
    row before it is <= it in every column (equal rows: the first is kept).

    Sorted order makes column 0 of every kept row <= the row's, so only the other columns are compared.
    Kept rows are grouped in blocks of FRONT_BLOCK with each block's column-wise minimum: a block whose
    minimum is not <= the row somewhere holds no row that could drop it and is skipped whole. Blocks are
    visited newest first (the latest kept rows are the nearest in order: likeliest to dominate).
    """
    n, d = rows.shape
    bs = FRONT_BLOCK
    keep = np.zeros(n, dtype=np.bool_)
    front = np.empty((n, d), dtype=rows.dtype)
    mins = np.empty((n // bs + 1, d), dtype=rows.dtype)
    nf = 0
    for i in range(n):
        dominated = False
        for b in range((nf + bs - 1) // bs - 1, -1, -1):
            inside = True
            for j in range(1, d):
                if mins[b, j] > rows[i, j]:
                    inside = False
                    break
            if not inside:
                continue
            for f in range(min(nf, (b + 1) * bs) - 1, b * bs - 1, -1):
                le = True
                for j in range(1, d):
                    if front[f, j] > rows[i, j]:
                        le = False
                        break
                if le:
                    dominated = True
                    break
            if dominated:
                break
        if not dominated:
            keep[i] = True
            b = nf // bs
            for j in range(d):
                front[nf, j] = rows[i, j]
                if nf % bs == 0 or rows[i, j] < mins[b, j]:
                    mins[b, j] = rows[i, j]
            nf += 1
    return keep


@jit
def argmin_product(kind, a_cycles, a_res, a_simd, b_cycles, b_res, b_simd, fixed_cycles, shell,  # noqa: ANN001, ANN201, PLR0913
                   buf_lut, buf_bram, lut_col, dsp_col, bram_col, threshold, caps, max_cycles):
    """Index (ia * len(b) + ib) of the design of the product A x B minimizing a lexicographic key, or -1.

    A design's cycles are ``fixed_cycles + a_cycles + b_cycles``, its resources ``shell + a_res + b_res``
    plus the activation buffers of its largest SIMD index (``buf_lut``/``buf_bram`` indexed by
    ``max(a_simd, b_simd)``, SIMD given as an index into the sorted SIMD values). Kinds:

    - FASTEST: designs within ``threshold``; key (cycles, LUT, DSP, BRAM18);
    - CHEAPEST: designs within ``threshold`` of at most ``max_cycles``; key (LUT, DSP, BRAM18, cycles);
    - CLOSEST_FASTER: designs of fewer than ``max_cycles`` cycles; key (worst utilization, cycles);
    - FEWEST_CYCLES: every design; key (cycles,);
    - CLOSEST: every design; key (worst utilization,).

    Worst utilization is the largest ``res / caps`` (inf for a resource the board lacks), as the integer
    ``rint(min(u, 1e6) * 1e9)``. Of equal keys, the first design in index order.
    """
    na, nb = a_cycles.shape[0], b_cycles.shape[0]
    r = shell.shape[0]
    res = np.empty(r, dtype=np.int64)
    best = -1
    k0 = k1 = k2 = k3 = np.int64(0)
    for ia in range(na):
        for ib in range(nb):
            cyc = fixed_cycles + a_cycles[ia] + b_cycles[ib]
            if kind == CHEAPEST or kind == CLOSEST_FASTER:
                if kind == CHEAPEST and cyc > max_cycles:
                    continue
                if kind == CLOSEST_FASTER and cyc >= max_cycles:
                    continue
            elif kind == FASTEST or kind == FEWEST_CYCLES:
                if best >= 0 and cyc > k0:
                    continue
            s = max(a_simd[ia], b_simd[ib])
            for j in range(r):
                res[j] = shell[j] + a_res[ia, j] + b_res[ib, j]
            res[lut_col] += buf_lut[s]
            res[bram_col] += buf_bram[s]
            if kind == FASTEST or kind == CHEAPEST:
                fits = True
                for j in range(r):
                    if res[j] > threshold[j]:
                        fits = False
                        break
                if not fits:
                    continue
            if kind == FASTEST:
                c0, c1, c2, c3 = cyc, res[lut_col], res[dsp_col], res[bram_col]
            elif kind == CHEAPEST:
                c0, c1, c2, c3 = res[lut_col], res[dsp_col], res[bram_col], cyc
            elif kind == FEWEST_CYCLES:
                c0, c1, c2, c3 = cyc, np.int64(0), np.int64(0), np.int64(0)
            else:
                worst = 0.0
                for j in range(r):
                    if caps[j] > 0:
                        u = res[j] / caps[j]
                    elif res[j] > 0:
                        u = np.inf
                    else:
                        u = 0.0
                    worst = max(worst, u)
                c0 = np.int64(np.rint(min(worst, 1e6) * 1e9))
                c1 = cyc if kind == CLOSEST_FASTER else np.int64(0)
                c2 = c3 = np.int64(0)
            if best < 0 or (c0, c1, c2, c3) < (k0, k1, k2, k3):
                best = ia * nb + ib
                k0, k1, k2, k3 = c0, c1, c2, c3
    return best

"""Dense blocks of a sparse weight matrix, found from the weights alone.

A block is a group of output rows with the set of input columns they use; the blocks partition the rows
that have a non-zero weight and hold every non-zero weight (zeros inside a block are computed, zeros
outside are skipped). Regroup pruning (Structure-LTH, vaqf.frontend.torch.sparse) leaves exactly such a
structure; any ONNX model whose zeros have it benefits.

Grouping: rows with identical non-zero columns form the first groups (exact, no waste). Then, greedily,
the two groups whose merged block wastes the smallest fraction of its cells on zeros are merged, while
that fraction stays at most ``max_waste``: fewer, larger blocks fill the PE rows of the GEMM unit better
and pay the per-block overheads (a DDR round trip, the column table) fewer times. Whether the blocks
pay off at all is for the cost model to say (vaqf.units.gemm.blocks_pay_off, and per design the unit's mode).
"""

from __future__ import annotations

import numpy as np

#: at most this fraction of a merged block's cells may be zeros that the block then computes
MAX_WASTE = 0.25
#: layers with more distinct row supports than this are unstructured: no blocks are looked for
MAX_GROUPS = 256


def group_rows(weight: np.ndarray, max_waste: float = MAX_WASTE,
               max_groups: int = MAX_GROUPS) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Row groups with their column sets (sorted index arrays) covering every non-zero of ``weight``;
    None when no row has a non-zero weight or the supports are too many to be a block structure."""
    nz = np.asarray(weight) != 0
    live = np.flatnonzero(nz.any(axis=1))
    if live.size == 0:
        return None
    _, first, inverse = np.unique(np.packbits(nz[live], axis=1), axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if first.size > max_groups:
        return None
    rows = [live[inverse == g] for g in range(first.size)]
    cols = nz[live[first]].astype(np.float64)            # [G, K] column sets
    n = np.array([r.size for r in rows], dtype=np.float64)
    nnz = np.array([nz[r].sum() for r in rows], dtype=np.float64)
    alive = np.ones(len(rows), dtype=bool)
    size = cols.sum(axis=1)
    union = size[:, None] + size[None, :] - cols @ cols.T
    while alive.sum() > 1:
        cells = (n[:, None] + n[None, :]) * union
        waste = 1.0 - (nnz[:, None] + nnz[None, :]) / np.maximum(cells, 1)
        waste[~alive, :] = np.inf
        waste[:, ~alive] = np.inf
        np.fill_diagonal(waste, np.inf)
        i, j = np.unravel_index(int(np.argmin(waste)), waste.shape)
        if not waste[i, j] <= max_waste:
            break
        rows[i] = np.sort(np.concatenate([rows[i], rows[j]]))
        cols[i] = np.maximum(cols[i], cols[j])
        n[i] += n[j]
        nnz[i] += nnz[j]
        alive[j] = False
        size[i] = cols[i].sum()
        union[i, :] = size[i] + size - cols @ cols[i]
        union[:, i] = union[i, :]
    return [(rows[g], np.flatnonzero(cols[g])) for g in np.flatnonzero(alive)]

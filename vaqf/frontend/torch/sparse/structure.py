"""Mask transforms of Structure-LTH on one layer, viewed as a matrix [c_out, c_in*kh*kw] of booleans.

- :func:`refill_mask` (channel-wise): keep the k best output-channel rows fully dense, drop the others.
- :func:`regroup_mask` (group-wise): partition rows into groups that share columns, keep dense blocks of
  "group rows x chosen columns", drop everything outside the blocks.
- :func:`find_blocks`: the dense blocks of a mask recovered from the mask alone (rows with the same non-zero
  columns form one block), which is what a compiler sees in the exported weights.
- :func:`erk_densities` and :func:`random_mask`: random pruning with Erdos-Renyi-Kernel layer densities, the
  baseline.

All functions are deterministic for a given input (and seed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vaqf.frontend.torch.sparse.partition import partition_rows

REFILL_CRITERIA = ("l1", "count")


@dataclass(frozen=True)
class Block:
    """A dense block of a layer's weight matrix: every (row, col) pair is non-zero."""

    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @property
    def size(self) -> int:
        return len(self.rows) * len(self.cols)

    def to_json(self) -> dict:
        return {"rows": list(self.rows), "cols": list(self.cols)}


def _as_matrix(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask [c_out, c_in*kh*kw], got shape {m.shape}")
    return m


def refill_mask(mask: np.ndarray, weight: np.ndarray | None = None, criterion: str = "l1",
                fillback_rate: float = 0.0) -> np.ndarray:
    """Channel-wise refill of one layer's mask [rows, cols].

    Every row (output channel) is scored by the L1 norm of its remaining weights (``criterion="l1"``, needs
    ``weight`` of the same shape) or by its number of remaining weights (``"count"``). The best
    ``k = round(nnz / cols)`` rows, which keep the layer's density about the same, become fully dense; the
    others become zero. Refill+ (``fillback_rate > 0``) keeps ``round(k * fillback_rate)`` more rows.
    Ties go to the lower row index.
    """
    m = _as_matrix(mask)
    if criterion not in REFILL_CRITERIA:
        raise ValueError(f"unknown refill criterion {criterion!r}; choose one of {REFILL_CRITERIA}")
    if fillback_rate < 0:
        raise ValueError(f"fillback_rate must be >= 0, got {fillback_rate}")
    rows, cols = m.shape
    nnz = int(m.sum())
    k = 0 if nnz == 0 else max(1, int(round(nnz / cols)))
    k = min(rows, k + int(round(k * fillback_rate)))
    if criterion == "l1":
        if weight is None:
            raise ValueError("the 'l1' refill criterion needs the layer's weights")
        w = np.asarray(weight, dtype=np.float64).reshape(m.shape)
        score = np.where(m, np.abs(w), 0.0).sum(axis=1)
    else:
        score = m.sum(axis=1).astype(np.float64)
    keep = np.lexsort((np.arange(rows), -score))[:k]
    out = np.zeros_like(m)
    out[keep] = True
    return out


def row_groups(mask: np.ndarray, parts: np.ndarray, block_rows: int, min_group_rows: int) -> list[np.ndarray]:
    """Cut each part of a row partition into groups of ``block_rows`` rows plus a remainder.

    Within a part, rows are ordered by how typical they are of the part (the number of the part's non-zeros
    that share a column with the row), so the least typical rows end up in the remainder; a remainder smaller
    than ``min_group_rows`` is dropped. Returns the groups (sorted row indices), in part order.
    """
    m = _as_matrix(mask)
    groups: list[np.ndarray] = []
    for p in np.unique(parts):
        members = np.flatnonzero(parts == p)
        profile = m[members].sum(axis=0)
        typicality = (m[members] * profile).sum(axis=1)
        members = members[np.lexsort((members, -typicality))]
        full = len(members) // block_rows * block_rows
        for start in range(0, full, block_rows):
            groups.append(np.sort(members[start:start + block_rows]))
        rest = members[full:]
        if len(rest) >= max(1, min_group_rows):
            groups.append(np.sort(rest))
    return groups


def regroup_mask(mask: np.ndarray, n_parts: int = 8, block_rows: int = 32, min_group_rows: int | None = None,
                 density: float | None = None, min_fill: float = 0.0, partitioner: str = "auto",
                 seed: int = 0) -> tuple[np.ndarray, list[Block]]:
    """Group-wise regroup of one layer's mask [rows, cols]: returns the new mask and its dense blocks.

    1. Rows with any non-zero are partitioned into ``min(n_parts, rows // block_rows)`` parts (at least 1) with
       the column hypergraph (:func:`partition_rows`); all-zero rows stay zero.
    2. Each part is cut into groups of ``block_rows`` rows plus a remainder; a remainder smaller than
       ``min_group_rows`` (default ``max(2, block_rows // 4)``) is dropped (:func:`row_groups`).
    3. Every (group, column) pair is a candidate block column with fill = (non-zeros of the group in that column)
       / (group rows). Candidates are taken best-filled first, which inside a group is the order of columns by
       non-zero count, so each group's block grows while it stays well filled. Growth stops when the blocks
       hold ``density`` x size weights (default: the input's density, so the layer keeps its sparsity) or
       when the fill drops below ``min_fill``.
    4. Blocks are refilled to fully dense; everything outside them is zero.
    """
    m = _as_matrix(mask)
    rows, cols = m.shape
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    if min_group_rows is None:
        min_group_rows = max(2, block_rows // 4)
    target = float(m.sum()) if density is None else float(density) * m.size
    live = np.flatnonzero(m.any(axis=1))
    out = np.zeros_like(m)
    if live.size == 0 or target <= 0:
        return out, []
    k = max(1, min(n_parts, rows // block_rows, live.size))
    parts = partition_rows(m[live], k, partitioner, seed)
    groups = [live[g] for g in row_groups(m[live], parts, block_rows, min_group_rows)]
    if not groups:
        return out, []
    # candidate block columns of every group: (fill, count, group, column)
    counts = np.stack([m[g].sum(axis=0) for g in groups])          # [groups, cols]
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    gi, cj = np.nonzero(counts)
    fill = counts[gi, cj] / sizes[gi]
    ok = fill >= min_fill
    gi, cj, fill = gi[ok], cj[ok], fill[ok]
    order = np.lexsort((cj, gi, -counts[gi, cj], -fill))
    area = np.cumsum(sizes[gi[order]])
    # the prefix whose area is closest to the target
    n = int(np.searchsorted(area, target, side="right"))
    if n < len(area) and (n == 0 or abs(area[n] - target) < abs(target - area[n - 1])):
        n += 1
    chosen = order[:n]
    blocks: list[Block] = []
    for g_index, g in enumerate(groups):
        sel = np.sort(cj[chosen][gi[chosen] == g_index])
        if sel.size:
            out[np.ix_(g, sel)] = True
            blocks.append(Block(tuple(int(r) for r in g), tuple(int(c) for c in sel)))
    return out, blocks


def find_blocks(mask: np.ndarray) -> list[Block]:
    """The dense blocks of a mask from the mask alone: rows with identical non-zero columns form one block.

    All-zero rows belong to no block. Every non-zero lies in exactly one block and every block is dense, so the
    blocks of a regrouped layer are found again (two groups that chose the same columns merge into one).
    """
    m = _as_matrix(mask)
    by_support: dict[bytes, list[int]] = {}
    for r in np.flatnonzero(m.any(axis=1)):
        by_support.setdefault(np.packbits(m[r]).tobytes(), []).append(int(r))
    blocks = [Block(tuple(rs), tuple(int(c) for c in np.flatnonzero(m[rs[0]]))) for rs in by_support.values()]
    return sorted(blocks, key=lambda b: b.rows[0])


def erk_scores(shape: Sequence[int]) -> float:
    """The Erdos-Renyi-Kernel score of a weight shape: sum of its dimensions over their product."""
    return float(sum(shape)) / float(math.prod(shape))


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float, power: float = 1.0) -> dict[str, float]:
    """Layer densities proportional to ``erk_scores(shape) ** power`` whose weighted mean is ``density``.

    As in RigL (Evci et al., 2020): the scale eps solves sum_l eps * score_l * n_l = density * sum_l n_l; a layer
    whose density would exceed 1 is made dense and eps is solved again over the others.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    numel = {k: float(math.prod(s)) for k, s in shapes.items()}
    raw = {k: erk_scores(s) ** power for k, s in shapes.items()}
    total = density * sum(numel.values())
    dense: set[str] = set()
    while True:
        rest = [k for k in shapes if k not in dense]
        budget = total - sum(numel[k] for k in dense)
        denom = sum(raw[k] * numel[k] for k in rest)
        eps = budget / denom if denom > 0 else 0.0
        over = [k for k in rest if eps * raw[k] > 1.0]
        if not over:
            break
        dense.add(max(over, key=lambda k: raw[k]))
    return {k: 1.0 if k in dense else eps * raw[k] for k in shapes}


def random_mask(shape: Sequence[int], density: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of ``shape`` with exactly ``round(density * size)`` True entries, chosen uniformly."""
    n = int(math.prod(shape))
    keep = int(round(min(max(density, 0.0), 1.0) * n))
    flat = np.zeros(n, dtype=bool)
    flat[rng.permutation(n)[:keep]] = True
    return flat.reshape(tuple(shape))

"""Partition the rows of a sparse weight matrix into groups that share columns (the first step of regroup).

The rows (output channels) are the vertices of a hypergraph; every column (a flattened c_in*kh*kw position)
is a hyperedge over the rows that are non-zero in it. A k-way partition that cuts few hyperedges (the
connectivity objective, km1) puts rows with similar non-zero columns together, so dense blocks of
"group rows x shared columns" cover many of the surviving weights.

Two partitioners:

- ``"mtkahypar"``: Mt-KaHyPar (PyPI ``mtkahypar``, MIT), a multilevel hypergraph partitioner, run with its
  deterministic preset and a fixed seed; the reference implementation of Structure-LTH used hMETIS.
- ``"spectral"``: the fallback when ``mtkahypar`` is not installed. Recursive spectral bisection of the
  clique expansion of the hypergraph (each hyperedge e adds weight 1/(|e|-1) between every pair of its rows):
  the rows are ordered by the Fiedler vector of the normalized Laplacian, cut at the size that keeps the
  parts balanced, and the cut is improved by greedy Kernighan-Lin pair swaps. It needs only numpy, is
  deterministic, and usually cuts more hyperedges than Mt-KaHyPar does.

``"auto"`` picks Mt-KaHyPar when it can be imported.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PARTITIONERS = ("auto", "mtkahypar", "spectral")
IMBALANCE = 0.03  # allowed part-size imbalance (Mt-KaHyPar's epsilon)
MAX_PINS = 100_000  # hyperedge incidences given to Mt-KaHyPar per layer (see _hyperedges)


def default_partitioner() -> str:
    """``"mtkahypar"`` when the package can be imported, else ``"spectral"``."""
    return "mtkahypar" if _mtkahypar() is not None else "spectral"


@functools.cache
def _mtkahypar() -> Any | None:
    if importlib.util.find_spec("mtkahypar") is None:
        log.info("mtkahypar is not installed (pip install mtkahypar); regroup uses the spectral partitioner")
        return None
    try:
        import mtkahypar
    except ImportError as e:  # a wheel for another platform, a missing shared library
        log.warning("mtkahypar is installed but cannot be imported (%s); using the spectral partitioner", e)
        return None
    if not hasattr(mtkahypar, "initialize"):  # releases before 1.7 have another Python API
        log.warning("mtkahypar %s is too old (need >= 1.7); using the spectral partitioner",
                    getattr(mtkahypar, "__version__", "?"))
        return None
    return mtkahypar


@functools.cache
def _mtkahypar_initializer() -> Any:
    # Mt-KaHyPar's thread pool is process-wide: initialize it once. One thread, because even the deterministic
    # preset gives another partition with another number of threads.
    return _mtkahypar().initialize(1, False)


def partition_rows(mask: np.ndarray, k: int, method: str = "auto", seed: int = 0) -> np.ndarray:
    """A part id in ``0..k-1`` for every row of the boolean matrix ``mask`` [rows, cols].

    Parts are balanced in size (within a few percent) and tend to share columns. ``k`` larger than the number
    of rows is reduced to it.
    """
    if method not in PARTITIONERS:
        raise ValueError(f"unknown partitioner {method!r}; choose one of {PARTITIONERS}")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask [rows, cols], got shape {mask.shape}")
    rows = mask.shape[0]
    k = max(1, min(int(k), rows))
    if k == 1:
        return np.zeros(rows, dtype=np.int64)
    if method == "auto":
        method = default_partitioner()
    if method == "mtkahypar":
        if _mtkahypar() is None:
            raise ImportError("the mtkahypar partitioner was asked for but cannot be imported; "
                              "pip install mtkahypar (or pass partitioner='spectral')")
        return _partition_mtkahypar(mask, k, seed)
    return _partition_spectral(mask, k)


def _hyperedges(mask: np.ndarray, k: int, max_pins: int = MAX_PINS) -> tuple[list[list[int]], list[int]]:
    """The column hyperedges that can change a k-way partition's cost, identical columns merged into one
    weighted hyperedge.

    Left out without changing which partition is best: columns with fewer than two rows (never cut) and
    columns with more rows than k - 1 parts can hold (they touch every part of every feasible partition).
    Beyond ``max_pins`` pins (row-column incidences) only the smallest hyperedges are kept: Mt-KaHyPar's time
    grows with the pins (about 20 s for a 512 x 4608 layer at density 0.4 on one core), and a large
    hyperedge is cut almost whatever the partition, so it says least about which rows belong together.
    """
    rows = mask.shape[0]
    max_part = int(np.floor((1.0 + IMBALANCE) * np.ceil(rows / k)))
    counts = mask.sum(axis=0)
    useful = np.flatnonzero((counts >= 2) & (counts <= (k - 1) * max_part))
    if useful.size == 0:
        return [], []
    packed = np.packbits(mask[:, useful], axis=0)               # one column of bytes per hyperedge
    _, first, weight = np.unique(packed.T, axis=0, return_index=True, return_counts=True)
    order = np.argsort(first)                                   # keep the columns' order (determinism)
    cols, weight = useful[first[order]], weight[order]
    if counts[cols].sum() > max_pins:
        by_size = np.argsort(counts[cols], kind="stable")
        keep = np.sort(by_size[np.cumsum(counts[cols][by_size]) <= max_pins])
        log.debug("partitioning on %d of %d hyperedges (%d pins at most)", keep.size, cols.size, max_pins)
        cols, weight = cols[keep], weight[keep]
    return [np.flatnonzero(mask[:, j]).tolist() for j in cols], weight.tolist()


def _partition_mtkahypar(mask: np.ndarray, k: int, seed: int) -> np.ndarray:
    mt = _mtkahypar()
    init = _mtkahypar_initializer()
    ctx = init.context_from_preset(mt.PresetType.DETERMINISTIC)
    ctx.set_partitioning_parameters(k, IMBALANCE, mt.Objective.KM1)
    ctx.logging = False
    mt.set_seed(int(seed))
    rows = mask.shape[0]
    edges, weights = _hyperedges(mask, k)
    if not edges:  # nothing any partition could save: any balanced split is optimal
        return np.arange(rows, dtype=np.int64) % k
    hg = init.create_hypergraph(ctx, rows, len(edges), edges, [1] * rows, weights)
    parts = hg.partition(ctx)
    return np.array([parts.block_id(v) for v in range(rows)], dtype=np.int64)


def _affinity(mask: np.ndarray) -> np.ndarray:
    """Clique expansion of the column hypergraph: sum over shared columns of 1/(column size - 1)."""
    m = mask.astype(np.float64)
    size = m.sum(axis=0)
    weight = np.where(size >= 2, 1.0 / np.maximum(size - 1.0, 1.0), 0.0)
    a = (m * weight) @ m.T
    np.fill_diagonal(a, 0.0)
    return a


def _fiedler_order(a: np.ndarray) -> np.ndarray:
    """Vertices ordered by the second eigenvector of the normalized Laplacian (stable, sign-normalized)."""
    n = a.shape[0]
    if n <= 2:
        return np.arange(n)
    deg = a.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
    lap = np.eye(n) - inv_sqrt[:, None] * a * inv_sqrt[None, :]
    _, vecs = np.linalg.eigh(lap)
    v = vecs[:, 1] * inv_sqrt
    nz = np.flatnonzero(np.abs(v) > 1e-12)
    if nz.size and v[nz[0]] < 0:
        v = -v
    return np.lexsort((np.arange(n), np.round(v, 12)))


def _refine_bisection(a: np.ndarray, left: np.ndarray, max_swaps: int | None = None) -> np.ndarray:
    """Greedy pair swaps (Kernighan-Lin gains, positive moves only) that lower the cut of a balanced bisection.

    The Fiedler order alone can cut through a cluster when the second eigenvalue is repeated (several equally
    strong clusters); swaps repair that without changing the part sizes.
    """
    left = left.copy()
    n = len(left)
    for _ in range(n if max_swaps is None else max_swaps):
        li, ri = np.flatnonzero(left), np.flatnonzero(~left)
        if li.size == 0 or ri.size == 0:
            break
        to_left = a[:, li].sum(axis=1)
        to_right = a[:, ri].sum(axis=1)
        d = np.where(left, to_right - to_left, to_left - to_right)  # gain of moving each vertex alone
        gain = d[li][:, None] + d[ri][None, :] - 2.0 * a[np.ix_(li, ri)]
        best = int(np.argmax(gain))
        i, j = divmod(best, ri.size)
        if gain[i, j] <= 1e-9:
            break
        left[li[i]], left[ri[j]] = False, True
    return left


def _partition_spectral(mask: np.ndarray, k: int) -> np.ndarray:
    a = _affinity(mask)
    parts = np.zeros(mask.shape[0], dtype=np.int64)

    def split(vertices: np.ndarray, k_here: int, first: int) -> None:
        if k_here == 1:
            parts[vertices] = first
            return
        k_left = k_here // 2
        sub = a[np.ix_(vertices, vertices)]
        order = _fiedler_order(sub)
        cut = int(round(len(vertices) * k_left / k_here))
        left = np.zeros(len(vertices), dtype=bool)
        left[order[:cut]] = True
        left = _refine_bisection(sub, left)
        split(vertices[left], k_left, first)
        split(vertices[~left], k_here - k_left, first + k_left)

    split(np.arange(mask.shape[0]), k, 0)
    return parts


def connectivity_cost(mask: np.ndarray, parts: np.ndarray) -> int:
    """The km1 objective: sum over columns of (number of parts the column's rows lie in) - 1."""
    mask = np.asarray(mask, dtype=bool)
    cost = 0
    for j in range(mask.shape[1]):
        rows = np.flatnonzero(mask[:, j])
        if rows.size:
            cost += len(np.unique(parts[rows])) - 1
    return cost

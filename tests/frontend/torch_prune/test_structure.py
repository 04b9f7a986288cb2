"""Mask-level Structure-LTH algorithms (numpy): refill, regroup, block detection, ERK, partitioners."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vaqf.frontend.torch.sparse import (
    erk_densities,
    erk_scores,
    find_blocks,
    partition_rows,
    random_mask,
    refill_mask,
    regroup_mask,
)
from vaqf.frontend.torch.sparse.partition import _mtkahypar, connectivity_cost

PARTITIONERS = ["spectral"] + (["mtkahypar"] if _mtkahypar() is not None else [])


def _planted(rng: np.random.Generator, rows: int = 48, cols: int = 90, groups: int = 3, noise: float = 0.05,
             fill: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Rows in ``groups`` groups, each group non-zero mostly in its own third of the columns, plus noise."""
    label = rng.permutation(np.arange(rows) % groups)
    m = rng.random((rows, cols)) < noise
    span = cols // groups
    for r in range(rows):
        own = slice(label[r] * span, (label[r] + 1) * span)
        m[r, own] |= rng.random(span) < fill
    return m, label


def _assert_blocks_tile(mask: np.ndarray, blocks: list) -> None:
    """Every non-zero lies in exactly one block and every block is entirely non-zero."""
    cover = np.zeros(mask.shape, dtype=int)
    for b in blocks:
        assert mask[np.ix_(b.rows, b.cols)].all()
        cover[np.ix_(b.rows, b.cols)] += 1
    assert cover.max() <= 1
    np.testing.assert_array_equal(cover.astype(bool), mask)


# -- refill ---------------------------------------------------------------------------------------------------


def test_refill_keeps_whole_rows_at_the_same_density(rng: np.random.Generator) -> None:
    w = rng.normal(size=(32, 72))
    mask = rng.random(w.shape) < 0.3
    out = refill_mask(mask, w, "l1")
    rows_on = out.all(axis=1)
    assert np.array_equal(rows_on, out.any(axis=1)), "every row is all-zero or all-one"
    k = round(mask.sum() / 72)
    assert rows_on.sum() == k
    assert abs(out.mean() - mask.mean()) <= 0.5 / 32 + 1e-9


def test_refill_picks_rows_by_criterion() -> None:
    mask = np.zeros((4, 5), dtype=bool)
    mask[0, :1] = True          # 1 weight, large
    mask[1, :4] = True          # 4 weights, small
    mask[2, :3] = True          # 3 weights, medium
    w = np.full((4, 5), 0.1)
    w[0, 0] = 10.0
    w[2, :3] = 0.5
    # nnz = 8 -> k = round(8 / 5) = 2 rows
    l1 = refill_mask(mask, w, "l1")
    assert l1.all(axis=1).tolist() == [True, False, True, False]
    count = refill_mask(mask, w, "count")
    assert count.all(axis=1).tolist() == [False, True, True, False]


def test_refill_plus_adds_fillback_rows(rng: np.random.Generator) -> None:
    w = rng.normal(size=(40, 50))
    mask = rng.random(w.shape) < 0.25  # ~10 rows' worth
    k = round(mask.sum() / 50)
    plus = refill_mask(mask, w, "l1", fillback_rate=0.2)
    assert plus.all(axis=1).sum() == k + round(0.2 * k)
    base = refill_mask(mask, w, "l1")
    assert (plus | base).sum() == plus.sum(), "refill+ keeps refill's rows"


def test_refill_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="criterion"):
        refill_mask(np.ones((2, 2), bool), None, "l2")
    with pytest.raises(ValueError, match="needs the layer's weights"):
        refill_mask(np.ones((2, 2), bool), None, "l1")


# -- regroup --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("partitioner", PARTITIONERS)
def test_regroup_gives_dense_blocks_at_the_requested_density(rng: np.random.Generator, partitioner: str) -> None:
    mask = rng.random((64, 144)) < 0.35
    out, blocks = regroup_mask(mask, n_parts=4, block_rows=8, partitioner=partitioner)
    _assert_blocks_tile(out, blocks)
    assert abs(out.mean() - mask.mean()) < 0.01
    for b in blocks:
        assert len(b.rows) == 8 or len(b.rows) >= 2, "groups are 8 rows or a kept remainder"
    # the structure is visible from the mask alone
    found = find_blocks(out)
    _assert_blocks_tile(out, found)
    assert len(found) <= len(blocks)


@pytest.mark.parametrize("partitioner", PARTITIONERS)
def test_regroup_hits_an_explicit_density(rng: np.random.Generator, partitioner: str) -> None:
    mask, _ = _planted(rng)
    for density in (0.15, 0.3, 0.5):
        out, blocks = regroup_mask(mask, n_parts=3, block_rows=8, density=density, partitioner=partitioner)
        _assert_blocks_tile(out, blocks)
        # one block column of 8 rows is the granularity
        assert abs(out.mean() - density) <= 8 / mask.size + 1e-9


@pytest.mark.parametrize("partitioner", PARTITIONERS)
def test_regroup_finds_planted_groups(rng: np.random.Generator, partitioner: str) -> None:
    mask, label = _planted(rng, noise=0.02, fill=0.9)
    out, blocks = regroup_mask(mask, n_parts=3, block_rows=16, partitioner=partitioner)
    kept = (out & mask).sum() / mask.sum()
    assert kept > 0.8, f"blocks cover only {kept:.2f} of the original non-zeros"
    for b in blocks:
        assert len(set(label[list(b.rows)])) == 1, "a block mixes planted groups"


def test_regroup_drops_tiny_remainders() -> None:
    mask = np.ones((10, 6), dtype=bool)  # one part: 8 rows + remainder of 2
    out, blocks = regroup_mask(mask, n_parts=1, block_rows=8, min_group_rows=3, density=1.0)
    assert [len(b.rows) for b in blocks] == [8]
    assert out.any(axis=1).sum() == 8
    out, blocks = regroup_mask(mask, n_parts=1, block_rows=8, min_group_rows=2, density=1.0)
    assert sorted(len(b.rows) for b in blocks) == [2, 8]
    assert out.all()


def test_regroup_of_empty_mask() -> None:
    out, blocks = regroup_mask(np.zeros((16, 9), dtype=bool), block_rows=4)
    assert not out.any() and blocks == []


@pytest.mark.parametrize("partitioner", PARTITIONERS)
def test_partitioners_are_balanced_deterministic_and_better_than_random(rng: np.random.Generator,
                                                                       partitioner: str) -> None:
    mask, label = _planted(rng, rows=64, cols=120, groups=4)
    parts = partition_rows(mask, 4, partitioner, seed=1)
    np.testing.assert_array_equal(parts, partition_rows(mask, 4, partitioner, seed=1))
    sizes = np.bincount(parts, minlength=4)
    assert sizes.min() >= 14 and sizes.max() <= 18
    shuffled = rng.permutation(np.arange(64) % 4)
    cost = connectivity_cost(mask, parts)
    assert cost <= 1.05 * connectivity_cost(mask, label), "about as good as the planted partition"
    assert cost < 0.7 * connectivity_cost(mask, shuffled)


def test_find_blocks_groups_rows_by_support() -> None:
    m = np.zeros((5, 4), dtype=bool)
    m[[0, 3], 1:3] = True
    m[1, :] = True
    blocks = find_blocks(m)
    assert [(b.rows, b.cols) for b in blocks] == [((0, 3), (1, 2)), ((1,), (0, 1, 2, 3))]


# -- ERK and random -------------------------------------------------------------------------------------------


def test_erk_densities_follow_the_formula() -> None:
    shapes = {"a": (16, 16, 3, 3), "b": (32, 16, 3, 3), "c": (64, 32, 3, 3), "d": (64, 64, 3, 3), "s": (64, 32, 1, 1)}
    numel = {k: math.prod(s) for k, s in shapes.items()}
    for density in (0.1, 0.3, 0.5):
        dens = erk_densities(shapes, density)
        kept = sum(dens[k] * numel[k] for k in shapes)
        assert kept == pytest.approx(density * sum(numel.values()))
        sparse = [k for k in shapes if dens[k] < 1.0]
        ratios = {dens[k] / erk_scores(shapes[k]) for k in sparse}
        assert max(ratios) == pytest.approx(min(ratios)), "densities proportional to (sum dims)/(prod dims)"
        for k in shapes:
            assert 0.0 < dens[k] <= 1.0
            if dens[k] == 1.0:  # dense layers are the ones the formula would push over 1
                assert erk_scores(shapes[k]) >= max(erk_scores(shapes[s]) for s in sparse)
    assert erk_scores((64, 32, 3, 3)) == pytest.approx((64 + 32 + 3 + 3) / (64 * 32 * 9))
    # the 1x1 shortcut has the largest score and saturates first
    assert erk_densities(shapes, 0.5)["s"] == 1.0


def test_random_mask_has_the_exact_count(rng: np.random.Generator) -> None:
    m = random_mask((8, 4, 3, 3), 0.3, rng)
    assert m.shape == (8, 4, 3, 3) and m.sum() == round(0.3 * m.size)


def test_without_mtkahypar_auto_falls_back_to_spectral(monkeypatch: pytest.MonkeyPatch,
                                                       rng: np.random.Generator) -> None:
    from vaqf.frontend.torch.sparse import partition

    monkeypatch.setattr(partition, "_mtkahypar", lambda: None)
    assert partition.default_partitioner() == "spectral"
    mask, _ = _planted(rng, rows=32, cols=60, groups=2)
    np.testing.assert_array_equal(partition_rows(mask, 2, "auto"), partition_rows(mask, 2, "spectral"))
    with pytest.raises(ImportError, match="pip install mtkahypar"):
        partition_rows(mask, 2, "mtkahypar")
    out, blocks = regroup_mask(mask, n_parts=2, block_rows=8)
    _assert_blocks_tile(out, blocks)


def test_hyperedges_merge_duplicates_and_keep_small_ones_within_the_pin_budget() -> None:
    from vaqf.frontend.torch.sparse.partition import _hyperedges

    m = np.zeros((16, 6), dtype=bool)
    m[[0, 1], 0] = m[[0, 1], 1] = True    # the same hyperedge twice
    m[[2], 2] = True                      # a single row: never cut
    m[:, 3] = True                        # every row: cut by every 2-way partition
    m[[3, 4, 5], 4] = True
    m[[6, 7, 8, 9, 10], 5] = True
    edges, weights = _hyperedges(m, 2)
    assert edges == [[0, 1], [3, 4, 5], [6, 7, 8, 9, 10]] and weights == [2, 1, 1]
    edges, weights = _hyperedges(m, 2, max_pins=5)
    assert edges == [[0, 1], [3, 4, 5]] and weights == [2, 1]

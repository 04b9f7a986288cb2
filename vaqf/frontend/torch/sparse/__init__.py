"""Mask-level algorithms of Structure-LTH pruning, in numpy (no torch): refill, regroup, ERK densities,
dense-block detection and hypergraph partitioning of weight rows. ``vaqf.frontend.torch.prune`` applies
them to PyTorch models."""

from vaqf.frontend.torch.sparse.partition import PARTITIONERS, default_partitioner, partition_rows
from vaqf.frontend.torch.sparse.structure import (
    Block,
    erk_densities,
    erk_scores,
    find_blocks,
    random_mask,
    refill_mask,
    regroup_mask,
    row_groups,
)

__all__ = [
    "PARTITIONERS",
    "Block",
    "default_partitioner",
    "erk_densities",
    "erk_scores",
    "find_blocks",
    "partition_rows",
    "random_mask",
    "refill_mask",
    "regroup_mask",
    "row_groups",
]

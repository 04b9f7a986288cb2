"""The compiler's pass pipeline: its order and its fixpoint bound, written once.

Order, and why:
1. RemoveDeadNodes: what feeds nothing never needs to be simplified.
2. CollapsePermutations, MergeChains, RemoveIdentities: the exporters' reshape/transpose chains become at
   most one node each, so later passes see the real producers and consumers.
3. FuseEpilogues: relu and requantization go into the GEMM/matmul epilogues (they must be next to their
   producer, which step 2 made them).
4. HoistRequant, ComposeCopies: a requantization separated from its producer by permutations moves up (and
   fuses on the next round); consecutive copies become one.
5. FoldOperandViews, FoldOutputViews: copies that only feed an activation product, or only take its result,
   become strided views of that product (attention's head split and merge).
6. FoldConstantChannels, then FindDenseBlocks: structured sparsity; blocks are found last, on the weights the
   folding left (it can drop columns).
The whole list repeats until a round changes nothing, at most FIXPOINT_ROUNDS rounds: every pass only removes
nodes or moves work into fewer nodes, and no model in the tests needs more than three.
"""

from __future__ import annotations

from vaqf.ir import Graph
from vaqf.passes.base import Pass, PassManager, PassResult

#: rounds of the whole pipeline at most (it stops earlier when a round changes nothing)
FIXPOINT_ROUNDS = 4


def default_pipeline() -> list[Pass]:
    """The passes in the order of the module docstring."""
    from vaqf.passes.fuse import FuseEpilogues, RemoveDeadNodes
    from vaqf.passes.simplify import (
        CollapsePermutations,
        ComposeCopies,
        FoldOperandViews,
        FoldOutputViews,
        HoistRequant,
        MergeChains,
        RemoveIdentities,
    )
    from vaqf.passes.sparsity import FindDenseBlocks, FoldConstantChannels

    return [RemoveDeadNodes(), CollapsePermutations(), MergeChains(), RemoveIdentities(), FuseEpilogues(),
            HoistRequant(), ComposeCopies(), FoldOperandViews(), FoldOutputViews(), FoldConstantChannels(),
            FindDenseBlocks()]


def optimize(graph: Graph, check: bool = False) -> PassResult:
    """Run the pipeline to its fixpoint (``check``: hold every pass to its requires/ensures)."""
    return PassManager(default_pipeline(), max_iterations=FIXPOINT_ROUNDS, check=check)(graph)

from vaqf.passes.base import Pass, PassManager, PassResult
from vaqf.passes.fuse import FuseEpilogues, RemoveDeadNodes
from vaqf.passes.pipeline import FIXPOINT_ROUNDS, default_pipeline, optimize
from vaqf.passes.simplify import MergeChains, RemoveIdentities
from vaqf.passes.sparsity import FindDenseBlocks, FoldConstantChannels

__all__ = ["FIXPOINT_ROUNDS", "FindDenseBlocks", "FoldConstantChannels", "FuseEpilogues", "MergeChains", "Pass",
           "PassManager", "PassResult", "RemoveDeadNodes", "RemoveIdentities", "default_pipeline", "optimize"]

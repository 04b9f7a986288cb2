from vaqf.passes.base import Pass, PassManager, PassResult
from vaqf.passes.fuse import FuseEpilogues, RemoveDeadNodes, default_pipeline
from vaqf.passes.simplify import MergeChains, RemoveIdentities
from vaqf.passes.sparsity import FindDenseBlocks, FoldConstantChannels

__all__ = ["FindDenseBlocks", "FoldConstantChannels", "FuseEpilogues", "MergeChains", "Pass", "PassManager",
           "PassResult", "RemoveDeadNodes", "RemoveIdentities", "default_pipeline"]

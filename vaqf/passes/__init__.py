from vaqf.passes.base import Pass, PassManager, PassResult
from vaqf.passes.fuse import FuseEpilogues, RemoveDeadNodes, default_pipeline
from vaqf.passes.simplify import MergeChains, RemoveIdentities

__all__ = ["FuseEpilogues", "MergeChains", "Pass", "PassManager", "PassResult", "RemoveDeadNodes", "RemoveIdentities",
           "default_pipeline"]

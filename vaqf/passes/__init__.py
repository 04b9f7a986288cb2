from vaqf.passes.base import Pass, PassManager, PassResult
from vaqf.passes.fuse import FuseEpilogues, RemoveDeadNodes, default_pipeline

__all__ = ["FuseEpilogues", "Pass", "PassManager", "PassResult", "RemoveDeadNodes", "default_pipeline"]

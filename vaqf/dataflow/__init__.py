"""The streaming dataflow architecture (FINN's): one hardware layer per compute node, FIFOs between them,
weights on chip, frames overlapping; the steady-state interval is the slowest stage's frame.

``pipeline`` maps a graph onto a chain of layers (or says why it cannot), ``stages`` models each stage's
cycles and resources at its folding knobs, ``plan`` builds a design's stage chain and searches foldings.
``vaqf.backend.dataflow`` writes the HLS project (``templates/dataflow/``, kernels ``hls/vaqf/dataflow/``) and
``vaqf.dse.search`` makes the Design record; this package imports neither. docs/dataflow.md.
"""

from vaqf.dataflow.pipeline import DataflowUnsupported, Pipeline, build_pipeline
from vaqf.dataflow.plan import DataflowPlan, DataflowSpace, plan_for

__all__ = ["DataflowPlan", "DataflowSpace", "DataflowUnsupported", "Pipeline", "build_pipeline", "plan_for"]

from vaqf.dse.design import Design
from vaqf.dse.search import design_for_knobs, pareto_front, search

__all__ = ["Design", "design_for_knobs", "pareto_front", "search"]

"""Pass contract (after onnx_ir): ``call(graph) -> PassResult(graph, modified)``, in place.

``modified`` is truthful (False: the graph is unchanged), a second run returns ``modified=False``, a pass
states the graph properties it ``requires`` and ``ensures`` (:mod:`vaqf.passes.contract`), and the manager
verifies the graph after every pass, naming the pass sequence when verification fails; with ``check=True``
it also checks every pass's requires before and ensures after it (tests/passes holds every pass to it).
The pipeline's order and its fixpoint bound are written once, in :mod:`vaqf.passes.pipeline`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from vaqf.errors import IRError
from vaqf.ir import Graph, Node

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    graph: Graph
    modified: bool


class Pass:
    """A graph transformation. Subclasses implement ``call``; they edit the graph in place."""

    in_place = True
    #: graph properties (vaqf.passes.contract.PROPERTIES) the pass needs of its input
    requires: ClassVar[tuple[str, ...]] = ()
    #: graph properties that hold after it, whatever held before
    ensures: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        return type(self).__name__

    def call(self, graph: Graph) -> PassResult:
        raise NotImplementedError

    def __call__(self, graph: Graph) -> PassResult:
        return self.call(graph)


class PassManager:
    """Run passes in order, repeating the whole list until a round changes nothing or ``max_iterations``
    rounds ran; ``check``: also hold every pass to its requires/ensures."""

    def __init__(self, passes: list[Pass], max_iterations: int = 1, check: bool = False) -> None:
        self.passes = passes
        self.max_iterations = max_iterations
        self.check = check

    def _contract(self, graph: Graph, names: tuple[str, ...], what: str, done: list[str]) -> None:
        from vaqf.passes.contract import check

        failed = check(graph, names)
        if failed:
            raise IRError(f"{what} after passes [{' -> '.join(done) or 'none'}]: " + "; ".join(failed))

    def __call__(self, graph: Graph) -> PassResult:
        done: list[str] = []
        any_modified = False
        for _ in range(self.max_iterations):
            modified = False
            for p in self.passes:
                if self.check:
                    self._contract(graph, p.requires, f"{p.name} requires", done)
                result = p.call(graph)
                graph = result.graph
                done.append(p.name)
                try:
                    graph.verify()
                except IRError as e:
                    raise IRError(f"graph invalid after passes [{' -> '.join(done)}]: {e}") from e
                if self.check:
                    self._contract(graph, p.ensures, f"{p.name} does not ensure what it states", done)
                log.debug("pass %s: modified=%s", p.name, result.modified)
                modified |= result.modified
            any_modified |= modified
            if not modified:
                break
        return PassResult(graph, any_modified)


def rewrite_until_fixed(graph: Graph, rewrite: Callable[[Node], bool]) -> bool:
    """Apply ``rewrite(node)`` (which edits the graph and returns True, or leaves it and returns False)
    to the nodes in topological order, starting over after every edit, until no node is rewritten.
    Returns whether anything was."""
    modified = False
    while any(rewrite(node) for node in list(graph.topo())):  # any() stops at the first edit
        modified = True
    return modified


def absorb_sole_consumers(graph: Graph, merge: Callable[[Node, Node], bool]) -> bool:
    """For a node whose output has a single consumer that reads nothing else, ``merge(node, consumer)``
    may take the consumer's work into the node (returning True); the consumer is then absorbed
    (``Graph.absorb_consumer``). Until nothing changes; returns whether anything was absorbed."""

    def absorb(node: Node) -> bool:
        consumer = graph.sole_consumer(node)
        if consumer is None or len(consumer.inputs) != 1 or not merge(node, consumer):
            return False
        graph.absorb_consumer(node, consumer)
        return True

    return rewrite_until_fixed(graph, absorb)

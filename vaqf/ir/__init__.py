"""The typed integer IR."""

from vaqf.ir.graph import Graph, Node, Value
from vaqf.ir.qtype import BinaryType, FixedType, IntType, QType, int_type_for_range, qtype_from_json
from vaqf.ir.tensor import TensorInfo

__all__ = ["BinaryType", "FixedType", "Graph", "IntType", "Node", "QType", "TensorInfo", "Value",
           "int_type_for_range", "qtype_from_json"]

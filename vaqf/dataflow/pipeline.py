"""A graph as a streaming pipeline: one hardware layer per compute node, streams between them.

Every value travels as a stream of elements in a *stream order*: ``order[s]`` is the logical (row-major) flat
index of the element at stream position s. Layers fix the order they produce and require an order they consume:

- a dense layer consumes rows of K contiguous stream elements (rows in order), the elements of a row in any
  order that is the same for every row; that order becomes a permutation of its weight columns, so a
  reorder costs nothing (FINN absorbs its flatten the same way). It produces rows of N channels in order.
- a sliding-window generator (an im2col of an NCHW tensor, stride 1) consumes the image pixel by pixel,
  channels innermost (h, w, c), and produces each window as (kernel row, kernel column, channel): the
  dense layer reading it permutes its columns from im2col's (c, i, j) to that order.
- max pooling consumes and produces (h, w, c).
- transpose and reshape move no data: their output keeps the input's stream, with the order relabelled.
- the graph's inputs and outputs are streamed in the order the pipeline needs; the host writes and reads
  them through the permutation tables the project carries (``Pipeline.input_order``, ``output_order``).

What does not fit (residual adds, concats, attention, an elementwise layer the passes did not fuse into a
dense epilogue, a strided window) raises :class:`DataflowUnsupported` naming the node: the search then keeps
the layer-sequential engine for that model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import BinaryType, Graph, IntType, Node, Value
from vaqf.ops import get_spec
from vaqf.ops.im2col import conv_geometry


class DataflowUnsupported(VaqfError):
    """The graph cannot run as a streaming pipeline; the message names the node and why."""


@dataclass
class Layer:
    """One compute layer of the pipeline (its stages are made by :mod:`vaqf.dataflow.stages`).

    kind: "dense" (an MVAU over ``rows`` vectors), "conv" (a sliding-window generator feeding an MVAU), "pool".
    """

    name: str
    kind: str
    node: Node
    swg_node: Node | None = None           # the im2col a conv layer's window generator runs
    rows: int = 1                          # vectors per frame (output pixels of a conv)
    k: int = 0                             # vector length (MVAU columns)
    n: int = 0                             # outputs per vector (MVAU rows)
    in_elem: IntType | None = None         # input stream element type
    out_elem: IntType | None = None        # output stream element type
    weight: np.ndarray | None = None       # [N, K] in the order the stream delivers columns
    # conv / pool geometry: channels, input height/width, kernel, pads, output height/width
    geom: dict[str, Any] = field(default_factory=dict)

    @property
    def in_elems(self) -> int:
        if self.kind == "conv":
            g = self.geom
            return g["c"] * g["h"] * g["w"]
        if self.kind == "pool":
            g = self.geom
            return g["c"] * g["h"] * g["w"]
        return self.rows * self.k

    @property
    def out_elems(self) -> int:
        if self.kind == "pool":
            g = self.geom
            return g["c"] * g["ho"] * g["wo"]
        return self.rows * self.n

    @property
    def out_channels(self) -> int:
        """Elements of the output that a word may group (a stream word never spans two pixels/rows)."""
        return self.geom["c"] if self.kind == "pool" else self.n

    @property
    def in_channels(self) -> int:
        return self.geom["c"] if self.kind in ("conv", "pool") else self.k


@dataclass
class Pipeline:
    graph: Graph
    layers: list[Layer]
    input_value: Value
    output_value: Value
    input_order: np.ndarray     # stream position -> logical flat index of the graph input
    output_order: np.ndarray    # stream position -> logical flat index of the graph output

    @property
    def in_elem(self) -> IntType:
        return _elem(self.input_value)

    @property
    def out_elem(self) -> IntType:
        return _elem(self.output_value)


def _elem(v: Value) -> IntType:
    q = v.info.qtype
    if not isinstance(q, IntType):
        raise DataflowUnsupported(f"value {v.name}: type {q} is not an integer type the streams carry")
    return q


def _apply(node: Node, order_logical: np.ndarray) -> np.ndarray:
    """The op's reference on an index tensor: where each input element lands in the output."""
    x = node.inputs[0]
    idx = np.arange(x.info.size, dtype=np.int64).reshape((1,) + tuple(x.info.shape))
    out = np.asarray(get_spec(node.op).reference(node, [idx])[0]).reshape(-1)
    if out.size != x.info.size or np.unique(out).size != out.size:
        raise DataflowUnsupported(f"{node.name}: {node.op} does not move every element exactly once")
    where = np.empty(out.size, dtype=np.int64)
    where[out] = np.arange(out.size, dtype=np.int64)  # input logical index -> output logical index
    return where[order_logical]


def _nchw_order(c: int, h: int, w: int) -> np.ndarray:
    """Stream order (h, w, c) of an NCHW tensor: logical index c*h*w + y*w + x at position (y*w + x)*c + ch."""
    ch, y, x = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    logical = (ch * h * w + y * w + x).reshape(c, h * w)
    return np.ascontiguousarray(logical.T).reshape(-1).astype(np.int64)


def _row_columns(order: np.ndarray, rows: int, k: int, node: Node) -> np.ndarray:
    """The column order within each row when ``order`` streams rows of k contiguously, identical for every row."""
    o = order.reshape(rows, k)
    r, col = np.divmod(o, k)
    if not np.all(r == np.arange(rows)[:, None]) or not np.all(col == col[:1]):
        raise DataflowUnsupported(f"{node.name}: its input does not arrive row by row in one column order")
    return col[0]


def build_pipeline(graph: Graph) -> Pipeline:
    """The graph as a chain of dataflow layers, or DataflowUnsupported naming what does not fit."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise DataflowUnsupported("the dataflow architecture takes one input and one output")
    x = graph.inputs[0]
    _elem(x)
    orders: dict[str, np.ndarray] = {}
    pending_im2col: dict[str, Node] = {}
    layers: list[Layer] = []
    orders[x.name] = _input_order(graph, x)
    for node in graph.topo():
        if len(node.inputs) != 1 or len(node.outputs) != 1:
            raise DataflowUnsupported(f"{node.name}: {node.op} with {len(node.inputs)} inputs is not a chain layer")
        src, dst = node.inputs[0], node.outputs[0]
        if len(graph.consumers(src)) > 1:
            raise DataflowUnsupported(f"{node.name}: value {src.name} fans out to several layers")
        if src.name in pending_im2col and node.op != "dense":
            raise DataflowUnsupported(f"{node.name}: the windows of {pending_im2col[src.name].name} feed a {node.op}")
        if node.op in ("reshape", "transpose"):
            orders[dst.name] = _apply(node, orders[src.name])
            continue
        if node.op == "im2col":
            orders[dst.name] = _im2col_check(node, orders[src.name])
            pending_im2col[dst.name] = node
            continue
        if node.op == "dense":
            layers.append(_dense_layer(node, orders[src.name], pending_im2col.get(src.name)))
            orders[dst.name] = np.arange(dst.info.size, dtype=np.int64)
            continue
        if node.op == "pool":
            layers.append(_pool_layer(node, orders[src.name]))
            g = layers[-1].geom
            orders[dst.name] = _nchw_order(g["c"], g["ho"], g["wo"])
            continue
        raise DataflowUnsupported(f"{node.name}: {node.op} has no dataflow layer (dense, conv windows and max "
                                  "pooling stream; elementwise ops must be fused into a dense epilogue)")
    if not layers:
        raise DataflowUnsupported("the graph has no compute layer")
    out = graph.outputs[0]
    _elem(out)
    return Pipeline(graph, layers, x, out, orders[x.name], orders[out.name])


def _input_order(graph: Graph, x: Value) -> np.ndarray:
    """The graph input's stream order (the host permutes into it): the order its first window generator or
    pooling needs, pulled back through the transposes and reshapes before it (a channels-last NHWC input
    transposed to NCHW, as Keras exports, streams as it lies in memory); else an image's (h, w, c) order, or
    the logical order."""
    where = np.arange(x.info.size, dtype=np.int64)  # x's logical index -> the current value's
    v = x
    while True:
        users = graph.consumers(v)
        if len(users) != 1 or users[0].op not in ("reshape", "transpose"):
            break
        where = _apply(users[0], where)
        v = users[0].outputs[0]
    if len(users) == 1 and users[0].op in ("im2col", "pool") and len(v.info.shape) == 4:
        _, c, h, w = v.info.shape
        back = np.empty_like(where)
        back[where] = np.arange(where.size, dtype=np.int64)  # the value's logical index -> x's
        return back[_nchw_order(c, h, w)]
    shape = x.info.shape
    if len(shape) == 4:
        return _nchw_order(shape[1], shape[2], shape[3])  # channels-last stream of an image
    return np.arange(x.info.size, dtype=np.int64)


def _im2col_check(node: Node, order: np.ndarray) -> np.ndarray:
    c, h, w, ho, wo = conv_geometry(node.inputs[0].info.shape, node.attrs)
    if node.attrs.get("channels") is not None:
        raise DataflowUnsupported(f"{node.name}: a channel-pruned window sweep is an engine feature")
    if list(node.attrs["stride"]) != [1, 1]:
        raise DataflowUnsupported(f"{node.name}: the sliding-window generator runs stride 1 only "
                                  f"(stride {node.attrs['stride']})")
    kh, kw = node.attrs["kernel"]
    if kh != kw or kh < 2:
        raise DataflowUnsupported(f"{node.name}: the window generator takes square windows of 2x2 or more")
    if not np.array_equal(order, _nchw_order(c, h, w)):
        raise DataflowUnsupported(f"{node.name}: its image does not arrive pixel by pixel, channels innermost")
    # stream: output pixel r, then window element (i, j, ch); logical im2col column is ch*kh*kw + i*kw + j
    taps = kh * kw
    ch, t = np.meshgrid(np.arange(c), np.arange(taps), indexing="ij")
    col_logical = (ch * taps + t)                      # [c, taps]
    stream_cols = np.ascontiguousarray(col_logical.T).reshape(-1)  # (tap, ch) order, tap = i*kw + j
    k = c * taps
    return (np.arange(ho * wo, dtype=np.int64)[:, None] * k + stream_cols[None, :]).reshape(-1)


def _dense_layer(node: Node, order: np.ndarray, im2col: Node | None) -> Layer:
    x = node.inputs[0]
    w = np.asarray(node.attrs["weight"])
    n_out, k = w.shape
    rows = x.info.size // k
    cols = _row_columns(order, rows, k, node)
    # the engine's dense blocks are a schedule of the same weights, which a dataflow MVAU holds whole; only
    # dropped input columns (k_full) change what the layer reads
    if node.attrs.get("k_full") is not None:
        raise DataflowUnsupported(f"{node.name}: a layer whose unused input columns were dropped runs on the engine")
    if not isinstance(node.attrs["w_type"], (BinaryType, IntType)):
        raise DataflowUnsupported(f"{node.name}: weight type {node.attrs['w_type']} has no dataflow product")
    layer = Layer(node.name, "conv" if im2col is not None else "dense", node, im2col, rows, k, n_out,
                  _elem(x), _elem(node.outputs[0]), np.ascontiguousarray(w[:, cols]))
    if im2col is not None:
        c, h, wd, ho, wo = conv_geometry(im2col.inputs[0].info.shape, im2col.attrs)
        layer.in_elem = _elem(im2col.inputs[0])
        layer.geom = {"c": c, "h": h, "w": wd, "kernel": int(im2col.attrs["kernel"][0]),
                      "pads": [int(p) for p in im2col.attrs["pads"]], "ho": ho, "wo": wo,
                      "zp": int(im2col.inputs[0].info.zero_point)}
    return layer


def _pool_layer(node: Node, order: np.ndarray) -> Layer:
    a = node.attrs
    c, h, w, ho, wo = conv_geometry(node.inputs[0].info.shape, a)
    kh, kw = a["kernel"]
    if a["kind"] != "max" or kh != kw or list(a["stride"]) != [kh, kw] or any(a["pads"]):
        raise DataflowUnsupported(f"{node.name}: the streaming pool takes max pooling with stride = window and no "
                                  "padding")
    if not np.array_equal(order, _nchw_order(c, h, w)):
        raise DataflowUnsupported(f"{node.name}: its input does not arrive pixel by pixel, channels innermost")
    el = _elem(node.inputs[0])
    return Layer(node.name, "pool", node, None, ho * wo, 0, 0, el, el, None,
                 {"c": c, "h": h, "w": w, "kernel": int(kh), "ho": ho, "wo": wo})

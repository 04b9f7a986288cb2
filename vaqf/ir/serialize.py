"""Save and load a Graph: structure as JSON, arrays in a compressed .npz beside it."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from vaqf.errors import IRError, VaqfError
from vaqf.ir.graph import Graph
from vaqf.ir.opset import known_ops
from vaqf.ir.qtype import BinaryType, FixedType, IntType, qtype_from_json
from vaqf.ir.tensor import TensorInfo

FORMAT_VERSION = 1
#: bounds on what a project's graph may hold (DeiT-base: a 2 MiB graph.json, 11 MiB of arrays)
MAX_GRAPH_JSON_BYTES = 256 * 2**20
MAX_ARRAY_BYTES = 2 * 2**30
MAX_NPZ_BYTES = 8 * 2**30
MAX_ELEMENTS = 2**31
MAX_NAME = 4096
MAX_DEPTH = 32


def _is_bipolar(a: np.ndarray) -> bool:
    return a.dtype == np.int8 and a.size > 64 and bool(np.all(np.abs(a) == 1))


def _encode(obj: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    if isinstance(obj, np.ndarray):
        key = f"{prefix}"
        if _is_bipolar(obj):  # binary weights: one bit each instead of a byte
            arrays[key] = np.packbits(obj.reshape(-1) > 0)
            return {"__bipolar__": key, "shape": list(obj.shape)}
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, (IntType, BinaryType, FixedType)):
        return {"__qtype__": obj.to_json()}
    if isinstance(obj, TensorInfo):
        return {"__tensorinfo__": obj.to_json()}
    if isinstance(obj, dict):
        return {k: _encode(v, arrays, f"{prefix}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, arrays, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def _decode(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        if "__bipolar__" in obj:
            shape = tuple(obj["shape"])
            bits = np.unpackbits(arrays[obj["__bipolar__"]], count=int(np.prod(shape)))
            return (bits.astype(np.int8) * 2 - 1).reshape(shape)
        if "__qtype__" in obj:
            return qtype_from_json(obj["__qtype__"])
        if "__tensorinfo__" in obj:
            return TensorInfo.from_json(obj["__tensorinfo__"])
        return {k: _decode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    return obj


def graph_to_data(graph: Graph) -> tuple[dict, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for i, n in enumerate(graph.topo()):
        nodes.append({"name": n.name, "op": n.op, "inputs": [v.name for v in n.inputs],
                      "outputs": [{"name": v.name, "info": v.info.to_json()} for v in n.outputs],
                      "attrs": _encode(n.attrs, arrays, f"n{i}"), "source": n.source})
    data = {"format": FORMAT_VERSION, "name": graph.name,
            "inputs": [{"name": v.name, "info": v.info.to_json()} for v in graph.inputs],
            "outputs": [v.name for v in graph.outputs], "nodes": nodes,
            "metadata": _encode(graph.metadata, arrays, "meta")}
    return data, arrays


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (readable by np.load) whose bytes depend only on the arrays: entries sorted, fixed
    timestamps, stored uncompressed (weights are already dense bits; zlib costs seconds on large models)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            zf.writestr(info, entry.getvalue())
    return buf.getvalue()


def save_graph(graph: Graph, folder: Path, stem: str = "graph") -> list[Path]:
    data, arrays = graph_to_data(graph)
    jpath, npath = folder / f"{stem}.json", folder / f"{stem}.npz"
    jpath.write_text(json.dumps(data, indent=1, sort_keys=True))
    npath.write_bytes(_npz_bytes(arrays))
    return [jpath, npath]


def load_graph(folder: Path, stem: str = "graph") -> Graph:
    """The graph a project holds, checked as a schema: typed fields, registered ops, values defined before use
    (so no cycle), arrays present and of bounded size, and ``Graph.verify`` (every output type equal to its op's
    inference). Any inconsistency is a VaqfError naming the file, never an internal error."""
    jpath, npath = folder / f"{stem}.json", folder / f"{stem}.npz"
    if not jpath.is_file() or not npath.is_file():
        raise VaqfError(f"{folder} holds no compiled graph ({jpath.name}, {npath.name}); is it a vaqf project?")
    if jpath.stat().st_size > MAX_GRAPH_JSON_BYTES:
        raise VaqfError(f"{jpath} is larger than {MAX_GRAPH_JSON_BYTES >> 20} MiB; it is not a vaqf graph")
    try:
        data = json.loads(jpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VaqfError(f"{jpath} is not valid JSON: {_one_line(e)}") from None
    except RecursionError:
        raise VaqfError(f"{jpath} nests too deeply to be a vaqf graph") from None
    except OSError as e:
        raise VaqfError(f"cannot read {jpath}: {_one_line(e)}") from None
    if not isinstance(data, dict):
        raise VaqfError(f"{jpath} is not a JSON object")
    if data.get("format") != FORMAT_VERSION:
        raise VaqfError(f"{jpath} has graph format {_one_line(data.get('format'))}, this vaqf reads {FORMAT_VERSION}")
    try:
        arrays = _read_arrays(npath)
        return _build(data, arrays)
    except VaqfError as e:
        raise VaqfError(f"{jpath}: {e}; compile the project again") from None
    except RecursionError:
        raise VaqfError(f"{jpath} nests too deeply to be a vaqf graph") from None
    except MemoryError:
        raise VaqfError(f"ran out of memory reading the graph in {folder}") from None
    except Exception as e:  # an op's inference tripping over tampered attributes: still the file's fault
        raise VaqfError(f"{jpath} is not a consistent vaqf graph ({type(e).__name__}: {_one_line(e)}); compile the "
                        "project again") from None


def _read_arrays(npath: Path) -> dict[str, np.ndarray]:
    """The arrays of graph.npz; members are checked against a size cap before they are decompressed."""
    try:
        with zipfile.ZipFile(npath) as zf:
            total = 0
            for info in zf.infolist():
                total += info.file_size
                if info.file_size > MAX_ARRAY_BYTES or total > MAX_NPZ_BYTES:
                    raise VaqfError(f"{npath.name} holds more array data than a vaqf graph can "
                                    f"({info.filename[:60]!r}: {info.file_size} bytes)")
        with np.load(npath, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except VaqfError:
        raise
    except Exception as e:
        raise VaqfError(f"cannot read {npath.name}: not an array archive ({type(e).__name__}: {_one_line(e)})") \
            from None


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise VaqfError(what)


def _str(x: Any, what: str) -> str:
    _need(isinstance(x, str) and 0 < len(x) <= MAX_NAME, f"{what} must be a non-empty string (at most {MAX_NAME} "
          f"characters), got {_one_line(x)[:60]}")
    return x


def _list(x: Any, what: str) -> list:
    _need(isinstance(x, list), f"{what} must be a list, got {type(x).__name__}")
    return x


def _info(d: Any, what: str) -> TensorInfo:
    """A TensorInfo from JSON: positive integer shape of bounded size, a valid qtype, finite positive scales
    (one, or one per channel of the last axis), an integer zero point."""
    _need(isinstance(d, dict), f"{what}: tensor info must be an object")
    shape = _list(d.get("shape"), f"{what}: shape")
    _need(all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape) and len(shape) <= 8,
          f"{what}: shape {_one_line(shape)[:60]} must be at most 8 positive integers")
    _need(math.prod(shape) <= MAX_ELEMENTS, f"{what}: shape {shape} is absurdly large")
    qt = d.get("qtype")
    _need(isinstance(qt, dict), f"{what}: qtype must be an object")
    try:
        qtype = qtype_from_json(qt)
    except (KeyError, TypeError, ValueError) as e:
        raise VaqfError(f"{what}: invalid qtype {_one_line(qt)[:80]} ({_one_line(e)})") from None
    scale = _list(d.get("scale"), f"{what}: scale")
    _need(all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in scale)
          and (len(scale) == 1 or (shape and len(scale) == shape[-1])),
          f"{what}: scale must be one finite positive number or one per channel of the last axis")
    zp = d.get("zero_point")
    _need(isinstance(zp, int) and not isinstance(zp, bool) and abs(zp) <= 2**32, f"{what}: zero_point must be an "
          f"integer, got {_one_line(zp)[:40]}")
    return TensorInfo(tuple(shape), qtype, np.asarray(scale, dtype=np.float64), zp)


def _decode_checked(obj: Any, arrays: dict[str, np.ndarray], what: str, depth: int = 0) -> Any:
    """``_decode`` with the references checked: arrays present, bipolar shapes matching their bits."""
    _need(depth <= MAX_DEPTH, f"{what}: attributes nest deeper than {MAX_DEPTH} levels")
    if isinstance(obj, dict):
        if "__array__" in obj:
            key = obj["__array__"]
            _need(isinstance(key, str) and key in arrays, f"{what}: array {_one_line(key)[:60]} is not in graph.npz")
            return arrays[key]
        if "__bipolar__" in obj:
            key, shape = obj["__bipolar__"], obj.get("shape")
            _need(isinstance(key, str) and key in arrays, f"{what}: array {_one_line(key)[:60]} is not in graph.npz")
            _need(isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)
                  and arrays[key].dtype == np.uint8 and math.prod(shape) <= arrays[key].size * 8,
                  f"{what}: binary array {key[:60]!r} does not hold its shape {_one_line(shape)[:60]}")
            return _decode(obj, arrays)
        if "__qtype__" in obj:
            try:
                return qtype_from_json(obj["__qtype__"])
            except (KeyError, TypeError, ValueError) as e:
                raise VaqfError(f"{what}: invalid qtype ({_one_line(e)})") from None
        if "__tensorinfo__" in obj:
            return _info(obj["__tensorinfo__"], what)
        return {k: _decode_checked(v, arrays, what, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_checked(v, arrays, what, depth + 1) for v in obj]
    return obj


def _build(data: dict, arrays: dict[str, np.ndarray]) -> Graph:
    known = set(known_ops())
    _need(bool(known), "no op is registered (import vaqf.ops, which registers the built-in ops, before loading)")
    g = Graph(_str(data.get("name"), "name"))
    names: set[str] = set()
    for i, v in enumerate(_list(data.get("inputs"), "inputs")):
        _need(isinstance(v, dict), f"input {i} must be an object")
        name = _str(v.get("name"), f"input {i} name")
        _need(name not in names, f"value '{name[:60]}' is defined twice")
        names.add(name)
        g.add_input(name, _info(v.get("info"), f"input '{name[:60]}'"))
    node_names: set[str] = set()
    for i, nd in enumerate(_list(data.get("nodes"), "nodes")):
        _need(isinstance(nd, dict), f"node {i} must be an object")
        name = _str(nd.get("name"), f"node {i} name")
        where = f"node '{name[:60]}'"
        _need(name not in node_names, f"{where} appears twice")
        node_names.add(name)
        op = _str(nd.get("op"), f"{where} op")
        _need(op in known, f"{where} has op {op[:40]!r}, which this vaqf does not know")
        ins = []
        for ref in _list(nd.get("inputs"), f"{where} inputs"):
            _str(ref, f"{where} input")
            _need(ref in names, f"{where} reads '{ref[:60]}', which no earlier node produces (the nodes are out of "
                  "order, or form a cycle)")
            ins.append(g.value(ref))
        outs = []
        for o in _list(nd.get("outputs"), f"{where} outputs"):
            _need(isinstance(o, dict), f"{where}: each output must be an object")
            oname = _str(o.get("name"), f"{where} output name")
            _need(oname not in names, f"value '{oname[:60]}' is defined twice")
            names.add(oname)
            outs.append(g._new_value(oname, _info(o.get("info"), f"{where} output '{oname[:60]}'")))
        attrs = nd.get("attrs", {})
        _need(isinstance(attrs, dict), f"{where}: attrs must be an object")
        source = nd.get("source", "")
        _need(isinstance(source, str), f"{where}: source must be a string")
        g.add_node(op, ins, outs, _decode_checked(attrs, arrays, where), name=name, source=source)
    outputs = _list(data.get("outputs"), "outputs")
    _need(bool(outputs), "the graph has no outputs")
    for ref in outputs:
        _need(isinstance(ref, str) and ref in names, f"graph output {_one_line(ref)[:60]} is never computed")
    g.outputs = [g.value(n) for n in outputs]
    meta = data.get("metadata", {})
    _need(isinstance(meta, dict), "metadata must be an object")
    g.metadata = _decode_checked(meta, arrays, "metadata")
    try:
        g.verify()
    except IRError as e:
        raise VaqfError(f"the graph is inconsistent ({_one_line(e)})") from None
    return g


def _one_line(x: object) -> str:
    text = " ".join(str(x).split())
    return text[:200] + ("..." if len(text) > 200 else "")

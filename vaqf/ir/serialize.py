"""Save and load a Graph: structure as JSON, arrays in a compressed .npz beside it."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir.graph import Graph
from vaqf.ir.qtype import BinaryType, FixedType, IntType, qtype_from_json
from vaqf.ir.tensor import TensorInfo

FORMAT_VERSION = 1


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
    jpath, npath = folder / f"{stem}.json", folder / f"{stem}.npz"
    if not jpath.is_file() or not npath.is_file():
        raise VaqfError(f"{folder} holds no compiled graph ({jpath.name}, {npath.name}); is it a vaqf project?")
    try:
        data = json.loads(jpath.read_text())
        arrays = dict(np.load(npath, allow_pickle=False))
    except Exception as e:
        raise VaqfError(f"cannot read the graph in {folder}: {e}") from e
    if data.get("format") != FORMAT_VERSION:
        raise VaqfError(f"{jpath} has graph format {data.get('format')}, this vaqf reads {FORMAT_VERSION}")
    g = Graph(data["name"])
    for v in data["inputs"]:
        g.add_input(v["name"], TensorInfo.from_json(v["info"]))
    for nd in data["nodes"]:
        ins = [g.value(name) for name in nd["inputs"]]
        outs = [g._new_value(o["name"], TensorInfo.from_json(o["info"])) for o in nd["outputs"]]
        g.add_node(nd["op"], ins, outs, _decode(nd["attrs"], arrays), name=nd["name"], source=nd["source"])
    g.outputs = [g.value(n) for n in data["outputs"]]
    g.metadata = _decode(data["metadata"], arrays)
    g.verify()
    return g

"""Read what the audit needs of an ONNX file straight from its protobuf bytes, without importing ``onnx``.

``import onnx`` costs 0.6-0.9 s of every run (almost all of it ``ml_dtypes``, which ``onnx.helper``
pulls in), only to read the model card and the graph's structure. Both are a few fields of the
protobuf: this module walks its wire format (varints and length-delimited fields; tensors' data
is skipped by length, never copied) and gives a read-only view with the attribute names of
``onnx``'s own classes that ``audit.graph`` reads (``graph.node[k].op_type``, ``.input``,
``.output``, ``graph.initializer[k].name`` and ``.dims``, ``graph.input``/``graph.output``
names, ``metadata_props`` keys and values). ``with_output`` appends a graph output to the
serialised model, byte for byte what ``onnx`` would write for ``helper.make_empty_tensor_value_info``.

Field numbers are those of ``onnx/onnx.proto`` (stable since IR version 3).

Example::

    model = parse_model(Path("model.onnx").read_bytes())
    {p.key: p.value for p in model.metadata_props}, [n.op_type for n in model.graph.node]
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ModelProto
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
# GraphProto
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 5, 11, 12
# NodeProto
_NODE_INPUT, _NODE_OUTPUT, _NODE_OP_TYPE = 1, 2, 4
# TensorProto
_TENSOR_DIMS, _TENSOR_NAME = 1, 8
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class Entry:
    key: str
    value: str


@dataclass(frozen=True)
class Node:
    op_type: str
    input: tuple[str, ...]
    output: tuple[str, ...]


@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class Value:
    name: str


@dataclass(frozen=True)
class Graph:
    node: tuple[Node, ...] = ()
    initializer: tuple[Tensor, ...] = ()
    input: tuple[Value, ...] = ()
    output: tuple[Value, ...] = ()


@dataclass(frozen=True)
class Model:
    graph: Graph = field(default_factory=Graph)
    metadata_props: tuple[Entry, ...] = ()


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7


def _fields(buf: memoryview):
    """(field number, wire type, value, start, end) of every field: value is an int or a memoryview."""
    pos, n = 0, len(buf)
    while pos < n:
        start = pos
        key, pos = _varint(buf, pos)
        number, kind = key >> 3, key & 7
        if kind == _VARINT:
            value, pos = _varint(buf, pos)
        elif kind == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > n:
                raise WireError(f"field {number} runs past the end of its message")
            value, pos = buf[pos:pos + size], pos + size
        elif kind in (_FIXED64, _FIXED32):
            pos += 8 if kind == _FIXED64 else 4
            value = 0
        else:
            raise WireError(f"field {number} has wire type {kind}, which ONNX never writes")
        if number == 0 or pos > n:
            raise WireError("not a protobuf message")
        yield number, kind, value, start, pos


def _text(v) -> str:
    if not isinstance(v, memoryview):
        raise WireError("a string field is not length-delimited")
    return bytes(v).decode("utf-8", errors="replace")


def _node(buf: memoryview) -> Node:
    op, ins, outs = "", [], []
    for number, _, v, _, _ in _fields(buf):
        if number == _NODE_INPUT:
            ins.append(_text(v))
        elif number == _NODE_OUTPUT:
            outs.append(_text(v))
        elif number == _NODE_OP_TYPE:
            op = _text(v)
    return Node(op, tuple(ins), tuple(outs))


def _tensor(buf: memoryview) -> Tensor:
    name, dims = "", []
    for number, kind, v, _, _ in _fields(buf):
        if number == _TENSOR_NAME:
            name = _text(v)
        elif number == _TENSOR_DIMS and kind == _VARINT:
            dims.append(v)
        elif number == _TENSOR_DIMS:  # packed
            pos = 0
            while pos < len(v):
                d, pos = _varint(v, pos)
                dims.append(d)
    return Tensor(name, tuple(d - (1 << 64) if d >= 1 << 63 else d for d in dims))


def _named(buf: memoryview) -> str:
    return next((_text(v) for number, _, v, _, _ in _fields(buf) if number == 1), "")


def _graph(buf: memoryview) -> Graph:
    parts: dict[int, list] = {_GRAPH_NODE: [], _GRAPH_INITIALIZER: [], _GRAPH_INPUT: [], _GRAPH_OUTPUT: []}
    for number, kind, v, _, _ in _fields(buf):
        if number in parts and kind == _LEN:
            parts[number].append(v)
    return Graph(tuple(_node(v) for v in parts[_GRAPH_NODE]), tuple(_tensor(v) for v in parts[_GRAPH_INITIALIZER]),
                 tuple(Value(_named(v)) for v in parts[_GRAPH_INPUT]),
                 tuple(Value(_named(v)) for v in parts[_GRAPH_OUTPUT]))


def _entry(buf: memoryview) -> Entry:
    key = value = ""
    for number, _, v, _, _ in _fields(buf):
        if number == 1:
            key = _text(v)
        elif number == 2:
            value = _text(v)
    return Entry(key, value)


def parse_model(data: bytes) -> Model:
    """The graph structure and metadata of a serialised ``ModelProto``; ``WireError`` when it is not one."""
    buf = memoryview(data)
    graph, meta = None, []
    for number, kind, v, _, _ in _fields(buf):
        if number == _MODEL_GRAPH and kind == _LEN:
            graph = _graph(v)
        elif number == _MODEL_METADATA and kind == _LEN:
            meta.append(_entry(v))
    if graph is None:
        raise WireError("no graph in the model")
    return Model(graph, tuple(meta))


def _encode_varint(x: int) -> bytes:
    out = bytearray()
    while True:
        b, x = x & 0x7F, x >> 7
        out.append(b | (0x80 if x else 0))
        if not x:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(payload)) + payload


def with_output(data: bytes, name: str) -> bytes:
    """The serialised model with ``name`` appended to its graph's outputs (a value info with only a name)."""
    buf = memoryview(data)
    fields = [(n, k, v, s, e) for n, k, v, s, e in _fields(buf) if n == _MODEL_GRAPH and k == _LEN]
    if not fields:
        raise WireError("no graph in the model")
    _, _, graph, start, end = fields[-1]  # protobuf merges repeated message fields; ONNX writes one graph
    if name in {o.name for o in _graph(graph).output}:
        return bytes(data)
    extra = _len_field(_GRAPH_OUTPUT, _len_field(1, name.encode("utf-8")))
    return bytes(buf[:start]) + _len_field(_MODEL_GRAPH, bytes(graph) + extra) + bytes(buf[end:])

"""What the ONNX graph says about itself: input layout, fixed batch, a final softmax, the penultimate tensor
(docs/ARCHITECTURE.md §7, §14).

``inspect_graph`` reads the input and output off an ONNX Runtime session. ``locate`` finds the
model's penultimate tensor, the input of its final classifier layer (a Gemm, a MatMul with or
without a bias Add, or a 1x1 Conv), by walking back from the output through shape-only and
scaling ops; a card key (``audit.features``) or ``--features-output NAME`` names it where the walk
cannot. ``with_output`` adds it to the graph's outputs in memory, so one ``session.run`` returns
probabilities and features: features cost no extra inference. The graph is read from the model's
bytes by ``audit.onnxwire`` (``onnx``'s own ``GraphProto`` works as well): importing ``onnx`` would
cost more than the rest of a small audit's imports.

Example::

    found = locate(parse_model(data).graph)    # Located(name="flat", how="input of the final Gemm")
    session = ort.InferenceSession(with_output(data, found.name))
"""

from __future__ import annotations

from dataclasses import dataclass

from audit import onnxwire
from audit.errors import ModelError

# ops between the classifier layer and the output that keep the classifier's input meaningful
PASS_THROUGH = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Softmax", "LogSoftmax",
                          "Sigmoid", "Cast", "Relu", "Dropout", "GlobalAveragePool", "ReduceMean", "Transpose"})
WITH_CONSTANT = frozenset({"Add", "Sub", "Mul", "Div"})  # a bias or a temperature: one operand is a constant
MAX_STEPS = 32


@dataclass(frozen=True)
class Located:
    """The feature tensor's name, or None with the reason the walk stopped."""

    name: str | None
    how: str  # "input of the final Gemm", "named by the card", or why none was found


def locate(graph, named: str | None = None) -> Located:
    """Find the penultimate tensor of ``graph`` (``onnxwire.Graph`` or an ``onnx.GraphProto``); ``named`` overrides
    the search.

    A name that is not a tensor of the graph is a ``ModelError`` (the user's card or flag is wrong).
    """
    producers = {o: n for n in graph.node for o in n.output}
    if named is not None and not (isinstance(named, str) and named):
        raise ModelError(f"card key 'audit.features' must be the name of a tensor of the graph, got {named!r}",
                         hint="name the input of the model's final classifier layer (--features-output NAME)")
    if named is not None:
        if named not in producers and named not in {i.name for i in graph.input}:
            raise ModelError(f"features tensor {named!r} (audit.features / --features-output) is not a tensor of "
                             f"the graph", hint="name the input of the model's final classifier layer, e.g. "
                                                f"{_near_output(graph, producers)}")
        return Located(named, "named by the card or --features-output")
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                       for o in n.output}
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    tensor = graph.output[0].name
    for _ in range(MAX_STEPS):
        node = producers.get(tensor)
        if node is None:
            return Located(None, "the output is a graph input or constant, with no classifier layer before it")
        computed = [i for i in node.input if i and i not in constants]
        if node.op_type in ("Gemm", "MatMul") and len(computed) == 1 and node.input[0] == computed[0]:
            return Located(computed[0], f"input of the final {node.op_type}")
        if node.op_type == "Conv" and len(computed) == 1 and shapes.get(node.input[1], ())[2:] == (1, 1):
            return Located(computed[0], "input of the final 1x1 Conv")
        if node.op_type in PASS_THROUGH or (node.op_type in WITH_CONSTANT and len(computed) == 1):
            tensor = computed[0] if computed else node.input[0]
            continue
        return Located(None, f"no classifier layer (Gemm, MatMul or 1x1 Conv) at the end of the graph: the walk "
                             f"back from the output stopped at a {node.op_type} node")
    return Located(None, f"no classifier layer within {MAX_STEPS} nodes of the output")


def _near_output(graph, producers) -> str:
    node = producers.get(graph.output[0].name)
    names = [i for i in (node.input if node is not None else ()) if i]
    return repr(names[0]) if names else "a tensor listed by `python -c 'import onnx; ...'`"


def with_output(data: bytes, name: str) -> bytes:
    """The serialised model ``data`` with ``name`` added as a graph output."""
    return onnxwire.with_output(data, name)


@dataclass(frozen=True)
class GraphInfo:
    """What the ONNX graph says about its input and output."""

    input_name: str
    input_shape: tuple[int | str | None, ...]
    fixed_batch: int | None
    layout: str
    layout_certain: bool
    size: tuple[int, int] | None
    channels: int | None
    ends_in_softmax: bool


def inspect_graph(session, proto) -> GraphInfo:
    """Read layout, fixed batch size, spatial size and a final softmax off an ORT session."""
    inp = session.get_inputs()[0]
    shape = tuple(inp.shape)
    if len(shape) != 4:
        raise ModelError(f"model input {inp.name!r} has shape {list(shape)}; expected a 4-D image batch")
    fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    c1, c3 = shape[1], shape[3]
    # NHWC when the last axis looks like channels and the second does not.
    layout = "NHWC" if c3 in (1, 3) and c1 not in (1, 3) else "NCHW"
    unambiguous = (c1 in (1, 3)) != (c3 in (1, 3))
    h, w = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
    size = (h, w) if isinstance(h, int) and isinstance(w, int) else None
    channels = c3 if layout == "NHWC" else c1
    return GraphInfo(
        input_name=inp.name,
        input_shape=shape,
        fixed_batch=fixed_batch,
        layout=layout,
        layout_certain=unambiguous,
        size=size,
        channels=channels if isinstance(channels, int) else None,
        ends_in_softmax=_ends_in_softmax(proto.graph),
    )


def _ends_in_softmax(graph) -> bool:
    out = graph.output[0].name
    producers = {o: n for n in graph.node for o in n.output}
    node = producers.get(out)
    # Walk back through shape-only ops (Identity, Reshape, Flatten) to the real producer.
    while node is not None and node.op_type in ("Identity", "Reshape", "Flatten", "Squeeze"):
        node = producers.get(node.input[0])
    return node is not None and node.op_type == "Softmax"



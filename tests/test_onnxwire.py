"""The ONNX wire reader: the same graph structure, metadata and added output as ``onnx`` itself, and no
``import onnx`` when a model is loaded for an audit."""

from __future__ import annotations

import subprocess
import sys

import builders
import builders_models
import onnx
import pytest
from onnx import TensorProto, helper

from audit import onnxwire
from audit.errors import ModelError
from audit.graph import locate
from audit.model import OnnxClassifier, read_metadata

pytestmark = pytest.mark.fast


def models(tmp_path):
    yield builders.colour_model(tmp_path / "colour.onnx")
    yield builders.colour_model(tmp_path / "nhwc.onnx", layout="NHWC", softmax=True)
    yield builders_models.side_model(tmp_path / "side.onnx")
    yield builders_models.fp16_model(tmp_path / "fp16.onnx")


def test_the_wire_view_matches_onnx_on_every_field_the_audit_reads(tmp_path):
    for path in models(tmp_path):
        data = path.read_bytes()
        ours, theirs = onnxwire.parse_model(data), onnx.load_model_from_string(data)
        assert [(n.op_type, n.input, n.output) for n in ours.graph.node] == \
            [(n.op_type, tuple(n.input), tuple(n.output)) for n in theirs.graph.node]
        assert [(t.name, t.dims) for t in ours.graph.initializer] == \
            [(t.name, tuple(t.dims)) for t in theirs.graph.initializer]
        assert [v.name for v in ours.graph.input] == [v.name for v in theirs.graph.input]
        assert [v.name for v in ours.graph.output] == [v.name for v in theirs.graph.output]
        assert [(e.key, e.value) for e in ours.metadata_props] == [(e.key, e.value) for e in theirs.metadata_props]
        assert locate(ours.graph) == locate(theirs.graph)


def test_an_added_output_is_what_onnx_writes_and_is_added_once(tmp_path):
    path = builders.colour_model(tmp_path / "m.onnx")
    data = path.read_bytes()
    expected = onnx.load_model_from_string(data)
    expected.graph.output.append(helper.make_empty_tensor_value_info("flat"))
    once = onnxwire.with_output(data, "flat")
    assert onnx.load_model_from_string(once) == expected
    assert onnxwire.with_output(once, "flat") == once


def test_negative_and_packed_dims_read_back():
    t = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], [0.0] * 6)
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [t])
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [-1, 3])
    graph.initializer.append(shape)
    got = onnxwire.parse_model(helper.make_model(graph).SerializeToString()).graph
    assert [(x.name, x.dims) for x in got.initializer] == [("w", (2, 3)), ("s", (2,))]


@pytest.mark.parametrize("data", [b"", b"\x00\x01", b"not an onnx model at all", b"\x3a\xff\xff\xff\x0f",
                                  bytes(range(256))])
def test_bytes_that_are_not_a_model_are_a_model_error(tmp_path, data):
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelError, match="cannot load .* as an ONNX model"):
        read_metadata(path)


def test_loading_a_model_for_an_audit_imports_no_onnx(tmp_path):
    path = builders.colour_model(tmp_path / "m.onnx")
    code = ("import sys; from audit.model import OnnxClassifier; c = OnnxClassifier.load(sys.argv[1]);"
            "assert c.features.name == 'flat'; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('onnx', 'ml_dtypes')))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert OnnxClassifier.load(path).features.name == "flat"

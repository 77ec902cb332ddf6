"""Models from someone else compute, nothing more: custom operators and huge tensors are refused.

Each model here is built with ``onnx.helper`` as an ednn tile model (metadata
included) that would load if it were not for the one thing under test, so a
refusal is the check's doing, not a side effect of a broken file. The external
weights outside the model's folder are refused in tests/test_model.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ednn_dask.errors import ModelFormatError
from ednn_dask.model import ModelSpec, TileModel
from ednn_dask.model import runtime as model_runtime

SPEC = ModelSpec(kind="tile", focus=(1, 1), context=(1, 1), boundary="periodic", channels=1,
                 target="energy", target_unit="J")


def tile_model(nodes, *, initializers=(), sparse=(), functions=(), domains=()):
    """A 3x3-tile model x -> y (N,) whose graph is ``nodes`` (they read 'x', write 'y')."""
    graph = helper.make_graph(
        nodes, "tile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
        initializer=list(initializers), sparse_initializer=list(sparse))
    opsets = [helper.make_opsetid("", 18), *(helper.make_opsetid(d, 1) for d in domains)]
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    model.ir_version = 9
    for key, value in SPEC.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    return model


def sum_nodes(source="x"):
    axes = numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")
    return [helper.make_node("Constant", [], ["axes"], value=axes),
            helper.make_node("ReduceSum", [source, "axes"], ["y"], keepdims=0)]


def save(model, path):
    onnx.save(model, str(path))
    return path


def test_a_plain_model_built_this_way_loads(tmp_path):
    model = TileModel.load(save(tile_model(sum_nodes()), tmp_path / "sum.onnx"))
    x = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3)
    np.testing.assert_array_equal(model.run(x), x.sum(axis=(1, 2, 3)).reshape(2, 1, 1))


def test_a_custom_operator_is_refused_with_one_line(tmp_path):
    nodes = [helper.make_node("PyOp", ["x"], ["z"], name="payload", domain="ai.onnx.contrib"),
             *sum_nodes("z")]
    path = save(tile_model(nodes, domains=["ai.onnx.contrib"]), tmp_path / "custom.onnx")
    with pytest.raises(ModelFormatError, match=r"operator 'PyOp' of the custom domain "
                                               r"'ai\.onnx\.contrib' \(node 'payload' in its "
                                               r"graph\).*standard ONNX operators only"):
        TileModel.load(path)
    done = subprocess.run([sys.executable, "-m", "ednn_dask.cli", "info", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("ednn-dask info: error: model 'custom.onnx' uses operator "
                                  "'PyOp' of the custom domain 'ai.onnx.contrib'")


def test_a_custom_operator_inside_a_subgraph_is_refused(tmp_path):
    flag = numpy_helper.from_array(np.array(True), "flag")
    branch = helper.make_graph(
        [helper.make_node("Exec", ["x"], ["out"], name="hidden", domain="evil.ops")], "then",
        [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["out2"])], "else", [],
                              [helper.make_tensor_value_info("out2", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("If", ["flag"], ["z"], then_branch=branch, else_branch=other),
             *sum_nodes("z")]
    path = save(tile_model(nodes, initializers=[flag], domains=["evil.ops"]),
                tmp_path / "nested.onnx")
    with pytest.raises(ModelFormatError, match="'Exec' of the custom domain 'evil.ops' "
                                               r"\(node 'hidden' in its subgraph of node"):
        TileModel.load(path)


def test_a_models_own_function_is_no_custom_operator(tmp_path):
    """A model-local ONNX function is a graph, not code: allowed, its body checked too."""
    axes = numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")
    body = [helper.make_node("Constant", [], ["axes"], value=axes),
            helper.make_node("ReduceSum", ["a", "axes"], ["b"], keepdims=0)]
    function = helper.make_function("local.fn", "SumAll", ["a"], ["b"], body,
                                     [helper.make_opsetid("", 18)])
    nodes = [helper.make_node("SumAll", ["x"], ["y"], domain="local.fn")]
    path = save(tile_model(nodes, functions=[function], domains=["local.fn"]),
                tmp_path / "function.onnx")
    x = np.ones((1, 1, 3, 3), np.float32)
    assert TileModel.load(path).run(x).item() == 9.0

    body.append(helper.make_node("Exec", ["b"], ["c"], name="inside", domain="evil.ops"))
    bad = helper.make_function("local.fn", "SumAll", ["a"], ["c"], body,
                               [helper.make_opsetid("", 18), helper.make_opsetid("evil.ops", 1)])
    path = save(tile_model(nodes, functions=[bad], domains=["local.fn", "evil.ops"]),
                tmp_path / "bad-function.onnx")
    with pytest.raises(ModelFormatError, match="'evil.ops' .*in its function 'SumAll'"):
        TileModel.load(path)


def test_an_oversized_external_initializer_is_refused_before_it_is_read(tmp_path):
    """A 1.6 GB weight declared in a sparse file beside the model: refused from its shape."""
    weights = tmp_path / "weights.bin"
    side = 20_000
    with open(weights, "wb") as f:  # sparse: takes no disk space, reads as zeros
        f.truncate(side * side * 4)
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[side, side])
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="weights.bin")
    path = save(tile_model(sum_nodes(), initializers=[w]), tmp_path / "huge.onnx")
    with pytest.raises(ModelFormatError, match=r"declares tensor 'w' of shape \[20000, 20000\] "
                                               r"\(1,600 MB\), more than the 268 MB"):
        TileModel.load(path)


def test_a_sparse_initializer_with_a_huge_dense_shape_is_refused(tmp_path):
    values = numpy_helper.from_array(np.ones(1, np.float32), "bomb")
    indices = numpy_helper.from_array(np.zeros((1, 2), np.int64), "bomb_indices")
    bomb = helper.make_sparse_tensor(values, indices, [100_000, 100_000])
    path = save(tile_model(sum_nodes(), sparse=[bomb]), tmp_path / "sparse.onnx")
    with pytest.raises(ModelFormatError, match=r"tensor 'bomb' of shape \[100000, 100000\]"):
        TileModel.load(path)


def test_a_model_file_over_the_size_limit_is_not_read(tmp_path, monkeypatch):
    path = tmp_path / "big.onnx"
    with open(path, "wb") as f:
        f.truncate(model_runtime.MAX_MODEL_BYTES + 1)  # sparse
    monkeypatch.setattr(type(path), "read_bytes", lambda self: pytest.fail("it was read"))
    with pytest.raises(ModelFormatError, match="more than the 1.1 GB ednn-dask reads"):
        TileModel.load(path)

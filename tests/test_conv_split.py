"""The int8 form of a graph: one conv per part where a conv's output is split along channels,
the same function (ONNX Runtime on both graphs), Splits left alone where it would not be."""
import collections

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from modnet_prune import MODNet
from modnet_prune.deploy import conv_split
from modnet_prune.deploy.conv_split import split_convs
from modnet_prune.deploy.onnx_export import export_onnx
from modnet_prune.deploy.quantize import quantize_graph
from helpers import randomise_bn, tiny_arch


def _graph(nodes, inits, inputs, outputs):
    values = lambda names, c: [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", c, 6, 6])
                               for n in names]
    graph = helper.make_graph(nodes, "g", values(inputs, 3), values(outputs, None), inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _init(rng, name, *shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def _run(model, feeds):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _ops(model):
    return collections.Counter(n.op_type for n in model.graph.node)


def test_conv_and_sum_of_convs_become_one_per_part_with_the_same_outputs():
    rng = np.random.default_rng(0)
    split = numpy_helper.from_array(np.array([16, 24], np.int64), "sizes")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1] * 4),
             helper.make_node("Split", ["c", "sizes"], ["p0", "p1"], name="split", axis=1),
             helper.make_node("Relu", ["p0"], ["a"]),
             helper.make_node("InstanceNormalization", ["p1", "s", "t"], ["b_"]),
             helper.make_node("Conv", ["x", "w2", "b2"], ["d"], name="conv2", pads=[1] * 4),
             helper.make_node("Conv", ["y", "w3"], ["e"], name="conv3"),
             helper.make_node("Add", ["d", "e"], ["sum"], name="add"),
             helper.make_node("Split", ["sum", "sizes"], ["q0", "q1"], name="split2", axis=1)]
    inits = [_init(rng, "w", 40, 3, 3, 3), _init(rng, "b", 40), _init(rng, "s", 24), _init(rng, "t", 24),
             _init(rng, "w2", 40, 3, 3, 3), _init(rng, "b2", 40), _init(rng, "w3", 40, 3, 1, 1), split]
    model = _graph(nodes, inits, ["x", "y"], ["a", "b_", "q0", "q1"])
    feeds = {n: rng.standard_normal((2, 3, 6, 6)).astype(np.float32) for n in ("x", "y")}
    before = _run(model, feeds)
    assert split_convs(model) == 2
    onnx.checker.check_model(model)
    assert _ops(model)["Split"] == 0 and _ops(model)["Conv"] == 2 * 3 and _ops(model)["Add"] == 2
    assert {t.name for t in model.graph.initializer}.isdisjoint({"w", "b", "w2", "b2", "w3"})
    for got, expected in zip(_run(model, feeds), before):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        assert got.shape == expected.shape


def test_splits_it_cannot_rewrite_are_left_alone():
    rng = np.random.default_rng(1)
    sizes = {name: numpy_helper.from_array(np.array(v, np.int64), name)
             for name, v in {"halves": [16, 16], "rows": [3, 3], "wide": [16, 32],
                             "narrow": [8, 24]}.items()}
    conv = lambda out, w, **kw: helper.make_node("Conv", ["x", w], [out], pads=[1] * 4, **kw)
    nodes = [conv("c", "w"), helper.make_node("Split", ["c", "halves"], ["p0", "p1"], axis=1),  # c: an output
             conv("d", "w"), helper.make_node("Split", ["d", "rows"], ["r0", "r1"], axis=2),  # not channels
             conv("e", "w"), helper.make_node("Split", ["e"], ["s0", "s1"], axis=1),  # sizes unknown
             conv("f", "g", group=3), helper.make_node("Split", ["f", "wide"], ["t0", "t1"], axis=1),
             conv("h", "w"), helper.make_node("Split", ["h", "narrow"], ["u0", "u1"], axis=1)]
    model = _graph(nodes, [_init(rng, "w", 32, 3, 3, 3), _init(rng, "g", 48, 1, 3, 3), *sizes.values()],
                   ["x"], ["c", "p0", "p1", "r0", "r1", "s0", "s1", "t0", "t1", "u0", "u1"])
    _run(model, {"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)})  # a valid graph
    reference = model.SerializeToString()
    assert split_convs(model) == 0 and model.SerializeToString() == reference


def test_fused_modnet_keeps_its_matte_and_int8_graph_has_no_ibnorm_split(tmp_path, monkeypatch):
    monkeypatch.setattr(conv_split, "MIN_PART_CHANNELS", 4)  # the tiny widths' IBNorm halves
    torch.manual_seed(0)
    export_onnx(randomise_bn(MODNet(tiny_arch())), tmp_path / "m.onnx")
    model = onnx.load(tmp_path / "m.onnx")
    splits = [n.name for n in model.graph.node if n.op_type == "Split"]
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 64, 96)).astype(np.float32)
    before = _run(model, {"image": x})[0]
    removed = split_convs(model)
    assert removed == len([s for s in splits if not s.startswith("/tail/")]) > 10
    np.testing.assert_allclose(_run(model, {"image": x})[0], before, rtol=0, atol=1e-5)
    int8 = onnx.load_from_string(quantize_graph((tmp_path / "m.onnx").read_bytes(), [x[:1]]))
    assert sorted(n.name for n in int8.graph.node if n.op_type == "Split") == \
        sorted(s for s in splits if s.startswith("/tail/"))  # the quantizer may reorder nodes

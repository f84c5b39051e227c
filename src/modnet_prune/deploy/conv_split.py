"""One conv per part where a conv's output is split along channels: the int8 form of a graph.

    split_convs(proto)  # in place; returns how many Split nodes it removed

In a QDQ graph ONNX Runtime runs QLinearConv in NHWC uint8 but a Split in NCHW float: each
split conv output costs a transpose, a DequantizeLinear of all of it, the Split and a
QuantizeLinear per part. One conv per part writes each part where its consumer reads it;
reading the uint8 input twice is cheaper (the fused MODNet's IBNorm convs: int8 teacher
x1.08, 25 %-MACs student x1.10, 2 threads, 512^2; benchmarks/conv_split.py). In float32 it
is the other way round (teacher x0.94: the input is read twice at 4 bytes a value), so only
the graph that is quantized gets it.

Exact: a part's channels are rows of the conv's weight and bias. The producer may also be
an Add of such producers (a conv plus the conv of another input, as the fused graph writes
a conv over [features, image]); each node rewritten must feed only the node after it.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

# Narrower parts stay one conv: ORT's int8 conv computes output channels in blocks of 16.
# With every part split, the 25 %-MACs student's int8 file (many parts of 4-8 channels) was
# x0.80 of the one with this threshold (benchmarks/conv_split.py, benchmarks/int8.md).
MIN_PART_CHANNELS = 16


def split_convs(proto: onnx.ModelProto) -> int:
    """Rewrite every channel Split fed by a conv tree (Conv, or Add of conv trees) into one
    tree per part. Returns the number of Splits removed."""
    graph = proto.graph
    removed = 0
    for split in [n for n in graph.node if n.op_type == "Split"]:
        sizes = _split_sizes(graph, split)
        if not sizes or min(sizes) < MIN_PART_CHANNELS:
            continue
        tree = _conv_tree(graph, split.input[0])
        if tree is None:
            continue
        position = list(graph.node).index(split)
        new_nodes = []
        start = 0
        for k, (size, out) in enumerate(zip(sizes, split.output)):
            new_nodes += _copy_tree(graph, split.input[0], start, start + size, f"part{k}", out)
            start += size
        for node in tree + [split]:
            graph.node.remove(node)
        for offset, node in enumerate(new_nodes):
            graph.node.insert(position - len(tree) + offset, node)
        removed += 1
    _drop_unused_initializers(graph)
    return removed


def _initializer(graph: onnx.GraphProto, name: str):
    return next((t for t in graph.initializer if t.name == name), None)


def _split_sizes(graph: onnx.GraphProto, split: onnx.NodeProto) -> list[int] | None:
    """Channel counts of a Split along axis 1 with sizes known from the graph, else None."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in split.attribute}
    if attrs.get("axis", 0) != 1:
        return None
    if "split" in attrs:
        return list(attrs["split"])
    if len(split.input) > 1 and split.input[1]:
        tensor = _initializer(graph, split.input[1])
        return None if tensor is None else [int(v) for v in numpy_helper.to_array(tensor)]
    return None  # equal parts of an unknown channel count: left alone


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if name in n.input]


def _conv_tree(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto] | None:
    """The nodes producing `name` when it is a conv tree that feeds only one node, else None."""
    producer = next((n for n in graph.node if name in n.output), None)
    if producer is None or len(_consumers(graph, name)) != 1 or \
            any(o.name == name for o in graph.output):
        return None
    if producer.op_type == "Conv":
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in producer.attribute}
        weights = [_initializer(graph, i) for i in producer.input[1:] if i]
        return [producer] if attrs.get("group", 1) == 1 and all(weights) else None
    if producer.op_type == "Add":
        trees = [_conv_tree(graph, i) for i in producer.input]
        return None if any(t is None for t in trees) else [*trees[0], *trees[1], producer]
    return None


def _copy_tree(graph: onnx.GraphProto, name: str, start: int, stop: int, tag: str,
               out: str) -> list[onnx.NodeProto]:
    """Nodes computing channels [start, stop) of `name` into `out` (in execution order)."""
    producer = next(n for n in graph.node if name in n.output)
    node = onnx.NodeProto()
    node.CopyFrom(producer)
    node.name, node.output[0] = f"{producer.name}/{tag}", out
    if producer.op_type == "Add":
        nodes = []
        for k, source in enumerate(producer.input):
            part = f"{source}/{tag}"
            nodes += _copy_tree(graph, source, start, stop, tag, part)
            node.input[k] = part
        return nodes + [node]
    for k in range(1, len(producer.input)):  # weight (O, C, kh, kw), bias (O,): their rows
        rows = numpy_helper.to_array(_initializer(graph, producer.input[k]))[start:stop]
        node.input[k] = f"{producer.input[k]}/{tag}"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(rows), node.input[k]))
    return [node]


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)

"""Would a uint8 Resize help the int8 graph? ORT's float path vs a Resize on uint8, timed.

    python benchmarks/int8_resize.py [--channels 32] [--size 256] [--threads 2] [--repeat 20]

ONNX Runtime (1.32) runs every bilinear Resize of a QDQ graph on floats, between a
DequantizeLinear and a QuantizeLinear, although it has a rule to drop such pairs and a
uint8 Resize kernel. This times the two ways of upsampling one uint8 tensor by 2
(MODNet's last `up(f2x)`: 32 channels, 256² -> 512²), interleaved, and reports how far
the uint8 result is from the float one, in quantization steps.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SCALE, ZERO = 0.03, 0


def upsample_graph(channels: int, size: int, on_uint8: bool) -> bytes:
    """float in -> Q -> [DQ -> Resize -> Q | Resize on uint8] -> DQ -> float out."""
    inits = [numpy_helper.from_array(np.array(SCALE, np.float32), "s"),
             numpy_helper.from_array(np.array(ZERO, np.uint8), "z"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    resize = dict(mode="linear", coordinate_transformation_mode="half_pixel")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])]
    if on_uint8:
        nodes.append(helper.make_node("Resize", ["q", "", "scales"], ["q_up"], **resize))
    else:
        nodes += [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["f"]),
                  helper.make_node("Resize", ["f", "", "scales"], ["f_up"], **resize),
                  helper.make_node("QuantizeLinear", ["f_up", "s", "z"], ["q_up"])]
    nodes.append(helper.make_node("DequantizeLinear", ["q_up", "s", "z"], ["y"]))
    graph = helper.make_graph(
        nodes, "upsample",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 2 * size, 2 * size])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {way: ort.InferenceSession(upsample_graph(args.channels, args.size, way == "uint8"),
                                          options, providers=["CPUExecutionProvider"])
                for way in ("float", "uint8")}
    x = np.random.default_rng(0).uniform(0, 255 * SCALE, (1, args.channels, args.size, args.size))
    x = x.astype(np.float32)
    out = {way: s.run(None, {"x": x})[0] for way, s in sessions.items()}
    steps = (out["uint8"] - out["float"]) / SCALE
    times = {way: [] for way in sessions}
    for _ in range(args.repeat):
        for way, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"x": x})
            times[way].append(time.perf_counter() - start)
    print(f"{args.channels} x {args.size}² -> {2 * args.size}², {args.threads} threads, fastest of "
          f"{args.repeat} interleaved: float path {1e3 * min(times['float']):.2f} ms, uint8 Resize "
          f"{1e3 * min(times['uint8']):.2f} ms; uint8 - float: mean {steps.mean():+.3f} steps, "
          f"max |{np.abs(steps).max():.2f}| steps")


if __name__ == "__main__":
    main()

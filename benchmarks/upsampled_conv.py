"""A conv on a bilinear x2 upsample, as the training graph writes it vs with the channels mixed
first (`deploy.inference_graph.UpsampledConv`), alone, in fp32 and int8, side by side.

    PYTHONPATH=src python benchmarks/upsampled_conv.py [--threads 2] [--repeat 30]

Each case is MODNet's layer at a 512x512 input: lr16x reads the SE block's channels at 1/32
(the official 1280, or fewer where a backbone is pruned) and writes O at 1/16; lr8x reads 96
at 1/16. Both forms of one random 5x5 conv (after a ReLU, as in the graph) are exported and
quantized by `deploy.quantize.quantize_graph` (ranges from 4 random inputs); the four files
run interleaved in one ONNX Runtime process. Prints the fastest round of each in ms and the
mixed form's max |difference| from the direct one in fp32. This is what sets
MIX_FIRST_MIN_CHANNELS.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from modnet_prune.deploy.inference_graph import UpsampledConv  # noqa: E402
from modnet_prune.deploy.quantize import quantize_graph  # noqa: E402
from modnet_prune.measure.benchmark import interleaved_times  # noqa: E402

# (name, input channels, output channels, input side at a 512x512 image)
CASES = [("lr16x, official", 1280, 96, 16), ("lr16x, 16 kept", 1280, 16, 16),
         ("lr16x, 8 kept", 1280, 8, 16), ("lr16x, backbone at 512", 512, 96, 16),
         ("lr16x, backbone at 512, 8 kept", 512, 8, 16), ("lr16x, backbone at 256", 256, 32, 16),
         ("lr8x, official", 96, 32, 32)]


def session(path: Path, threads: int):
    """x -> y of an ONNX file in ONNX Runtime (not a matting graph: no contract check), with
    spinning off as `benchmark` runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    run = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run
    return lambda x: run(None, {"x": x})[0]


class Layer(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, mix_first: bool):
        super().__init__()
        like = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[-1],
                         padding=weight.shape[-1] // 2)
        self.conv = UpsampledConv(like, weight, bias, mix_first=mix_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.relu(x))


def files_for(cin: int, out: int, side: int, folder: Path) -> tuple[list[Path], float]:
    weight, bias = torch.randn(out, cin, 5, 5) / (5 * cin ** 0.5), torch.randn(out) / 10
    x = torch.randn(1, cin, side, side)
    layers = [Layer(weight, bias, mix_first).eval() for mix_first in (False, True)]
    with torch.no_grad():
        delta = float((layers[0](x) - layers[1](x)).abs().max())
    batches = [np.random.default_rng(k).standard_normal((1, cin, side, side), dtype=np.float32)
               for k in range(4)]
    paths = []
    for name, layer in zip(("direct", "mixed"), layers):
        fp32 = folder / f"{name}.onnx"
        torch.onnx.export(layer, (x,), str(fp32), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
        int8 = folder / f"{name}.int8.onnx"
        int8.write_bytes(quantize_graph(fp32.read_bytes(), batches))
        paths += [fp32, int8]
    return paths, delta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"ONNX Runtime, {args.threads} threads, fastest of {args.repeat} interleaved rounds "
          "(ms)\n")
    print("| layer | C → O | direct fp32 | mixed fp32 | direct int8 | mixed int8 "
          "| max Δ fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, cin, out, side in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            paths, delta = files_for(cin, out, side, Path(tmp))
            runtimes = [session(p, args.threads) for p in paths]
            x = np.random.default_rng(9).standard_normal((1, cin, side, side), dtype=np.float32)
            times = interleaved_times(runtimes, x, args.repeat, 3, False)
        best = [min(t) for t in times]  # direct fp32, direct int8, mixed fp32, mixed int8
        print(f"| {name} | {cin} → {out} | {best[0]:.2f} | {best[2]:.2f} | {best[1]:.2f} | "
              f"{best[3]:.2f} | {delta:.1e} |")


if __name__ == "__main__":
    main()

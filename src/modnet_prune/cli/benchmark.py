"""`modnet-prune benchmark`: latency (and peak memory) of a model, or of two side by side."""
from __future__ import annotations

import sys

from rich.console import Console

from ..deploy.runtime import RUNTIMES
from ..report.benchmark import benchmark
from ..report.render import render_benchmark
from .common import print_json


def register(sub) -> None:
    p = sub.add_parser("benchmark", help="latency of a model, or of two interleaved (--vs)")
    p.add_argument("--checkpoint", required=True, help="model A: checkpoint or .onnx file")
    p.add_argument("--vs", help="model B, timed interleaved with A (A B A B ...)")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="auto (default): onnxruntime for .onnx, torch otherwise")
    p.add_argument("--size", default="512", help="input size, N or HxW, multiples of 32 (default 512)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: all CPUs this process may use)")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per model (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per model first (default 3)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    result = benchmark(args.checkpoint, args.vs, runtime=args.runtime, size=args.size,
                       threads=args.threads, repeat=args.repeat, warmup=args.warmup)
    if args.json:
        print_json(result)
    else:
        render_benchmark(result, Console())
    for warning in result["env"]["warnings"]:  # stderr, so that --json output stays clean
        print(f"modnet-prune benchmark: warning: {warning}", file=sys.stderr)
    return 0

"""`modnet-prune benchmark`: latency (and peak memory) of a model, or of two side by side."""
from __future__ import annotations

import sys

from ..deploy.runtime import RUNTIMES
from ..errors import UserError
from ..measure.benchmark import benchmark, benchmark_many
from ..report.render import render_benchmark, render_benchmark_runs
from .common import add_input_size, add_json, add_runtime, add_threads, print_result


def register(sub) -> None:
    p = sub.add_parser("benchmark", help="latency of a model, or of two interleaved (--vs)")
    p.add_argument("--checkpoint", required=True, help="model A: checkpoint or .onnx file")
    p.add_argument("--vs", help="model B, timed interleaved with A (A B A B ...)")
    add_runtime(p, help="auto (default): onnxruntime for .onnx, torch otherwise")
    p.add_argument("--runtimes", metavar="LIST",
                   help="comma-separated, e.g. onnxruntime,openvino: time every model under "
                        "each runtime, all interleaved in one run, and name the fastest per model "
                        "(replaces --runtime)")
    add_input_size(p)
    add_threads(p)
    p.add_argument("--repeat", type=int, default=20, help="timed runs per model (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per model first (default 3)")
    add_json(p, "the result")
    p.set_defaults(func=run)


def run(args) -> int:
    options = dict(size=args.size, threads=args.threads, repeat=args.repeat, warmup=args.warmup)
    if args.runtimes:
        runtimes = parse_runtimes(args.runtimes)
        paths = [args.checkpoint] + ([args.vs] if args.vs else [])
        result = benchmark_many(paths, runtimes=runtimes, **options)
        render = render_benchmark_runs
    else:
        result = benchmark(args.checkpoint, args.vs, runtime=args.runtime, **options)
        render = render_benchmark
    print_result(result, args.json, render)
    for warning in result["env"]["warnings"]:  # stderr, so that --json output stays clean
        print(f"modnet-prune benchmark: warning: {warning}", file=sys.stderr)
    return 0


def parse_runtimes(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in RUNTIMES or name == "auto"]
    if not names or unknown or len(set(names)) != len(names):
        raise UserError(f"--runtimes {text!r}: name distinct runtimes from "
                        f"{', '.join(r for r in RUNTIMES if r != 'auto')}")
    return names

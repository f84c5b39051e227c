"""`modnet-prune profile`: build (or show the cached) latency model of a deployment target."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..deploy.onnx_export import GRAPHS
from ..prune.latency import FEATURES
from ..measure.benchmark import default_threads
from ..measure.latency import (DEFAULT_HELD_OUT, DEFAULT_REPEAT, DEFAULT_SAMPLES, PRECISIONS,
                               PROFILED_RUNTIMES, cache_path, latency_model, target_for)
from .common import add_json, add_threads, print_result


def register(sub) -> None:
    p = sub.add_parser("profile", help="latency model of a runtime on this CPU (for "
                                       "prune --target-latency)")
    add_target_args(p)
    p.add_argument("--rebuild", action="store_true", help="measure again even if cached")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help="random prunes the fit uses")
    p.add_argument("--held-out", type=int, default=DEFAULT_HELD_OUT,
                   help="further random prunes its error is measured on")
    p.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="timed rounds per prune")
    add_json(p, "the model")
    p.set_defaults(func=run)


def add_target_args(p) -> None:
    """The deployment target options (shared with `prune --target-latency`)."""
    p.add_argument("--runtime", choices=PROFILED_RUNTIMES, default="onnxruntime",
                   help="runtime the latency is of")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--graph", choices=GRAPHS, default="fused",
                   help="exported graph the latency is of (as `export --graph`)")
    add_threads(p)
    p.add_argument("--size", type=int, default=512,
                   help="input size, square (default 512; for prune also where MACs count)")


def target_of(args):
    threads = default_threads() if args.threads is None else args.threads
    return target_for(args.runtime, args.precision, threads, args.size, args.graph)


def run(args) -> int:
    target = target_of(args)
    model, measured_now = latency_model(target, rebuild=args.rebuild, progress=not args.json,
                                        samples=args.samples, held_out=args.held_out,
                                        repeat=args.repeat)
    summary = {**model.to_dict(), "cache": str(cache_path(target)), "measured_now": measured_now}
    print_result(summary, args.json, _print)
    return 0


def _print(summary: dict, console: Console) -> None:
    error = summary["error"]
    t = summary["target"]
    console.print(f"latency model: {t['runtime']} {t['version']} {t['precision']}, "
                  f"{t['graph']} graph, {t['threads']} thread(s), "
                  f"{'x'.join(map(str, t['size']))}, {t['cpu']}")
    console.print(f"{'measured now' if summary['measured_now'] else 'cached'}: {summary['cache']}"
                  f" (fit on {summary['samples']} timed models)")
    load = summary.get("load")
    if load:
        console.print(f"while measured, other processes kept {load['other_cpus']:.2f} of "
                      f"{load['cpus']} CPUs busy on average")
    table = Table(title=f"held-out random prunes (unpruned: {error['reference_ms']:.1f} ms)")
    for column in ("MACs vs unpruned", "measured ms", "predicted ms", "error"):
        table.add_column(column, justify="right")
    for row in error["rows"]:
        table.add_row(f"{row['macs_fraction']:.3f}", f"{row['measured_ms']:.1f}",
                      f"{row['predicted_ms']:.1f}", f"{row['relative_error']:+.1%}")
    console.print(table)
    console.print(f"error: mean |{error['mean_abs']:.1%}|, max |{error['max_abs']:.1%}|; "
                  f"latency proportional to MACs: mean |{error['macs_proportional_mean_abs']:.1%}|,"
                  f" max |{error['macs_proportional_max_abs']:.1%}|")
    coefficients = Table(title="coefficients: ms per million MACs or elements")
    coefficients.add_column("term (layer kind.term)")
    coefficients.add_column("ms / 1e6", justify="right")
    for name in FEATURES[:-1]:
        coefficients.add_row(name, f"{summary['coefficients'][name] * 1e6:.4g}")
    coefficients.add_row("constant (ms)", f"{summary['coefficients']['constant']:.4g}")
    console.print(coefficients)

"""Human-readable tables (rich) of `model_costs` and benchmark results."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

HIGHLIGHT_SHARE = 0.05  # layers above this share of the MACs are the ones worth pruning first
BAR_WIDTH = 20


def _mega(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def _bytes(n: int) -> str:
    return f"{n:,} B ({n / 2**20:.2f} MiB)"


def _bar(share: float, largest: float) -> str:
    return "█" * max(1, round(BAR_WIDTH * share / largest)) if share else ""


def render_summary(report: dict, console: Console) -> None:
    h, w = report["size"]
    rows = [("input", f"{h}x{w}, batch 1"),
            ("params (unique)", f"{report['params']:,}"),
            ("MACs, inference (matte)", f"{report['macs']:,}  ({_mega(report['macs'])} M)"),
            ("MACs, training graph", f"{report['macs_train']:,}  ({_mega(report['macs_train'])} M)"),
            ("weights fp32 / fp16", f"{_bytes(report['weight_bytes']['fp32'])} / "
                                    f"{_bytes(report['weight_bytes']['fp16'])}")]
    if report["checkpoint"] is not None:
        rows.insert(0, ("checkpoint", report["checkpoint"]))
        rows.append(("file size", _bytes(report["file_bytes"])))
    else:
        rows.insert(0, ("model", "official architecture (no checkpoint given)"))
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print("[dim]MACs of conv + linear layers only (FLOPs = 2 x MACs).[/]")


def render_parts(report: dict, console: Console) -> None:
    table = Table(title="Parts (shared backbone counted once, under backbone)", title_justify="left")
    for column in ("part", "params", "% params", "MACs (M)", "share", "MACs train (M)"):
        table.add_column(column, justify="left" if column == "part" else "right")
    for name, part in report["parts"].items():
        table.add_row(name, f"{part['params']:,}", f"{part['params'] / report['params']:.1%}",
                      _mega(part["macs"]), f"{part['share']:.1%}", _mega(part["macs_train"]))
    console.print(table)


def render_layers(report: dict, console: Console, top: int = 20) -> None:
    """Layers by inference MACs; the heavy ones (share >= 5%) highlighted."""
    layers = report["layers"]
    shown = layers if top <= 0 else layers[:top]
    table = Table(title=f"Layers by inference MACs (top {len(shown)} of {len(layers)})",
                  title_justify="left")
    for column in ("#", "layer", "layout", "params", "MACs (M)", "share", "cum.", ""):
        table.add_column(column, justify="left" if column in ("layer", "layout", "") else "right")
    largest = layers[0]["share"] or 1.0
    for rank, layer in enumerate(shown, start=1):
        macs = _mega(layer["macs"]) if layer["macs"] else f"[dim]train {_mega(layer['macs_train'])}[/]"
        table.add_row(str(rank), layer["name"], layer["layout"], f"{layer['params']:,}", macs,
                      f"{layer['share']:.1%}", f"{layer['cum_share']:.1%}",
                      _bar(layer["share"], largest),
                      style="bold yellow" if layer["share"] >= HIGHLIGHT_SHARE else None)
    rest = layers[len(shown):]
    if rest:
        share = sum(layer["share"] for layer in rest)
        table.add_row("", f"[dim]… {len(rest)} more layers[/]", "", "", "", f"{share:.1%}", "", "")
    console.print(table)


def render_costs(report: dict, console: Console, top: int = 20) -> None:
    render_summary(report, console)
    render_parts(report, console)
    render_layers(report, console, top)


def _latency_table(env: dict, rounds: str, columns: tuple[str, ...]) -> Table:
    """An empty benchmark table titled with how it was timed (`rounds`: what was repeated)."""
    h, w = env["size"]
    table = Table(title=f"Latency at {h}x{w}, batch 1, {env['threads']} thread(s), "
                        f"{env['repeat']} {rounds} after {env['warmup']} warm-up",
                  title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in ("", "model", "runtime") else "right",
                         overflow="fold")
    return table


def _peak_rss(timed: dict) -> str:
    return "-" if timed["peak_rss_mb"] is None else f"{timed['peak_rss_mb']:.0f}"


def render_benchmark(result: dict, console: Console) -> None:
    """Latency table for `benchmark()` output, the A/B ratio and the environment."""
    env = result["env"]
    table = _latency_table(env, "timed runs", ("", "model", "runtime", "median ms", "p90 ms",
                                               "min ms", "img/s", "peak RSS MB"))
    for label in ("a", "b"):
        if label in result:
            side = result[label]
            table.add_row(label.upper(), Path(side["path"]).name, side["runtime"],
                          f"{side['median_ms']:.2f}",
                          f"{side['p90_ms']:.2f}", f"{side['min_ms']:.2f}",
                          f"{side['throughput']:.2f}", _peak_rss(side))
    console.print(table)
    if "ratio" in result:
        r = result["ratio"]
        verdict = f"A is {1 / r:.2f}x as fast as B" if r < 1 else f"A is {r:.2f}x as slow as B"
        console.print(f"A/B latency ratio [bold]{r:.3f}[/] (median of {env['repeat']} "
                      f"interleaved pairs): {verdict}")
    _render_env(env, console)


def _render_env(env: dict, console: Console) -> None:
    if "rss_baseline_mb" in env:
        console.print(f"[dim]peak RSS: each model alone in a fresh process; a process that only "
                      f"imports the runtime(s) peaks at {env['rss_baseline_mb']:.0f} MB[/]")
    openvino = f", openvino {env['openvino']}" if env.get("openvino") else ""
    console.print(f"[dim]torch {env['torch']}, onnxruntime {env['onnxruntime']}{openvino}, "
                  f"{env['cpu']} ({env['cpu_count']} logical CPUs), load average "
                  f"{env['load_avg'][0]:.2f}[/]")


def render_benchmark_runs(result: dict, console: Console) -> None:
    """Latency table for `benchmark_many(..., runtimes=[...])`: every model under every
    runtime, the speed-up of each over the first row, and the fastest runtime per model."""
    env = result["env"]
    table = _latency_table(env, "interleaved rounds", ("model", "runtime", "median ms", "p90 ms",
                                                       "vs first row", "peak RSS MB"))
    fastest = result.get("fastest", {})
    for m in result["models"]:
        best = " (fastest)" if fastest.get(m["path"]) == m["runtime"] else ""
        table.add_row(Path(m["path"]).name, m["runtime"] + best, f"{m['median_ms']:.2f}",
                      f"{m['p90_ms']:.2f}", f"{1 / m['ratio']:.2f}x", _peak_rss(m))
    console.print(table)
    console.print("[dim]vs first row: median over rounds of first-row time / this row's time "
                  "(above 1: faster)[/]")
    _render_env(env, console)

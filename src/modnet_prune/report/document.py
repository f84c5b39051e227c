"""report.md and a self-contained report.html from a pipeline `summary.json`.

Both documents render one list of sections (`sections`: tables of column headers plus
formatted cells, figures, notes) and one headline per student (`headlines`), so the
Markdown and the HTML never disagree; the HTML embeds every figure as a base64 PNG and
carries its own CSS, so it opens anywhere with no other file.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

from ..files import write_atomic
from . import figures
from .labels import deploy_size_text, eval_size_text, other_size_text, size_text

# The origin write-up's published numbers (docs/origin.md): 512x512, training-graph MACs, their
# hardware and runtime, three timed runs each. They published no accuracy ("not good").
ORIGIN_ROWS = (
    {"name": "origin: original (theirs)", "params": 6.45e6, "macs_train": 18117e6,
     "file_kb": 25641, "latency_s": (0.85, 0.88, 0.84)},
    {"name": "origin: V2 (theirs)", "params": 1.76e6, "macs_train": 8977e6,
     "file_kb": 7213, "latency_s": (0.54, 0.56, 0.54)},
)
METRIC_NAMES = ("mse", "mad", "sad", "grad", "conn")


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    classes: list[str] | None = None  # one CSS class per row ("" for none)
    align_left: int = 1               # leading columns that hold text, not numbers
    groups: list[tuple[str, int]] | None = None  # HTML header row above: (label, span)


# --------------------------------------------------------------------------- formatting

def _int(n) -> str:
    return "–" if n is None else f"{round(n):,}"


def _mega(n, digits: int = 1) -> str:
    return "–" if n is None else f"{n / 1e6:,.{digits}f}"


def _ms(value) -> str:
    return "–" if value is None else f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _times(value) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _metric(value) -> str:
    """Matting errors with 4 significant digits (they span 1e-4 .. 1e2)."""
    if value is None:
        return "–"
    return f"{value:.4g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.2e}"


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


# --------------------------------------------------------------------------- tables

ARCHITECTURE_ONLY = "†"  # marks a latency with no accuracy measured at its size


def main_table(summary: dict) -> Table:
    """The origin-style table: cost, size, latency, speed-up and accuracy per model, all at
    the deployment size; MAD and Grad at sizes.eval beside them, labelled, when it differs."""
    size = size_text(summary["size"])
    other = other_size_text(summary)
    extra = [f"MAD at {other}", f"Grad at {other}"] if other else []
    headers = ["model", "params", "MACs inference (M)", "vs teacher", "MACs training graph (M)",
               "weights fp32 (kB)", "ONNX (kB)", "PyTorch (ms)", "ONNX Runtime (ms)",
               "speed-up PyTorch", "speed-up ORT", "MSE", "MAD", "SAD", "Grad", "Conn", *extra]
    against = ("errors" if _against_truth(summary) else "agreement with the teacher")
    groups = [("", 1), (f"cost at {size}", 6), (f"latency at {size}, batch 1", 4),
              (f"held-out {against} at {deploy_size_text(summary)}, "
               f"{summary['evaluation']['region']}", 5)]
    if other:
        groups.append((f"beside: at {other}", 2))
    rows, classes = [], []
    for m in summary["models"]:
        latency, speedup = m.get("latency", {}), m.get("speedup", {})
        metrics = (m.get("metrics") or {}).get("whole", {})
        at_other = (m.get("metrics_eval") or {}).get("whole", {})
        label = m["label"] + (f" {ARCHITECTURE_ONLY}" if latency and not metrics else "")
        rows.append([label, _int(m["params"]), _mega(m["macs"]), _percent(m["macs_fraction"]),
                     _mega(m["macs_train"]), _int(m["weight_bytes"] / 1000),
                     _int(m["onnx_bytes"] / 1000) if m.get("onnx_bytes") else "–",
                     _ms(latency.get("torch", {}).get("median_ms")),
                     _ms(latency.get("onnxruntime", {}).get("median_ms")),
                     _times(speedup.get("torch")), _times(speedup.get("onnxruntime")),
                     *(_metric(metrics.get(k)) for k in METRIC_NAMES),
                     *((_metric(at_other.get("mad")), _metric(at_other.get("grad"))) if other else ())])
        classes.append("teacher" if m["role"] == "teacher" else "student")
    base = ORIGIN_ROWS[0]
    for ref in ORIGIN_ROWS:  # latencies of their architectures: no accuracy was published
        median = sorted(ref["latency_s"])[1] * 1000
        rows.append([f"{ref['name']} {ARCHITECTURE_ONLY}", f"{ref['params'] / 1e6:.2f} M", "–",
                     _percent(ref["macs_train"] / base["macs_train"]) + " (train)",
                     _mega(ref["macs_train"], 0), _int(ref["file_kb"] * 1.024), "–", _ms(median), "–",
                     _times(sorted(base["latency_s"])[1] * 1000 / median), "–",
                     *["–"] * (len(METRIC_NAMES) + len(extra))])
        classes.append("reference")
    return Table(headers, rows, classes, groups=groups)


def metrics_table(summary: dict) -> Table:
    """Every metric in both regions at the deployment size (and at sizes.eval when it
    differs), with the scaling next to it."""
    scaling = summary["evaluation"]["scaling"]
    headers = ["model"] + [f"{k.upper()} ({scaling[k]})" for k in METRIC_NAMES]
    sizes = [("metrics", deploy_size_text(summary))]
    if other_size_text(summary):
        sizes.append(("metrics_eval", other_size_text(summary)))
    rows, classes = [], []
    for key, size in sizes:
        for m in summary["models"]:
            metrics = m.get(key) or {}
            for region, label in (("whole", "whole image"), ("unknown", "unknown region (trimap = 128)")):
                if region in metrics:
                    rows.append([f"{m['label']} — {label}, {size}",
                                 *(_metric(metrics[region].get(k)) for k in METRIC_NAMES)])
                    classes.append("teacher" if m["role"] == "teacher" else "student")
    return Table(headers, rows, classes)


def latency_table(summary: dict) -> Table:
    headers = ["model", "runtime", "device", "median (ms)", "p90 (ms)", "min (ms)", "img/s",
               "speed-up vs teacher (median of per-round ratios)"]
    rows = []
    for m in summary["models"]:
        for runtime, stats in m.get("latency", {}).items():
            rows.append([m["label"], runtime, stats.get("device") or "–", _ms(stats["median_ms"]),
                         _ms(stats["p90_ms"]), _ms(stats["min_ms"]), f"{stats['throughput']:.2f}",
                         _times(m.get("speedup", {}).get(runtime))])
    return Table(headers, rows, align_left=3)


def widths_table(summary: dict) -> Table:
    fp32 = [m for m in summary["models"] if m["role"] != "int8"]  # int8 copies: the same widths
    names, labels = [m["name"] for m in fp32], [m["label"] for m in fp32]
    rows = [[layer["name"], *(str(layer["widths"][n]) for n in names)] for layer in summary["layers"]]
    return Table(["layer (output channels)", *labels], rows)


def variants_table(summary: dict) -> Table:
    at = eval_size_text(summary)
    headers = ["variant", "params", "MACs (M), inference", f"MAD at {at}", f"Grad at {at}"]
    rows = [[v["label"], _int(v["params"]), _mega(v["macs"]), _metric(v.get("mad")),
             _metric(v.get("grad"))] for v in summary["variants"]]
    return Table(headers, rows)


def environment_table(summary: dict) -> Table:
    env = summary["environment"]
    keys = (("CPU", "cpu"), ("logical CPUs", "cpu_count"), ("benchmark threads", "threads"),
            ("load average at start", "load_avg"), ("OMP_WAIT_POLICY", "omp_wait_policy"),
            ("python", "python"), ("torch", "torch"), ("onnxruntime", "onnxruntime"),
            ("onnx", "onnx"), ("numpy", "numpy"), ("modnet-prune", "modnet_prune"),
            ("platform", "platform"))
    rows = []
    for label, key in keys:
        value = env.get(key)
        if isinstance(value, list):
            value = ", ".join(f"{v:.2f}" for v in value)
        rows.append([label, "–" if value is None else str(value)])
    return Table(["", ""], rows)


# --------------------------------------------------------------------------- text

@dataclass(frozen=True)
class Headline:
    """One student against the teacher, in (value, what it is) facts: computed once, shown
    as a line of report.md and as cards of report.html."""

    label: str
    facts: list[tuple[str, str]]
    where: str                        # where speed and accuracy were measured


def headlines(summary: dict) -> list[Headline]:
    teacher = next(m for m in summary["models"] if m["role"] == "teacher")
    t_mad = (teacher.get("metrics") or {}).get("whole", {}).get("mad")
    where = f"speed at {size_text(summary['size'])}, accuracy at {deploy_size_text(summary)}"
    found = []
    for m in (m for m in summary["models"] if m["role"] == "student"):
        facts = [(_percent(m["macs_fraction"]), "of the teacher's inference MACs"),
                 (f"{m['params'] / teacher['params']:.0%}", "of its parameters")]
        for runtime, name in (("onnxruntime", "ONNX Runtime"), ("torch", "PyTorch")):
            if m.get("speedup", {}).get(runtime):
                facts.append((_times(m["speedup"][runtime]), f"faster with {name}"))
        whole = (m.get("metrics") or {}).get("whole", {})
        s_mad = whole.get("mad")
        if not _against_truth(summary) and s_mad is not None:
            facts += [(_metric(s_mad), "held-out MAD against the teacher's mattes"),
                      (_metric(whole.get("iou")), "IoU with the teacher's masks at 0.5"),
                      (_metric(whole.get("boundary")), "boundary |Δα| against the teacher")]
        elif t_mad and s_mad is not None:
            facts.append((f"{s_mad / t_mad:.2f}×", f"the teacher's held-out MAD "
                          f"({_metric(s_mad)} vs {_metric(t_mad)})"))
        found.append(Headline(m["label"], facts, where))
    return found


def _against_truth(summary: dict) -> bool:
    return summary["evaluation"].get("reference", "ground truth") == "ground truth"


def _notes(summary: dict) -> list[str]:
    ev, bench = summary["evaluation"], summary["benchmark"]
    size = "×".join(map(str, summary["size"]))
    scored = ("errors at ground-truth size on 8-bit mattes" if _against_truth(summary) else
              "no ground truth: errors against the teacher's 8-bit mattes at image size (the "
              "teacher's own row is 0 by definition), IoU of the two masks at 0.5, boundary = "
              "mean |Δα| where the teacher's matte is in [0.05, 0.95]")
    beside = (f" MAD and Grad at {other_size_text(summary)} (input {ev['eval_input']}; the size of "
              f"the training-time evaluations and of the accuracy-vs-compute figure) are shown "
              f"beside, labelled." if other_size_text(summary) else "")
    point = (f"accuracy, cost and latency are all measured at {size}, the deployment size"
             if ev["size"] is not None else
             f"accuracy with the MODNet protocol (short side 512, what deployment runs on "
             f"photos), cost and latency at {size}")
    notes = [
        f"One operating point: {point}.{beside}",
        f"Accuracy: {ev['count']} held-out images ({ev['dataset']}), input {ev['input']}, "
        f"{scored}; MSE/MAD are means, SAD/Grad/Conn sums / 1000 per "
        f"image (averaged over images); region: {ev['region']}.",
        f"Cost: params are unique parameters; MACs count conv + linear multiply-accumulates "
        f"(FLOPs = 2 × MACs) at {size}, inference = the matte only, training graph = all three heads.",
        f"Latency: batch 1 at {size}, {bench['threads']} thread(s), {bench['repeat']} timed runs "
        f"after {bench['warmup']} warm-up, teacher and student alternating in one process; "
        f"speed-up = median of per-round teacher/student ratios.",
        "Origin rows: the write-up's own published numbers (their hardware, training-graph MACs, "
        "median of their 3 runs, file size of their checkpoint); they published no accuracy, "
        "only that it was \"not good\".",
        f"{ARCHITECTURE_ONLY} No accuracy measured at this size: the latency is a property of "
        f"the architecture (its widths), not an operating point of a trained model.",
    ]
    notes += _int8_notes(summary)
    if summary.get("budget_note"):
        notes.append(summary["budget_note"])
    notes += [f"Warning: {w}" for w in bench.get("warnings", [])]
    return notes


def _int8_notes(summary: dict) -> list[str]:
    q = summary.get("quantization")
    if not q:
        return []
    notes = []
    for m in (m for m in summary["models"] if m["role"] == "int8"):
        i = m["int8"]
        kept = f"; {len(i['kept_float'])} sensitive nodes kept float" if i["kept_float"] else ""
        if i.get("summed_taps"):
            kept += f"; {len(i['summed_taps'])} nodes summing upsampled taps"
        notes.append(
            f"{m['label']}: ONNX Runtime static QDQ, int8 weights per channel, uint8 activations "
            f"({i['method']}) calibrated on {i['count']} images of {i['calibration']} at "
            f"{i['size']}; int8 vs fp32 on the next {i['holdout']}: mean |Δα| "
            f"{i['delta_mean']:.2e} (budget {i['budget']:g}), p99 {i['delta_p99']:.2e}; "
            f"float: {', '.join(i['float_ops'])}{kept}; CPU: {i['capability']['description']}.")
    notes += [f"{role} int8 refused: {message}" for role, message in q["refused"].items()]
    return notes


def _web_page(summary: dict) -> tuple[str | None, str]:
    """(the page's folder or None, a sentence about the browser page of this run)."""
    web = summary.get("web") or {}
    if web.get("dir"):
        return web["dir"], (f"See it run: {web['dir']}/ is a web page that mattes with the "
                            f"teacher and the student in the browser; open it with "
                            f"`modnet-prune serve {web['dir']}` in this folder.")
    return None, f"No web page: {web['reason']}" if web.get("reason") else ""


# --------------------------------------------------------------------------- sections

@dataclass(frozen=True)
class Figure:
    key: str                          # of the figures drawn (`render_report`)


@dataclass(frozen=True)
class Folded:
    """A table the figure above it already shows: report.html folds it away."""
    label: str
    table: Table


@dataclass(frozen=True)
class Notes:
    lines: list[str]


@dataclass(frozen=True)
class Code:
    text: str                         # JSON


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple                     # of Table, Figure, Folded, Notes, Code


def sections(summary: dict, drawn) -> list[Section]:
    """Every section of both documents, in order; a figure's section only when `drawn`
    (the keys of the figures drawn) has it, each title saying its size."""
    figures = [Section(f"Accuracy vs compute (MAD at {eval_size_text(summary)})",
                       (Figure("pareto"), Folded("every variant", variants_table(summary)))),
               Section(f"Sample mattes (held-out, at {deploy_size_text(summary)})",
                       (Figure("samples"),)),
               Section(f"Training (held-out MAD at {eval_size_text(summary)})",
                       (Figure("curves"),)),
               Section("Per-layer widths",
                       (Figure("widths"), Folded("table of widths", widths_table(summary))))]
    return [Section("Results", (main_table(summary), Notes(_notes(summary)))),
            *(s for s in figures if s.blocks[0].key in drawn),
            Section("Errors in both regions", (metrics_table(summary),)),
            Section("Latency", (latency_table(summary),)),
            Section("Environment", (environment_table(summary),)),
            Section("Recipe", (Code(json.dumps(summary["recipe"], indent=2)),))]


# --------------------------------------------------------------------------- markdown

def markdown_table(table: Table) -> str:
    def row(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    align = ["---"] * table.align_left + ["---:"] * (len(table.headers) - table.align_left)
    return "\n".join([row(table.headers), "| " + " | ".join(align) + " |",
                      *(row(r) for r in table.rows)])


def _caption(table: Table) -> str:
    """What the HTML's header row of column groups says, for Markdown (which has none)."""
    parts, column = [], 0
    for label, span in table.groups or []:
        if label:
            parts.append(f"{label}: {', '.join(table.headers[column:column + span])}")
        column += span
    return "; ".join(parts)


def _markdown_block(block, title: str, figure_paths: dict[str, str]) -> list[str]:
    if isinstance(block, Table):
        caption = _caption(block)
        return [*([f"*{caption}.*", ""] if caption else []), markdown_table(block), ""]
    if isinstance(block, Folded):
        return [markdown_table(block.table), ""]
    if isinstance(block, Figure):
        return [f"![{title}]({figure_paths[block.key]})", ""]
    if isinstance(block, Notes):
        return [*(f"- {line}" for line in block.lines), ""]
    return ["```json", block.text, "```", ""]


def render_markdown(summary: dict, figure_paths: dict[str, str]) -> str:
    r = summary["recipe"]
    out = [f"# modnet-prune report: {r['name']}", ""]
    if r.get("description"):
        out += [f"*{r['description']}*", ""]
    _, web = _web_page(summary)
    out += [*(f"- **{h.label}**: {', '.join(f'{v} {what}' for v, what in h.facts)}; {h.where}."
              for h in headlines(summary)), *([f"- {web}"] if web else []), ""]
    for section in sections(summary, figure_paths):
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            out += _markdown_block(block, section.title, figure_paths)
    return "\n".join(out)


# --------------------------------------------------------------------------- html

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --soft:#f5f7fa; --accent:#d64545;
        --teacher:#52606d; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto,
       "Helvetica Neue", Arial, sans-serif; color: var(--ink); background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 32px 28px 64px; }
h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 19px; margin: 40px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
.lede { color: var(--muted); margin: 0 0 20px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 18px 0 8px; }
.card { flex: 1 1 200px; background: var(--soft); border-radius: 10px; padding: 14px 16px; }
.card .value { font-size: 26px; font-weight: 650; letter-spacing: -0.02em; }
.card .label { color: var(--muted); font-size: 13px; }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 10px; }
table { border-collapse: collapse; width: 100%; font-size: 13px;
        font-variant-numeric: tabular-nums; }
th, td { padding: 6px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: var(--soft); font-weight: 600; text-align: right; vertical-align: bottom;
     white-space: normal; min-width: 58px; }
td { text-align: right; }
th.text, td.text { text-align: left; }
th.group { text-align: center; background: #fff; color: var(--muted); font-weight: 500;
           font-size: 12px; border-bottom: 2px solid var(--line); }
tr:last-child td { border-bottom: 0; }
tr.teacher td:first-child { border-left: 4px solid var(--teacher); font-weight: 600; }
tr.student td:first-child { border-left: 4px solid var(--accent); font-weight: 600; }
tr.reference td { color: var(--muted); font-style: italic; background: #fbfbfc; }
tr.reference:first-of-type td, tr.student + tr.reference td { border-top: 2px solid var(--line); }
ul.notes { color: var(--muted); font-size: 13px; padding-left: 18px; }
figure { margin: 8px 0 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 10px; }
details { margin-top: 12px; }
summary { cursor: pointer; color: var(--muted); }
pre { background: var(--soft); padding: 14px; border-radius: 10px; overflow-x: auto; font-size: 12px; }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; }
"""


def _html_table(table: Table) -> str:
    def cell(tag: str, text: str, i: int) -> str:
        cls = ' class="text"' if i < table.align_left else ""
        return f"<{tag}{cls}>{html.escape(text)}</{tag}>"
    head = "".join(cell("th", h, i) for i, h in enumerate(table.headers))
    if table.groups:
        spans = "".join(f'<th colspan="{n}" class="group">{html.escape(label)}</th>'
                        for label, n in table.groups)
        head = f"{spans}</tr><tr>{head}"
    body = []
    for k, row in enumerate(table.rows):
        cls = table.classes[k] if table.classes else ""
        attr = f' class="{cls}"' if cls else ""
        body.append(f"<tr{attr}>" + "".join(cell("td", c, i) for i, c in enumerate(row)) + "</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _cards(headline: Headline, named: bool) -> str:
    cards = "".join(f'<div class="card"><div class="value">{html.escape(v)}</div>'
                    f'<div class="label">{html.escape(what)}</div></div>'
                    for v, what in headline.facts)
    name = f"<strong>{html.escape(headline.label)}</strong>: " if named else ""
    return (f'<div class="cards">{cards}</div>'
            f'<p class="lede">{name}{html.escape(headline.where)}</p>')


def _html_block(block, title: str, figure_files: dict[str, Path]) -> str:
    esc = html.escape
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Folded):
        return f"<details><summary>{esc(block.label)}</summary>{_html_table(block.table)}</details>"
    if isinstance(block, Figure):
        return _img(figure_files[block.key], title)
    if isinstance(block, Notes):
        return '<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in block.lines) + "</ul>"
    return f"<pre>{esc(block.text)}</pre>"


def render_html(summary: dict, figure_files: dict[str, Path]) -> str:
    r = summary["recipe"]
    esc = html.escape
    parts = [f"<h1>modnet-prune report: {esc(r['name'])}</h1>"]
    if r.get("description"):
        parts.append(f'<p class="lede">{esc(r["description"])}</p>')
    found = headlines(summary)
    parts += [_cards(h, named=len(found) > 1) for h in found]
    web_dir, web = _web_page(summary)
    if web_dir:
        link = f'<a href="{esc(web_dir)}/index.html">{esc(web_dir)}/</a>'
        parts.append(f'<p class="lede">{esc(web).replace(esc(web_dir) + "/", link, 1)}</p>')
    elif web:
        parts.append(f'<p class="lede">{esc(web)}</p>')
    for section in sections(summary, figure_files):
        parts.append(f"<h2>{esc(section.title)}</h2>")
        parts += [_html_block(block, section.title, figure_files) for block in section.blocks]
    parts.append(f"<footer>Generated by modnet-prune "
                 f"{esc(summary['environment'].get('modnet_prune', ''))} on "
                 f"{esc(summary.get('created', ''))} from summary.json.</footer>")
    body = "\n".join(parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>modnet-prune report: {esc(r['name'])}</title><style>{CSS}</style></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")


# --------------------------------------------------------------------------- entry point

def render_report(summary: dict, out: str | Path) -> dict[str, Path]:
    """Write figures/*.png, report.md and report.html into `out` (where summary.json's
    relative sample paths point). Returns {name: path} of everything written."""
    out = Path(out)
    figure_dir = out / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    drawn = {"pareto": figures.pareto(summary, figure_dir / "pareto.png"),
             "samples": figures.sample_grid(summary, out, figure_dir / "samples.png"),
             "curves": figures.curves(summary, figure_dir / "curves.png"),
             "widths": figures.widths(summary, figure_dir / "widths.png")}
    drawn = {k: p for k, p in drawn.items() if p is not None}
    relative = {k: p.relative_to(out).as_posix() for k, p in drawn.items()}
    md, page = render_markdown(summary, relative), render_html(summary, drawn)
    write_atomic(out / "report.md", lambda tmp: Path(tmp).write_text(md))
    write_atomic(out / "report.html", lambda tmp: Path(tmp).write_text(page))
    return {**drawn, "markdown": out / "report.md", "html": out / "report.html"}

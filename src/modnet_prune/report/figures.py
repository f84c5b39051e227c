"""The report's figures (matplotlib, Agg backend), each drawn from a pipeline summary.

Every function takes the summary dict (see `pipeline.summary`), writes one PNG
atomically and returns its path; nothing here reads a model or runs one.
"""
from __future__ import annotations

import functools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never look for a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from PIL import Image  # noqa: E402

from ..files import write_atomic  # noqa: E402
from .labels import deploy_size_text, eval_size_text  # noqa: E402

INK, MUTED, GRID = "#1f2933", "#7b8794", "#e4e7eb"
TEACHER_COLOUR, STUDENT_COLOURS = "#52606d", ("#d64545", "#2680c2", "#3ebd93", "#c99a2e", "#8662c7")
STAGE_COLOUR = "#9aa5b1"
DPI = 110

# The figures' look, applied around each drawing only: importing this module leaves
# matplotlib's global settings alone.
STYLE = {
    "font.size": 9, "axes.edgecolor": MUTED, "axes.labelcolor": INK, "xtick.color": INK,
    "ytick.color": INK, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.color": GRID, "grid.linewidth": 0.8, "axes.axisbelow": True,
    "figure.facecolor": "white", "savefig.facecolor": "white", "legend.frameon": False,
}


def _styled(draw):
    @functools.wraps(draw)
    def styled(*args, **kwargs):
        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)
    return styled


def model_colours(summary: dict) -> dict[str, str]:
    """One colour per model of the main table: grey for teachers, a palette for students."""
    colours, students = {}, 0
    for model in summary["models"]:
        if model["role"] == "teacher":
            colours[model["name"]] = TEACHER_COLOUR
        else:
            colours[model["name"]] = STUDENT_COLOURS[students % len(STUDENT_COLOURS)]
            students += 1
    return colours


def _save(fig, path: Path) -> Path:
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight"))
    plt.close(fig)
    return path


@_styled
def pareto(summary: dict, path: Path) -> Path:
    """Inference MACs vs held-out MAD of every variant: each run's path from the teacher
    through its pruned (hollow) and fine-tuned (small) models to its student (large), and
    the Pareto front of all of them. Only teachers and students are labelled; the report's
    table of variants names every point."""
    colours = model_colours(summary)
    points = [v for v in summary["variants"] if v.get("mad") is not None]
    teacher = next((v for v in points if v["role"] == "teacher"), None)
    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    xs = np.array([v["macs"] / 1e9 for v in points])
    ys = np.array([v["mad"] for v in points])
    front = _pareto_front(xs, ys)
    if len(front) > 1:
        ax.step(xs[front], ys[front], where="post", color=GRID, lw=6, zorder=1,
                solid_capstyle="round", label="Pareto front")
    for run in dict.fromkeys(v.get("run") for v in points if v.get("run")):
        trail = ([teacher] if teacher else []) + [v for v in points if v.get("run") == run]
        colour = colours.get(run, STAGE_COLOUR)
        ax.plot([v["macs"] / 1e9 for v in trail], [v["mad"] for v in trail], color=colour,
                lw=0.9, alpha=0.45, zorder=2)
        for v in trail[1:]:
            if v["role"] == "intermediate":
                pruned = v["name"].endswith("pruned") or v["name"] == "recalibrated"
                ax.scatter(v["macs"] / 1e9, v["mad"], s=24, zorder=3, linewidth=1.1,
                           facecolor="white" if pruned else colour, edgecolor=colour)
    finals = [v for v in points if v["role"] != "intermediate"]
    for v in finals:
        ax.scatter(v["macs"] / 1e9, v["mad"], s=75, zorder=4, edgecolor="white", linewidth=1.2,
                   color=colours.get(v["name"], TEACHER_COLOUR))
    size = "x".join(str(s) for s in summary["size"])
    ax.set_xlabel(f"inference MACs at {size} (G, conv + linear)")
    ax.set_ylabel(f"MAD at {eval_size_text(summary)}, {summary['evaluation']['region']} (mean |Δα|)")
    ax.set_xlim(0, max(xs.max() * 1.2, 0.1) if len(xs) else 1)
    if len(ys) and ys.min() > 0:  # log: pre-fine-tuning errors are 10-100x the final ones
        ax.set_yscale("log")
        ax.set_ylim(ys.min() / 1.5, ys.max() * 1.5)
    else:
        ax.set_ylim(0, max(ys.max() * 1.15, 1e-4) if len(ys) else 1)
    fx, fy = np.array([v["macs"] / 1e9 for v in finals]), np.array([v["mad"] for v in finals])
    for v, x, y, dy in zip(finals, fx, fy, _label_offsets(ax, fx, fy, spacing=12.0)):
        ax.annotate(v["label"], (x, y), xytext=(8, dy), textcoords="offset points", zorder=5,
                    fontsize=8.5, color=INK, va="center")
    if any(v["role"] == "intermediate" for v in points):
        ax.scatter([], [], s=24, facecolor="white", edgecolor=MUTED, label="pruned, before fine-tuning")
        ax.scatter([], [], s=24, color=MUTED, label="fine-tuned (an iteration)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5)
    ax.set_title("Accuracy vs compute: every model of the run", loc="left", fontsize=10)
    return _save(fig, path)


def _label_offsets(ax, xs: np.ndarray, ys: np.ndarray, spacing: float = 11.0) -> list[float]:
    """Vertical label offsets (points) that keep labels of nearby points from overlapping:
    labels are stacked upwards in order of height, at least `spacing` apart."""
    ax.figure.canvas.draw()
    pixels = ax.transData.transform(np.column_stack([xs, ys])) if len(xs) else np.zeros((0, 2))
    scale = 72.0 / ax.figure.dpi  # pixels -> points
    placed: list[tuple[float, float]] = []  # (x, label y) in points
    offsets = [0.0] * len(xs)
    for i in np.argsort(ys, kind="stable"):
        x, y = pixels[i] * scale
        label = y
        for px, py in sorted(placed, key=lambda p: p[1]):
            if abs(px - x) < 90 and abs(py - label) < spacing:
                label = py + spacing
        placed.append((x, label))
        offsets[i] = label - y
    return offsets


def _pareto_front(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both MACs and MAD, by MACs."""
    order = np.lexsort((ys, xs))
    front, best = [], np.inf
    for i in order:
        if ys[i] < best:
            front.append(i)
            best = ys[i]
    return np.array(front, dtype=int)


@_styled
def widths(summary: dict, path: Path) -> Path:
    """Per-layer output widths, each student as a fraction of the teacher's: the backbone
    on the left, the LR/HR/fusion branches on the right."""
    layers = summary["layers"]
    backbone = [layer for layer in layers if layer["name"].startswith("backbone.")]
    heads = [layer for layer in layers if not layer["name"].startswith("backbone.")]
    panels = [p for p in (backbone, heads) if p]
    rows = max(len(p) for p in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 0.16 * rows + 1.2),
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        _width_panel(ax, summary, panel, rows)
    fig.suptitle("Per-layer output widths: teacher → student", x=0.01, ha="left", fontsize=10)
    fig.tight_layout()
    handles, names = axes[0][0].get_legend_handles_labels()
    if len(names) > 1:
        fig.legend(handles, names, loc="upper right", ncol=len(names), fontsize=7.5)
    return _save(fig, path)


def _width_panel(ax, summary: dict, layers: list[dict], rows: int) -> None:
    colours = model_colours(summary)
    teacher = next(m["name"] for m in summary["models"] if m["role"] == "teacher")
    students = [m["name"] for m in summary["models"] if m["role"] not in ("teacher", "int8")]
    y = np.arange(len(layers))
    height = 0.8 / max(1, len(students))
    ax.barh(y, np.ones(len(layers)), height=0.86, color="#eef0f3")
    for k, name in enumerate(students):
        kept = np.array([layer["widths"][name] / layer["widths"][teacher] for layer in layers])
        faded = [to_rgba(colours[name], 1.0 if f < 1 or len(students) > 1 else 0.3) for f in kept]
        ax.barh(y - 0.4 + height * (k + 0.5), kept, height=height, color=faded, label=name)
    for i, layer in enumerate(layers):
        text = " / ".join(str(layer["widths"][n]) for n in students)
        changed = any(layer["widths"][n] != layer["widths"][teacher] for n in students)
        ax.text(1.03, i, f"{layer['widths'][teacher]} → {text}", va="center", fontsize=6.5,
                color=INK if changed else MUTED)
    ax.set_yticks(y, [_short(layer["name"]) for layer in layers], fontsize=6.5)
    parts = [layer["name"].split(".", 1)[0] for layer in layers]
    for i in range(1, len(parts)):
        if parts[i] != parts[i - 1]:
            ax.axhline(i - 0.5, color=MUTED, lw=0.6)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xlim(0, 1.45)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.axvline(1.0, color=MUTED, lw=0.8)
    ax.set_xlabel("fraction of the teacher's channels kept")
    ax.grid(axis="y", visible=False)


def _short(layer: str) -> str:
    """A layer name without the parts every name of its kind repeats."""
    return layer.replace("backbone.model.", "").removesuffix(".layers.0")


@_styled
def curves(summary: dict, path: Path) -> Path | None:
    """Training loss and held-out MAD against samples seen; prune iterations marked."""
    runs = [(name, t) for name, t in summary["training"].items() if t.get("curve")]
    if not runs:
        return None
    colours = model_colours(summary)
    fig, (loss_ax, mad_ax) = plt.subplots(1, 2, figsize=(9.0, 3.2))
    for name, training in runs:
        colour = colours.get(name, STUDENT_COLOURS[0])
        curve = training["curve"]
        loss_ax.plot([r["samples"] for r in curve], [r["loss"] for r in curve], color=colour,
                     lw=1.3, label=name)
        evals = training.get("eval", [])
        if evals:
            mad_ax.plot([r["samples"] for r in evals], [r["mad"] for r in evals], "o-", color=colour,
                        ms=3.5, lw=1.3, label=name)
        for boundary in training.get("iterations", [])[1:]:
            for ax in (loss_ax, mad_ax):
                ax.axvline(boundary["start_samples"], color=GRID, lw=1.0, ls="--", zorder=0)
    teacher_mad = next((m["metrics_eval"]["whole"]["mad"] for m in summary["models"]
                        if m["role"] == "teacher" and m.get("metrics_eval")), None)  # curves' size
    if teacher_mad is not None:
        mad_ax.axhline(teacher_mad, color=TEACHER_COLOUR, lw=1.0, ls=":", label="teacher")
    loss_ax.set_xlabel("training samples seen")
    loss_ax.set_ylabel("training loss (ground truth + distillation)")
    loss_ax.set_ylim(bottom=0)
    loss_ax.set_title("Fine-tuning loss", loc="left", fontsize=10)
    mad_ax.set_xlabel("training samples seen")
    mad_ax.set_ylabel(f"held-out MAD at {eval_size_text(summary)}")
    mad_ax.set_title("Held-out MAD during fine-tuning", loc="left", fontsize=10)
    mad_ax.set_ylim(bottom=0)
    for ax in (loss_ax, mad_ax):
        if len(runs) > 1 or ax is mad_ax:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _read(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert(mode), dtype=np.float32) / 255.0


@_styled
def sample_grid(summary: dict, root: Path, path: Path) -> Path | None:
    """Rows of held-out samples at the deployment size: input, ground truth, each model's
    matte, |error| of the last (against the teacher's matte when there is no ground truth)."""
    rows = summary.get("samples") or []
    if not rows:
        return None
    columns = list(rows[0]["images"])
    error_of = columns[-1]
    reference = "ground truth" if "ground truth" in columns else "teacher"
    titles = [f"input at {deploy_size_text(summary)}", *columns[1:],
              f"|{error_of} − {'truth' if reference == 'ground truth' else 'teacher'}|"]
    fig, axes = plt.subplots(len(rows), len(titles), figsize=(1.55 * len(titles), 1.6 * len(rows)),
                             squeeze=False)
    for r, row in enumerate(rows):
        images = {c: root / p for c, p in row["images"].items()}
        truth = _read(images[reference], "L")
        for c, title in enumerate(titles):
            ax = axes[r][c]
            if c < len(columns):
                mode = "RGB" if columns[c] == "input" else "L"
                ax.imshow(_read(images[columns[c]], mode), cmap=None if mode == "RGB" else "gray",
                          vmin=0, vmax=1, interpolation="lanczos")
            else:
                error = np.abs(_read(images[error_of], "L") - truth)
                ax.imshow(error, cmap="magma", vmin=0, vmax=0.5, interpolation="nearest")
                ax.set_xlabel(f"MAD {error.mean():.4f}", fontsize=7, labelpad=2)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r][0].set_ylabel(row["name"], fontsize=7)
    fig.tight_layout(pad=0.4)
    return _save(fig, path)

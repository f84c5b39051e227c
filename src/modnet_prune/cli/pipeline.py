"""`modnet-prune pipeline`: a recipe end to end (prune, fine-tune, evaluate, export,
benchmark, report) into one resumable folder."""
from __future__ import annotations

import os
import sys

import torch
from rich.console import Console
from rich.table import Table

from ..data import spec_paths
from ..deploy.runtime import check_threads
from ..files import check_outputs
from ..pipeline.recipe import load_recipe
from ..pipeline.run import PipelineStopped, run_pipeline
from ..report.document import main_table
from ..train.loop import PRECISIONS
from .common import add_run_folder, add_threads, print_json


def register(sub) -> None:
    p = sub.add_parser("pipeline", help="recipe end to end: prune, fine-tune, evaluate, export, "
                                        "benchmark, report",
                       description="Run a recipe (recipes/*.yaml) end to end into --out: "
                                   "summary.json, report.md, report.html, student.safetensors "
                                   "and .onnx. Re-run with --resume to skip finished stages.")
    p.add_argument("--recipe", required=True, help="recipe YAML (see recipes/README.md)")
    add_run_folder(p)
    p.add_argument("--teacher", help="teacher checkpoint (overrides the recipe's)")
    p.add_argument("--budget-samples", type=int,
                   help="fine-tuning budget in samples (overrides the recipe's)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="fine-tuning precision (overrides the recipe's; bf16 pays off on CPUs "
                        "with AVX512-BF16 or AMX and on GPUs)")
    add_threads(p, help="torch threads (default: all usable CPUs)")
    p.add_argument("--device", default="auto", help="where fine-tuning runs: auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print summary.json at the end")
    p.set_defaults(func=run)


def run(args) -> int:
    recipe = load_recipe(args.recipe)
    if args.teacher:
        recipe = recipe.with_teacher(args.teacher)
    if args.budget_samples is not None:
        recipe = recipe.with_budget(args.budget_samples)
    if args.precision:
        recipe = recipe.with_finetune(precision=args.precision)
    check_threads(args.threads)
    check_outputs([args.recipe, recipe.teacher, *spec_paths(recipe.data.train),
                   *spec_paths(recipe.data.eval)], folders=[args.out])
    if args.threads:
        torch.set_num_threads(args.threads)
    stream = sys.stderr if args.json else sys.stdout
    # piped output (logs of long runs) gets a table wide enough not to truncate numbers
    console = Console(stderr=args.json, width=None if stream.isatty() else 132)
    try:
        summary = run_pipeline(recipe, args.out, resume=args.resume, progress=not args.no_progress,
                               echo=lambda line: console.print(line, highlight=False),
                               device=args.device)
    except PipelineStopped as stop:
        console.print(f"{stop}; checkpoint saved — re-run with --resume to continue")
        return 130
    if args.json:
        print_json(summary)
        return 0
    print_table(summary, console)
    console.print(f"report: {os.path.join(args.out, 'report.html')} "
                  f"(and report.md, summary.json)", soft_wrap=True)
    return 0


def print_table(summary: dict, console: Console) -> None:
    """The report's main table, as a rich table on the terminal."""
    table = main_table(summary)
    wanted = ("model", "params", "vs teacher", "PyTorch (ms)", "ONNX Runtime (ms)",
              "speed-up PyTorch", "speed-up ORT", "MAD", "Grad")
    columns = [i for i, h in enumerate(table.headers) if h in wanted or h.startswith("MAD at ")]
    rich = Table(title=f"{summary['recipe']['name']}: teacher vs student at "
                       f"{'x'.join(map(str, summary['size']))}", title_justify="left")
    for i in columns:
        rich.add_column(table.headers[i], justify="left" if i == 0 else "right")
    for row, cls in zip(table.rows, table.classes or []):
        if cls != "reference":
            rich.add_row(*(row[i] for i in columns))
    console.print(rich)

"""`modnet-prune train`: train MODNet from scratch or from weights (also under torchrun)."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Iterator

import torch
from rich.console import Console
from rich.table import Table

from ..errors import UserError
from ..model import MODNet
from ..model.io import load
from ..deploy.runtime import check_threads
from ..files import check_outputs, sha256_file
from ..train import Context, TrainConfig, fit, setup, teardown
from ..train.augment import AUGMENTATIONS
from ..train.loop import OBJECTIVES, OPTIMIZERS, PRECISIONS
from ..train.losses import DistillWeights
from ..train.rundir import RunDir
from ..train.schedule import LR_SCHEDULES
from .common import add_json, add_run_folder, add_threads, print_json


def add_training_args(p, *, defaults: TrainConfig = TrainConfig(), length: bool = True) -> None:
    """Options shared by train, finetune and compress, defaulting to `defaults`' values
    (`length`: --steps/--epochs). Each option sets the TrainConfig field of its name."""
    d = defaults
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True,
                   help="training set: synthetic:N@S[+seedK], a dataset folder, a folder of "
                        "unlabeled photos/videos (VIDEO@2fps), SPEC[:90%%], or a mixture "
                        "'3*photos/ + 1*synthetic:20000@128' (see recipes/README.md)")
    g.add_argument("--size", type=int, default=d.size, help="training crop size (multiple of 32)")
    g.add_argument("--multi-size", type=_sizes, default=list(d.multi_size),
                   help="multi-scale training: each step's batch is resized to one of these "
                        "comma-separated sizes (each <= --size), e.g. 128,256,384,512")
    g.add_argument("--augment", type=_names, default=list(d.augment),
                   help="batch augmentations for distillation inputs, comma-separated: "
                        f"{', '.join(AUGMENTATIONS)} (ground truth, if any, follows the image)")
    g.add_argument("--augment-p", type=float, default=d.augment_p,
                   help=f"probability that each augmentation touches a sample (default {d.augment_p:g})")
    g.add_argument("--freeze", type=_names, default=list(d.freeze), metavar="PATHS",
                   help="modules not trained, comma-separated (e.g. backbone): parameters and "
                        "BatchNorm statistics stay as loaded")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    g.add_argument("--workers", type=int, default=d.workers, help="data-loading processes per rank")
    g.add_argument("--eval-data",
                   help="evaluation set (same spec syntax); MAD picks best.safetensors")
    g.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="steps between evaluations (0: at the end)")
    g = p.add_argument_group("optimisation")
    if length:
        steps = g.add_mutually_exclusive_group(required=True)
        steps.add_argument("--steps", type=int, help="optimizer steps in total")
        steps.add_argument("--epochs", type=float, help="passes over the training set")
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="arithmetic of the forward passes; bf16: bfloat16 autocast, weights and "
                        "losses in fp32 (about 2x faster on CPUs with AVX512-BF16 or AMX)")
    g.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr:g})")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                   help=f"default {d.optimizer}")
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--schedule", choices=LR_SCHEDULES, default=d.schedule,
                   help=f"default {d.schedule}")
    g.add_argument("--warmup", type=int, default=d.warmup, help="steps of linear LR warm-up")
    g.add_argument("--step-size", type=int, default=d.step_size,
                   help="steps per x--gamma decay (schedule step; default steps/4)")
    g.add_argument("--gamma", type=float, default=d.gamma)
    g.add_argument("--min-lr", type=float, default=d.min_lr, help="final LR of the cosine schedule")
    g.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help="keep a moving average of the weights with this decay per step (e.g. "
                        "0.99: about the last 100 steps) and evaluate, save and return it; "
                        "0: off (default)")
    for term, scale in d.scales.items():
        g.add_argument(f"--{term}-scale", type=float, default=scale)
    g = p.add_argument_group("run")
    add_run_folder(g)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="steps between checkpoints")
    g.add_argument("--log-every", type=int, default=d.log_every, help="steps between log rows")
    add_threads(g, help="torch threads per process (default: cores / processes)")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json(g)


def _sizes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sizes like 128,256,512") from None


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def config_from_args(args, **overrides) -> TrainConfig:
    """The TrainConfig the parsed options describe: each field from the option of its name
    (`flag`), the fields no option sets at their defaults, then `overrides`."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if hasattr(args, f.name) and f.name not in ("scales", "distill")}
    values["scales"] = {term: getattr(args, f"{term}_scale") for term in TrainConfig().scales}
    if hasattr(args, "kd_matte"):
        values["distill"] = {term: getattr(args, f"kd_{term}") for term in DistillWeights().as_dict()}
    return TrainConfig(**{**values, **overrides})


@contextlib.contextmanager
def training_session(args, *models: str | None) -> Iterator[Context]:
    """Refuse a run folder --out that is, lies inside or contains a model or data input;
    join torchrun's process group (if any) and size the thread pool; leave the group
    however the run ends."""
    from ..data import spec_paths
    check_outputs([*models, *spec_paths(args.data), *spec_paths(args.eval_data)],
                  folders=[args.out])
    check_threads(args.threads)
    ctx = setup(args.device)
    try:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // local))
        yield ctx
    finally:
        teardown()


def open_sets(args):
    from ..data import open_dataset  # data pulls in image libraries; only load it to train
    train_set = open_dataset(args.data, size=args.size, train=True, seed=args.seed)
    eval_set = (open_dataset(args.eval_data, size=args.size, train=False)
                if args.eval_data else None)
    return train_set, eval_set


def run_info(args, **models: str | None) -> dict:
    """What a run records of its inputs: the data specs, each model's path and sha256."""
    return {"data": args.data, "eval_data": args.eval_data,
            **{role: _file_info(path) for role, path in models.items()}}


def _file_info(path: str | None) -> dict | None:
    return None if path is None else {"path": str(path), "sha256": sha256_file(path)}


def register(sub) -> None:
    p = sub.add_parser("train", help="train MODNet (official objective; torchrun for DDP)",
                       description="Train MODNet with the official supervised objective, or "
                                   "adapt it to unlabeled images (--objective soc).")
    p.add_argument("--checkpoint", help="initial weights (default: random init)")
    p.add_argument("--objective", choices=OBJECTIVES, default="supervised",
                   help="soc: self-supervised adaptation against a frozen copy of --checkpoint")
    add_training_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    with training_session(args, args.checkpoint) as ctx:
        train_set, eval_set = open_sets(args)
        if args.objective == "soc" and not args.checkpoint:
            raise UserError("--objective soc adapts a trained model: give it as --checkpoint")
        torch.manual_seed(args.seed)
        model = load(args.checkpoint) if args.checkpoint else MODNet()
        frozen = load(args.checkpoint) if args.objective == "soc" and args.checkpoint else None
        cfg = config_from_args(args)
        info = run_info(args, checkpoint=args.checkpoint)
        return fit_and_report(args, ctx, model, cfg, (train_set, eval_set), info, frozen)


def fit_and_report(args, ctx, model, cfg, sets, info, teacher=None) -> int:
    """Run the training loop, then `finish`."""
    train_set, eval_set = sets
    result = fit(model, train_set, cfg, args.out, eval_set=eval_set, teacher=teacher,
                 resume=args.resume, ctx=ctx, info=info, progress=not args.no_progress)
    return finish(ctx, result, report, args.json)


def finish(ctx: Context, result, report, as_json: bool) -> int:
    """`report(result, as_json)` from rank 0 only; exit code 130 when the run stopped early
    (resumable), else 0."""
    if ctx.is_main:
        report(result, as_json)
    return 130 if result.stopped else 0


def report(result, as_json: bool) -> None:
    run = RunDir(result.out)
    train_rows = [r for r in run.rows() if r.get("kind") == "train"]
    last = train_rows[-1] if train_rows else {}
    summary = {"out": str(result.out), "step": result.step, "stopped": result.stopped,
               "loss": last.get("loss"), "samples_per_s": last.get("samples_per_s"),
               "best_mad": result.best_mad,
               "last": str(run.file("last.safetensors")),
               "best": str(run.file("best.safetensors")) if result.best_mad is not None else None}
    if as_json:
        print_json(summary)
        return
    console = Console()
    table = Table(title=f"run {result.out}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    if result.stopped:
        console.print(f"stopped at step {result.step}; checkpoint saved — "
                      f"add --resume to continue")

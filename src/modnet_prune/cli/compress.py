"""`modnet-prune compress`: iterative prune -> recalibrate -> distil, down to a MACs target."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..checks import KEEP_FRACTION
from ..errors import UserError
from ..model.io import load
from ..train.compress import ROUND_LR, CompressConfig, compress
from ..train.loop import FINETUNE
from ..train.schedule import PRUNE_SCHEDULES
from .common import print_json
from .finetune import add_distill_args
from .train import (add_training_args, config_from_args, finish, open_sets, run_info,
                    training_session)


def fraction(text: str) -> float:
    """'0.5' or '50%' -> 0.5."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError as e:
        raise UserError(f"--target-macs {text!r}: expected a fraction like 0.5 or 50%") from e
    return KEEP_FRACTION.check(value, "--target-macs")


def register(sub) -> None:
    p = sub.add_parser("compress",
                       help="prune in small steps, fine-tuning with distillation in between",
                       description="Prune --checkpoint to --target-macs of its inference MACs in "
                                   "--iterations steps; after each, re-estimate BN and fine-tune "
                                   "--finetune-steps steps with distillation from the original.")
    p.add_argument("--checkpoint", required=True, help="the model to compress (also the teacher)")
    p.add_argument("--target-macs", required=True, help="fraction of MACs to keep: 0.5 or 50%%")
    p.add_argument("--iterations", type=int, default=4, help="prune/fine-tune rounds")
    p.add_argument("--finetune-steps", type=int, required=True, help="fine-tuning steps per round")
    p.add_argument("--schedule-prune", choices=PRUNE_SCHEDULES, default="cubic",
                   help="MACs kept per round: linear, or cubic (big cuts first)")
    p.add_argument("--round-lr", choices=ROUND_LR, default=CompressConfig.round_lr,
                   help="restart (default): each round's fine-tune runs the whole schedule "
                        "from --lr; decay: one cosine over all rounds")
    p.add_argument("--criterion", default="l1",
                   help="channel importance, as in `prune` (l1, l2, bn, fpgm, taylor, random)")
    p.add_argument("--round-to", type=int, default=8, help="keep widths multiples of this")
    p.add_argument("--min-channels", type=int, default=1)
    p.add_argument("--cost-size", type=int, default=512, help="input size for counting MACs")
    p.add_argument("--reconstruct-batches", type=int, default=0, metavar="N",
                   help="after each cut, refit the layers that lost inputs to the model before "
                        "the cut on N training batches (see `prune --reconstruct`; default 0)")
    add_distill_args(p)
    add_training_args(p, defaults=FINETUNE, length=False)
    p.set_defaults(func=run, recalibrate_bn=8)  # cheap, and most of the recovery after a cut


def run(args) -> int:
    with training_session(args, args.checkpoint) as ctx:
        cc = CompressConfig(target_macs=fraction(args.target_macs), iterations=args.iterations,
                            schedule=args.schedule_prune, round_lr=args.round_lr,
                            criterion=args.criterion,
                            round_to=args.round_to,
                            min_channels=args.min_channels, cost_size=args.cost_size,
                            reconstruct_batches=args.reconstruct_batches)
        train_set, eval_set = open_sets(args)
        teacher = load(args.checkpoint)
        tc = config_from_args(args, steps=args.finetune_steps)
        info = run_info(args, teacher=args.checkpoint)
        result = compress(teacher, train_set, cc, tc, args.out, eval_set=eval_set,
                          resume=args.resume, ctx=ctx, info=info, progress=not args.no_progress)
        return finish(ctx, result, _report, args.json)


def _report(result, as_json: bool) -> None:
    summary = {"out": str(result.out), "stopped": result.stopped, "teacher": result.teacher,
               "iterations": result.rows,
               "model": None if result.stopped else str(result.model_path)}
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"compress {result.out}")
    for col in ("iteration", "target", "MACs kept", "params", "eval MAD"):
        table.add_column(col, justify="right")
    mad = lambda m: "-" if m is None else f"{m:.4f}"  # noqa: E731
    if result.teacher:
        t = result.teacher
        table.add_row("original", "1.000", "1.000", f"{t['params']:,}", mad(t["mad"]))
    for r in result.rows:
        table.add_row(str(r["iteration"]), f"{r['target_fraction']:.3f}", f"{r['fraction']:.3f}",
                      f"{r['params']:,}", mad(r["eval_mad"]))
    console = Console()
    console.print(table)
    console.print("stopped; add --resume to continue" if result.stopped
                  else f"final model: {summary['model']}")

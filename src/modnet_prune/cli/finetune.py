"""`modnet-prune finetune`: recover a pruned student's accuracy by distillation."""
from __future__ import annotations

from ..model.io import load
from ..train.loop import FINETUNE
from ..train.distill import FEATURE_TAPS
from ..train.losses import FEATURE_LOSSES, DistillWeights
from .train import (add_training_args, config_from_args, fit_and_report, open_sets, run_info,
                    training_session)

_KD_HELP = {"matte": "L1 between mattes", "detail": "L1 between detail outputs",
            "semantic": "MSE between semantic outputs",
            **{tap: f"{path} features (through a learned 1x1 adapter), by --feature-loss"
               for tap, path in FEATURE_TAPS.items()}}


def add_distill_args(p) -> None:
    """--kd-* (DistillWeights.recommended() by default), --supervised, --recalibrate-bn."""
    g = p.add_argument_group("distillation (0 turns a term off)")
    for name, default in DistillWeights.recommended().as_dict().items():
        g.add_argument(f"--kd-{name}", type=float, default=default,
                       help=f"{_KD_HELP[name]} (default {default:g})")
    g.add_argument("--feature-loss", choices=FEATURE_LOSSES, default=FINETUNE.feature_loss,
                   help="how features are compared: mse, or cwd (channel-wise distillation: "
                        "KL between each channel's softened spatial distribution)")
    g.add_argument("--group-lasso", type=float, default=FINETUNE.group_lasso, metavar="W",
                   help="group lasso on whole channels: after each step every channel's "
                        "weights shrink by lr x W in L2 norm, to zero when shorter (a proximal "
                        "step; default 0: off; benchmarks/recovery.md measures it)")
    g.add_argument("--supervised", type=float, default=FINETUNE.supervised,
                   help="weight of the official supervised loss (default: 1 with ground-truth "
                        "mattes; 0, pure distillation, on unlabeled data, where > 0 is refused)")
    g.add_argument("--recalibrate-bn", type=int, default=FINETUNE.recalibrate_bn, metavar="N",
                   help="re-estimate BatchNorm statistics on N batches before training")


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a (pruned) student with distillation",
                       description="Fine-tune --student with the supervised objective plus "
                                   "distillation from --teacher on outputs and features.")
    p.add_argument("--student", required=True, help="the model to train (e.g. a pruned one)")
    p.add_argument("--teacher", required=True, help="the model to imitate (e.g. the original)")
    add_distill_args(p)
    add_training_args(p, defaults=FINETUNE)
    p.set_defaults(func=run)


def run(args) -> int:
    with training_session(args, args.student, args.teacher) as ctx:
        train_set, eval_set = open_sets(args)
        student, teacher = load(args.student), load(args.teacher)
        cfg = config_from_args(args)
        info = run_info(args, student=args.student, teacher=args.teacher)
        return fit_and_report(args, ctx, student, cfg, (train_set, eval_set), info, teacher)

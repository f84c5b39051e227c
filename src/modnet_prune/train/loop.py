"""`fit`: the training loop behind `train`, `finetune` and each `compress` iteration.

One loop serves all three: the objective is supervised (official MODNet losses), plus
distillation when a teacher is given, or SOC adaptation against a frozen reference.
Runs in a single process or under torchrun (DDP); rank 0 alone logs and writes files.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import platform
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from ..data.transforms import resize_batch
from ..checks import AT_LEAST_ONE, COUNT, NON_NEGATIVE, POSITIVE, Range
from ..errors import UserError
from ..memory import require_forward
from ..metrics import AGREEMENT, METRICS, evaluate, reference_mattes
from ..model.inputs import check_size
from ..prune.sparsity import GroupLasso
from .augment import AUGMENTATIONS, augment_batch
from .bn import recalibrate_bn
from .distill import FEATURE_TAPS, FeatureTaps, Student, teacher_widths
from .distributed import (Context, all_gather_objects, all_reduce_mean, any_rank, barrier,
                          broadcast_object)
from .ema import WeightAverage
from .freeze import freeze_, frozen_modules
from .loader import Batches
from .losses import (FEATURE_LOSSES, DistillWeights, MattingScales, distill_loss, matting_loss,
                     soc_loss)
from .rundir import BEST, LAST, RunDir, RunLock, rng_state, set_rng_state
from .schedule import LR_SCHEDULES, lr_at, step_size_at

OBJECTIVES = ("supervised", "soc")
OPTIMIZERS = ("sgd", "adamw")
# Arithmetic of the forward passes (student and teacher). "bf16" runs them under bfloat16
# autocast: weights, optimizer state, losses and evaluation stay float32. On CPUs with
# bf16 units (AVX512-BF16, AMX) a MODNet step is about twice as fast.
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as the run's config.json)."""

    size: int = 512                 # samples are rendered/cropped at this size
    # Multi-scale training: each step's batch is resized to a size drawn from these (a
    # pure function of seed and step, so resuming replays it); [] = always `size`.
    multi_size: list[int] = field(default_factory=list)
    batch_size: int = 16
    steps: int | None = None        # exactly one of steps / epochs
    epochs: float | None = None
    lr: float = 0.01                # official recipe: SGD 0.01, momentum 0.9, x0.1 every 1/4
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "step"
    warmup: int = 0                 # steps of linear warm-up
    step_size: int | None = None    # for schedule "step"; default steps/4
    gamma: float = 0.1
    min_lr: float = 0.0
    seed: int = 0
    workers: int = 2
    log_every: int = 10
    eval_every: int = 0             # 0: evaluate only at the end (if there is an eval set)
    checkpoint_every: int = 100
    objective: str = "supervised"   # or "soc" (unlabeled adaptation; teacher = frozen copy)
    supervised: float | None = None  # weight of the supervised objective; None: 1 on
                                     # labeled data, 0 on unlabeled (`for_data`)
    scales: dict[str, float] = field(default_factory=lambda: dataclasses.asdict(MattingScales()))
    distill: dict[str, float] = field(default_factory=dict)  # DistillWeights fields; {} = off
    feature_loss: str = "mse"       # how distilled features are compared: FEATURE_LOSSES
    # Group lasso on whole channels (prune/sparsity.py): after each step every channel's
    # weights shrink by lr x this in L2 norm (a proximal step, decoupled like AdamW's
    # decay), to zero when shorter; 0: off.
    group_lasso: float = 0.0
    recalibrate_bn: int = 0         # batches for BN re-estimation before training
    # Batch augmentations for distillation inputs (train/augment.py), each applied to a
    # sample with probability augment_p; [] = none beyond the dataset's own crop and jitter.
    augment: list[str] = field(default_factory=list)
    augment_p: float = 0.5
    precision: str = "fp32"         # one of PRECISIONS
    # Decay per step of a moving average of the weights (train/ema.py); 0: off. When on,
    # evaluation, best/last.safetensors and the returned model are the average.
    ema: float = 0.0
    # Module paths (e.g. "backbone") that are not trained: their parameters stay as loaded
    # and their BatchNorms normalise with the loaded statistics (eval mode), which neither
    # training nor --recalibrate-bn touch. [] = train everything.
    freeze: list[str] = field(default_factory=list)

    @property
    def train_sizes(self) -> list[int]:
        """The input sizes this run trains at; every checkpoint it saves records them."""
        return sorted(set(self.multi_size)) if self.multi_size else [self.size]

    def for_data(self, labeled: bool) -> "TrainConfig":
        """This config with `supervised` resolved for the training data. Without ground
        truth the teacher provides every target: asking for the ground-truth objective is
        an error, and so is having nothing else to learn from."""
        if labeled:
            return dataclasses.replace(self, supervised=1.0 if self.supervised is None
                                       else self.supervised)
        if self.supervised:
            raise UserError(f"the training data has no ground-truth mattes, so the supervised "
                            f"objective (weight {self.supervised:g}) cannot be computed: set "
                            "--supervised 0 (recipes: finetune.supervised: 0) and distil from "
                            "a teacher")
        if self.objective != "soc" and not any(self.distill.values()):
            raise UserError("the training data has no ground-truth mattes: the teacher must "
                            "provide the targets; give a teacher and distillation weights "
                            "(--kd-*), or --objective soc")
        return dataclasses.replace(self, supervised=0.0)

    def validate(self, has_teacher: bool) -> None:
        """Every value in its range (`RANGES`), then the combinations; one line each."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(msg)

        need((self.steps is None) != (self.epochs is None), "give exactly one of --steps, --epochs")
        check_ranges(dataclasses.asdict(self), flag)
        check_size(self.size, "--size")
        for s in self.multi_size:
            check_size(s, "--multi-size entry")
        need(all(s <= self.size for s in self.multi_size),
             f"--multi-size entries must be multiples of 32 and <= --size {self.size}")
        need(self.min_lr <= self.lr, f"--min-lr {self.min_lr:g}: must be <= --lr {self.lr:g}")
        require_forward(self.size, self.size, self.batch_size,
                        f"--size {self.size} at --batch-size {self.batch_size}: a training step")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        need(self.schedule in LR_SCHEDULES, f"--schedule must be one of {', '.join(LR_SCHEDULES)}")
        need(self.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}")
        need(self.precision in PRECISIONS,
             f"--precision must be one of {', '.join(PRECISIONS)}")
        unknown_aug = sorted(set(self.augment) - set(AUGMENTATIONS))
        need(not unknown_aug, f"--augment {','.join(unknown_aug)}: choose from "
                              f"{', '.join(AUGMENTATIONS)}")
        unknown = set(self.distill) - set(DistillWeights().as_dict())
        need(not unknown, f"unknown distillation terms {sorted(unknown)}")
        need(self.feature_loss in FEATURE_LOSSES,
             f"--feature-loss must be one of {', '.join(FEATURE_LOSSES)}")
        wants_kd = any(self.distill.values())
        need(not wants_kd or has_teacher, "distillation weights need a teacher")
        need(self.objective != "soc" or has_teacher,
             "SOC adaptation needs a frozen reference model")
        need(self.objective != "soc" or not self.group_lasso,
             "--group-lasso goes with the supervised/distillation objective, not with SOC")
        need(not (self.freeze and self.group_lasso),
             "--group-lasso shrinks channels across the whole model: it does not go with --freeze")
        need(self.objective != "soc" or not self.freeze, "--freeze goes with the supervised/"
             "distillation objective, not with SOC")
        need(self.supervised is not None, "resolve `supervised` with for_data() first")
        need(self.objective == "soc" or self.supervised > 0 or wants_kd,
             "nothing to train: supervised weight is 0 and no distillation term is on")


# The range of every numeric TrainConfig field; the CLI and the recipe loader check with it.
RANGES = {
    "steps": Range(1, integer=True), "epochs": POSITIVE, "batch_size": AT_LEAST_ONE,
    "lr": POSITIVE, "momentum": Range(0, 1, high_open=True), "weight_decay": NON_NEGATIVE,
    "warmup": COUNT, "step_size": Range(1, integer=True), "gamma": Range(0, 1, low_open=True),
    "min_lr": NON_NEGATIVE, "seed": COUNT, "workers": COUNT, "log_every": AT_LEAST_ONE,
    "eval_every": COUNT, "checkpoint_every": AT_LEAST_ONE, "supervised": NON_NEGATIVE,
    "recalibrate_bn": COUNT, "augment_p": Range(0, 1), "ema": Range(0, 1, high_open=True),
    "group_lasso": NON_NEGATIVE,
}
WEIGHT = NON_NEGATIVE  # every supervised scale and distillation weight


def check_ranges(values: dict, name) -> None:
    """Check TrainConfig-named `values` (None: unset) against RANGES, and the `scales` and
    `distill` weights in them; `name(field, term)` says how to call a value in an error."""
    for key, value in values.items():
        if key in RANGES and value is not None:
            RANGES[key].check(value, name(key, None))
        elif key in ("scales", "distill"):
            for term, weight in value.items():
                WEIGHT.check(weight, name(key, term))


def flag(key: str, term: str | None = None) -> str:
    """The command-line option that sets TrainConfig field `key` (`term`: of scales/distill)."""
    if key == "scales":
        return f"--{term}-scale"
    if key == "distill":
        return f"--kd-{term}"
    return "--" + key.replace("_", "-")


# The defaults of fine-tuning (`finetune`, `compress`, recipes): AdamW at 1e-3, cosine decay.
FINETUNE = TrainConfig(lr=1e-3, optimizer="adamw", schedule="cosine")


def held_out_size(eval_set, cfg: TrainConfig) -> int:
    """Where a run scores its held-out set: at the size the set was opened at (the
    pipeline: sizes.eval), which need not be the training size (a 512² run scored on 128²
    portraits); a dataset that does not say is scored at the training size."""
    return getattr(eval_set, "size", cfg.size)


@dataclass
class FitResult:
    model: nn.Module
    step: int
    stopped: bool               # interrupted (Ctrl-C / SIGTERM) and checkpointed
    best_mad: float | None
    out: Path


class _StopOnSignal:
    """First Ctrl-C/SIGTERM asks for a clean stop at the next step boundary; a second
    Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, _frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Trainer:
    def __init__(self, model, train_set, cfg: TrainConfig, run: RunDir, eval_set, teacher,
                 ctx: Context, progress: bool):
        self.cfg, self.run, self.ctx, self.eval_set = cfg, run, ctx, eval_set
        self.train_set = train_set
        self.batches = Batches(train_set, cfg.batch_size, ctx, cfg.seed, cfg.workers)
        self.total = cfg.steps or math.ceil(cfg.epochs * self.batches.batches_per_epoch)
        self.progress = progress and ctx.is_main
        self.teacher = teacher.to(ctx.device).eval().requires_grad_(False) if teacher else None
        if self.teacher is not None and cfg.objective == "soc":
            # SOC compares like with like: the frozen copy also normalises with batch
            # statistics (its outputs, not its running stats, are what is kept fixed).
            self.teacher.train()
        self.kd = DistillWeights(**{k: cfg.distill.get(k, 0.0) for k in DistillWeights().as_dict()})
        feature_names = [n for n in FEATURE_TAPS if getattr(self.kd, n)]
        self.teacher_taps = FeatureTaps(self.teacher, {n: FEATURE_TAPS[n] for n in feature_names}) \
            if self.teacher is not None and feature_names else None
        widths = teacher_widths(self.teacher, feature_names) if self.teacher_taps else None
        # traced and copied before Student hooks feature taps into the model
        self.lasso = GroupLasso(model) if cfg.group_lasso else None
        self.ema = WeightAverage(model, cfg.ema).to(ctx.device) if cfg.ema else None
        self._trainable = [(p, p.requires_grad) for p in model.parameters()]
        self.frozen = freeze_(model, cfg.freeze)
        self.student = Student(model, widths, self.frozen).to(ctx.device).train()  # load() gives eval mode
        self.best_mad: float | None = None
        self.step = 0
        self._reference = None  # the teacher's mattes of an unlabeled eval set, made once
        self.autocast = functools.partial(torch.autocast, ctx.device.type, dtype=torch.bfloat16,
                                          enabled=cfg.precision == "bf16")

    # --- set-up ---------------------------------------------------------------------
    def restore_or_init(self, resume: bool) -> dict | None:
        """Continue from the run's last checkpoint, or start fresh (BN re-estimation,
        adapter initialisation); returns the optimizer state to continue from, if any."""
        state = self.run.load_state() if resume else None
        if state is not None:
            self.student.load_state_dict(state["module"])
            self.step = int(state["step"])
            # best.safetensors may come from evaluations after this checkpoint (a kill
            # loses them from the log, not from disk): the file and best_mad must agree.
            self.best_mad = min((m for m in (state.get("best_mad"), self.run.best_file_mad())
                                 if m is not None), default=None)
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            rngs = state["rng"]
            if len(rngs) == self.ctx.world_size:
                set_rng_state(rngs[self.ctx.rank])
            return state["optimizer"]
        torch.manual_seed(self.cfg.seed + self.ctx.rank)
        self._prepare_fresh()
        if self.ema is not None:
            self.ema.reset(self.student.model)
        return None

    def _prepare_fresh(self) -> None:
        cfg = self.cfg
        if cfg.recalibrate_bn:
            recalibrate_bn(self.student.model, self.train_set, cfg.recalibrate_bn,
                           cfg.batch_size, cfg.seed, self.ctx, keep=self.frozen)
        if self.student.adapters:
            img = next(self.batches.from_step(0))["image"].to(self.ctx.device)
            with torch.no_grad():
                self.teacher(img, inference=False)
            self.student.fit_adapters(img, self.teacher_taps.pop())

    def build_optimizer(self, state: dict | None) -> torch.optim.Optimizer:
        cfg, params = self.cfg, self.student.parameters()
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if state is not None:
            opt.load_state_dict(state)
        return opt

    def wrap(self) -> nn.Module:
        if not self.ctx.distributed:
            return self.student
        cfg = self.cfg
        # Heads whose outputs feed no loss get no gradient; DDP must then look for unused
        # parameters. The shared backbone needs nothing special: parameters() lists it once.
        heads_used = (cfg.objective == "soc" or cfg.supervised > 0
                      or bool(self.kd.semantic and self.kd.detail))
        ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return DistributedDataParallel(self.student, device_ids=ids,
                                       find_unused_parameters=not heads_used)

    # --- one step -------------------------------------------------------------------
    def objective(self, batch: dict, outputs, features) -> dict[str, torch.Tensor]:
        cfg, img = self.cfg, batch["image"]
        t_out = t_feat = None
        if self.teacher is not None:
            with torch.no_grad(), self.autocast():
                t_out = self.teacher(img, inference=False)
            t_out, t_feat = as_float((t_out, self.teacher_taps.pop() if self.teacher_taps else {}))
        if cfg.objective == "soc":
            return soc_loss(*outputs, frozen_detail=t_out[1], frozen_matte=t_out[2])
        terms: dict[str, torch.Tensor] = {}
        total = img.new_zeros(())
        if cfg.supervised > 0:
            sup = matting_loss(img, batch["trimap"], batch["alpha"], *outputs,
                               scales=MattingScales(**cfg.scales))
            total = total + cfg.supervised * sup.pop("loss")
            terms.update(sup)
        if any(cfg.distill.values()):
            kd = distill_loss(outputs, t_out, features, t_feat, self.kd, cfg.feature_loss)
            total = total + kd.pop("loss")
            terms.update(kd)
        terms["loss"] = total
        return terms

    # --- the loop -------------------------------------------------------------------
    def _step(self, module, optimizer, batch: dict) -> tuple[dict[str, torch.Tensor], float]:
        """One optimizer step at self.step's learning rate; returns the loss terms."""
        cfg = self.cfg
        batch = {k: v.to(self.ctx.device, non_blocking=True) if torch.is_tensor(v) else v
                 for k, v in batch.items()}
        lr = lr_at(self.step, self.total, lr=cfg.lr, schedule=cfg.schedule, warmup=cfg.warmup,
                   step_size=cfg.step_size, gamma=cfg.gamma, min_lr=cfg.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if cfg.multi_size:
            batch = resize_batch(batch, step_size_at(self.step, cfg.seed, cfg.multi_size))
        if cfg.augment:
            batch = augment_batch(batch, cfg.augment, cfg.augment_p, cfg.seed, self.step,
                                  self.ctx.rank, matte_of=self._teacher_matte)
        with self.autocast():
            outputs, features = module(batch["image"])
        terms = self.objective(batch, *as_float((outputs, features)))
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        if self.lasso is not None:
            self.lasso.shrink_(self.student.model, lr * cfg.group_lasso)
            with torch.no_grad():
                terms["group_lasso"] = self.lasso(self.student.model)
        if self.ema is not None:
            self.ema.update(self.student.model)
        return terms, lr

    @torch.no_grad()
    def _teacher_matte(self, img: torch.Tensor) -> torch.Tensor:
        """The teacher's matte of `img` (what `mix` lays over another image when the data
        has no ground truth); its feature taps are emptied, the objective records its own."""
        with self.autocast():
            matte = self.teacher(img, inference=False)[2].float()
        if self.teacher_taps is not None:
            self.teacher_taps.pop()
        return matte

    def train(self, optimizer_state: dict | None) -> bool:
        """Train from self.step to self.total; True if stopped early by a signal."""
        cfg, ctx = self.cfg, self.ctx
        module, optimizer = self.wrap(), self.build_optimizer(optimizer_state)
        module.train()  # BN re-estimation restored the model's mode; frozen parts stay in eval
        sums: dict[str, torch.Tensor] = {}
        window_steps, window_start = 0, time.perf_counter()
        bar = tqdm(total=self.total, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not self.progress, desc=self.run.path.name)
        stream = self.batches.from_step(self.step)
        with _StopOnSignal() as stop:
            while self.step < self.total:
                terms, lr = self._step(module, optimizer, next(stream))
                self.step += 1
                window_steps += 1
                bar.update(1)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0) + v.detach()
                stop_now = any_rank(stop.requested, ctx)
                boundary = self.step % cfg.log_every == 0 or self.step == self.total or stop_now
                if boundary:
                    self._log(sums, window_steps, window_start, lr, bar)
                    sums, window_steps = {}, 0
                if self.step == self.total or cfg.eval_every and self.step % cfg.eval_every == 0:
                    self.evaluate()  # the final evaluation too: best_mad goes in the checkpoint
                if self.step % cfg.checkpoint_every == 0 or self.step == self.total or stop_now:
                    self.checkpoint(optimizer)
                if boundary:
                    window_start = time.perf_counter()  # keep eval/checkpoint out of samples/s
                if stop_now:
                    break
        bar.close()
        return self.step < self.total

    def _log(self, sums, steps, start, lr, bar) -> None:
        names = sorted(sums)
        values = torch.stack([sums[k].float() / steps for k in names])
        means = dict(zip(names, all_reduce_mean(values, self.ctx).tolist()))
        if not math.isfinite(means["loss"]):
            raise UserError(f"loss became {means['loss']} at step {self.step}: "
                            "lower --lr or check the data")
        elapsed = time.perf_counter() - start
        row = {"kind": "train", "step": self.step, **means, "lr": lr,
               "samples_per_s": steps * self.cfg.batch_size * self.ctx.world_size / elapsed,
               "world_size": self.ctx.world_size}
        if self.ctx.is_main:
            self.run.log(row)
            bar.set_postfix(loss=f"{means['loss']:.4f}", sps=f"{row['samples_per_s']:.1f}")

    @property
    def result_model(self) -> nn.Module:
        """What the run evaluates, saves and returns: the weights' average, if kept."""
        return self.ema.shadow if self.ema is not None else self.student.model

    def evaluate(self) -> dict[str, float] | None:
        if self.eval_set is None:
            return None
        metrics = None
        if self.ctx.is_main:
            size = held_out_size(self.eval_set, self.cfg)
            if not labeled(self.eval_set) and self._reference is None:
                self._reference = reference_mattes(self.teacher, self.eval_set, size=size)
            summary = evaluate(self.result_model, self.eval_set, size=size,
                               reference=self._reference)
            metrics = {m: summary[m] for m in METRICS + AGREEMENT if m in summary}
            self.run.log({"kind": "eval", "step": self.step, **metrics,
                          "count": summary["count"], "region": summary["region"],
                          "reference": "ground truth" if labeled(self.eval_set) else "teacher"})
            if self.best_mad is None or metrics["mad"] < self.best_mad:
                self.best_mad = metrics["mad"]
                self.run.save_model(self.result_model, BEST, step=self.step, mad=metrics["mad"],
                                    train_sizes=self.cfg.train_sizes)
        self.best_mad = broadcast_object(self.best_mad, self.ctx)
        self.student.train()  # scoring switched the model's modes; frozen parts stay in eval
        return metrics

    def checkpoint(self, optimizer) -> None:
        rngs = all_gather_objects(rng_state(), self.ctx)
        if self.ctx.distributed:
            self._check_ranks_agree()
        if self.ctx.is_main:
            self.run.save_state({"step": self.step, "module": self.student.state_dict(),
                                 "optimizer": optimizer.state_dict(), "rng": rngs,
                                 "ema": self.ema.state_dict() if self.ema is not None else None,
                                 "best_mad": self.best_mad, "world_size": self.ctx.world_size})
            self.run.save_model(self.result_model, LAST, step=self.step,
                                train_sizes=self.cfg.train_sizes)
        barrier(self.ctx)


    def close(self) -> None:
        """Remove the forward hooks and unfreeze: the model and the teacher outlive the run."""
        self.student.remove_taps()
        for param, trainable in self._trainable:
            param.requires_grad_(trainable)
        if self.teacher_taps is not None:
            self.teacher_taps.remove()

    def _check_ranks_agree(self) -> None:
        """DDP keeps replicas identical; a checksum per rank at each checkpoint proves it
        (a misconfigured wrapper or a rank-dependent code path would show up here)."""
        with torch.no_grad():
            checksum = sum(p.double().sum() for p in self.student.parameters()).item()
        sums = all_gather_objects(checksum, self.ctx)
        if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
            raise RuntimeError(f"DDP replicas diverged at step {self.step}: {sums}")


def has_bf16_units(device: torch.device) -> bool:
    """Whether bfloat16 autocast runs on native units here (x86 CPUs: AVX512-BF16 or AMX;
    other CPUs and GPUs are not second-guessed)."""
    if device.type != "cpu" or platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def as_float(x):
    """`x` (tensors in tuples, lists and dicts) with every tensor in float32: losses are
    computed in full precision whatever the forward pass ran in."""
    if torch.is_tensor(x):
        return x.float()
    if isinstance(x, dict):
        return {k: as_float(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(as_float(v) for v in x)
    return x


def labeled(dataset: Dataset) -> bool:
    """Whether a dataset has ground-truth mattes (`MattingDataset.labeled`; others: yes)."""
    return getattr(dataset, "labeled", True)


def fit(model: nn.Module, train_set: Dataset, cfg: TrainConfig, out: str | Path, *,
        eval_set: Dataset | None = None, teacher: nn.Module | None = None,
        resume: bool = False, ctx: Context | None = None, info: dict | None = None,
        progress: bool = True) -> FitResult:
    """Train `model` in place into the run folder `out`; see TrainConfig for the knobs.

    `teacher` is the distillation teacher (objective "supervised" with cfg.distill) or
    the frozen reference of SOC; it is frozen (requires_grad off) and put in eval mode.
    `info` (data specs, input files...) is saved with the config and must match on resume.
    Unlabeled training data (a dataset whose `labeled` is False) trains on the teacher's
    targets alone (`TrainConfig.for_data`); an unlabeled `eval_set` is scored by agreement
    with the teacher's mattes, and its MAD picks best.safetensors.
    """
    ctx = ctx or Context()
    cfg = cfg.for_data(labeled(train_set))
    cfg.validate(has_teacher=teacher is not None)
    if cfg.precision == "bf16" and not has_bf16_units(ctx.device):
        warnings.warn("--precision bf16: this CPU has no bfloat16 units (AVX512-BF16, AMX), "
                      "so the forward passes are emulated and slower than fp32")
    if eval_set is not None and not labeled(eval_set) and teacher is None:
        raise UserError("the evaluation data has no ground-truth mattes: it is scored by "
                        "agreement with the teacher's, and this run has no teacher")
    frozen_modules(model, cfg.freeze)  # an unknown path is refused before the run folder exists
    run = RunDir(out)
    with RunLock(out) if ctx.is_main else contextlib.nullcontext():  # rank 0 alone writes
        if ctx.is_main:
            run.start({**dataclasses.asdict(cfg), **(info or {}), "world_size": ctx.world_size,
                       "arch": model.arch.to_dict()}, resume,
                      defaults=dataclasses.asdict(TrainConfig()))
        barrier(ctx)
        trainer = _Trainer(model, train_set, cfg, run, eval_set, teacher, ctx, progress)
        try:
            optimizer_state = trainer.restore_or_init(resume)
            if ctx.is_main:
                run.truncate_log(trainer.step)
            stopped = trainer.train(optimizer_state) if trainer.step < trainer.total else False
        finally:
            trainer.close()
    if trainer.ema is not None:
        model.load_state_dict(trainer.ema.shadow.state_dict())
    model.eval()
    return FitResult(model, trainer.step, stopped, trainer.best_mad, run.path)

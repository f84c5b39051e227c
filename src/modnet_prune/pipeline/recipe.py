"""Pipeline recipes: one YAML file says how a student is made from a teacher and measured.

Every key is documented in `recipes/README.md`. Loading checks types, ranges and
combinations, and refuses unknown keys; each problem is one line naming the key, e.g.
`recipes/x.yaml: prune.criterion: 'l3' is not one of l1, l2, bn, fpgm, taylor, random`.

The fine-tuning budget is counted in *samples* (images seen by the student), so recipes
with different batch sizes or iteration counts are compared at equal cost.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path


from ..data.datasets import spec_parts, synthetic_seeds
from ..errors import UserError
from ..files import read_yaml
from ..deploy.onnx_export import MAX_OPSET, MIN_OPSET
from ..deploy.quantize import (DEFAULT_BUDGET, DEFAULT_COUNT, DEFAULT_HOLDOUT, DEFAULT_METHOD,
                               METHODS as QUANTIZE_METHODS)
from ..measure.latency import PRECISIONS as LATENCY_PRECISIONS
from ..prune import CRITERIA
from ..prune.allocate import PLAN_DECISIONS
from ..prune.threshold import THRESHOLD
from ..prune.api import ALLOCATIONS, AMOUNTS
from ..checks import AT_LEAST_ONE, COUNT, KEEP_FRACTION, RATIO
from ..model.inputs import check_size
from ..train.augment import AUGMENTATIONS
from ..train.loop import FINETUNE, OPTIMIZERS, PRECISIONS, check_ranges
from ..train.losses import FEATURE_LOSSES, DistillWeights
from ..train.schedule import LR_SCHEDULES, PRUNE_SCHEDULES

DEFAULT_TEACHER = "models/modnet-synthetic.safetensors"
PRUNE_METHODS = (*AMOUNTS, "none")  # a method's amount is the PruneSpec field of its name
RUNTIMES = ("torch", "onnxruntime")


class RecipeError(UserError):
    """A recipe key with a wrong name, type or value."""


@dataclass(frozen=True)
class PruneSpec:
    method: str = "none"                  # target_macs | target_latency | plan | ratio | none
    target_macs: float | None = None      # keep at most this fraction of inference MACs
    target_latency: float | None = None   # ... of the latency predicted where it is benchmarked
    latency_precision: str = "fp32"       # target_latency: the student's latency as fp32 or int8
    latency_corrections: int = 1          # target_latency: measured re-aims of the goal (0: none)
    plan: dict | str | None = None        # {module path: {keep: N} | {ratio: r}} or a file
    ratio: float | None = None            # remove this fraction of every group
    criterion: str = "l1"
    allocation: str = "uniform"           # ratio only: uniform | global
    round_to: int = 8
    min_channels: int = 1
    iterations: int = 1                   # > 1: iterative compress (prune a little, fine-tune)
    schedule: str = "cubic"               # MACs/latency fraction per iteration: linear | cubic
    calibration_batches: int = 4          # data batches for the taylor criterion
    reconstruct_batches: int = 0          # training batches to refit the cut layers' readers


@dataclass(frozen=True)
class FinetuneSpec:
    """Fine-tuning as `train.loop.FINETUNE` (the `finetune` command's defaults), with the
    lengths counted in samples; the fields of the same name are TrainConfig's."""

    samples: int = 0                      # the budget: images seen, all iterations together
    batch_size: int = FINETUNE.batch_size
    optimizer: str = FINETUNE.optimizer
    lr: float = FINETUNE.lr
    momentum: float = FINETUNE.momentum
    weight_decay: float = FINETUNE.weight_decay
    schedule: str = FINETUNE.schedule
    warmup_samples: int = 0
    step_samples: int | None = None       # schedule step: samples between decays (None: 1/4)
    gamma: float = FINETUNE.gamma
    min_lr: float = FINETUNE.min_lr
    supervised: float | None = FINETUNE.supervised  # weight of the ground-truth objective;
                                          # None: 1 with ground truth, 0 without (> 0 is refused)
    scales: dict[str, float] = field(default_factory=lambda: dict(FINETUNE.scales))
    eval_every_samples: int = 0           # held-out evaluations during training (0: at the end)
    workers: int = FINETUNE.workers
    # multi-scale fine-tuning: each step's batch resized to one of these (<= sizes.train,
    # the size samples are cropped at); () = always sizes.train. For students that must
    # hold at the deployment size (a step at 512 costs about 16 at 128).
    multi_size: tuple[int, ...] = tuple(FINETUNE.multi_size)
    # batch augmentations for distillation inputs (names of train.augment.AUGMENTATIONS)
    augment: tuple[str, ...] = tuple(FINETUNE.augment)
    augment_p: float = FINETUNE.augment_p
    precision: str = FINETUNE.precision   # train.loop.PRECISIONS
    ema: float = FINETUNE.ema             # decay per step of the weights' moving average; 0: off
    freeze: tuple[str, ...] = tuple(FINETUNE.freeze)  # module paths left untrained (train.freeze)
    feature_loss: str = FINETUNE.feature_loss  # distilled features compared by (losses.FEATURE_LOSSES)


@dataclass(frozen=True)
class DataSpec:
    train: str = "synthetic:100000@128+seed0"
    eval: str = "synthetic:200@128+seed10000000"


@dataclass(frozen=True)
class SizeSpec:
    train: int = 128
    eval: int | None = 128                # None: the MODNet inference protocol (real photos)
    benchmark: int = 512                  # also where MACs and params are reported


@dataclass(frozen=True)
class BenchmarkSpec:
    repeat: int = 20
    warmup: int = 3
    threads: int | None = None            # None: every CPU this process may use
    runtimes: tuple[str, ...] = RUNTIMES
    peak_rss: bool = False


@dataclass(frozen=True)
class ExportSpec:
    opset: int = 17                       # parity with PyTorch is always checked (1e-4)


@dataclass(frozen=True)
class QuantizeSpec:
    """int8 copies of the exported teacher and student (`modnet-prune quantize`)."""
    calibration: str | None = None        # data spec; None: the training data
    count: int = DEFAULT_COUNT            # calibration images; the next `holdout` check them
    holdout: int = DEFAULT_HOLDOUT
    method: str = DEFAULT_METHOD
    budget: float = DEFAULT_BUDGET        # mean |int8 - fp32| alpha on the held-out images
    size: int | None = None               # deployment size; None: sizes.eval (else 512)


@dataclass(frozen=True)
class ReportSpec:
    samples: int = 4                      # rows of the matte grid


@dataclass(frozen=True)
class Recipe:
    name: str = "recipe"
    description: str = ""
    teacher: str = DEFAULT_TEACHER
    seed: int = 0
    prune: PruneSpec = field(default_factory=PruneSpec)
    recalibrate_bn: int = 0               # batches for BN re-estimation after each prune
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    distill: DistillWeights = field(default_factory=DistillWeights)  # all 0: no distillation
    data: DataSpec = field(default_factory=DataSpec)
    sizes: SizeSpec = field(default_factory=SizeSpec)
    benchmark: BenchmarkSpec = field(default_factory=BenchmarkSpec)
    export: ExportSpec = field(default_factory=ExportSpec)
    quantize: QuantizeSpec | None = None  # off unless the recipe has a quantize mapping
    report: ReportSpec = field(default_factory=ReportSpec)

    def to_dict(self) -> dict:
        """The recipe as its JSON says it (tuples as lists): what run folders record."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def with_finetune(self, **changes) -> "Recipe":
        """The same recipe with other fine-tuning settings (`samples=`: the budget,
        `precision=`), checked again."""
        recipe = dataclasses.replace(self, finetune=dataclasses.replace(self.finetune, **changes))
        validate(recipe)
        return recipe

    def with_budget(self, samples: int) -> "Recipe":
        return self.with_finetune(samples=samples)

    def with_teacher(self, path: str) -> "Recipe":
        return dataclasses.replace(self, teacher=str(path))

    @property
    def steps(self) -> int:
        """Optimizer steps the budget buys (at least one per prune iteration when > 0)."""
        if self.finetune.samples == 0:
            return 0
        return max(self.prune.iterations, math.ceil(self.finetune.samples / self.finetune.batch_size))


# --------------------------------------------------------------------------- loading

def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; every problem is a one-line `RecipeError`."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        data = read_yaml(path, "recipe")
    except UserError as e:
        raise RecipeError(str(e)) from e
    try:
        return recipe_from_dict(data if data is not None else {}, default_name=path.stem)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from e


def recipe_from_dict(data: dict, default_name: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError("a recipe is a mapping of keys to values")
    data = {"name": default_name, **data}
    recipe = _build(Recipe, data, "")
    validate(recipe)
    return recipe


def _build(cls, data, where: str):
    """Instantiate dataclass `cls` from a mapping, checking names and types recursively."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where.rstrip('.')}: expected a mapping, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise RecipeError(f"{where}{unknown[0]}: unknown key (known: {', '.join(names)})")
    values = {}
    for name, value in data.items():
        kind = hints[name]
        optional = [k for k in typing.get_args(kind) if dataclasses.is_dataclass(k)]
        if optional:  # an optional section (quantize): null is off, a mapping ({}) is on
            values[name] = None if value is None else _build(optional[0], value, f"{where}{name}.")
        elif dataclasses.is_dataclass(kind):
            values[name] = _build(kind, value if value is not None else {}, f"{where}{name}.")
        else:
            values[name] = _check_type(value, kind, f"{where}{name}")
    return cls(**values)


def _show(value) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, dict) else "a mapping"


def _type_name(kind) -> str:
    """How a recipe's author calls `kind`: YAML has lists, not tuples."""
    origin = typing.get_origin(kind) or kind
    return ("null" if kind is type(None) else "list" if origin is tuple
            else getattr(origin, "__name__", str(kind)))


def _check_type(value, kind, key: str):
    """`value` converted to `kind` (int -> float allowed, list -> tuple), or a RecipeError."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    for option in options:
        origin = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return None
        if origin is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            continue  # YAML's yes/no are not numbers
        if origin is int and isinstance(value, int):
            return value
        if origin is float and isinstance(value, (int, float)):
            return float(value)
        if origin is str and isinstance(value, str):
            return value
        if origin is dict and isinstance(value, dict):
            args = typing.get_args(option)
            if args and args[1] is float:
                return {k: _check_type(v, float, f"{key}.{k}") for k, v in value.items()}
            return value
        if origin is tuple and isinstance(value, (list, tuple)):
            item = typing.get_args(option)[0]
            return tuple(_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    wanted = " or ".join(_type_name(o) for o in options)
    raise RecipeError(f"{key}: expected {wanted}, got {_show(value)}")


# --------------------------------------------------------------------------- validation

def _need(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise RecipeError(f"{key}: {message}")


def _one_of(value, choices, key: str) -> None:
    _need(value in choices, key, f"{value!r} is not one of {', '.join(choices)}")


def validate(r: Recipe) -> None:
    """Check values and combinations; raises RecipeError naming the first bad key."""
    try:
        _validate(r)
    except RecipeError:
        raise
    except UserError as e:  # a range check (modnet_prune.checks) names the key
        raise RecipeError(str(e)) from e


def _validate(r: Recipe) -> None:
    _need(bool(re.fullmatch(r"[A-Za-z0-9._-]+", r.name)), "name",
          f"{r.name!r}: use letters, digits, '.', '_' and '-' only")
    _need(bool(r.teacher), "teacher", "give the teacher checkpoint's path")
    _need(r.seed >= 0, "seed", "must be >= 0")
    COUNT.check(r.recalibrate_bn, "recalibrate_bn")
    _validate_prune(r.prune)
    _validate_finetune(r.finetune)
    check_ranges({"distill": r.distill.as_dict()}, lambda key, term: f"distill.{term}")
    _need(r.finetune.samples == 0 or r.finetune.supervised != 0 or r.distill.enabled,
          "finetune.supervised", "is 0 and every distill weight is 0: nothing to train on")
    for key in ("train", "eval", "benchmark"):
        size = getattr(r.sizes, key)
        if size is not None or key != "eval":
            check_size(size, f"sizes.{key}")
    for i, size in enumerate(r.finetune.multi_size):
        check_size(size, f"finetune.multi_size[{i}]")
        _need(size <= r.sizes.train, f"finetune.multi_size[{i}]",
              f"{size} is larger than sizes.train {r.sizes.train} (the size samples are cropped at)")
    _validate_data(r.data)
    b = r.benchmark
    _need(b.repeat >= 1, "benchmark.repeat", "must be >= 1")
    _need(b.warmup >= 0, "benchmark.warmup", "must be >= 0")
    _need(b.threads is None or b.threads >= 1, "benchmark.threads", "must be >= 1 or null")
    _need(len(b.runtimes) >= 1, "benchmark.runtimes", "name at least one runtime")
    for i, runtime in enumerate(b.runtimes):
        _one_of(runtime, RUNTIMES, f"benchmark.runtimes[{i}]")
    _need(MIN_OPSET <= r.export.opset <= MAX_OPSET, "export.opset",
          f"{r.export.opset}: use an opset in {MIN_OPSET}..{MAX_OPSET}")
    _need(0 <= r.report.samples <= 32, "report.samples", "must be in 0..32")
    if r.quantize is not None:
        _validate_quantize(r.quantize)
    _need(r.prune.latency_precision != "int8" or r.quantize is not None, "prune.latency_precision",
          "int8 needs a quantize section (the student is deployed int8 only then)")


def _validate_quantize(q: QuantizeSpec) -> None:
    _one_of(q.method, QUANTIZE_METHODS, "quantize.method")
    _need(q.count >= 1, "quantize.count", "must be >= 1")
    _need(q.holdout >= 1, "quantize.holdout", "must be >= 1")
    _need(q.budget > 0 and math.isfinite(q.budget), "quantize.budget",
          "must be a positive mean |delta alpha|")
    _need(q.size is None or q.size >= 32 and q.size % 32 == 0, "quantize.size",
          f"{q.size}: must be a positive multiple of 32")
    _need(q.calibration is None or bool(q.calibration.strip()), "quantize.calibration",
          "give a data spec, or leave it out for the training data")


def _validate_prune(p: PruneSpec) -> None:
    _one_of(p.method, PRUNE_METHODS, "prune.method")
    _one_of(p.criterion, CRITERIA, "prune.criterion")
    _one_of(p.allocation, ALLOCATIONS, "prune.allocation")
    _one_of(p.schedule, PRUNE_SCHEDULES, "prune.schedule")
    given = {k: getattr(p, k) for k in AMOUNTS if getattr(p, k) is not None}
    if p.method == "none":
        _need(not given, f"prune.{next(iter(given), '')}", "prune.method none takes no amount")
    else:
        _need(p.method in given, f"prune.{p.method}", f"method {p.method} needs this key")
        extra = [k for k in given if k != p.method]
        _need(not extra, f"prune.{extra[0] if extra else ''}", f"does not go with method {p.method}")
    for key in ("target_macs", "target_latency"):
        if getattr(p, key) is not None:
            KEEP_FRACTION.check(getattr(p, key), f"prune.{key}")
    if p.ratio is not None:
        RATIO.check(p.ratio, "prune.ratio")
    if isinstance(p.plan, dict):
        _validate_plan(p.plan)
    _need(p.round_to >= 1, "prune.round_to", "must be >= 1")
    _need(p.min_channels >= 1, "prune.min_channels", "must be >= 1")
    _need(p.iterations >= 1, "prune.iterations", "must be >= 1")
    _need(p.iterations == 1 or p.method in ("target_macs", "target_latency"), "prune.iterations",
          "iterative pruning (> 1) needs method target_macs or target_latency")
    _need(p.calibration_batches >= 1, "prune.calibration_batches", "must be >= 1")
    COUNT.check(p.reconstruct_batches, "prune.reconstruct_batches")
    COUNT.check(p.latency_corrections, "prune.latency_corrections")
    _one_of(p.latency_precision, LATENCY_PRECISIONS, "prune.latency_precision")
    _need(p.latency_precision == "fp32" or p.method == "target_latency", "prune.latency_precision",
          "is read by method target_latency only")


def _validate_plan(plan: dict) -> None:
    _need(bool(plan), "prune.plan", "is empty")
    for module, decision in plan.items():
        key = f"prune.plan.{module}"
        _need(isinstance(decision, dict) and len(decision) == 1 and
              next(iter(decision)) in PLAN_DECISIONS, key,
              "expected {keep: N}, {ratio: r}, {threshold: t} or {follow: LAYER}")
        (kind, value), = decision.items()
        if kind == "keep":
            _need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, key,
                  f"keep {value!r}: must be an int >= 1")
        elif kind == "ratio":
            RATIO.check(value, f"{key}: ratio")
        elif kind == "threshold":
            THRESHOLD.check(value, f"{key}: threshold")
        else:
            _need(isinstance(value, str) and bool(value), key, f"follow {value!r}: name a layer")


def _validate_finetune(f: FinetuneSpec) -> None:
    _need(f.samples >= 0, "finetune.samples", "must be >= 0")
    _need(f.batch_size >= 1, "finetune.batch_size", "must be >= 1")
    _need(f.samples == 0 or f.samples >= f.batch_size, "finetune.samples",
          f"{f.samples} is less than one batch ({f.batch_size})")
    _one_of(f.optimizer, OPTIMIZERS, "finetune.optimizer")
    _one_of(f.schedule, LR_SCHEDULES, "finetune.schedule")
    _one_of(f.precision, PRECISIONS, "finetune.precision")
    _one_of(f.feature_loss, FEATURE_LOSSES, "finetune.feature_loss")
    for i, name in enumerate(f.augment):
        _one_of(name, AUGMENTATIONS, f"finetune.augment[{i}]")
    unknown = set(f.scales) - set(FINETUNE.scales)
    _need(not unknown, f"finetune.scales.{min(unknown) if unknown else ''}",
          f"unknown term (known: {', '.join(FINETUNE.scales)})")
    check_ranges(dataclasses.asdict(f), lambda key, term: f"finetune.{key}"
                 + (f".{term}" if term else ""))  # the TrainConfig fields, as train checks them
    _need(f.min_lr <= f.lr, "finetune.min_lr", "must be in [0, lr]")
    for key in ("warmup_samples", "eval_every_samples"):
        COUNT.check(getattr(f, key), f"finetune.{key}")
    if f.step_samples is not None:
        AT_LEAST_ONE.check(f.step_samples, "finetune.step_samples")


def _validate_data(d: DataSpec) -> None:
    for key, spec in (("data.train", d.train), ("data.eval", d.eval)):
        _need(bool(spec.strip()), key, "give a dataset spec")
        for base, _ in spec_parts(spec):
            _need(not base.startswith("synthetic") or synthetic_seeds(base) is not None, key,
                  f"{base!r}: expected synthetic:N@S[+seedK]")
    for train_base, train_cut in spec_parts(d.train):
        for eval_base, eval_cut in spec_parts(d.eval):
            _check_disjoint(train_base, train_cut, eval_base, eval_cut)


def _check_disjoint(train_spec: str, train_cut, eval_spec: str, eval_cut) -> None:
    """Held-out data shares no sample with one part of the training data."""
    train, held_out = synthetic_seeds(train_spec), synthetic_seeds(eval_spec)
    if train is not None and held_out is not None:
        train, held_out = _cut(train, train_cut), _cut(held_out, eval_cut)
        overlap = range(max(train.start, held_out.start), min(train.stop, held_out.stop))
        _need(not overlap, "data.eval", f"seeds {held_out.start}..{held_out.stop - 1} overlap the "
              f"training seeds {train.start}..{train.stop - 1}: held-out data must be disjoint")
    elif (train is None and held_out is None and Path(train_spec) == Path(eval_spec)
          and not Path(train_spec).joinpath("validation").is_dir()):
        whole = train_cut == eval_cut == (0.0, 100.0)
        _need(max(train_cut[0], eval_cut[0]) >= min(train_cut[1], eval_cut[1]), "data.eval",
              "is the training folder: use a held-out folder, or a part of it such as "
              f"{train_spec}[90%:] with {train_spec}[:90%] for training" if whole else
              f"{eval_spec}[{eval_cut[0]:g}%:{eval_cut[1]:g}%] overlaps the training part "
              f"[{train_cut[0]:g}%:{train_cut[1]:g}%]: held-out data must be disjoint")


def _cut(seeds: range, cut: tuple[float, float]) -> range:
    return seeds[math.floor(cut[0] / 100 * len(seeds)):math.floor(cut[1] / 100 * len(seeds))]

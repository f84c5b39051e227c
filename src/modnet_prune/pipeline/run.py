"""`run_pipeline(recipe, out)`: teacher -> student -> measured, exported, reported.

Stages, each recorded in OUT/stages/<stage>.json (written atomically when the stage has
finished, so a re-run with `resume=True` skips it; an interrupted fine-tuning resumes from
its own last checkpoint):

  prune      one-shot: one `prune_step` of the teacher into OUT (pruned.safetensors, and
             BatchNorm statistics re-estimated: recalibrated.safetensors). Iterative
             recipes prune in `finetune`, a `prune_step` per iteration.
  finetune   fine-tune with the recipe's budget (finetune/ run folder), or iterative
             compress (compress/, `train.compress`'s layout); writes student.safetensors
  evaluate   teacher, student and every intermediate model on the held-out set: matting
             errors (held-out data without ground truth: agreement with the teacher's
             mattes), params and MACs; teacher/student predictions and the matte-grid inputs
  export     teacher.onnx and student.onnx, each checked against PyTorch
  quantize   (recipes with a `quantize` section) teacher.int8.onnx and student.int8.onnx,
             each within the recipe's fidelity budget of its fp32 file, scored on the
             held-out set; a model whose budget cannot be met is recorded as refused
  benchmark  teacher vs student (and their int8 files) interleaved, per runtime, at the
             benchmark size
  report     summary.json, report.md, report.html, figures/

Every stage reads its inputs from files of earlier stages, never from memory, so a resumed
run computes exactly what an uninterrupted one does.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import open_dataset, open_source
from ..data.datasets import is_synthetic, synthetic_at
from ..data.images import alpha_to_uint8, write_png
from ..errors import UserError
from ..deploy.onnx_export import export_onnx
from ..deploy.quantize import DEFAULT_SIZE as INT8_DEFAULT_SIZE, BudgetError, quantize_model
from ..deploy.runtime import OnnxRuntime
from ..deploy.web import build_site, ort_missing
from ..metrics import AGREEMENT, evaluate, reference_mattes
from ..model.io import load, read_train_sizes, save, untrained_size_warning
from ..model.shipped import synthetic_teacher_note, trained_on_synthetic
from ..files import remove_stale_temps, sha256_file, write_json
from ..measure.costs import model_costs
from ..measure.benchmark import benchmark_many, default_threads
from ..measure.latency import latency_model, prune_to_measured_latency, target_for
from ..prune.latency import Target
from ..report.document import render_report
from ..train import Context, TrainConfig, fit
from ..train.compress import CompressConfig, compress, iteration_files
from ..train.prune_step import StepOptions, prune_step
from ..train.distributed import pick_device
from ..train.loader import image_batches
from ..train.rundir import LOCK, STATE, RunLock
from .recipe import DEFAULT_TEACHER, Recipe, recipe_from_dict
from .summary import build_summary

RECIPE_FILE, STAGE_DIR = "recipe.json", "stages"
TEACHER_ONNX, STUDENT_ONNX, STUDENT = "teacher.onnx", "student.onnx", "student.safetensors"
INT8_FILES = {"teacher": "teacher.int8.onnx", "student": "student.int8.onnx"}
FINETUNE_DIR, COMPRESS_DIR, WEB_DIR = "finetune", "compress", "web"
# Version of the evaluate stage's record: a resumed run whose record is older (accuracy at
# sizes.eval only, none at the deployment size) evaluates again, then reports again.
EVALUATE_FORMAT = 2


class PipelineStopped(Exception):
    """Fine-tuning was interrupted (Ctrl-C/SIGTERM) after saving a checkpoint."""



def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable ({e}); delete it to redo that stage") from e


def latency_target(recipe: Recipe) -> Target | None:
    """The target whose latency a target_latency prune aims at: ONNX Runtime at the recipe's
    `prune.latency_precision`, the benchmark's threads and the deployment size (None for
    the other methods)."""
    if recipe.prune.method != "target_latency":
        return None
    b = recipe.benchmark
    return target_for("onnxruntime", recipe.prune.latency_precision,
                      b.threads or default_threads(), recipe.sizes.benchmark)


def teacher_missing_message(path: str) -> str:
    hint = (" — train it with `modnet-prune train --data synthetic:100000@128 --size 128 "
            "--steps 20000 --out runs/teacher` and copy runs/teacher/last.safetensors there "
            "(models/README.md has the exact recipe), or pass --teacher PATH")
    return f"{path}: teacher checkpoint not found" + (hint if path == DEFAULT_TEACHER else "")


@dataclass
class Run:
    """One pipeline folder and what the stages share."""

    recipe: Recipe
    out: Path
    progress: bool = True
    echo: Callable[[str], None] = print
    ctx: Context = field(default_factory=Context)  # where fine-tuning runs
    _cache: dict = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.out / name

    def record(self, stage: str) -> dict:
        return _read_json(self.out / STAGE_DIR / f"{stage}.json")

    def done(self, stage: str) -> bool:
        if not (self.out / STAGE_DIR / f"{stage}.json").exists():
            return False
        return stage != "evaluate" or self.record(stage).get("format") == EVALUATE_FORMAT

    def teacher(self) -> torch.nn.Module:
        if "teacher" not in self._cache:
            self._cache["teacher"] = load(self.recipe.teacher)
        return self._cache["teacher"]

    def latency(self):
        """The latency model of `latency_target(recipe)` (None for the other methods); built
        once per machine."""
        target = latency_target(self.recipe)
        if target is None:
            return None
        if "latency" not in self._cache:
            self._cache["latency"], _ = latency_model(target, progress=self.progress)
        return self._cache["latency"]

    def teacher_train_sizes(self) -> list[int] | None:
        """Sizes the teacher was trained at, from its metadata (None: unknown)."""
        return read_train_sizes(self.recipe.teacher)

    def deploy_size(self) -> int | None:
        """Where teacher and student are scored beside their latency: the benchmark size, or
        for photos with `sizes.eval` null the MODNet protocol (what deployment runs there)."""
        r = self.recipe
        return None if r.sizes.eval is None and not is_synthetic(r.data.eval) else r.sizes.benchmark

    def eval_source(self, size: int | None):
        """The held-out set as scored at `size`. Synthetic portraits are rendered at that
        size from the same seeds, so a score at the deployment size sees the detail an
        image of that size has (upsampling a 128x128 render would not); dataset folders
        are read as they are (their images are resized to `size` when scored)."""
        spec = self.recipe.data.eval
        return open_source(synthetic_at(spec, size) if size else spec,
                           size=size or self.recipe.sizes.train, train=False)

    def train_set(self):
        r = self.recipe
        return open_dataset(r.data.train, size=r.sizes.train, train=True, seed=r.seed)

    def eval_set(self):
        r = self.recipe
        return open_dataset(r.data.eval, size=r.sizes.eval or r.sizes.train, train=False)


# --------------------------------------------------------------------------- the folder

def _start(run: Run, resume: bool, teacher_sha256: str) -> None:
    """Create OUT, or check that the run to resume used this very recipe and teacher."""
    saved = run.path(RECIPE_FILE)
    current = {"recipe": run.recipe.to_dict(), "teacher_sha256": teacher_sha256}
    remove_stale_temps(run.out)  # of a killed run; we hold the folder's lock
    if saved.exists() and _has_progress(run):
        if not resume:
            raise UserError(f"{run.out} already holds a pipeline run: pass --resume to continue "
                            "it, or choose another --out")
        changed = _differences(_as_current(_read_json(saved)), current)
        if changed:
            raise UserError(f"--resume with a different recipe or teacher than the run in "
                            f"{run.out} ({'; '.join(changed[:3])}); use another --out")
        return
    if not saved.exists() and any(p.name != LOCK for p in run.out.iterdir()):
        raise UserError(f"{run.out} exists and is not a pipeline folder; choose another --out")
    (run.out / STAGE_DIR).mkdir(parents=True, exist_ok=True)
    write_json(saved, current)


def _as_current(saved: dict) -> dict:
    """A saved recipe.json read by this version: keys added since it was written take their
    defaults, so a run started before an upgrade resumes (when the recipe still parses)."""
    try:
        return {**saved, "recipe": recipe_from_dict(saved["recipe"]).to_dict()}
    except (UserError, KeyError, TypeError):
        return saved  # compared as written: the differences name what changed


def _has_progress(run: Run) -> bool:
    """A finished stage or a saved training step: a folder left by a run that failed while
    starting up has neither, and a corrected rerun may start it afresh."""
    return (any((run.out / STAGE_DIR).glob("*.json"))
            or any(run.out.glob(f"{FINETUNE_DIR}/{STATE}"))
            or any(run.out.glob(f"{COMPRESS_DIR}/*/{STATE}")))


def _differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))]
    return [] if a == b else [f"{where.removeprefix('recipe.')}: {a!r} -> {b!r}"]


def run_pipeline(recipe: Recipe, out: str | Path, *, resume: bool = False, progress: bool = True,
                 echo: Callable[[str], None] = print, device: str = "auto") -> dict:
    """Run every stage not finished yet; returns the summary (also OUT/summary.json).
    `device` (auto, cpu, cuda) is where fine-tuning runs; measurements follow the runtimes'
    own defaults and the report names the device of every latency."""
    if not Path(recipe.teacher).is_file():
        raise UserError(teacher_missing_message(recipe.teacher))
    run = Run(recipe, Path(out), progress, echo, Context(device=pick_device(device)))
    with RunLock(run.out):
        _start(run, resume, sha256_file(recipe.teacher))
        if not (is_synthetic(recipe.data.train) and is_synthetic(recipe.data.eval)) \
                and trained_on_synthetic(recipe.teacher):
            echo(synthetic_teacher_note(recipe.teacher).replace(
                "--checkpoint/--teacher", "teacher: in the recipe or --teacher"))
        _run_stages(run, echo)
    return _read_json(run.path("summary.json"))


def _run_stages(run: Run, echo: Callable[[str], None]) -> None:
    ran = False
    for index, stage in enumerate(STAGES, start=1):
        head = f"[{index}/{len(STAGES)}] {stage}"
        if run.done(stage) and not (ran and stage == "report"):  # a report of what is there now
            echo(f"{head}: done earlier, skipped")
            continue
        ran = True
        echo(f"{head} ...")
        start = time.perf_counter()
        record = STAGE_FUNCTIONS[stage](run)
        record["seconds"] = time.perf_counter() - start
        write_json(run.out / STAGE_DIR / f"{stage}.json", record)
        echo(f"{head}: done in {record['seconds']:.1f} s")


# --------------------------------------------------------------------------- stages

LATENCY_GOAL = "latency_goal.json"  # under STAGE_DIR: the measured goal, kept for --resume


def latency_goal(run: Run) -> dict | None:
    """For a target_latency recipe, the fraction of the *predicted* latency to prune to: the
    latency model misprices some widths (layers below 16 channels:
    benchmarks/latency_vs_macs.md), so a one-shot prune of the teacher is measured beside it
    and the goal re-aimed by measured / predicted, up to `prune.latency_corrections` times,
    as `prune --target-latency` does; the goal of the try measured closest to the target is
    used by the one-shot and the iterative prune alike. Measured once per run folder (a
    resumed run must prune to the same goal). None for the other methods."""
    p = run.recipe.prune
    if p.method != "target_latency":
        return None
    path = run.out / STAGE_DIR / LATENCY_GOAL
    if path.is_file():
        return _read_json(path)
    record = {"requested": p.target_latency, "goal": p.target_latency, "tries": []}
    if p.latency_corrections:
        r = run.recipe
        data = (image_batches(run.train_set(), p.calibration_batches, r.finetune.batch_size, r.seed)
                if p.criterion == "taylor" else None)
        result = prune_to_measured_latency(
            run.teacher(), p.target_latency, run.latency(), corrections=p.latency_corrections,
            progress=run.progress, criterion=p.criterion, round_to=p.round_to,
            min_channels=p.min_channels, size=(r.sizes.benchmark,) * 2, data=data, seed=r.seed)
        record.update(goal=result.latency["goal"], tries=result.latency["tries"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return record


def stage_prune(run: Run) -> dict:
    """One-shot pruning: one `prune_step` into the run folder (pruned.safetensors, and
    recalibrated.safetensors with `recalibrate_bn`)."""
    r, p = run.recipe, run.recipe.prune
    if p.method == "none" or p.iterations > 1:
        goal = latency_goal(run) if p.iterations > 1 else None
        return {"method": p.method, "iterative": p.iterations > 1,
                **({"latency_goal": goal} if goal is not None else {})}
    options = StepOptions(criterion=p.criterion, allocation=p.allocation, round_to=p.round_to,
                          min_channels=p.min_channels, size=r.sizes.benchmark,
                          calibration_batches=p.calibration_batches,
                          recalibrate_bn=r.recalibrate_bn, batch_size=r.finetune.batch_size,
                          reconstruct_batches=p.reconstruct_batches, seed=r.seed)
    sizes = run.teacher_train_sizes()  # pruning keeps the teacher's weights
    goal = latency_goal(run)
    amount = getattr(p, p.method) if goal is None else goal["goal"]
    step = prune_step(run.teacher(), {p.method: amount}, run.out, run.train_set(),
                      options, latency=run.latency(), device=run.ctx.device,
                      metadata={"recipe": r.name, "train_sizes": sizes})
    record = {"method": p.method, "iterative": False, "prune": step.details,
              "pruned": _relative(run, step.pruned)}
    if goal is not None:
        record["latency_goal"] = goal
    if step.recalibrated:
        record.update(recalibrated=_relative(run, step.recalibrated),
                      recalibrate_batches=step.recalibrated_batches)
    return record


def _relative(run: Run, path: Path) -> str:
    return path.relative_to(run.out).as_posix()


def train_config(recipe: Recipe, steps: int, recalibrate: int) -> TrainConfig:
    f, batch = recipe.finetune, recipe.finetune.batch_size
    return TrainConfig(
        size=recipe.sizes.train, multi_size=list(f.multi_size), batch_size=batch, steps=steps,
        lr=f.lr, optimizer=f.optimizer,
        momentum=f.momentum, weight_decay=f.weight_decay, schedule=f.schedule,
        warmup=min(steps // 10, math.ceil(f.warmup_samples / batch)),  # never most of a run
        step_size=math.ceil(f.step_samples / batch) if f.step_samples else None,
        gamma=f.gamma, min_lr=f.min_lr, seed=recipe.seed, workers=f.workers,
        log_every=max(1, min(10, steps // 20)),
        eval_every=math.ceil(f.eval_every_samples / batch) if f.eval_every_samples else 0,
        checkpoint_every=max(1, min(100, steps // 4)),
        supervised=f.supervised, scales=dict(f.scales),
        augment=list(f.augment), augment_p=f.augment_p, precision=f.precision, ema=f.ema,
        feature_loss=f.feature_loss, freeze=list(f.freeze),
        distill={k: v for k, v in dataclasses.asdict(recipe.distill).items() if v > 0},
        recalibrate_bn=recalibrate)


def stage_finetune(run: Run) -> dict:
    r = run.recipe
    prune_record = run.record("prune")
    if r.prune.iterations > 1:
        return _compress(run)
    start = prune_record.get("recalibrated") or prune_record.get("pruned")
    model = load(run.path(start)) if start else load(r.teacher)
    record = {"mode": "one-shot", "start": start or r.teacher, "steps": r.steps,
              "samples": r.steps * r.finetune.batch_size, "run": None}
    sizes = run.teacher_train_sizes()
    if r.steps:
        teacher = run.teacher() if r.distill.enabled else None
        folder = run.path(FINETUNE_DIR)
        result = fit(model, run.train_set(), train_config(r, r.steps, 0), folder,
                     eval_set=run.eval_set(), teacher=teacher,
                     resume=(folder / "config.json").exists(), ctx=run.ctx, info=_info(r),
                     progress=run.progress)
        if result.stopped:
            raise PipelineStopped(f"fine-tuning stopped at step {result.step}")
        model, record["run"] = result.model, FINETUNE_DIR
        sizes = train_config(r, r.steps, 0).train_sizes
    save(model.eval(), run.path(STUDENT), recipe=r.name, teacher_sha256=sha256_file(r.teacher),
         train_sizes=sizes)
    record["student"] = STUDENT
    return record


def _info(r: Recipe) -> dict:
    return {"recipe": r.name, "data": r.data.train, "eval_data": r.data.eval,
            "teacher": {"path": r.teacher, "sha256": sha256_file(r.teacher)}}


def _compress(run: Run) -> dict:
    r, p = run.recipe, run.recipe.prune
    per_iteration = max(1, r.steps // p.iterations)
    goal = latency_goal(run)
    cc = CompressConfig(target_macs=p.target_macs,
                        target_latency=None if goal is None else goal["goal"],
                        iterations=p.iterations, schedule=p.schedule,
                        criterion=p.criterion, round_to=p.round_to,
                        min_channels=p.min_channels, cost_size=r.sizes.benchmark,
                        reconstruct_batches=p.reconstruct_batches)
    folder = run.path(COMPRESS_DIR)
    tc = train_config(r, per_iteration, r.recalibrate_bn)
    result = compress(run.teacher(), run.train_set(), cc, tc, folder,
                      eval_set=run.eval_set(), resume=(folder / "config.json").exists(),
                      ctx=run.ctx, info=_info(r), progress=run.progress, latency=run.latency())
    if result.stopped:
        raise PipelineStopped("compression stopped")
    save(result.model.eval(), run.path(STUDENT), recipe=r.name, teacher_sha256=sha256_file(r.teacher),
         train_sizes=tc.train_sizes)
    steps = per_iteration * p.iterations
    return {"mode": "iterative", "iterations": result.rows, "steps": steps,
            "steps_per_iteration": per_iteration, "samples": steps * r.finetune.batch_size,
            "run": COMPRESS_DIR, "student": STUDENT}


def _variants(run: Run) -> list[tuple[str, str, Path]]:
    """(role, label, checkpoint) of every model to score, teacher first, student last. The
    role is the model's key in the records; the recipe's name is only the student's label,
    so a recipe named like another model's role overwrites nothing."""
    r, found = run.recipe, [("teacher", "teacher", Path(run.recipe.teacher))]
    prune_record, finetune_record = run.record("prune"), run.record("finetune")
    if prune_record.get("pruned"):
        found.append(("pruned", "pruned", run.path(prune_record["pruned"])))
    if prune_record.get("recalibrated"):
        found.append(("recalibrated", "pruned + BN re-estimated", run.path(prune_record["recalibrated"])))
    rows = finetune_record.get("iterations", [])
    for row in rows:
        k = row["iteration"]
        at = iteration_files(run.path(COMPRESS_DIR), k)
        found.append((f"{at.name}-pruned", f"iter {k} pruned", at.pruned))
        if row is not rows[-1]:  # the last one's fine-tuned model is the student
            found.append((at.name, f"iter {k} fine-tuned", at.trained))
    found.append(("student", r.name, run.path(STUDENT)))
    return found


def stage_evaluate(run: Run) -> dict:
    """Every model at `sizes.eval` (cheap: the training curves and the accuracy-vs-compute
    figure); teacher and student also at the deployment size `sizes.benchmark`, where their
    latency is measured: that is the main table's accuracy, predictions and sample grid.
    With `sizes.eval` null on photos (the MODNet protocol) the protocol is the deployment."""
    r = run.recipe
    deploy, same = run.deploy_size(), r.sizes.eval == run.deploy_size()
    source, deploy_source = run.eval_source(r.sizes.eval), run.eval_source(deploy)
    targets = _targets(run, source, r.sizes.eval)
    deploy_targets = targets if same else _targets(run, deploy_source, deploy)
    scored, costs = {}, {}  # costs depend on the widths only: one analysis per Arch
    for role, label, path in _variants(run):
        model = load(path)
        final = role in ("teacher", "student")
        predictions = run.path(f"predictions/{role}") if final else None
        run.echo(f"  evaluating {label} ({path})")
        result = evaluate(model, source, size=r.sizes.eval, progress=run.progress,
                          save_predictions=predictions if same else None, reference=targets)
        if final and (untrained := untrained_size_warning(path, deploy)):
            run.echo(f"  warning: {untrained}")
        if final and not same:
            run.echo(f"  evaluating {label} at the deployment size {deploy}x{deploy}")
            deployed = evaluate(model, deploy_source, size=deploy, save_predictions=predictions,
                                progress=run.progress, reference=deploy_targets)
        else:
            deployed = result
        arch = model.arch.to_json()
        if arch not in costs:
            costs[arch] = model_costs(model, r.sizes.benchmark)
        cost = {**costs[arch], "file_bytes": os.path.getsize(path)}
        scored[role] = {
            "label": label, "checkpoint": str(path), "sha256": sha256_file(path),
            "params": cost["params"], "macs": cost["macs"], "macs_train": cost["macs_train"],
            "file_bytes": cost["file_bytes"], "weight_bytes": cost["weight_bytes"]["fp32"],
            "widths": _layer_widths(model), "metrics": _scores(result),
            "deploy_metrics": _scores(deployed) if final else None,
            "predictions": str(predictions.relative_to(run.out)) if predictions else None}
        if final:
            info, deploy_info = _evaluation(result, r.sizes.eval), _evaluation(deployed, deploy)
    reference = {"reference": "ground truth" if targets is None else "teacher"}
    return {"format": EVALUATE_FORMAT, "models": scored, "evaluation": {**info, **reference},
            "deploy": {**deploy_info, **reference}, "samples": _sample_inputs(run, deploy_source)}


def _evaluation(result: dict, size: int | None) -> dict:
    return {**{k: result[k] for k in ("count", "region", "scaling", "dataset", "input")},
            "size": size}


def _targets(run: Run, source, size: int | None):
    """None (score against ground truth), or the teacher's mattes at `size` for held-out
    data without it."""
    if source.labeled:
        return None
    run.echo(f"  {source.description}: no ground truth; scoring agreement with the teacher")
    return reference_mattes(run.teacher(), source, size=size, progress=run.progress)


def _scores(result: dict) -> dict:
    return {"whole": {k: result[k] for k in ("mse", "mad", "sad", "grad", "conn", *AGREEMENT)
                      if k in result},
            **({"unknown": result["unknown"]} if "unknown" in result else {})}


def _layer_widths(model: torch.nn.Module) -> dict[str, int]:
    """Output width of every conv/linear layer but depthwise convs (they repeat the width
    of the conv before them) and the 1-channel output heads."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            if m.groups > 1 and m.groups == m.in_channels == m.out_channels or m.out_channels == 1:
                continue
            widths[name] = m.out_channels
        elif isinstance(m, torch.nn.Linear):
            widths[name] = m.out_features
    return widths


def _sample_inputs(run: Run, source) -> list[dict]:
    """Input and ground truth (when there is one) of the first held-out samples as PNGs
    for the matte grid."""
    rows = []
    folder = run.path("samples")
    for index in range(min(run.recipe.report.samples, len(source))):
        sample = source.sample(index)
        image = folder / f"{sample.name}.input.png"
        image.parent.mkdir(parents=True, exist_ok=True)  # names of photo trees hold folders
        write_png(image, sample.image)
        images = {"input": str(image.relative_to(run.out))}
        if sample.alpha is not None:
            truth = folder / f"{sample.name}.truth.png"
            write_png(truth, alpha_to_uint8(sample.alpha))
            images["ground truth"] = str(truth.relative_to(run.out))
        rows.append({"name": sample.name, "images": {
            **images, "teacher": f"predictions/teacher/{sample.name}.png",
            "student": f"predictions/student/{sample.name}.png"}})
    return rows


def stage_export(run: Run) -> dict:
    r = run.recipe
    reports = {}
    for role, checkpoint, onnx_name in (("teacher", Path(r.teacher), TEACHER_ONNX),
                                        ("student", run.path(STUDENT), STUDENT_ONNX)):
        run.echo(f"  exporting {role} -> {onnx_name} (opset {r.export.opset}, parity check)")
        report = export_onnx(load(checkpoint), run.path(onnx_name), opset=r.export.opset,
                             metadata={"source": str(checkpoint),
                                       "source_sha256": sha256_file(checkpoint)})
        reports[role] = {**report.as_dict(), "out": onnx_name}
    return {"models": reports, "web": _write_site(run)}


def _write_site(run: Run) -> dict:
    """The browser page for teacher and student; a run without onnxruntime-web goes on."""
    if reason := ort_missing():
        run.echo(f"  no web page: {reason}")
        return {"dir": None, "reason": reason}
    build_site([run.path(TEACHER_ONNX), run.path(STUDENT_ONNX)], run.path(WEB_DIR))
    run.echo(f"  web page -> {WEB_DIR}/ (see it run: `modnet-prune serve {run.path(WEB_DIR)}`)")
    return {"dir": WEB_DIR}


def stage_quantize(run: Run) -> dict:
    """int8 teacher and student from their ONNX files, scored like `evaluate` scores the
    fp32 ones in the main table: at the deployment size, where their latency is measured."""
    r, q = run.recipe, run.recipe.quantize
    if q is None:
        return {"enabled": False}
    size, calibration = q.size or r.sizes.eval or INT8_DEFAULT_SIZE, q.calibration or r.data.train
    deploy = run.deploy_size()
    source = run.eval_source(deploy)
    targets = _targets(run, source, deploy)
    models = {}
    for role, fp32 in (("teacher", TEACHER_ONNX), ("student", STUDENT_ONNX)):
        out = INT8_FILES[role]
        run.echo(f"  quantizing {role} -> {out} ({q.method}, {q.count} images of {calibration} "
                 f"at {size}, budget {q.budget:g})")
        try:
            report = quantize_model(run.path(fp32), calibration, run.path(out), count=q.count,
                                    holdout=q.holdout, method=q.method, budget=q.budget,
                                    size=size, threads=r.benchmark.threads, progress=run.progress)
        except BudgetError as e:
            run.echo(f"  {role}: {e}")
            models[role] = {"refused": str(e)}
            continue
        predictions = f"predictions/{role}-int8"
        result = evaluate(OnnxRuntime(run.path(out), threads=r.benchmark.threads), source,
                          size=deploy, save_predictions=run.path(predictions),
                          progress=run.progress, reference=targets)
        models[role] = {**report.as_dict(), "out": out, "sha256": sha256_file(run.path(out)),
                        "metrics": _scores(result), "predictions": predictions}
    return {"enabled": True, "size": size, "calibration": calibration, "models": models}


def stage_benchmark(run: Run) -> dict:
    r, b = run.recipe, run.recipe.benchmark
    quantized = [str(run.path(m["out"])) for m in run.record("quantize").get("models", {}).values()
                 if "out" in m]
    files = {"torch": [r.teacher, str(run.path(STUDENT))],
             "onnxruntime": [str(run.path(TEACHER_ONNX)), str(run.path(STUDENT_ONNX)), *quantized]}
    results = {}
    for runtime in b.runtimes:
        models = "teacher, student and their int8 files" if runtime == "onnxruntime" and quantized \
            else "teacher vs student"
        run.echo(f"  {runtime}: {models}, {b.repeat} interleaved rounds at "
                 f"{r.sizes.benchmark}x{r.sizes.benchmark}")
        results[runtime] = benchmark_many(files[runtime], runtime=runtime, size=r.sizes.benchmark,
                                          threads=b.threads, repeat=b.repeat, warmup=b.warmup,
                                          rss=b.peak_rss, progress=run.progress)
    return {"runtimes": results}


def stage_report(run: Run) -> dict:
    records = {stage: run.record(stage) for stage in STAGES[:-1]}
    summary = build_summary(run.recipe, run.out, records)
    write_json(run.path("summary.json"), summary)
    written = render_report(summary, run.out)
    return {"summary": "summary.json",
            "files": {k: str(p.relative_to(run.out)) for k, p in written.items()}}


# The stages in the order they run; each reads earlier stages' files (`Run.record`).
STAGE_FUNCTIONS = {"prune": stage_prune, "finetune": stage_finetune, "evaluate": stage_evaluate,
                   "export": stage_export, "quantize": stage_quantize,
                   "benchmark": stage_benchmark, "report": stage_report}
STAGES = tuple(STAGE_FUNCTIONS)

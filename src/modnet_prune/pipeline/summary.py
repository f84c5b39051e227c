"""summary.json: every number of a pipeline run in one file, the input of the report.

Schema (`"schema": SCHEMA`); sizes are [H, W]; paths are relative to the run folder
unless absolute; MACs are conv + linear multiply-accumulates at `size`, batch 1.

  recipe              the resolved recipe (every key, defaults filled in)
  created, out, size  ISO time (UTC), run folder, the cost/latency input size
  models[]            the main table, teacher first; each:
      name, role ("teacher"|"student"), label, checkpoint, sha256, onnx
      params, macs (inference: matte only), macs_train (all three heads), macs_fraction
      file_bytes (checkpoint on disk), weight_bytes (fp32 tensors), onnx_bytes, onnx_parity
      latency {runtime: {median_ms, p90_ms, min_ms, mean_ms, throughput, times_ms, device
               (torch device or ONNX Runtime provider), peak_rss_mb (with benchmark.peak_rss)}}
      speedup {runtime: teacher/student, median of per-round ratios (1.0 for the teacher)}
      metrics {"whole": {mse, mad, sad, grad, conn [, iou, boundary]}, "unknown": {... ,
               count, region}}: at the deployment size `size`, where the latency is
               measured (one operating point)
      metrics_eval   the same at evaluation.eval_size (the size of the training-time
               evaluations and of `variants`), shown beside `metrics` when the sizes differ
      predictions         folder of its predicted held-out mattes (8-bit PNG)
      int8 rows (role "int8", "of": the fp32 row's name): the same widths and MACs, the
                          int8 file's bytes, ONNX Runtime latency from the same interleaved
                          run, held-out errors at the deployment size, and int8 {delta_mean,
                          delta_p99, budget, kept_float, float_ops, method, size, count,
                          holdout, calibration, calibration_sha256, capability, summed_taps}
  quantization        null, or {size, calibration, refused {role: message}}
  variants[]          every model scored on the held-out set at evaluation.eval_size
                      (teacher, pruned, BN re-estimated, each compress iteration,
                      student; int8 rows only when that is the deployment size, the one
                      they are scored at): name, label, params, macs, mad, grad, role
  layers[]            {name, widths: {model name: output channels}} per conv/linear layer
  training            {model name: {mode, samples, steps, batch_size, samples_per_s,
                      curve[] {step, samples, loss, lr, <terms>}, eval[] {step, samples, mse,
                      mad, sad, grad, conn [, iou, boundary]}, iterations[] {index,
                      start_samples, macs_fraction}}}
  evaluation          {dataset, count, size (the deployment size, = size[0]), input, region,
                      scaling, eval_size (int, or null: the MODNet protocol), eval_input,
                      reference: "ground truth" or "teacher" (held-out data without ground
                      truth: every model's metrics are its agreement with the teacher's
                      mattes, plus iou and boundary)}
  benchmark           {size, threads, repeat, warmup, order, runtimes, warnings}
  samples[]           {name, images: {input, ground truth, teacher, <student>: path}}, at
                      the deployment size
  environment         cpu, cpu_count, threads, load_avg, python, platform, omp_wait_policy,
                      torch, onnxruntime, onnx, numpy, modnet_prune
  stages              {stage: seconds}
  budget_note         one line on the fine-tuning budget
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..files import package_version
from ..train.compress import ITERATION_PREFIX, iteration_files
from .recipe import Recipe

SCHEMA = "modnet-prune/pipeline-summary/2"



def _log_rows(folder: Path) -> list[dict]:
    path = folder / "log.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line
    return rows


def _training(recipe: Recipe, out: Path, record: dict) -> dict:
    """Loss and held-out curves over samples seen, iterations laid end to end."""
    batch = recipe.finetune.batch_size
    if record.get("mode") == "iterative":
        folders = [(row, iteration_files(out / record["run"], row["iteration"]).folder)
                   for row in record["iterations"]]
        per_iteration = record["steps_per_iteration"]
    else:
        folders = [(None, out / record["run"])] if record.get("run") else []
        per_iteration = record["steps"]
    curve, evals, iterations, speeds = [], [], [], []
    for k, (row, folder) in enumerate(folders):
        offset = k * per_iteration
        iterations.append({"index": k + 1, "start_samples": offset * batch,
                           "macs_fraction": row.get("macs_fraction", row["fraction"]) if row else None})
        for log in _log_rows(folder):
            at = {"step": offset + log["step"], "samples": (offset + log["step"]) * batch}
            if log.get("kind") == "train":
                curve.append({**at, **{k: v for k, v in log.items()
                                       if k not in ("kind", "step", "world_size")}})
                speeds.append(log.get("samples_per_s"))
            elif log.get("kind") == "eval":
                evals.append({**at, **{m: log[m] for m in ("mse", "mad", "sad", "grad", "conn",
                                                           "iou", "boundary") if m in log}})
    speeds = [s for s in speeds if s]
    return {"mode": record.get("mode"), "samples": record["samples"], "steps": record["steps"],
            "batch_size": batch, "samples_per_s": float(np.median(speeds)) if speeds else None,
            "curve": curve, "eval": evals, "iterations": iterations}


def _timing(stats: dict) -> dict:
    timing = {k: stats[k] for k in ("median_ms", "p90_ms", "min_ms", "mean_ms", "throughput",
                                    "times_ms")}
    info = stats.get("runtime_info", {})
    timing["device"] = info.get("device") or next(iter(info.get("providers", [])), None)
    if stats.get("peak_rss_mb") is not None:
        timing["peak_rss_mb"] = stats["peak_rss_mb"]
    return timing


def _model_entry(name: str, role: str, label: str, scored: dict, teacher: dict, onnx: dict,
                 bench: dict, slot: int) -> dict:
    latency = {runtime: _timing(result["models"][slot]) for runtime, result in bench.items()}
    speedup = {runtime: 1.0 / result["models"][slot]["ratio"] for runtime, result in bench.items()}
    return {"name": name, "role": role, "label": label, "checkpoint": scored["checkpoint"],
            "sha256": scored["sha256"], "onnx": onnx.get("out"),
            "params": scored["params"], "macs": scored["macs"], "macs_train": scored["macs_train"],
            "macs_fraction": scored["macs"] / teacher["macs"],
            "file_bytes": scored["file_bytes"], "weight_bytes": scored["weight_bytes"],
            "onnx_bytes": onnx.get("file_bytes"),
            "onnx_parity": max((p["max_abs"] for p in onnx.get("parity", [])), default=None),
            "latency": latency, "speedup": speedup, "metrics": scored["deploy_metrics"],
            "metrics_eval": scored["metrics"], "predictions": scored["predictions"]}


def _int8_entries(fp32_models: list[dict], quantized: dict, bench: dict) -> list[dict]:
    """A row per int8 file beside its fp32 one: same widths and MACs, its own file, latency
    (ONNX Runtime, in the same interleaved run; speed-up vs the fp32 teacher) and errors."""
    rows = []
    for fp32, role in zip(fp32_models, ("teacher", "student")):
        q = quantized.get(role)
        if not q or "out" not in q:
            continue
        stats = next((m for m in bench.get("onnxruntime", {}).get("models", [])
                      if Path(m["path"]).name == q["out"]), None)
        rows.append({
            **{k: fp32[k] for k in ("params", "macs", "macs_train", "macs_fraction", "weight_bytes")},
            "name": f"{fp32['name']}-int8", "role": "int8", "of": fp32["name"],
            "label": f"{fp32['label']} int8", "checkpoint": q["out"], "sha256": q["sha256"],
            "onnx": q["out"], "file_bytes": q["file_bytes"], "onnx_bytes": q["file_bytes"],
            "onnx_parity": None,
            "latency": {"onnxruntime": _timing(stats)} if stats else {},
            "speedup": {"onnxruntime": 1.0 / stats["ratio"]} if stats else {},
            "metrics": q["metrics"], "predictions": q["predictions"],
            "int8": {**{k: q[k] for k in ("delta_mean", "delta_p99", "budget", "kept_float",
                                          "float_ops", "method", "size", "count", "holdout",
                                          "calibration", "calibration_sha256", "capability")},
                     "summed_taps": q.get("summed_taps", [])}})  # absent in older run folders
    return rows


def _quantization(record: dict) -> dict | None:
    if not record.get("enabled"):
        return None
    return {"size": record["size"], "calibration": record["calibration"],
            "refused": {role: m["refused"] for role, m in record["models"].items() if "refused" in m}}


def _environment(bench: dict) -> dict:
    env = next(iter(bench.values()))["env"] if bench else {}
    keep = ("cpu", "cpu_count", "threads", "load_avg", "python", "platform", "omp_wait_policy")
    out = {k: env.get(k) for k in keep}
    out.update(torch=env.get("torch") or package_version("torch"), onnxruntime=package_version("onnxruntime"),
               onnx=package_version("onnx"), numpy=np.__version__, modnet_prune=__version__)
    return out


# Names the summary already uses as keys next to the student's (models, widths, images).
_TAKEN = ("teacher", "pruned", "recalibrated", "input", "ground truth")


def student_name(recipe: Recipe) -> str:
    """The student's key in the summary: the recipe's name, unless another model or image
    column has it (a recipe called `teacher`, or named like a compression's iteration)."""
    taken = recipe.name in _TAKEN or recipe.name.startswith(ITERATION_PREFIX)
    return f"{recipe.name} (student)" if taken else recipe.name


def build_summary(recipe: Recipe, out: Path, records: dict[str, dict]) -> dict:
    """The summary of a finished run from its stage records (see the module doc)."""
    scored = records["evaluate"]["models"]
    bench, export = records["benchmark"]["runtimes"], records["export"]["models"]
    teacher = scored["teacher"]
    name = student_name(recipe)
    models = [_model_entry("teacher", "teacher", "teacher", teacher, teacher,
                           export["teacher"], bench, 0),
              _model_entry(name, "student", f"student ({recipe.name})", scored["student"],
                           teacher, export["student"], bench, 1)]
    quantized = records.get("quantize", {}).get("models", {})
    int8 = _int8_entries(models, quantized, bench)
    variants = [{"name": name if role == "student" else role, "label": s["label"],
                 "params": s["params"], "macs": s["macs"],
                 "mad": s["metrics"]["whole"]["mad"], "grad": s["metrics"]["whole"]["grad"],
                 "role": role if role in ("teacher", "student") else "intermediate",
                 "run": None if role == "teacher" else name}
                for role, s in scored.items()]  # keyed by role: a recipe's name replaces none
    evaluated = records["evaluate"]
    if evaluated["evaluation"]["size"] == evaluated["deploy"]["size"]:  # int8: scored there only
        variants += [{"name": m["name"], "label": m["label"], "params": m["params"],
                      "macs": m["macs"], "mad": m["metrics"]["whole"]["mad"],
                      "grad": m["metrics"]["whole"]["grad"], "role": "int8", "run": None}
                     for m in int8]
    layers = [{"name": layer, "widths": {"teacher": width,
                                         name: scored["student"]["widths"].get(layer, 0)}}
              for layer, width in teacher["widths"].items()]
    samples = [{"name": row["name"], "images": {
                    **{k: v for k, v in row["images"].items() if k != "student"},
                    name: row["images"]["student"],
                    **{f"{m['of']} int8": f"{m['predictions']}/{row['name']}.png" for m in int8}}}
               for row in records["evaluate"]["samples"]]
    first = next(iter(bench.values()))["env"] if bench else {}
    training = _training(recipe, out, records["finetune"])
    return {
        "schema": SCHEMA, "recipe": recipe.to_dict(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "out": str(out), "size": [recipe.sizes.benchmark] * 2,
        "models": models + int8, "variants": variants, "layers": layers,
        "quantization": _quantization(records.get("quantize", {})),
        "training": {name: training},
        "evaluation": _evaluation(records["evaluate"]),
        "benchmark": {"size": first.get("size"), "threads": first.get("threads"),
                      "repeat": first.get("repeat"), "warmup": first.get("warmup"),
                      "order": first.get("order"), "runtimes": list(bench),
                      "warnings": [w for r in list(bench.values())[:1] for w in r["env"]["warnings"]]},
        "samples": samples, "environment": _environment(bench),
        "stages": {stage: r.get("seconds") for stage, r in records.items()},
        "budget_note": _budget_note(training, recipe),
        "web": records["export"].get("web"),  # None for runs from before the page existed
    }


def _evaluation(record: dict) -> dict:
    """Where the accuracy numbers were measured: the deployment size and sizes.eval."""
    at_eval = record["evaluation"]
    return {**record["deploy"], "eval_size": at_eval["size"], "eval_input": at_eval["input"]}


def _budget_note(training: dict, recipe: Recipe) -> str:
    if not training["steps"]:
        return "No fine-tuning (budget 0 samples)."
    how = (f"in {recipe.prune.iterations} prune → fine-tune iterations" if recipe.prune.iterations > 1
           else "after one-shot pruning")
    speed = f", {training['samples_per_s']:.1f} samples/s" if training["samples_per_s"] else ""
    return (f"Fine-tuning budget: {training['samples']:,} training samples ({training['steps']:,} "
            f"steps × {training['batch_size']}) {how}, at {recipe.sizes.train}×{recipe.sizes.train}"
            f"{speed}.")


def merge_summaries(summaries: dict[str, dict], root: Path) -> dict:
    """One summary holding the students of several runs of the same teacher on the same
    held-out set (benchmarks/compare_recipes.py): {run folder: its summary} -> a summary
    whose relative paths point from `root` into each run folder. Teacher numbers come from
    the first run; each student's speed-ups from its own interleaved run; int8 copies (the
    teacher's from the first run, each student's from its own) follow the fp32 models."""
    runs = list(summaries.items())
    (first_dir, first), root = runs[0], Path(root)
    teacher = first["models"][0]
    for folder, s in runs[1:]:
        if s["models"][0]["sha256"] != teacher["sha256"]:
            raise ValueError(f"{folder}: another teacher than {first_dir}; cannot compare")
        if s["evaluation"]["dataset"] != first["evaluation"]["dataset"]:
            raise ValueError(f"{folder}: another held-out set than {first_dir}; cannot compare")

    def moved(folder, path: str) -> str:
        return str((Path(folder) / path).relative_to(root)) if path else path

    students, variants, training = [], [first["variants"][0]], {}
    has_teacher_int8 = False  # the teacher's int8 variant is kept from one run only
    for folder, s in runs:
        name = s["recipe"]["name"]
        student = s["models"][1]  # its "name" keys its widths and images
        students.append({**student, "label": name,
                         "predictions": moved(folder, student["predictions"])})
        kept = [v for v in s["variants"] if v["role"] != "teacher"
                and not (v["name"] == "teacher-int8" and has_teacher_int8)]
        has_teacher_int8 = has_teacher_int8 or any(v["name"] == "teacher-int8" for v in kept)
        variants += [{**v, "label": _merged_label(v, name)} for v in kept]
        training.update(s["training"])
    layers = [{"name": layer["name"],
               "widths": {"teacher": layer["widths"]["teacher"],
                          **{s["models"][1]["name"]: next(l2 for l2 in s["layers"]
                                                          if l2["name"] == layer["name"])["widths"][s["models"][1]["name"]]
                             for _, s in runs}}}
              for layer in first["layers"]]
    samples = []
    for k, row in enumerate(first["samples"]):
        images = {key: moved(first_dir, path) for key, path in row["images"].items()
                  if key in ("input", "ground truth", "teacher")}
        for folder, s in runs:
            name = s["models"][1]["name"]
            images[name] = moved(folder, s["samples"][k]["images"][name])
        samples.append({"name": row["name"], "images": images})
    int8, refused = _merged_int8(runs, moved)
    names = ", ".join(s["recipe"]["name"] for _, s in runs)
    recipe = {"name": "compare", "description": f"{names}: same teacher, budget and held-out set",
              "runs": {s["recipe"]["name"]: s["recipe"] for _, s in runs}}
    return {**first, "recipe": recipe, "out": str(root),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "models": [{**teacher, "predictions": moved(first_dir, teacher["predictions"])},
                       *students, *int8],
            "quantization": _merged_quantization(runs, refused),
            "variants": variants, "layers": layers, "training": training, "samples": samples,
            "stages": {s["recipe"]["name"]: s["stages"] for _, s in runs},
            "web": None,  # each run folder has its own page
            "budget_note": first["budget_note"] + " Speed-ups: each student against the teacher "
                           "in its own interleaved run."}


def _merged_quantization(runs: list, refused: dict[str, str]) -> dict | None:
    """The first quantized run's settings (the recipes share them), with every refusal."""
    quantized = next((s["quantization"] for _, s in runs if s.get("quantization")), None)
    return {**quantized, "refused": refused} if quantized else None


def _merged_label(variant: dict, run: str) -> str:
    """A run's variant as the merged summary labels it: by the run's recipe name."""
    if variant["role"] == "student":
        return variant["label"]
    if variant["role"] == "int8":
        return "teacher int8" if variant["name"] == "teacher-int8" else f"{run} int8"
    return f"{run}: {variant['label']}"


def _merged_int8(runs: list, moved) -> tuple[list[dict], dict[str, str]]:
    """The int8 models of merged runs, labelled by recipe, and each refusal by the model it
    concerns: the teacher's from the first run that quantized it, every student's from its
    own run."""
    models, refused, teacher_done = [], {}, False
    for folder, s in runs:
        name, quantized = s["recipe"]["name"], s.get("quantization") or {}
        ours = [m for m in s["models"] if m["role"] == "int8"
                and (m["of"] != "teacher" or not teacher_done)]
        models += [{**m, "label": m["label"] if m["of"] == "teacher" else f"{name} int8",
                    "predictions": moved(folder, m["predictions"])} for m in ours]
        for role, message in (quantized.get("refused") or {}).items():
            if role != "teacher" or not teacher_done:
                refused["teacher" if role == "teacher" else name] = message
        teacher_done = teacher_done or bool(quantized)
    return sorted(models, key=lambda m: m["of"] != "teacher"), refused

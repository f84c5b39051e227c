"""Tiny real pipeline runs for the pipeline and report tests: a random, narrow MODNet
teacher and a recipe at 64x64 with a few dozen training samples."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

import modnet_prune as mp


def small_arch() -> mp.Arch:
    """The official structure at a quarter of most widths: every stage and coupling
    stays, tracing and export stay exercised, and everything runs in seconds."""
    official = mp.Arch()
    return mp.Arch(stem=16, stages=tuple(max(8, s // 2) for s in official.stages),
                   expansion=tuple(e // 4 for e in official.expansion), last=256, se_hidden=64,
                   heads={k: max(8, w // 2) for k, w in official.heads.items()})


def make_teacher(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    path = folder / "teacher.safetensors"
    mp.save(mp.MODNet(small_arch()), path)
    return path


def tiny_recipe(teacher: Path, **changes) -> dict:
    recipe = {
        "name": "tiny", "description": "test run", "teacher": str(teacher), "seed": 0,
        "prune": {"method": "target_macs", "target_macs": 0.5, "iterations": 2, "round_to": 4},
        "recalibrate_bn": 1,
        "finetune": {"samples": 32, "batch_size": 8, "eval_every_samples": 8, "workers": 0},
        "distill": {"matte": 1.0, "lr8x": 1.0},
        "data": {"train": "synthetic:32@64+seed0", "eval": "synthetic:4@64+seed5000"},
        "sizes": {"train": 64, "eval": 64, "benchmark": 64},
        "benchmark": {"repeat": 2, "warmup": 1, "threads": 1},
        "report": {"samples": 2},
    }
    for section, value in changes.items():
        if isinstance(value, dict) and isinstance(recipe.get(section), dict):
            recipe[section] = {**recipe[section], **value}
        else:
            recipe[section] = value
    return recipe


def write_recipe(folder: Path, recipe: dict, name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path

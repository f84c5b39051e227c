"""The run folder: resolved config, JSON-lines log, and atomic checkpoints.

Layout of DIR:
  config.json        the resolved configuration (checked again on --resume)
  log.jsonl          one row per logged step ({"kind": "train"|"eval", "step": ...})
  last.state.pt      everything needed to continue: weights (+adapters), optimizer, RNG,
                     step, best metric. Self-contained, so one atomic rename commits a
                     checkpoint: a kill at any moment leaves the previous one intact.
  last.safetensors   the same weights as a loadable model (modnet_prune.load)
  best.safetensors   the model with the lowest evaluation MAD so far
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open

from ..errors import CheckpointError, UserError
from ..model.io import save
from ..files import write_atomic

CONFIG, LOG, STATE = "config.json", "log.jsonl", "last.state.pt"
LAST, BEST = "last.safetensors", "best.safetensors"
# May change between a run and its --resume; everything else must match.
RESUMABLE_CHANGES = {"steps", "epochs", "log_every", "eval_every", "checkpoint_every",
                     "workers", "threads", "device", "progress", "world_size"}


def rng_state() -> dict:
    """This process's RNG states, as types torch.load(weights_only=True) accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


class RunDir:
    """Reads and writes one run folder. Only rank 0 should write."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def has_run(self) -> bool:
        return self.file(CONFIG).exists() or self.file(STATE).exists()

    # --- config -------------------------------------------------------------------
    def start(self, config: dict, resume: bool) -> None:
        """Create the folder for a new run, or check `config` against the run to resume."""
        if resume and self.file(CONFIG).exists():
            self._check_same(config)
        elif self.has_run() and not resume:
            raise UserError(f"{self.path} already holds a run: pass --resume to continue "
                            "it, or choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        write_atomic(self.file(CONFIG), lambda tmp: Path(tmp).write_text(text))

    def _check_same(self, config: dict) -> None:
        try:
            saved = json.loads(self.file(CONFIG).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{self.file(CONFIG)}: unreadable ({e})") from None
        changed = sorted(k for k in set(saved) | set(config)
                         if k not in RESUMABLE_CHANGES and saved.get(k) != config.get(k))
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed[:4])
            raise UserError(f"--resume with different settings than the run in {self.path} "
                            f"({diffs}); use the original settings or another --out")

    # --- log ------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """Logged rows; a torn last line (killed mid-write) is ignored."""
        if not self.file(LOG).exists():
            return []
        rows = []
        for line in self.file(LOG).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def truncate_log(self, step: int) -> None:
        """Drop rows after `step`, so a resumed run never logs a step twice."""
        kept = [r for r in self.rows() if r.get("step", 0) <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        write_atomic(self.file(LOG), lambda tmp: Path(tmp).write_text(text))

    def log(self, row: dict) -> None:
        with open(self.file(LOG), "a") as f:
            f.write(json.dumps(row) + "\n")

    # --- checkpoints ----------------------------------------------------------------
    def save_state(self, state: dict) -> None:
        write_atomic(self.file(STATE), lambda tmp: torch.save(state, tmp))

    def load_state(self) -> dict | None:
        path = self.file(STATE)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: say which, never a traceback
            raise CheckpointError(f"{path}: unreadable training state ({type(e).__name__}); "
                                  "delete it to restart the run") from None

    def best_file_mad(self) -> float | None:
        """The MAD recorded in best.safetensors, if there is one."""
        path = self.file(BEST)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                return float((f.metadata() or {})["mad"])
        except (SafetensorError, OSError, KeyError, ValueError):
            return None  # unreadable: the next better evaluation replaces it

    def save_model(self, model, name: str, **metadata) -> Path:
        return save(model, self.file(name), **metadata)

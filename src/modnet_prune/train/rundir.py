"""The run folder: resolved config, JSON-lines log, and atomic checkpoints.

Layout of DIR:
  config.json        the resolved configuration (checked again on --resume)
  log.jsonl          one row per logged step ({"kind": "train"|"eval", "step": ...})
  last.state.pt      everything needed to continue: weights (+adapters), optimizer, RNG,
                     step, best metric. Self-contained, so one atomic rename commits a
                     checkpoint: a kill at any moment leaves the previous one intact.
  last.safetensors   the same weights as a loadable model (modnet_prune.load)
  best.safetensors   the model with the lowest evaluation MAD so far
  .lock              who is writing the folder now ({pid, host, started}); see RunLock
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open

from ..errors import CheckpointError, UserError
from ..model.io import save
from ..files import remove_stale_temps, write_atomic

CONFIG, LOG, STATE, LOCK = "config.json", "log.jsonl", "last.state.pt", ".lock"
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """Exclusive use of a run folder: `DIR/.lock` names the process writing it.

    A second writer gets one line naming the folder and the holder. A lock whose process
    is gone (killed, machine rebooted) is taken over; one from another host cannot be
    checked and is left to the user. The lock file appears complete or not at all (a
    hard link of a written file), so a reader never sees a half-written holder.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.me = {"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def __enter__(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fresh = self.folder / f"{LOCK}.{os.getpid()}.new"
        fresh.write_text(json.dumps(self.me))
        try:
            for _ in range(3):
                if self._create(fresh):
                    return self
                self._take_over_if_stale()
            raise UserError(f"{self.folder}: could not take the run lock {self.path}")
        finally:
            fresh.unlink(missing_ok=True)

    def _create(self, fresh: Path) -> bool:
        try:
            os.link(fresh, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (FAT, some network shares): exclusive create
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.me))
            return True

    def _holder(self) -> dict | None:
        return self._read(self.path)

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # not ours to judge: an unreadable lock counts as held

    def _take_over_if_stale(self) -> None:
        holder = self._holder()
        if holder is None:
            return  # released meanwhile: try again
        pid, host = holder.get("pid"), holder.get("host")
        if host == self.me["host"] and isinstance(pid, int) and not _alive(pid):
            stale = self.folder / f"{LOCK}.stale.{os.getpid()}"
            try:
                os.rename(self.path, stale)  # one taker wins; the others see it gone
            except FileNotFoundError:
                return
            if self._read(stale) != holder:  # another taker's fresh lock: put it back
                with contextlib.suppress(FileExistsError):
                    os.link(stale, self.path)
            stale.unlink()
            return
        where = f"process {pid} on {host}, since {holder.get('started')}" if holder else \
            f"an unreadable {LOCK}"
        raise UserError(f"{self.folder} is in use by {where}; wait for that run to end or "
                        f"choose another --out (if it is gone, delete {self.path})")

    def __exit__(self, *exc) -> None:
        if self._holder() == self.me:
            self.path.unlink(missing_ok=True)


def _with_defaults(saved: dict, defaults: dict) -> dict:
    """`saved` with the keys it lacks taken from `defaults`, section by section."""
    merged = dict(saved)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _with_defaults(merged[key], value)
    return merged


def _identity(value):
    """What must match on --resume: a file is its content, so a model recorded as
    {"path", "sha256"} matches the same file reached by another path (relative, moved)."""
    if isinstance(value, dict) and "sha256" in value:
        return value["sha256"]
    return value


class RunDir:
    """Reads and writes one run folder. Only rank 0 should write."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def has_run(self) -> bool:
        """A finished step is saved here (or, for compress, in an iteration's folder). A
        folder left by a run that failed during start-up holds none: not a run to protect."""
        return self.file(STATE).exists() or any(self.path.glob(f"*/{STATE}"))

    # --- config -------------------------------------------------------------------
    def start(self, config: dict, resume: bool, defaults: dict | None = None) -> None:
        """Create the folder for a new run, or check `config` against the run to resume
        (a key the saved config lacks, written before that key existed, reads as its value
        in `defaults`, nested sections included). Call it holding the folder's RunLock: it
        also clears temp files of killed runs."""
        if self.has_run():
            if not resume:
                raise UserError(f"{self.path} already holds a run: pass --resume to continue "
                                "it, or choose another --out")
            if self.file(CONFIG).exists():
                self._check_same(config, defaults or {})
        self.path.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path)
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        write_atomic(self.file(CONFIG), lambda tmp: Path(tmp).write_text(text))

    def _check_same(self, config: dict, defaults: dict) -> None:
        try:
            saved = _with_defaults(json.loads(self.file(CONFIG).read_text()), defaults)
        except (OSError, ValueError, TypeError) as e:  # ValueError: bad JSON, or not an object
            raise UserError(f"{self.file(CONFIG)}: unreadable ({e})") from e
        changed = sorted(k for k in set(saved) | set(config) if k not in RESUMABLE_CHANGES
                         and _identity(saved.get(k)) != _identity(config.get(k)))
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
                                  "delete it to restart the run") from e

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

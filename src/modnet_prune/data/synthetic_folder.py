"""Writing synthetic portraits to disk in the PPM-100 layout (image/*.png, matte/*.png).

Resumable and idempotent: a sample whose two files exist is skipped, files are written
atomically, and `synthetic.json` records the generator settings so that a folder never
mixes samples from different seeds, sizes or generator versions.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm

from ..errors import UserError
from ..memory import require_synthetic
from ..files import write_atomic
from .images import write_png
from .synthetic import GENERATOR_VERSION, render_portrait, sample_name

MANIFEST = "synthetic.json"


def write_synthetic_folder(out: str | Path, count: int, size: int, seed: int = 0,
                           progress: bool = False) -> dict:
    """Write samples seed..seed+count-1 at size x size; returns what was done."""
    if count < 1 or size < 32 or seed < 0:
        raise UserError(f"need --count >= 1, --size >= 32 and --seed >= 0 "
                        f"(got {count}, {size}, {seed})")
    require_synthetic(size, f"--size {size}: each {size}x{size} portrait")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    settings = {"generator": "modnet-prune synthetic portraits", "version": GENERATOR_VERSION,
                "size": size, "seed": seed}
    _check_manifest(out / MANIFEST, settings)
    (out / "image").mkdir(parents=True, exist_ok=True)
    (out / "matte").mkdir(exist_ok=True)
    write_atomic(out / MANIFEST, lambda tmp: Path(tmp).write_text(
        json.dumps({**settings, "count": max(count, _recorded_count(out / MANIFEST))}, indent=2)))
    written, start = 0, time.perf_counter()
    for index in tqdm(range(count), desc="synth", unit="img", disable=not progress):
        name = sample_name(seed + index) + ".png"
        image_path, matte_path = out / "image" / name, out / "matte" / name
        if image_path.exists() and matte_path.exists():
            continue
        image, alpha = render_portrait(seed + index, size)
        write_png(matte_path, alpha)
        write_png(image_path, image)
        written += 1
    return {"out": str(out), "count": count, "written": written, "skipped": count - written,
            "size": size, "seed": seed, "seconds": round(time.perf_counter() - start, 3)}


def _recorded_count(path: Path) -> int:
    return json.loads(path.read_text()).get("count", 0) if path.exists() else 0


def _check_manifest(path: Path, settings: dict) -> None:
    if not path.exists():
        if path.parent.is_dir() and any((path.parent / d).exists() for d in ("image", "matte")):
            raise UserError(f"{path.parent}: holds image/ or matte/ but no {MANIFEST}; "
                            "refusing to mix synthetic samples into it")
        return
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable; remove it or choose another --out") from e
    different = {k: (recorded.get(k), v) for k, v in settings.items() if recorded.get(k) != v}
    if different:
        what = ", ".join(f"{k} {old} (asked {new})" for k, (old, new) in different.items())
        raise UserError(f"{path.parent}: already holds synthetic samples with {what}; "
                        "choose another --out")

"""The shipped teachers, models/modnet-synthetic*.safetensors, know synthetic portraits only.

It was trained on `modnet_prune.data`'s generated portraits (no real data could be had
where it was built) and does not matte photographs. Commands that use it, or a model
distilled from it, on other data print `synthetic_teacher_note` once.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import SafetensorError, safe_open

from ..files import sha256_file

# sha256 of every released shipped teacher (their metadata is checked too, so a re-trained
# teacher with the same kind of metadata is recognised without a new entry)
SYNTHETIC_TEACHER_SHA256 = frozenset({
    "b9a67db3e2ab78732ee1d64b9f8119a74874a409e02d1f71be0b4f2cde95fdd0",  # -128: 128² only
    "066e904e1fbbcf2f50b4d32ea92567a6eae36ff6b0d6141fd859b6a2317657f5",  # 128² to 512²
})


def _metadata(path: Path) -> dict[str, str]:
    if path.suffix.lower() == ".onnx":
        try:
            import onnx
            return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception:  # noqa: BLE001 - an unreadable file is reported by its real reader
            return {}
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return {}  # official .ckpt/.pth files: not ours


def trained_on_synthetic(path: str | os.PathLike) -> bool:
    """Whether a checkpoint or ONNX file is the shipped synthetic teacher, or was made from
    it (a student whose teacher it was, an export of either), by hash or by metadata."""
    path = Path(path)
    if not path.is_file():
        return False
    meta = _metadata(path)
    hashes = {meta.get("source_sha256"), meta.get("teacher_sha256")}
    if path.suffix.lower() != ".onnx":
        hashes.add(sha256_file(path))
    return bool(hashes & SYNTHETIC_TEACHER_SHA256) or _synthetic_metadata(meta)


def _synthetic_metadata(meta: dict[str, str]) -> bool:
    training = meta.get("training_run", "")
    try:
        training = json.loads(training) if training.startswith('"') else training
    except json.JSONDecodeError:
        pass
    return (str(training).startswith("synthetic:")
            or "trained on synthetic portraits" in meta.get("description", ""))


def synthetic_teacher_note(path: str | os.PathLike) -> str:
    return (f"note: {path} was trained on synthetic portraits only and does not matte "
            "photographs; for real images pass the official MODNet checkpoint "
            "(modnet_photographic_portrait_matting.ckpt) as --checkpoint/--teacher, or "
            "convert it with `modnet-prune convert`")

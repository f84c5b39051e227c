"""Load any MODNet checkpoint; save our one-file safetensors format.

Accepted inputs: the official release (`module.`-prefixed state dict), plain state dicts
(optionally under "state_dict" or "model"), and our `.safetensors` files, whose metadata
carry the `Arch`. Pickles are only ever read with `weights_only=True`.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .. import __version__
from ..errors import CheckpointError, UserError
from ..files import sha256_file, write_atomic
from .arch import BLOCKS, HEAD_CONVS, Arch
from .modnet import MODNet

FORMAT_NAME, FORMAT_VERSION = "modnet-prune", "1"
TRAIN_SIZES = "train_sizes"  # metadata: the square input sizes the weights were trained at
SHARED_PREFIX, ALIAS_PREFIX = "backbone.", "lr_branch.backbone."
_SAFETENSORS_MAGIC_MAX_HEADER = 100 * 2**20


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return 0 < size < _SAFETENSORS_MAGIC_MAX_HEADER and head[8:9] == b"{"


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint file, in official key layout (no `module.`)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        if _is_safetensors(path):
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            return load_file(str(path)), metadata
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(_python_objects_message(path, e)) from e
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first[:200]})") from e
    except Exception as e:  # the unpickler raises many types for junk files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from e
    return _unwrap_state_dict(obj, path), {}


def _python_objects_message(path: Path, error: Exception) -> str:
    """weights_only refusing a pickle: either junk, or a file that holds Python objects
    (a Lightning/training checkpoint with optimizer, hyper-parameters, ...)."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    if not found:
        return f"{path}: not a readable checkpoint (UnpicklingError)"
    return (f"{path}: holds Python objects besides tensors (such as {found[1]}), which are "
            "not loaded for safety (weights_only). If you trust the file, extract its state dict: "
            "python -c \"import torch; c = torch.load('IN', weights_only=False); "
            "torch.save(c.get('state_dict', c), 'OUT.pth')\" and load OUT.pth")


def stored_dtype(path: str | os.PathLike) -> torch.dtype:
    """The precision a checkpoint stores its weights in: the one float dtype all its float
    tensors share, else float32 (so a tool that only removes channels keeps a half file half)."""
    state, _ = read_checkpoint(path)
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def _unwrap_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _dedup_shared_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep one copy of the shared backbone (`backbone.`), checking the alias agrees."""
    alias = {k[len(ALIAS_PREFIX):]: v for k, v in state.items() if k.startswith(ALIAS_PREFIX)}
    out = {k: v for k, v in state.items() if not k.startswith(ALIAS_PREFIX)}
    for suffix, tensor in alias.items():
        key = "backbone." + suffix
        if key not in out:
            out[key] = tensor
        elif out[key].shape != tensor.shape or not torch.equal(out[key], tensor):
            raise CheckpointError(f"{key} and {ALIAS_PREFIX}{suffix} differ, but MODNet shares "
                                  "one backbone between them")
    return out


def infer_arch(state: dict[str, torch.Tensor]) -> Arch:
    """Widths from tensor shapes, for state dicts in the official layout (possibly pruned)."""
    def rows(key: str) -> int:
        if key not in state:
            raise CheckpointError(f"missing key {key!r}: cannot infer widths "
                                  "(is this a MODNet checkpoint?)")
        return int(state[key].shape[0])

    f = "backbone.model.features."
    stage_out: dict[int, int] = {}
    for index, (stage, _, _) in enumerate(BLOCKS, start=1):
        last_conv = "conv.3" if index == 1 else "conv.6"
        stage_out.setdefault(stage, rows(f"{f}{index}.{last_conv}.weight"))
    heads = {n: rows(f"{n}.layers.0.weight") for n in HEAD_CONVS}
    ibn_bn = {n: rows(f"{n}.layers.1.bnorm.weight") for n in HEAD_CONVS}
    return Arch(
        stem=rows(f + "0.0.weight"),
        stages=tuple(stage_out[s] for s in range(len(stage_out))),
        expansion=tuple(rows(f"{f}{i}.conv.0.weight") for i in range(2, len(BLOCKS) + 1)),
        last=rows(f + "18.0.weight"),
        se_hidden=rows("lr_branch.se_block.fc.0.weight"),
        heads=heads,
        ibn_bn=ibn_bn,
    )


def _check_keys(model: MODNet, state: dict[str, torch.Tensor], path) -> None:
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(ALIAS_PREFIX)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [(missing, "missing keys"), (unexpected, "unexpected keys"), (wrong, "mis-shaped")]
    for items, what in problems:
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            raise CheckpointError(f"{path}: {len(items)} {what}: {', '.join(items[:3])}{more}")


def _check_values(state: dict[str, torch.Tensor], source: str) -> None:
    """Weights that load but cannot give a matte: NaN/Inf anywhere, or a BatchNorm
    variance below zero (its square root is NaN in every forward)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source}: non-finite values (NaN/Inf) in {', '.join(bad[:3])}")
    negative = [k for k, v in state.items() if k.endswith("running_var") and (v < 0).any()]
    if negative:
        raise CheckpointError(f"{source}: negative BatchNorm variance in "
                              f"{', '.join(negative[:3])}")


def model_from_state_dict(state: dict[str, torch.Tensor], arch: Arch | None = None,
                          source: str = "state dict") -> MODNet:
    """Build a MODNet (widths from `arch` or inferred) and load `state` strictly."""
    state = _dedup_shared_backbone(state)
    _check_values(state, source)
    inferred = infer_arch(state)
    if arch is not None and arch != inferred:  # before building: a crafted width costs GBs
        wrong = [f"{k} {ours} (tensors say {theirs})" for k, (theirs, ours) in
                 arch.diff(inferred).items()]
        raise CheckpointError(f"{source}: its Arch metadata disagree with its tensor shapes: "
                              f"{', '.join(wrong[:3])}" + (f" and {len(wrong) - 3} more"
                                                           if len(wrong) > 3 else ""))
    model = MODNet(inferred)
    _check_keys(model, state, source)
    full = dict(state)
    full.update({ALIAS_PREFIX + k[len(SHARED_PREFIX):]: v for k, v in state.items()
                 if k.startswith(SHARED_PREFIX)})
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}  # once: it walks every module
    model.load_state_dict({k: v.to(dtypes[k]) for k, v in full.items()})
    return model.eval()


def load(path: str | os.PathLike, with_metadata: bool = False):
    """Load a MODNet from any supported checkpoint file; eval mode, float32."""
    state, metadata = read_checkpoint(path)
    arch = None
    if "arch" in metadata:
        try:
            arch = Arch.from_json(metadata["arch"])
        except UserError as e:
            raise CheckpointError(f"{path}: bad Arch in metadata: {e}") from e
    model = model_from_state_dict(state, arch, source=str(path))
    return (model, metadata) if with_metadata else model


def train_sizes(metadata: dict[str, str]) -> list[int] | None:
    """The training sizes a checkpoint's metadata record, or None when they are unknown
    (files from before the key existed, official releases, unreadable values)."""
    try:
        sizes = json.loads(metadata[TRAIN_SIZES])
    except (KeyError, TypeError, json.JSONDecodeError):
        return None
    if not isinstance(sizes, list) or not sizes or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        return None
    return sorted(set(sizes))


def read_train_sizes(path: str | os.PathLike) -> list[int] | None:
    """`train_sizes` of a checkpoint file without loading its tensors (None: unknown,
    including every file that is not one of our .safetensors)."""
    path = Path(path)
    if not path.is_file() or not _is_safetensors(path):
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            return train_sizes(f.metadata() or {})
    except (SafetensorError, OSError):
        return None


def untrained_size_warning(path: str | os.PathLike, size: int | None) -> str | None:
    """One line when `path`'s metadata say it was trained at sizes whose range excludes the
    evaluation `size` (None: the MODNet protocol, short side 512); None when the sizes are
    unknown or cover it. A model's accuracy is only known where it was trained."""
    sizes = read_train_sizes(path)
    at, where = (size, f"{size}x{size}") if size else (512, "the MODNet protocol (short side 512)")
    if sizes is None or sizes[0] <= at <= sizes[-1]:
        return None
    trained = ", ".join(f"{s}x{s}" for s in sizes)
    return (f"{path} was trained at {trained} (metadata train_sizes) but is evaluated at "
            f"{where}: its accuracy there is unknown to its training")


def save(model: MODNet, path: str | os.PathLike, dtype: torch.dtype | None = None,
         **metadata) -> Path:
    """Write `model` as one .safetensors file, atomically; metadata values become JSON
    (None values are left out: an unknown is not recorded)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path.parent}: output folder does not exist")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
               if not k.startswith(ALIAS_PREFIX)}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:  # a file that cannot be loaded back is worse than none
        raise UserError(f"{path}: not saved, the model has non-finite values (NaN/Inf) in "
                        f"{', '.join(bad[:3])}" + (f" and {len(bad) - 3} more" if len(bad) > 3
                                                   else ""))
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "tool_version": __version__, "arch": model.arch.to_json()}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()
                 if v is not None})
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return path



"""`model_costs`: the exact cost of a MODNet, unique params, conv+linear MACs per part and
per layer, bytes (what `modnet-prune analyze` prints and the pipeline reports).

Costs come from `graph.cost.layer_costs` run on a shape-only (meta-device) copy of the
model (`graph.cost.shape_only`), so any input size costs the same fraction of a second
and needs no activation memory. Parts are the top-level modules (`backbone`, `lr_branch`, `hr_branch`,
`f_branch`); the shared backbone is listed once, under `backbone`, so `lr_branch` means
the LR branch without it. Only the layers that run for the matte count in `macs`; the
training-only heads appear with `macs` 0 and their cost in `macs_train`.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..graph.cost import count_params, layer_costs, shape_only
from ..model.inputs import Size, parse_size


def part_of(name: str) -> str:
    """The part a parameter or layer belongs to: its top-level module."""
    return name.split(".", 1)[0]


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the unique tensors (params and buffers) stored as fp32 and as fp16."""
    tensors = [t for _, t in model.named_parameters()] + [t for _, t in model.named_buffers()]
    fixed = sum(t.numel() * t.element_size() for t in tensors if not t.is_floating_point())
    floats = sum(t.numel() for t in tensors if t.is_floating_point())
    return {"fp32": 4 * floats + fixed, "fp16": 2 * floats + fixed}


def _layout(module: nn.Module) -> str:
    """Short shape of a conv/linear layer, e.g. "1280->96 k5", "96 dw k3 s2", "1280->320"."""
    if isinstance(module, nn.Linear):
        return f"{module.in_features}->{module.out_features}"
    m: nn.Conv2d = module
    k, s = m.kernel_size[0], m.stride[0]
    if m.groups > 1 and m.groups == m.in_channels == m.out_channels:
        text = f"{m.in_channels} dw k{k}"
    else:
        text = f"{m.in_channels}->{m.out_channels} k{k}" + (f" g{m.groups}" if m.groups > 1 else "")
    return text + (f" s{s}" if s > 1 else "")


def _layers(model: nn.Module, size: Size) -> list[dict]:
    meta = shape_only(model)
    img = torch.zeros(1, 3, *size, device="meta")
    inference = {c.name: c.macs for c in layer_costs(meta, img)}
    training = layer_costs(meta, img, inference=False)
    total = sum(inference.values())
    layers = [{"name": c.name, "type": c.type, "params": c.params,
               "macs": inference.get(c.name, 0), "share": inference.get(c.name, 0) / total,
               "macs_train": c.macs, "layout": _layout(model.get_submodule(c.name))}
              for c in training]
    layers.sort(key=lambda layer: (-layer["macs"], -layer["macs_train"]))  # stable: ties keep order
    cumulative = 0
    for layer in layers:
        cumulative += layer["macs"]
        layer["cum_share"] = cumulative / total
    return layers


def _parts(model: nn.Module, layers: list[dict], macs: int) -> dict[str, dict]:
    parts: dict[str, dict] = {}
    for name, _ in model.named_children():
        parts[name] = {"params": 0, "macs": 0, "macs_train": 0}
    for name, p in model.named_parameters():  # a shared tensor is listed once, first name
        parts[part_of(name)]["params"] += p.numel()
    for layer in layers:
        part = parts[part_of(layer["name"])]
        part["macs"] += layer["macs"]
        part["macs_train"] += layer["macs_train"]
    parts = {k: v for k, v in parts.items() if v["params"] or v["macs_train"]}
    for part in parts.values():
        part["share"] = part["macs"] / macs
    return parts


def model_costs(model: nn.Module, size: int | str | Size = 512,
            path: str | os.PathLike | None = None) -> dict:
    """Params, MACs (inference and training graph), per-part and per-layer costs, bytes.

    `model` is any MODNet (pruned or not); `path`, when given, is the file it came from,
    whose size on disk is reported as `file_bytes`. Batch 1; FLOPs = 2 x MACs.
    """
    h, w = parse_size(size)
    layers = _layers(model, (h, w))
    macs = sum(layer["macs"] for layer in layers)
    return {
        "checkpoint": None if path is None else str(path),
        "size": [h, w],
        "params": count_params(model),
        "macs": macs,
        "macs_train": sum(layer["macs_train"] for layer in layers),
        "file_bytes": None if path is None else os.path.getsize(path),
        "weight_bytes": weight_bytes(model),
        "parts": _parts(model, layers, macs),
        "layers": layers,
    }

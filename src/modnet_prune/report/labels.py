"""Where each number of a pipeline summary was measured, as text for tables and figures.

A summary has one operating point, the deployment size `size` (latency, cost and the main
accuracy); the intermediate models and the training curves are scored at
`evaluation.eval_size`, which every label that shows them names.
"""
from __future__ import annotations


def size_text(value) -> str:
    """512 or [512, 512] as 512×512; None is the MODNet inference protocol."""
    if value is None:
        return "the MODNet protocol"
    return "×".join(map(str, value)) if isinstance(value, (list, tuple)) else f"{value}×{value}"


def eval_size_text(summary: dict) -> str:
    """Where the variants and the training curves were scored (sizes.eval)."""
    ev = summary["evaluation"]
    return size_text(ev.get("eval_size", ev["size"]))


def other_size_text(summary: dict) -> str | None:
    """sizes.eval when it differs from the deployment size (its MAD and Grad are then shown
    beside the deployment accuracy, labelled), else None."""
    ev = summary["evaluation"]
    return eval_size_text(summary) if ev.get("eval_size", ev["size"]) != ev["size"] else None

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


def measured_text(size, input_text: str | None) -> str:
    """Where an evaluation ran: its size, or for a null size (a synthetic set's own size, or
    the MODNet protocol on photos) what the evaluation recorded as its input."""
    if size is not None or not input_text:
        return size_text(size)
    fixed = input_text.removeprefix("fixed ")
    return fixed.replace("x", "×") if fixed != input_text else input_text


def deploy_size_text(summary: dict) -> str:
    """Where the main accuracy (teacher and student) was measured."""
    ev = summary["evaluation"]
    return measured_text(ev["size"], ev.get("input"))


def eval_size_text(summary: dict) -> str:
    """Where the variants and the training curves were scored (sizes.eval)."""
    ev = summary["evaluation"]
    if "eval_size" not in ev:
        return deploy_size_text(summary)
    return measured_text(ev["eval_size"], ev.get("eval_input"))


def other_size_text(summary: dict) -> str | None:
    """sizes.eval when it differs from the deployment size (its MAD and Grad are then shown
    beside the deployment accuracy, labelled), else None."""
    other = eval_size_text(summary)
    return other if other != deploy_size_text(summary) else None

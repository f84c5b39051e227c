"""Structured pruning: importance, allocation, channel surgery and the exactness check.

`prune(model, ratio=... | target_macs=... | plan=...)` returns a `PruneResult` whose
`.model` is physically smaller; `reconstruct(model, result, data)` refits the layers that
lost inputs to the original's outputs; `describe_groups(model)` lists the channel groups.
"""
from .api import PruneResult, describe_groups, model_graph, prune
from .importance import CRITERIA, importance
from .reconstruct import Reconstruction, reconstruct
from .verify import ExactnessError, check_exact, max_difference

__all__ = ["CRITERIA", "ExactnessError", "PruneResult", "check_exact", "describe_groups",
           "Reconstruction", "importance", "max_difference", "model_graph", "prune",
           "reconstruct"]

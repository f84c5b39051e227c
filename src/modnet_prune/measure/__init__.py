"""Measurements of models: exact costs (`model_costs`), side-by-side latency benchmarks
and latency profiling of a deployment target. Rendering them is `report/`'s job."""
from .costs import model_costs

__all__ = ["model_costs"]

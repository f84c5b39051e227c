"""Measurements of models: exact cost analysis and side-by-side latency benchmarks."""
from .analysis import analyze

__all__ = ["analyze"]

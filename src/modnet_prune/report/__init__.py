"""Measurements of models: exact cost analysis and side-by-side latency benchmarks."""
from .analysis import analyze, parse_size

__all__ = ["analyze", "parse_size"]

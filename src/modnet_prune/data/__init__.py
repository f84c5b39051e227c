"""Datasets, synthetic portraits and the MODNet inference protocol.

`open_dataset(spec, size=S, train=...)` is the one entry point: see `datasets` for the
spec syntax (synthetic:N@S[+seedK], a dataset folder, or images=DIR,alphas=DIR).
"""
from .datasets import (DataWarning, MattingDataset, RawSample, open_dataset, open_source,
                       spec_paths)
from .synthetic import render_portrait
from .synthetic_folder import write_synthetic_folder
from .transforms import trimap_from_alpha

__all__ = ["DataWarning", "MattingDataset", "RawSample", "open_dataset", "open_source",
           "render_portrait", "spec_paths", "trimap_from_alpha", "write_synthetic_folder"]

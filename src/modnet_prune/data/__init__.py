"""Datasets, synthetic portraits and the MODNet inference protocol."""

"""Other forms of the latency model, refitted to the measurements `profile` cached.

    python benchmarks/latency_refit.py [--cache FILE] [--predict NAME=CHECKPOINT ...] [--json]

`profile` keeps every timing it fitted the model to (the unpruned MODNet and its random
prunes, some held out). This refits three forms to the same training rows, without timing
anything: the shipped one (per layer kind: MACs, output and input elements, linear), the
same with every width padded up to a block of 16 channels (ONNX Runtime's NCHWc block on
AVX-512: would a 16 -> 8 cut save nothing?), and a roofline (per layer max(a * MACs,
b * elements) + c * elements: is a thin layer memory-bound?). It prints each form's error
on the held-out prunes and its predicted fraction of the unpruned latency for each
`--predict` checkpoint (a pruned model measured elsewhere). Default cache: ONNX Runtime
fp32, 2 threads, 512², this machine's CPU.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import least_squares  # noqa: E402

from modnet_prune import load  # noqa: E402
from modnet_prune.measure.latency import cache_path, target_for  # noqa: E402
from modnet_prune.model import Arch, MODNet  # noqa: E402
from modnet_prune.prune import prune  # noqa: E402
from modnet_prune.prune.latency import (FEATURES, KINDS, LatencyModel,  # noqa: E402
                                        features, layer_shapes)

BLOCK = 16


def padded_features(shapes, block: int) -> np.ndarray:
    """`prune.latency.features` of the kept widths, each rounded up to a multiple of `block`."""
    x = np.zeros(len(FEATURES))
    x[-1] = 1.0
    for s in shapes.values():
        pad = {role: -(-w // block) * block / w for role, w in s.widths.items()}
        if s.kind == "depthwise":
            pad["in"] = pad["out"]  # its groups are its channels
        macs = s.macs * float(np.prod([pad[role] for role in s.macs_scale_with]))
        base = KINDS.index(s.kind) * 3
        x[base:base + 3] += (macs, s.out_elements * pad["out"], s.in_elements * pad["in"])
    return x


def _roofline_terms(shapes) -> list[tuple[int, int, int]]:
    """(kind index, MACs, input + output elements) of each layer."""
    return [(KINDS.index(s.kind), s.macs, s.out_elements + s.in_elements) for s in shapes.values()]


def roofline_fit(shapes_list, ms):
    """Per kind k: a_k, b_k, c_k > 0 and a constant, least relative error."""
    layers = [_roofline_terms(shapes) for shapes in shapes_list]
    scale = np.array([1e-8] * 4 + [1e-6] * 4 + [1e-7] * 4 + [10.0])  # ms per unit, roughly

    def predict(theta, rows):
        a, b, c, constant = theta[0:4], theta[4:8], theta[8:12], theta[12]
        return constant + sum(max(a[k] * m, b[k] * e) + c[k] * e for k, m, e in rows)

    def residuals(z):
        theta = np.exp(z) * scale
        return np.array([predict(theta, rows) / t - 1 for rows, t in zip(layers, ms)])

    theta = np.exp(least_squares(residuals, np.zeros(len(scale))).x) * scale
    return lambda shapes: predict(theta, _roofline_terms(shapes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--predict", nargs="*", default=[], metavar="NAME=CHECKPOINT")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    path = args.cache or cache_path(target_for("onnxruntime", "fp32", 2, 512))
    if not path.is_file():
        raise SystemExit(f"no cached latency model at {path}: run `modnet-prune profile` first")
    if any("=" not in item for item in args.predict):
        raise SystemExit("--predict takes NAME=CHECKPOINT")
    cached = json.loads(path.read_text())
    rows, size = cached["measurements"], cached["target"]["size"]
    x = torch.zeros(1, 3, *size)
    reference = MODNet(Arch()).eval()
    shapes = [layer_shapes(prune(reference, plan=r["plan"], size=64).model if r["plan"]
                           else reference, x, inference=True) for r in rows]
    others = {name: layer_shapes(load(ckpt).eval(), x, inference=True)
              for name, ckpt in (item.split("=", 1) for item in args.predict)}
    ms = np.array([r["ms"] for r in rows])
    held = np.array([r["held_out"] for r in rows])
    train = np.flatnonzero(~held)

    def nnls_form(featurize):
        xs = [featurize(s) for s in shapes]
        fitted = LatencyModel.fit(None, [xs[i] for i in train], ms[train])
        return lambda s: fitted.predict(featurize(s))

    forms = {"linear (shipped)": nnls_form(features),
             f"widths padded to {BLOCK}": nnls_form(lambda s: padded_features(s, BLOCK)),
             "roofline": roofline_fit([shapes[i] for i in train], ms[train])}
    results = {}
    for name, predict in forms.items():
        predicted = np.array([predict(s) for s in shapes])
        error = predicted[held] / ms[held] - 1
        results[name] = {"held_out_mean_abs": float(np.abs(error).mean()),
                         "held_out_max_abs": float(np.abs(error).max()),
                         "held_out_bias": float(error.mean()),
                         "predicted_fraction": {n: predict(s) / predicted[0]
                                                for n, s in others.items()}}
    if args.json:
        print(json.dumps({"cache": str(path), "forms": results}, indent=2))
        return
    print(f"{path.name}: {int((~held).sum())} prunes fitted, {int(held.sum())} held out")
    print("| form | held-out mean / max (bias) | " + " | ".join(others) + " |")
    for name, r in results.items():
        cells = " | ".join(f"{v:.3f}" for v in r["predicted_fraction"].values())
        print(f"| {name} | {r['held_out_mean_abs']:.1%} / {r['held_out_max_abs']:.1%} "
              f"({r['held_out_bias']:+.1%}) | {cells} |")


if __name__ == "__main__":
    main()

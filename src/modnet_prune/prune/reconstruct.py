"""Layer-wise reconstruction: after channels are cut, refit the layers that read them so
their outputs match the original model's on calibration images.

A layer that lost input channels computes, from what is left, a worse version of the
original's output. Its best replacement, in the least-squares sense on real activations, is
a linear regression: for each kept output channel, predict the original layer's output from
the pruned model's input to the layer (im2col patches of a convolution, the features of a
linear layer, plus a constant for the bias). We solve it in closed form, ridge-damped
towards the layer's current weights, so a layer whose kept inputs already explain its output
stays where it is. Layers are refitted in execution order, each on inputs computed through
the layers refitted before it, so later fits correct what earlier cuts left.

Only the layers that lost inputs are refitted (refitting every later layer too measured
worse on held-out images: it overfits the calibration set). Grouped convolutions are left
alone (each of their filters reads only kept channels of its own group), as are layers with
more than `max_features` inputs per output (their normal equations would be too large).
Batch statistics downstream stay valid: each refitted layer aims at the original
pre-normalisation output.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..checks import AT_LEAST_ONE, POSITIVE
from ..errors import UserError
from .api import PruneResult, model_graph
from .harness import Harness, InputFn, harness_for
from .surgery import removed_positions

SAMPLES_PER_BATCH = 8192  # output positions drawn from each batch: enough rows, bounded cost
DAMPING = 1e-3            # ridge weight, relative to the mean feature energy
MAX_FEATURES = 4608       # inputs per output: a 4608^2 float64 system is 170 MB


@dataclass(frozen=True)
class LayerFit:
    """One refitted layer: relative residual ||XW - Y|| / ||Y|| against the original's
    output on the calibration samples, with the pruned weights and with the refitted ones."""

    layer: str
    features: int
    samples: int
    error_before: float
    error_after: float


@dataclass(frozen=True)
class Reconstruction:
    fitted: list[LayerFit]
    skipped: dict[str, str]   # layer that lost inputs -> why it was not refitted
    batches: int

    def to_dict(self) -> dict:
        return {"batches": self.batches, "fitted": [asdict(f) for f in self.fitted],
                "skipped": self.skipped}


class _Reached(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


@torch.no_grad()
def reconstruct(original: nn.Module, result: PruneResult, data: Iterable | None = None, *,
                batches: int = 8, samples: int = SAMPLES_PER_BATCH, damping: float = DAMPING,
                max_features: int = MAX_FEATURES, inputs: InputFn | None = None,
                seed: int = 0, progress: bool = False) -> Reconstruction:
    """Refit, in place, the layers of `result.model` that lost input channels when
    `original` was pruned into it; records the outcome in `result.reconstruction`.

    `data`: image batches (or dicts with "image") in the model's input normalisation; the
    first `batches` are used, held in memory. Without data: the harness's calibration set.
    """
    AT_LEAST_ONE.check(batches, "reconstruction batches")
    AT_LEAST_ONE.check(samples, "reconstruction samples")
    POSITIVE.check(damping, "reconstruction damping")
    harness = harness_for(original, inputs)
    pruned = result.model
    images = list(islice(harness.batches(pruned, data, "reconstruct"), batches))
    if not images:
        raise UserError("reconstruct: the data gave no batches")
    roles = removed_positions(model_graph(original, harness), result.removal)
    readers = [name for name, lost in roles.items() if lost.get("in")]
    lost_inputs, calls = _execution_order(pruned, harness, images[0], readers)
    fitted = []
    skipped = {name: "does not run in the forward pass" for name in readers
               if name not in calls}
    generator = torch.Generator().manual_seed(seed)
    for name in tqdm(lost_inputs, desc="reconstruct", unit="layer", disable=not progress):
        why = _unfittable(pruned.get_submodule(name), calls[name], max_features)
        if why:
            skipped[name] = why
            continue
        gone = roles[name].get("out", set())
        fitted.append(_refit(original, pruned, name, gone, images, harness, samples, damping,
                             generator))
    report = Reconstruction(fitted, skipped, len(images))
    result.reconstruction = report.to_dict()
    return report


def _execution_order(model: nn.Module, harness: Harness, inputs: tuple,
                     names: list[str]) -> tuple[list[str], dict[str, int]]:
    """The layers `names` in the order they first run, and how many times each runs per
    forward pass (layers that never run are left out)."""
    order, calls = [], {}

    def seen(name):
        def hook(module, args, output):
            calls[name] = calls.get(name, 0) + 1
            if calls[name] == 1:
                order.append(name)
        return hook

    hooks = [model.get_submodule(n).register_forward_hook(seen(n)) for n in names]
    try:
        model(*inputs, **harness.full)
    finally:
        for h in hooks:
            h.remove()
    return order, calls


def _unfittable(layer: nn.Module, calls: int, max_features: int) -> str | None:
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            return "grouped convolution: each filter reads only its own kept channels"
        if layer.padding_mode != "zeros":
            return f"padding mode {layer.padding_mode!r}"
    elif not isinstance(layer, nn.Linear):
        return f"{type(layer).__name__} has no least-squares refit"
    if calls > 1:
        return f"runs {calls} times per forward pass (shared weights)"
    features = _features(layer)
    if features > max_features:
        return f"{features} inputs per output > {max_features}"
    return None


def _features(layer: nn.Module) -> int:
    fan_in = layer.weight[0].numel()
    return fan_in + (layer.bias is not None)


def _refit(original, pruned, name, gone_out, images, harness, samples, damping,
           generator) -> LayerFit:
    layer = pruned.get_submodule(name)
    width = original.get_submodule(name).weight.shape[0]
    kept_out = [k for k in range(width) if k not in gone_out]
    k = _features(layer)
    xtx = torch.zeros(k, k, dtype=torch.float64)
    xty = torch.zeros(k, len(kept_out), dtype=torch.float64)
    yy, rows = 0.0, 0
    for inputs in images:
        x = _capture(pruned, name, inputs, harness, want="input")
        y = _capture(original, name, inputs, harness, want="output")
        a, b = _rows(layer, x, y, samples, generator)
        b = b[:, kept_out]
        xtx += a.T @ a
        xty += a.T @ b
        yy += float(b.pow(2).sum())
        rows += len(a)
    w0 = _as_matrix(layer)
    ridge = damping * xtx.diagonal().mean() * torch.eye(k, dtype=torch.float64)
    w = torch.linalg.solve(xtx + ridge, xty + ridge @ w0)
    _write(layer, w)

    def error(m):  # ||A m - B|| / ||B|| from the accumulated normal equations
        sq = (m * (xtx @ m)).sum() - 2 * (m * xty).sum() + yy
        return float(sq.clamp_min(0).sqrt() / max(yy, 1e-30) ** 0.5)

    return LayerFit(name, k, rows, error(w0), error(w))


def _capture(model: nn.Module, name: str, inputs: tuple, harness: Harness,
             want: str) -> torch.Tensor:
    """The input or output of layer `name` on `inputs`, stopping the forward pass there."""
    box = []

    def hook(module, args, output):
        box.append(args[0] if want == "input" else output)
        raise _Reached

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        model(*inputs, **harness.full)
    except _Reached:
        pass
    finally:
        handle.remove()
    return box[0]


def _rows(layer: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, targets) at `samples` random output positions of the batch: im2col
    patches of a convolution (ordered as `weight.flatten(1)`), a linear layer's inputs;
    with a column of ones when the layer has a bias."""
    if isinstance(layer, nn.Linear):
        a, b = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        pick = torch.randperm(len(a), generator=generator)[:samples].to(a.device)
        a, b = a[pick], b[pick]
    else:
        n, _, h, w = y.shape
        pick = torch.randperm(n * h * w, generator=generator)[:samples].to(y.device)
        i, oy, ox = pick // (h * w), pick // w % h, pick % w
        b = y[i, :, oy, ox]
        (ph, pw), (sh, sw), (dh, dw) = layer.padding, layer.stride, layer.dilation
        padded = F.pad(x, (pw, pw, ph, ph))
        kh, kw = layer.kernel_size
        taps = [padded[i, :, oy * sh + r * dh, ox * sw + c * dw]
                for r in range(kh) for c in range(kw)]        # each (samples, C_in)
        a = torch.stack(taps, dim=2).flatten(1)              # (samples, C_in * kh * kw)
    a, b = a.double().cpu(), b.double().cpu()
    if layer.bias is not None:
        a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], dim=1)
    return a, b


def _as_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weights as the (features, outputs) matrix the regression solves for."""
    w = layer.weight.detach().flatten(1).double().cpu()
    if layer.bias is not None:
        w = torch.cat([w, layer.bias.detach().double().cpu()[:, None]], dim=1)
    return w.T


def _write(layer: nn.Module, w: torch.Tensor) -> None:
    if layer.bias is not None:
        layer.bias.copy_(w[-1].to(layer.bias))
        w = w[:-1]
    layer.weight.copy_(w.T.reshape(layer.weight.shape).to(layer.weight))

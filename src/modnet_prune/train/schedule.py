"""Learning-rate schedules (pure functions of the step, so resuming needs only the step)
and the MACs schedule of iterative pruning."""
from __future__ import annotations

import math
import random

from ..checks import AT_LEAST_ONE, KEEP_FRACTION
from ..errors import UserError

LR_SCHEDULES = ("cosine", "step", "constant")
PRUNE_SCHEDULES = ("linear", "cubic")


def lr_at(step: int, total: int, *, lr: float, schedule: str = "cosine", warmup: int = 0,
          step_size: int | None = None, gamma: float = 0.1, min_lr: float = 0.0) -> float:
    """LR for optimizer step `step` (0-based) of `total`, peaking at `lr` (TrainConfig's
    fields of the same names).

    Linear warm-up from lr/warmup to lr over `warmup` steps, then:
    cosine decay towards `min_lr` (reached after the last step); `step`: x`gamma` every
    `step_size` steps (default total/4, the official 40 epochs with x0.1 every 10); or constant.
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    if schedule == "step":
        size = step_size or max(1, total // 4)
        return lr * gamma ** (step // size)
    if schedule == "cosine":  # reaches min_lr just after the last step, which still learns
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
    raise UserError(f"unknown schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")


def macs_targets(final: float, iterations: int, kind: str = "cubic") -> list[float]:
    """Fraction of the original MACs to keep after each of `iterations` prune steps.

    The removed fraction r_i grows to 1 - final: linearly (r_f * i/K) or cubically
    (r_f * (1 - (1 - i/K)^3), Zhu & Gupta 2017), which cuts most while the model is
    still redundant and takes small steps near the target.
    """
    KEEP_FRACTION.check(final, "target MACs fraction")
    AT_LEAST_ONE.check(iterations, "--iterations")
    if kind not in PRUNE_SCHEDULES:
        raise UserError(f"unknown prune schedule {kind!r}; choose linear or cubic")
    removed = 1.0 - final
    shape = (lambda t: t) if kind == "linear" else (lambda t: 1 - (1 - t) ** 3)
    return [1.0 - removed * shape(i / iterations) for i in range(1, iterations + 1)]


def step_seed(seed: int, step: int) -> int:
    """The seed of what optimizer step `step` draws (its size, its augmentations): a pure
    function of the run's seed and the step, so a resumed run draws the same."""
    return seed * 1_000_003 + step


def step_size_at(step: int, seed: int, sizes: list[int]) -> int:
    """The input size of optimizer step `step` in multi-scale training: uniform over
    `sizes`, drawn from `step_seed`."""
    return random.Random(step_seed(seed, step)).choice(sizes)

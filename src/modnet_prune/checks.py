"""The one validator of numbers: a `Range` says which values an option takes, and checking
a value against it gives one line naming the option (`--momentum nan: must be in [0, 1)`).
NaN and infinities fail every range. The rule for image sizes lives in `model/inputs.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class Range:
    """An interval of numbers (None: unbounded on that side); `integer` also asks for ints."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def __str__(self) -> str:
        what = "an integer " if self.integer else ""
        if self.low is not None and self.high is not None:
            return (f"{what}in {'(' if self.low_open else '['}{self.low:g}, "
                    f"{self.high:g}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{what}{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{what}{'<' if self.high_open else '<='} {self.high:g}"
        return f"{what or 'a '}finite number"

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value) or (self.integer and not isinstance(value, int)):
            return False
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok

    def check(self, value, name: str):
        """`value` when it lies in the range, else a UserError naming `name`."""
        if not self.contains(value):
            raise UserError(f"{name} {value!r}: must be {self}")
        return value


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
COUNT = Range(0, integer=True)               # batches, samples, workers: 0 allowed
AT_LEAST_ONE = Range(1, integer=True)
RATIO = Range(0, 1, high_open=True)          # a fraction of channels to remove
KEEP_FRACTION = Range(0, 1, low_open=True)   # a fraction of MACs to keep

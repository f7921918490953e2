"""argparse ``type=`` checkers for numeric options: each names the range it wants in its one-line error."""
from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"not {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {text!r}")
    return value


def int_at_least(low: int):
    """An integer >= ``low``."""
    def check(text: str) -> int:
        value = _number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, not {text}")
        return value
    check.__name__ = f"integer >= {low}"
    return check


def float_in(low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False):
    """A finite number in ``[low, high]`` (``(low, ...`` with ``open_low``, ``..., high)`` with ``open_high``; no
    upper bound when ``high`` is None)."""
    def check(text: str) -> float:
        value = _number(text, float)
        if (value <= low if open_low else value < low) or (
                high is not None and (value >= high if open_high else value > high)):
            if high is None:
                wanted = f"{'>' if open_low else '>='} {low:g}"
            else:
                wanted = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
            raise argparse.ArgumentTypeError(f"must be a number {wanted}, not {text}")
        return value
    check.__name__ = "number"
    return check


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
probability = float_in(0.0, 1.0)  # score thresholds, IoU thresholds
positive_float = float_in(0.0, open_low=True)
non_negative_float = float_in(0.0)

"""Argument checks shared by every module: each returns the value converted, or raises ``ValueError``
naming the argument, the value received and what was expected, before any work starts.

A ``bool`` is rejected wherever a number is expected (``True`` is an ``int`` in Python, and a flag
passed as a size is always a mistake)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` >= 1 (Python or NumPy integers only)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: got {value!r}, expected an integer >= 1")
    return int(value)


def nonnegative_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` >= 0 (Python or NumPy integers only)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}: got {value!r}, expected a non-negative integer")
    return int(value)


def _real(name: str, value: Any, expected: str) -> float:
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name}: got {value!r}, expected {expected}")
    try:
        return float(value)  # also 0-d arrays and tensors
    except (TypeError, ValueError):
        raise ValueError(f"{name}: got {value!r}, expected {expected}") from None


def positive_number(name: str, value: Any) -> float:
    """``value`` as a finite ``float`` > 0."""
    number = _real(name, value, "a positive finite number")
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name}: got {value!r}, expected a positive finite number")
    return number


def number_in(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a ``float`` in the closed interval [low, high]."""
    expected = f"a number in [{low:g}, {high:g}]"
    number = _real(name, value, expected)
    if not low <= number <= high:  # also rejects nan
        raise ValueError(f"{name}: got {value!r}, expected {expected}")
    return number

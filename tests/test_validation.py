"""The shared argument checks: what each accepts, converts and rejects."""
import math

import numpy as np
import pytest
import torch

from theorylab import validation as v


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.int32(1)])
def test_positive_int_accepts_integers_from_one_and_returns_int(value):
    out = v.positive_int("n", value)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, "3", None, np.float64(2.0)])
def test_positive_int_rejects_everything_else_naming_the_argument(value):
    with pytest.raises(ValueError, match=r"^n: got .*expected an integer >= 1$"):
        v.positive_int("n", value)


def test_nonnegative_int_accepts_zero_and_rejects_bools_and_negatives():
    assert v.nonnegative_int("seed", 0) == 0
    for bad in (-1, True, 0.5, "0"):
        with pytest.raises(ValueError, match="seed: got"):
            v.nonnegative_int("seed", bad)


@pytest.mark.parametrize("value", [1, 0.5, np.float32(2.5), torch.tensor(3.0), np.array(1e-300)])
def test_positive_number_accepts_finite_positive_reals_of_any_numeric_type(value):
    assert v.positive_number("x", value) == pytest.approx(float(value))


@pytest.mark.parametrize("value", [0, -0.1, math.inf, math.nan, True, "1.0", None, [1.0]])
def test_positive_number_rejects_zero_negative_nonfinite_bool_and_text(value):
    with pytest.raises(ValueError, match="x: got .*expected a positive finite number"):
        v.positive_number("x", value)


def test_number_in_is_closed_and_rejects_nan():
    assert v.number_in("a", 0, 0, 1) == 0.0 and v.number_in("a", 1, 0, 1) == 1.0
    for bad in (-1e-12, 1 + 1e-12, math.nan, True):
        with pytest.raises(ValueError, match=r"a: got .*expected a number in \[0, 1\]"):
            v.number_in("a", bad, 0, 1)

"""A call's decoding options are checked here, the same for Python, CLI, SavedModel and LiteRT."""

import math

import numpy as np
import pytest

from seq2seq_keras.decoding_options import (
    MAX_BEAM_WIDTH,
    check_beam_width,
    check_length_alpha,
    check_temperature,
)


@pytest.mark.parametrize("width", [1, 4, MAX_BEAM_WIDTH, np.int64(3)])
def test_usable_beam_widths_come_back_unchanged(width):
    assert check_beam_width(width) == width


@pytest.mark.parametrize("width", [0, -1, MAX_BEAM_WIDTH + 1, 2.0, True, "4", None])
def test_a_beam_width_that_is_not_an_integer_in_range_is_refused_with_its_value(width):
    with pytest.raises(ValueError, match="beam_width"):
        check_beam_width(width)


def test_temperatures_must_be_positive():
    assert check_temperature(0.7) == 0.7
    for temperature in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            check_temperature(temperature)


def test_length_alpha_is_a_finite_non_negative_float():
    assert check_length_alpha(0) == 0.0 and isinstance(check_length_alpha(1), float)
    for alpha in (-0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="length alpha"):
            check_length_alpha(alpha)

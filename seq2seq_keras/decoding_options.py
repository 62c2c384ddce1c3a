"""The options of one decoding call, shared by every path that translates.

Beam width, length normalization, sampling temperature and the length cap are chosen per
call (`translate --beam`, a served request's `beam_width`), not per trained model: Python,
the CLI, the SavedModel and the LiteRT runtime check them here, the same way. Plain Python,
so the LiteRT runtime imports it without TensorFlow.
"""

from __future__ import annotations

import math
import numbers

# The beam width `translate`, `evaluate` and `train`'s report use unless told otherwise: beam
# search finds translations greedy decoding misses (about +3 BLEU here, README) for about
# 1.5x the time of one sentence, as OpenNMT, fairseq and Marian decode by default.
DEFAULT_BEAM_WIDTH = 4
# The longest translation generated, in tokens, unless a config says otherwise.
DEFAULT_MAX_DECODE_LENGTH = 64
# GNMT's length-normalization exponent (Wu et al. 2016, also flax's wmt default): beam search
# ranks finished hypotheses by log P / ((5 + length) / 6) ** alpha, so that longer translations
# are not penalized merely for having more (negative) log-probability terms. `translate`,
# `evaluate` and `export` take another with `--length-alpha`.
DEFAULT_LENGTH_ALPHA = 0.6
# Wider beams cost time linearly and rarely help an LSTM translator. A Python caller asking for
# more gets a ValueError; a served request is clipped to this width.
MAX_BEAM_WIDTH = 16


def check_beam_width(beam_width: int) -> int:
    """Return `beam_width` if it is a usable beam width (1 is greedy), else raise ValueError."""
    if isinstance(beam_width, bool) or not isinstance(beam_width, numbers.Integral):
        raise ValueError(f"beam_width must be an integer, got {beam_width!r}.")
    if not 1 <= beam_width <= MAX_BEAM_WIDTH:
        raise ValueError(
            f"beam_width must be between 1 (greedy) and {MAX_BEAM_WIDTH}, got {beam_width}."
        )
    return beam_width


def check_temperature(temperature: float) -> float:
    """Return `temperature` if sampling can use it (> 0), else raise ValueError."""
    if not temperature > 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature}; greedy decoding is the limit at 0."
        )
    return temperature


def check_length_alpha(alpha: float) -> float:
    """Return `alpha` if beam search can rank by it (a finite number >= 0), else raise
    ValueError: a negative exponent would favour ever shorter translations."""
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"length alpha must be a finite number >= 0, got {alpha}.")
    return float(alpha)

"""Greedy search and sampling: one token per sentence per step, in one `tf.while_loop`."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from seq2seq_keras.decoding_options import check_temperature
from seq2seq_keras.search.common import (
    SearchResult,
    State,
    StepFn,
    any_shape,
    gather_rows,
    chosen_log_probs,
    keep_rows,
    most_probable,
    per_sentence_caps,
    starting_rows,
)
from seq2seq_keras.text import END_ID, START_ID


def _decode_one_token_at_a_time(
    step: StepFn,
    state: State,
    batch_size: tf.Tensor,
    max_length: int | tf.Tensor,
    choose: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
    max_lengths: int | tf.Tensor | None = None,
) -> SearchResult:
    """The loop shared by greedy search and sampling; `choose(logits, t)` picks the tokens
    and returns them with their log-probabilities.

    Only the sentences still translating are stepped (`rows`, indices into the batch): one
    that has produced `[END]` or reached its cap leaves them, so it costs nothing more. A
    capped sentence gets no `[END]`: its tokens so far are its translation.
    """
    max_length = tf.convert_to_tensor(max_length, tf.int32)
    caps = per_sentence_caps(max_lengths, max_length, batch_size)
    rows = starting_rows(caps)
    tokens = tf.fill(tf.shape(rows), tf.constant(START_ID, tf.int64))
    state = gather_rows(state, rows)
    log_probs = tf.zeros([batch_size], tf.float32)
    lengths = tf.zeros([batch_size], tf.int32)
    # Written token by token; a TensorArray cannot be stacked when the batch is empty.
    output = tf.zeros([batch_size, max_length], tf.int64)

    def keep_going(t, rows, tokens, state, log_probs, lengths, output):
        return (t < max_length) & (tf.size(rows) > 0)

    def one_step(t, rows, tokens, state, log_probs, lengths, output):
        logits, state = step(tokens, state)  # (rows, vocab)
        next_ids, chosen = choose(logits, t)
        at_rows = rows[:, None]
        log_probs = tf.tensor_scatter_nd_add(log_probs, at_rows, chosen)
        lengths = tf.tensor_scatter_nd_add(lengths, at_rows, tf.ones_like(rows))
        at_column = tf.stack([rows, tf.fill(tf.shape(rows), t)], axis=1)
        output = tf.tensor_scatter_nd_update(output, at_column, next_ids)
        going = tf.not_equal(next_ids, END_ID) & (
            tf.gather(lengths, rows) < tf.gather(caps, rows)
        )
        rows, next_ids, state = keep_rows(going, (rows, next_ids, state))
        return t + 1, rows, next_ids, state, log_probs, lengths, output

    loop_vars = (tf.constant(0), rows, tokens, state, log_probs, lengths, output)
    steps, _, _, _, log_probs, lengths, output = tf.while_loop(
        keep_going, one_step, loop_vars, shape_invariants=any_shape(loop_vars)
    )
    return SearchResult(output[:, :steps], log_probs, lengths)


def greedy_search(
    step: StepFn,
    state: State,
    batch_size: tf.Tensor,
    max_length: int | tf.Tensor,
    *,
    max_lengths: int | tf.Tensor | None = None,
) -> SearchResult:
    """Greedy decoding: every sentence takes its most probable next token, all in one loop.

    Args:
      step: `step(token_ids (batch,), state) -> (logits (batch, vocab), state)`.
      state: the decoder's initial state (a nest of `(batch, ...)` tensors).
      batch_size: number of sentences (a scalar; `tf.shape` of a state works in a graph).
      max_length: the most tokens to generate per sentence, `[END]` included; it also sizes
        the output buffers.
      max_lengths: each sentence's own cap, a `(batch,)` int32 tensor or a scalar (None:
        `max_length`; see `decode_length_caps`). A sentence reaching it is done without an
        `[END]`; its log-probability is that of its tokens so far.
    Returns:
      A `SearchResult`; `token_ids` is `(batch, steps)` with `steps` the longest row's length.

    Example:
      >>> result = greedy_search(step, encoder_state, batch_size=2, max_length=64)
      >>> result.token_ids  # [[57, 12, 5, 3], [88, 5, 3, 0]]
    """
    return _decode_one_token_at_a_time(
        step, state, batch_size, max_length,
        lambda logits, t: most_probable(logits), max_lengths,
    )


def sample_search(
    step: StepFn,
    state: State,
    batch_size: tf.Tensor,
    max_length: int | tf.Tensor,
    temperature: float | tf.Tensor = 1.0,
    seed: int | tf.Tensor = 0,
    *,
    max_lengths: int | tf.Tensor | None = None,
) -> SearchResult:
    """Temperature sampling: draw each next token from softmax(logits / temperature).

    Deterministic for a given seed and batch (stateless random ops seeded with `[seed, step]`).
    A low temperature approaches greedy search; a high one approaches uniform draws. The
    returned `log_probs` are the *model's* log-probabilities of the drawn tokens (temperature 1).

    Args:
      temperature: > 0. Checked when given as a Python number; a tensor is floored at 1e-6.
      seed: an integer; the same seed and batch give the same samples.
      max_lengths: each sentence's own cap, as for `greedy_search`.
    """
    if isinstance(temperature, (int, float)):
        check_temperature(temperature)
    temperature = tf.maximum(tf.cast(temperature, tf.float32), 1e-6)
    seed = tf.cast(seed, tf.int64)

    def draw(logits, t):
        seeds = tf.stack([seed, tf.cast(t, tf.int64)])
        drawn = tf.random.stateless_categorical(logits / temperature, 1, seed=seeds)
        ids = tf.cast(drawn[:, 0], tf.int64)
        return ids, chosen_log_probs(logits, ids)

    return _decode_one_token_at_a_time(step, state, batch_size, max_length, draw, max_lengths)

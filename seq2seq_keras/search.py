"""Searches: greedy, beam and sampling over a step function, each inside one graph.

The searches know nothing about LSTMs, attention or Keras. As keras-hub's samplers and flax's
`beam_search` do, they take a step callable and its initial state:

    step(token_ids, state) -> (log_probs, new_state)
      token_ids: (batch,) int64, the previous token of every sentence (or beam)
      log_probs: (batch, vocab) float32, log-probabilities of the next token
      state:     any nest of tensors with a leading batch dimension

They work on whole batches and keep a per-sentence `done` mask: a sentence is done when it has
produced `[END]` or reached its own cap (`max_lengths`, see `decode_length_caps`), and the loop
ends when every sentence is done, or after `max_length` tokens. The whole loop is a
`tf.while_loop`, so inside a `tf.function` a batch is translated by one graph call
(`graph_decoder.GraphDecoder` compiles them over the trained model's step).

Every search returns a `SearchResult`: token ids shaped like the step-by-step decoder's output
(`(batch, steps)`, a row ends at its first `[END]` and is 0 after it), the model's
log-probability of each row (its "score", `[END]` included) and each row's length.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import tensorflow as tf

from seq2seq_keras.config import check_beam_width, check_temperature
from seq2seq_keras.text import END_ID, PAD_ID, START_ID

# The step contract shared by all searches (see the module docstring).
State = Any  # a nest of (batch, ...) tensors, e.g. the LSTM's (h, c)
StepFn = Callable[[tf.Tensor, State], "tuple[tf.Tensor, State]"]

# GNMT's length-normalization exponent (Wu et al. 2016, also flax's wmt default): beam search
# ranks finished hypotheses by log P / ((5 + length) / 6) ** alpha, so that longer translations
# are not penalized merely for having more (negative) log-probability terms.
DEFAULT_LENGTH_ALPHA = 0.6
NEG_INF = float("-inf")


class SearchResult(NamedTuple):
    """What every search returns; a NamedTuple so that `tf.function` can return it."""

    token_ids: tf.Tensor  # (batch, steps) int64; a row stops at its first [END], then 0s
    log_probs: tf.Tensor  # (batch,) float32, sum of the chosen tokens' log-probabilities
    lengths: tf.Tensor  # (batch,) int32, tokens generated per row, [END] included


def length_penalty(lengths: tf.Tensor, alpha: float | tf.Tensor) -> tf.Tensor:
    """GNMT's length penalty `((5 + length) / 6) ** alpha`; 1 for every length when alpha is 0."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, tf.cast(alpha, tf.float32))


def normalized_scores(result: SearchResult, alpha: float | tf.Tensor) -> tf.Tensor:
    """The beam-search objective of each row: its log-probability over its length penalty."""
    return result.log_probs / length_penalty(result.lengths, alpha)


def source_lengths(source_ids: tf.Tensor) -> tf.Tensor:
    """`(batch,)` int32 number of tokens of each right-padded source row (ids other than PAD)."""
    return tf.reduce_sum(tf.cast(tf.not_equal(source_ids, PAD_ID), tf.int32), axis=1)


def decode_length_caps(
    source_lengths: tf.Tensor,
    max_length: int | tf.Tensor,
    factor: float | None = None,
    offset: int = 0,
) -> tf.Tensor:
    """The most tokens each sentence may get, `[END]` included, from its source's length.

    `min(max_length, floor(factor * n) + offset)` for a source of n tokens: a translation is
    rarely much longer than its source, so a model still going past that is confused
    (typically repeating itself), and the cap stops it early instead of at `max_length`.
    `factor * n` is computed in float64, as Python computes it, so the cap is exactly
    `min(max_length, math.floor(factor * n) + offset)`. Without a `factor` every sentence
    gets `max_length`. Both decoders (`GraphDecoder`, `decode.greedy_decode_stepwise`) call
    this, so they cap alike.

    Args:
      source_lengths: `(batch,)` tokens of each source (see `source_lengths`).
      max_length: the overall cap, which also sizes the searches' buffers.
      factor: allowed tokens per source token (> 0), or None for no cap relative to the source.
      offset: tokens allowed on top of `factor * n` (a 0-token source gets `offset`).
    Returns:
      `(batch,)` int32 caps for the searches' `max_lengths`.
    """
    source_lengths = tf.convert_to_tensor(source_lengths, tf.int32)
    max_length = tf.cast(max_length, tf.int32)
    if factor is None:
        return tf.fill(tf.shape(source_lengths), max_length)
    scaled = tf.math.floor(tf.cast(factor, tf.float64) * tf.cast(source_lengths, tf.float64))
    return tf.minimum(max_length, tf.cast(scaled, tf.int32) + offset)


def per_sentence_caps(
    max_lengths: int | tf.Tensor | None, max_length: tf.Tensor, batch_size: tf.Tensor
) -> tf.Tensor:
    """`(batch,)` int32 caps from a search's `max_lengths` (None, a scalar or one per sentence).

    None means `max_length` for everyone; no cap exceeds `max_length`, the buffers' size.
    """
    if max_lengths is None:
        max_lengths = max_length
    caps = tf.minimum(tf.convert_to_tensor(max_lengths, tf.int32), max_length)
    return tf.broadcast_to(caps, [batch_size])


def any_shape(loop_vars):
    """Shape invariants keeping each loop variable's rank but no dimension (beam may vary)."""
    return tf.nest.map_structure(lambda v: tf.TensorShape([None] * v.shape.rank), loop_vars)


# === Greedy search and sampling: one token per sentence per step ===


def _decode_one_token_at_a_time(
    step: StepFn,
    state: State,
    batch_size: tf.Tensor,
    max_length: int | tf.Tensor,
    choose: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    max_lengths: int | tf.Tensor | None = None,
) -> SearchResult:
    """The loop shared by greedy search and sampling; `choose(log_probs, t)` picks the tokens.

    A sentence that has produced `[END]` or reached its cap is fed padding and emits padding
    until the loop ends, exactly as the step-by-step decoder does; its state changes no longer
    matter. A capped sentence gets no `[END]`: its tokens so far are its translation.
    """
    max_length = tf.convert_to_tensor(max_length, tf.int32)
    caps = per_sentence_caps(max_lengths, max_length, batch_size)
    tokens = tf.fill([batch_size], tf.constant(START_ID, tf.int64))
    done = caps <= 0
    log_probs = tf.zeros([batch_size], tf.float32)
    lengths = tf.zeros([batch_size], tf.int32)
    # Written column by column; a TensorArray cannot be stacked when the batch is empty.
    output = tf.zeros([batch_size, max_length], tf.int64)
    columns = tf.range(max_length)

    def keep_going(t, tokens, state, done, log_probs, lengths, output):
        return (t < max_length) & ~tf.reduce_all(done)

    def one_step(t, tokens, state, done, log_probs, lengths, output):
        token_log_probs, state = step(tokens, state)  # (batch, vocab)
        next_ids = tf.where(done, tf.constant(PAD_ID, tf.int64), choose(token_log_probs, t))
        chosen = tf.gather(token_log_probs, next_ids, batch_dims=1)  # (batch,)
        log_probs += tf.where(done, 0.0, chosen)
        lengths += tf.cast(~done, tf.int32)
        output = tf.where(tf.equal(columns, t)[None, :], next_ids[:, None], output)
        done |= tf.equal(next_ids, END_ID) | (lengths >= caps)
        return t + 1, next_ids, state, done, log_probs, lengths, output

    loop_vars = (tf.constant(0), tokens, state, done, log_probs, lengths, output)
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
      step: `step(token_ids (batch,), state) -> (log_probs (batch, vocab), state)`.
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
        lambda log_probs, t: tf.argmax(log_probs, axis=-1, output_type=tf.int64),
        max_lengths,
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
    """Temperature sampling: draw each next token from softmax(log_probs / temperature).

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

    def draw(log_probs, t):
        seeds = tf.stack([seed, tf.cast(t, tf.int64)])
        drawn = tf.random.stateless_categorical(log_probs / temperature, 1, seed=seeds)
        return tf.cast(drawn[:, 0], tf.int64)

    return _decode_one_token_at_a_time(step, state, batch_size, max_length, draw, max_lengths)


# === Beam search ===


def expand_to_beams(tensor: tf.Tensor, beam_width: tf.Tensor) -> tf.Tensor:
    """Repeat every row `beam_width` times: `(batch, ...)` → `(batch * beam, ...)`."""
    return tf.repeat(tensor, beam_width, axis=0)


def flatten_beam_dim(tensor: tf.Tensor) -> tf.Tensor:
    """Merge the batch and beam axes: `(batch, beam, ...)` → `(batch * beam, ...)`."""
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))


def unflatten_beam_dim(tensor: tf.Tensor, batch_size: tf.Tensor) -> tf.Tensor:
    """Split the batch and beam axes: `(batch * beam, ...)` → `(batch, beam, ...)`."""
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([[batch_size, shape[0] // batch_size], shape[1:]], 0))


def gather_beams(tensor: tf.Tensor, beam_indices: tf.Tensor) -> tf.Tensor:
    """Pick beams per sentence: `(batch, beam, ...)`, `(batch, n)` indices → `(batch, n, ...)`."""
    return tf.gather(tensor, beam_indices, batch_dims=1)


def beam_search(
    step: StepFn,
    state: State,
    batch_size: tf.Tensor,
    max_length: int | tf.Tensor,
    beam_width: int | tf.Tensor = 4,
    alpha: float | tf.Tensor = DEFAULT_LENGTH_ALPHA,
    include_greedy: bool = True,
    *,
    max_lengths: int | tf.Tensor | None = None,
) -> SearchResult:
    """Batched beam search with GNMT length normalization, in one `tf.while_loop`.

    Each step extends every live hypothesis by every token and keeps the `2k` best candidates
    (so that `k` remain alive even if up to `k` of them end). As in fairseq, a candidate ending
    in `[END]` is kept as finished only when it ranks in the top `k`; the others stay alive.
    Finished hypotheses are ranked by `log P / length_penalty`. A sentence is `done` once no
    live hypothesis can still beat its best finished one: a live log-probability `s` can only
    fall, so `s / length_penalty(cap)` bounds every completion (for alpha >= 0), or once it has
    reached its cap: there the top `k` candidates all count as finished, `[END]` or not.

    Plain beam search can prune the greedy path and end up *worse* than greedy. With
    `include_greedy` (the default) the greedy translation seeds the finished set, so the
    result always scores at least as well as greedy search, at the cost of one greedy pass.
    With `beam_width=1` and `alpha=0` the result is exactly greedy search's.

    Args:
      step, state, batch_size, max_length: as for `greedy_search`.
      beam_width: hypotheses kept per sentence, k >= 1 (an int, or an int32 scalar tensor).
      alpha: length-normalization exponent >= 0; 0 ranks by plain log-probability.
      include_greedy: seed the finished hypotheses with the greedy translation.
      max_lengths: each sentence's own cap, as for `greedy_search`; it applies to all the
        sentence's beams.
    Returns:
      The best hypothesis of every sentence as a `SearchResult`.
    """
    if not tf.is_tensor(beam_width):
        check_beam_width(beam_width)
    if isinstance(alpha, (int, float)) and alpha < 0:
        raise ValueError(f"alpha must be >= 0 (0: no length normalization), got {alpha}.")
    max_length = tf.convert_to_tensor(max_length, tf.int32)
    beam_width = tf.convert_to_tensor(beam_width, tf.int32)
    alpha = tf.cast(alpha, tf.float32)
    batch_size = tf.convert_to_tensor(batch_size, tf.int32)
    caps = per_sentence_caps(max_lengths, max_length, batch_size)
    max_penalty = length_penalty(caps, alpha)  # (batch,)

    # 1. Alive hypotheses: only beam 0 starts alive, so k copies of [START] are not k beams.
    alive_ids = tf.zeros([batch_size, beam_width, max_length], tf.int64)
    alive_last = tf.fill([batch_size, beam_width], tf.constant(START_ID, tf.int64))
    first_beam = tf.equal(tf.range(beam_width), 0)[None, :]
    alive_log_probs = tf.where(first_beam, 0.0, tf.fill([batch_size, beam_width], NEG_INF))
    alive_state = tf.nest.map_structure(lambda s: expand_to_beams(s, beam_width), state)

    # 2. Finished hypotheses, optionally seeded with the greedy translation in slot 0.
    finished_ids = tf.zeros([batch_size, beam_width, max_length], tf.int64)
    finished_scores = tf.fill([batch_size, beam_width], NEG_INF)
    finished_log_probs = tf.zeros([batch_size, beam_width], tf.float32)
    finished_lengths = tf.zeros([batch_size, beam_width], tf.int32)
    if include_greedy:
        greedy = greedy_search(step, state, batch_size, max_length, max_lengths=caps)
        greedy_ids = tf.pad(
            greedy.token_ids, [[0, 0], [0, max_length - tf.shape(greedy.token_ids)[1]]]
        )

        def seed_slot0(slots, value):
            return tf.where(first_beam, value[:, None], slots)

        finished_ids = tf.where(first_beam[..., None], greedy_ids[:, None, :], finished_ids)
        finished_scores = seed_slot0(finished_scores, normalized_scores(greedy, alpha))
        finished_log_probs = seed_slot0(finished_log_probs, greedy.log_probs)
        finished_lengths = seed_slot0(finished_lengths, greedy.lengths)

    columns = tf.range(max_length, dtype=tf.int32)
    done = caps <= 0

    def keep_going(t, *loop_vars):
        done = loop_vars[-1]
        return (t < max_length) & ~tf.reduce_all(done)

    def one_step(t, alive_ids, alive_last, alive_log_probs, alive_state,
                 finished_ids, finished_scores, finished_log_probs, finished_lengths, done):
        # 3. Score every extension of every live hypothesis.
        token_log_probs, new_state = step(flatten_beam_dim(alive_last), alive_state)
        token_log_probs = unflatten_beam_dim(token_log_probs, batch_size)  # (batch, k, vocab)
        vocab_size = tf.shape(token_log_probs)[2]
        candidates = alive_log_probs[..., None] + token_log_probs
        candidates = tf.reshape(candidates, [batch_size, -1])  # (batch, k * vocab)
        num_candidates = tf.minimum(2 * beam_width, beam_width * vocab_size)
        top_log_probs, top_indices = tf.math.top_k(candidates, k=num_candidates)
        top_beams = top_indices // vocab_size  # (batch, 2k)
        top_tokens = tf.cast(top_indices % vocab_size, tf.int64)
        top_ids = gather_beams(alive_ids, top_beams)  # (batch, 2k, max_length)
        top_ids = tf.where(tf.equal(columns, t)[None, None, :], top_tokens[..., None], top_ids)

        # 4. Finished: candidates ending here that rank in the top k (all of them at the cap).
        ranks = tf.range(num_candidates)[None, :]
        at_cap = t + 1 >= caps  # (batch,) the candidates' length t + 1 reached the cap
        ends = (tf.equal(top_tokens, END_ID) | at_cap[:, None]) & (ranks < beam_width)
        ends &= top_log_probs > NEG_INF
        new_scores = tf.where(ends, top_log_probs / length_penalty(t + 1, alpha), NEG_INF)
        # Older hypotheses come first, so on a tie the earlier (or greedy) one is kept.
        merged_scores = tf.concat([finished_scores, new_scores], axis=1)
        merged_ids = tf.concat([finished_ids, top_ids], axis=1)
        merged_log_probs = tf.concat([finished_log_probs, top_log_probs], axis=1)
        merged_lengths = tf.concat(
            [finished_lengths, tf.fill(tf.shape(top_tokens), t + 1)], axis=1
        )
        best_scores, best = tf.math.top_k(merged_scores, k=beam_width)
        keep = ~done  # a done sentence's finished set is final
        finished_scores = tf.where(keep[:, None], best_scores, finished_scores)
        finished_ids = tf.where(keep[:, None, None], gather_beams(merged_ids, best), finished_ids)
        finished_log_probs = tf.where(
            keep[:, None], gather_beams(merged_log_probs, best), finished_log_probs
        )
        finished_lengths = tf.where(
            keep[:, None], gather_beams(merged_lengths, best), finished_lengths
        )

        # 5. Alive: the best k candidates that did not end; their states follow their beams.
        alive_candidates = tf.where(tf.equal(top_tokens, END_ID), NEG_INF, top_log_probs)
        alive_log_probs, survivors = tf.math.top_k(alive_candidates, k=beam_width)
        alive_ids = gather_beams(top_ids, survivors)
        alive_last = gather_beams(top_tokens, survivors)
        parent_beams = gather_beams(top_beams, survivors)  # (batch, k)
        alive_state = tf.nest.map_structure(
            lambda s: flatten_beam_dim(
                gather_beams(unflatten_beam_dim(s, batch_size), parent_beams)
            ),
            new_state,
        )

        # 6. Done: no live hypothesis can still beat the best finished one. (flax compares with
        # the worst of the k finished, which is needed for k-best lists; we return the best.)
        best_alive_bound = alive_log_probs[:, 0] / max_penalty
        nothing_alive = tf.equal(alive_log_probs[:, 0], NEG_INF)
        done |= (best_alive_bound < finished_scores[:, 0]) | nothing_alive | at_cap
        return (t + 1, alive_ids, alive_last, alive_log_probs, alive_state,
                finished_ids, finished_scores, finished_log_probs, finished_lengths, done)

    loop_vars = (tf.constant(0), alive_ids, alive_last, alive_log_probs, alive_state,
                 finished_ids, finished_scores, finished_log_probs, finished_lengths, done)
    final = tf.while_loop(keep_going, one_step, loop_vars, shape_invariants=any_shape(loop_vars))
    finished_ids, finished_log_probs, finished_lengths = final[5], final[7], final[8]
    lengths = finished_lengths[:, 0]
    width = tf.reduce_max(tf.concat([lengths, [0]], axis=0))
    return SearchResult(finished_ids[:, 0, :width], finished_log_probs[:, 0], lengths)

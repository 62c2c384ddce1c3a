"""Beam search with GNMT length normalization, the greedy hypothesis stepped beside the beams."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from seq2seq_keras.decoding_options import check_beam_width
from seq2seq_keras.search.common import (
    DEFAULT_LENGTH_ALPHA,
    NEG_INF,
    SearchResult,
    State,
    StepFn,
    any_shape,
    gather_rows,
    keep_rows,
    length_penalty,
    log_normalizer,
    most_probable,
    per_sentence_caps,
    starting_rows,
    top_k_by_blocks,
)
from seq2seq_keras.text import END_ID, START_ID


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


class GreedyRows(NamedTuple):
    """Greedy search inside beam search: each sentence's greedy hypothesis, one extra row.

    Stepped in the same call as the sentence's beams, so the greedy translation that seeds
    beam search costs no pass of its own; a step at batch 1 is bound by reading the weights,
    so one more row is nearly free. Once a row's greedy hypothesis is done (`going` is False)
    its step's output is ignored until the sentence leaves.
    """

    last: tf.Tensor  # (rows,) int64, the previous greedy token
    state: State  # (rows, ...)
    log_probs: tf.Tensor  # (rows,) float32
    ids: tf.Tensor  # (rows, max_length) int64
    lengths: tf.Tensor  # (rows,) int32
    going: tf.Tensor  # (rows,) bool, not yet at [END] or the cap

    @classmethod
    def start(cls, state: State, num_rows: tf.Tensor, max_length: tf.Tensor) -> "GreedyRows":
        return cls(
            tf.fill([num_rows], tf.constant(START_ID, tf.int64)), state,
            tf.zeros([num_rows], tf.float32), tf.zeros([num_rows, max_length], tf.int64),
            tf.zeros([num_rows], tf.int32), tf.ones([num_rows], tf.bool),
        )

    def advance(self, logits, state, t, caps) -> "GreedyRows":
        """Take each row's most probable token, as `greedy_search` does."""
        next_ids, chosen = most_probable(logits)
        going = self.going
        columns = tf.range(tf.shape(self.ids)[1])
        lengths = self.lengths + tf.cast(going, tf.int32)
        return GreedyRows(
            next_ids, state,
            tf.where(going, self.log_probs + chosen, self.log_probs),
            tf.where(going[:, None] & tf.equal(columns, t)[None, :], next_ids[:, None], self.ids),
            lengths,
            going & tf.not_equal(next_ids, END_ID) & (lengths < caps),
        )



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
    reached its cap: there the top `k` candidates all count as finished, `[END]` or not. A
    done sentence leaves the batch (`rows`): its beams are no longer stepped.

    Plain beam search can prune the greedy path and end up *worse* than greedy. With
    `include_greedy` (the default) the greedy hypothesis of each sentence is stepped beside
    its beams, one more row in the same step call (`GreedyRows`), and joins the finished set
    when it ends; a sentence is done only after it has. So the result always scores at least
    as well as greedy search, without a greedy pass of its own.
    With `beam_width=1` and `alpha=0` the result is exactly greedy search's.

    Args:
      step, state, batch_size, max_length: as for `greedy_search`.
      beam_width: hypotheses kept per sentence, k >= 1 (an int, or an int32 scalar tensor).
      alpha: length-normalization exponent >= 0; 0 ranks by plain log-probability.
      include_greedy: add the greedy translation to the finished hypotheses.
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

    # 1. Finished hypotheses of every sentence. The loop reads and writes the rows of the
    # sentences still searching.
    finished = (
        tf.zeros([batch_size, beam_width, max_length], tf.int64),  # ids
        tf.fill([batch_size, beam_width], NEG_INF),  # length-normalized scores
        tf.zeros([batch_size, beam_width], tf.float32),  # log-probabilities
        tf.zeros([batch_size, beam_width], tf.int32),  # lengths
    )

    # 2. Alive hypotheses of the sentences that may get a token: only beam 0 starts alive, so
    # k copies of [START] are not k beams. With `include_greedy`, each sentence's greedy
    # hypothesis is stepped beside its beams (`GreedyRows`).
    rows = starting_rows(caps)
    num_rows = tf.size(rows)
    first_beam = tf.equal(tf.range(beam_width), 0)[None, :]
    alive_ids = tf.zeros([num_rows, beam_width, max_length], tf.int64)
    alive_last = tf.fill([num_rows, beam_width], tf.constant(START_ID, tf.int64))
    alive_log_probs = tf.where(first_beam, 0.0, tf.fill([num_rows, beam_width], NEG_INF))
    alive_state = tf.nest.map_structure(
        lambda s: expand_to_beams(s, beam_width), gather_rows(state, rows)
    )
    greedy = GreedyRows.start(gather_rows(state, rows), num_rows, max_length) if include_greedy else ()
    columns = tf.range(max_length, dtype=tf.int32)

    def keep_going(t, rows, *loop_vars):
        return (t < max_length) & (tf.size(rows) > 0)

    def one_step(t, rows, alive_ids, alive_last, alive_log_probs, alive_state, greedy, finished):
        num_rows = tf.size(rows)
        row_caps = tf.gather(caps, rows)
        # 3. Each beam's 2k best extensions (the best 2k of the sentence are among them),
        # their log-probabilities from the logits, then the sentence's 2k best.
        if include_greedy:  # one call for the beams and the greedy rows after them
            beam_rows = num_rows * beam_width
            all_logits, all_state = step(
                tf.concat([flatten_beam_dim(alive_last), greedy.last], axis=0),
                tf.nest.map_structure(
                    lambda beams, rows_: tf.concat([beams, rows_], axis=0),
                    alive_state, greedy.state,
                ),
            )
            logits = all_logits[:beam_rows]  # (rows * k, V)
            new_state = tf.nest.map_structure(lambda s: s[:beam_rows], all_state)
            greedy = greedy.advance(
                all_logits[beam_rows:],
                tf.nest.map_structure(lambda s: s[beam_rows:], all_state), t, row_caps,
            )
        else:
            logits, new_state = step(flatten_beam_dim(alive_last), alive_state)  # (rows * k, V)
        per_beam = tf.minimum(2 * beam_width, tf.shape(logits)[1])
        beam_logits, beam_tokens = top_k_by_blocks(logits, per_beam)
        # The largest logit of each beam is its first of the 2k best.
        beam_log_probs = beam_logits - log_normalizer(logits, beam_logits[:, 0])[:, None]
        candidates = alive_log_probs[..., None] + unflatten_beam_dim(beam_log_probs, num_rows)
        candidates = tf.reshape(candidates, [num_rows, -1])  # (rows, k * per_beam)
        num_candidates = tf.minimum(2 * beam_width, beam_width * tf.shape(logits)[1])
        top_log_probs, top_indices = tf.math.top_k(candidates, k=num_candidates)
        top_beams = top_indices // per_beam  # (rows, 2k)
        top_tokens = tf.gather(
            tf.reshape(tf.cast(beam_tokens, tf.int64), [num_rows, -1]), top_indices, batch_dims=1
        )
        top_ids = gather_beams(alive_ids, top_beams)  # (rows, 2k, max_length)
        top_ids = tf.where(tf.equal(columns, t)[None, None, :], top_tokens[..., None], top_ids)

        # 4. Finished: candidates ending here that rank in the top k (all of them at the cap),
        # and the greedy hypothesis on the step it ends.
        ranks = tf.range(num_candidates)[None, :]
        at_cap = t + 1 >= row_caps  # (rows,) the candidates' length t + 1 reached the cap
        ends = (tf.equal(top_tokens, END_ID) | at_cap[:, None]) & (ranks < beam_width)
        ends &= top_log_probs > NEG_INF
        new_scores = tf.where(ends, top_log_probs / length_penalty(t + 1, alpha), NEG_INF)
        new = (top_ids, new_scores, top_log_probs, tf.fill(tf.shape(top_tokens), t + 1))
        old = gather_rows(finished, rows)
        # Earlier hypotheses come first, so on a tie the greedy (or an older) one is kept.
        merged = [old, new]
        if include_greedy:
            greedy_ends = tf.equal(greedy.lengths, t + 1) & ~greedy.going  # (rows,)
            greedy_scores = greedy.log_probs / length_penalty(greedy.lengths, alpha)
            merged.insert(0, (
                greedy.ids[:, None, :], tf.where(greedy_ends, greedy_scores, NEG_INF)[:, None],
                greedy.log_probs[:, None], greedy.lengths[:, None],
            ))
        merged_ids, merged_scores, merged_log_probs, merged_lengths = (
            tf.concat(parts, axis=1) for parts in zip(*merged)
        )
        best_scores, best = tf.math.top_k(merged_scores, k=beam_width)
        at_rows = rows[:, None]
        finished = tuple(
            tf.tensor_scatter_nd_update(everyone, at_rows, updated)
            for everyone, updated in zip(finished, (
                gather_beams(merged_ids, best), best_scores,
                gather_beams(merged_log_probs, best), gather_beams(merged_lengths, best),
            ))
        )

        # 5. Alive: the best k candidates that did not end; their states follow their beams.
        alive_candidates = tf.where(tf.equal(top_tokens, END_ID), NEG_INF, top_log_probs)
        alive_log_probs, survivors = tf.math.top_k(alive_candidates, k=beam_width)
        alive_ids = gather_beams(top_ids, survivors)
        alive_last = gather_beams(top_tokens, survivors)
        parent_beams = gather_beams(top_beams, survivors)  # (rows, k)
        alive_state = tf.nest.map_structure(
            lambda s: gather_beams(unflatten_beam_dim(s, num_rows), parent_beams), new_state
        )  # (rows, k, ...) until the rows that are done have left

        # 6. Done: the greedy hypothesis has ended and no live hypothesis can still beat the
        # best finished one. (flax compares with the worst of the k finished, which is needed
        # for k-best lists; we return the best.) A done sentence leaves the rows.
        best_alive_bound = alive_log_probs[:, 0] / tf.gather(max_penalty, rows)
        nothing_alive = tf.equal(alive_log_probs[:, 0], NEG_INF)
        done = (best_alive_bound < best_scores[:, 0]) | nothing_alive | at_cap
        if include_greedy:
            done &= ~greedy.going
        rows, alive_ids, alive_last, alive_log_probs, alive_state, greedy = keep_rows(
            ~done, (rows, alive_ids, alive_last, alive_log_probs, alive_state, greedy)
        )
        alive_state = tf.nest.map_structure(flatten_beam_dim, alive_state)
        return t + 1, rows, alive_ids, alive_last, alive_log_probs, alive_state, greedy, finished

    loop_vars = (tf.constant(0), rows, alive_ids, alive_last, alive_log_probs, alive_state,
                 greedy, finished)
    final = tf.while_loop(keep_going, one_step, loop_vars, shape_invariants=any_shape(loop_vars))
    finished_ids, _, finished_log_probs, finished_lengths = final[-1]
    lengths = finished_lengths[:, 0]
    width = tf.reduce_max(tf.concat([lengths, [0]], axis=0))
    return SearchResult(finished_ids[:, 0, :width], finished_log_probs[:, 0], lengths)

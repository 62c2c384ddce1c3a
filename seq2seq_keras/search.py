"""Searches: greedy, beam and sampling over a step function, each inside one graph.

The searches know nothing about LSTMs, attention or Keras. As keras-hub's samplers and flax's
`beam_search` do, they take a step callable and its initial state:

    step(token_ids, state) -> (logits, new_state)
      token_ids: (batch,) int64, the previous token of every sentence (or beam)
      logits:    (batch, vocab) float32, the next token's unnormalized log-probabilities:
                 its log-probabilities are `logits - logsumexp(logits)` (log-probabilities
                 are logits too)
      state:     any nest of tensors with a leading batch dimension

They work on whole batches. A sentence is done when it has produced `[END]` or reached its own
cap (`max_lengths`, see `decode_length_caps`); the loop ends when every sentence is done, or
after `max_length` tokens. The whole loop is a `tf.while_loop`, so inside a `tf.function` a
batch is translated by one graph call (`graph_decoder.GraphDecoder` compiles them over the
trained model's step).

Each step does the least work the result needs, because the step's output projection (one
logit per vocabulary token) dominates the cost of decoding:

- no softmax is computed: greedy search takes the argmax of the logits and one `logsumexp`
  per row scores the chosen token; beam search keeps each beam's best `2k` logits and
  normalizes only those (a beam contributes at most `2k` of the sentence's `2k` best
  extensions);
- a sentence that is done leaves the batch: the next steps run on the sentences still
  translating only (`rows` below), instead of feeding finished ones padding until the longest
  is done. Rows leave only on the steps where some sentence finishes.

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
# Columns per block where beam search reads a row of logits by blocks (`top_k_by_blocks`):
# a row of 8,000 logits is 63 blocks.
LOGIT_BLOCK = 128


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
    """Shape invariants keeping each loop variable's rank but no dimension (rows may leave)."""
    return tf.nest.map_structure(lambda v: tf.TensorShape([None] * v.shape.rank), loop_vars)


def log_normalizer(logits: tf.Tensor, largest: tf.Tensor | None = None) -> tf.Tensor:
    """`(batch,)` `logsumexp` of each row: a token's log-probability is its logit minus this.

    Shifted by the row's largest logit (`largest`, `(batch,)`, computed when not given), as
    `tf.reduce_logsumexp` does, so `exp` cannot overflow; written out because every row has a
    finite logit here, and so that the LiteRT export lowers it to built-in ops.
    """
    if largest is None:
        largest = tf.reduce_max(logits, axis=-1)
    return tf.math.log(tf.reduce_sum(tf.exp(logits - largest[:, None]), axis=-1)) + largest


def column_blocks(values: tf.Tensor, block: int = LOGIT_BLOCK) -> tf.Tensor:
    """`(rows, blocks, block)`: each row cut into blocks of `block` columns, the last one
    padded with -inf."""
    rows, width = tf.shape(values)[0], tf.shape(values)[1]
    num_blocks = (width + block - 1) // block
    padded = tf.pad(values, [[0, 0], [0, num_blocks * block - width]], constant_values=NEG_INF)
    return tf.reshape(padded, [rows, num_blocks, block])


def top_k_by_blocks(values: tf.Tensor, k, block: int = LOGIT_BLOCK):
    """`tf.math.top_k(values, k)` of each row, exactly (same values, indices, and order: ties
    lower index first), reading the whole row only once.

    Ranking a whole row of 8,000 logits is a large share of a beam step. The row's k largest
    values lie in the k blocks with the largest maxima (a block holding one of them has a
    maximum at least the k-th value, and at most k blocks can), so a pass of block maxima,
    then `top_k` over those k blocks, finds them. The chosen blocks are read in column order,
    so ties keep `top_k`'s order. Requires `k <= width`.
    """
    blocks = column_blocks(values, block)
    _, chosen = tf.math.top_k(tf.reduce_max(blocks, axis=-1), tf.minimum(k, tf.shape(blocks)[1]))
    chosen = tf.sort(chosen, axis=-1)
    candidates = tf.reshape(tf.gather(blocks, chosen, batch_dims=1), [tf.shape(values)[0], -1])
    top_values, positions = tf.math.top_k(candidates, k)
    indices = tf.gather(chosen, positions // block, batch_dims=1) * block + positions % block
    return top_values, indices


def log_softmax(logits: tf.Tensor) -> tf.Tensor:
    """Log-probabilities of every token, as the searches compute them from the logits."""
    return logits - log_normalizer(logits)[:, None]


def gather_rows(nest, rows: tf.Tensor):
    """Keep the rows `rows` (int32 indices) of every tensor of a nest."""
    return tf.nest.map_structure(lambda tensor: tf.gather(tensor, rows), nest)


def keep_rows(going: tf.Tensor, nest):
    """Rows of every tensor of `nest` where `going` is True; skipped when every row goes on."""
    kept = tf.cast(tf.where(going)[:, 0], tf.int32)
    return tf.cond(
        tf.reduce_all(going), lambda: nest, lambda: gather_rows(nest, kept)
    )


def starting_rows(caps: tf.Tensor) -> tf.Tensor:
    """`(rows,)` int32 indices of the sentences that may get at least one token."""
    return tf.cast(tf.where(caps > 0)[:, 0], tf.int32)


# === Greedy search and sampling: one token per sentence per step ===


def _decode_one_token_at_a_time(
    step: StepFn,
    state: State,
    batch_size: tf.Tensor,
    max_length: int | tf.Tensor,
    choose: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    max_lengths: int | tf.Tensor | None = None,
) -> SearchResult:
    """The loop shared by greedy search and sampling; `choose(logits, t)` picks the tokens.

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
        next_ids = choose(logits, t)
        chosen = tf.gather(logits, next_ids, batch_dims=1) - log_normalizer(logits)
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
        lambda logits, t: tf.argmax(logits, axis=-1, output_type=tf.int64),
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
        next_ids = tf.argmax(logits, axis=-1, output_type=tf.int64)
        chosen = tf.gather(logits, next_ids, batch_dims=1) - log_normalizer(logits)
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

"""What every search shares: the step contract, the result, length caps and row bookkeeping.

The searches (`greedy`, `beam`) step only the rows of the sentences still translating; the
helpers here keep those rows, cap each sentence's length, and turn logits into
log-probabilities without a softmax over the whole vocabulary.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import tensorflow as tf

from seq2seq_keras.decoding_options import DEFAULT_LENGTH_ALPHA  # noqa: F401  (package API)
from seq2seq_keras.text import PAD_ID

# The step contract shared by all searches (the package docstring, `seq2seq_keras.search`).
State = Any  # a nest of (batch, ...) tensors, e.g. the LSTM's (h, c)
StepFn = Callable[[tf.Tensor, State], "tuple[tf.Tensor, State]"]

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


def most_probable(logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Each row's most probable token, `(batch,)` int64, and its log-probability `(batch,)`.

    The chosen logit is the row's largest, so it is also the shift `log_normalizer` needs:
    scoring it reads the row once fewer than scoring any other token would.
    """
    ids = tf.argmax(logits, axis=-1, output_type=tf.int64)
    largest = tf.gather(logits, ids, batch_dims=1)
    return ids, largest - log_normalizer(logits, largest)


def chosen_log_probs(logits: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """`(batch,)` log-probabilities of the tokens `ids` `(batch,)` under each row's logits."""
    return tf.gather(logits, ids, batch_dims=1) - log_normalizer(logits)


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

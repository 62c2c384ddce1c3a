"""Pipeline: sentence pairs → token ids → `tf.data` batches for `model.fit`, as they stream.

Training never holds the token ids of its corpus: `data.TextPairs` keeps the pairs as text,
and each epoch tokenizes them inside `tf.data`, a batch of sentences at a time. In order:

1. `teacher_forcing_pair` turns a batch of target ids into the decoder's input and its expected
   output; the teacher-forcing shift lives here and nowhere else.
2. `length_buckets` and `batch_by_length` batch pairs of similar length together, right-padded
   with 0, as `((source_ids, decoder_input_ids), target_ids)`. `make_dataset` does it for ids
   already in memory (`data.TokenizedPairs`, small inputs: notebooks, tests).
3. `streamed_pair_ids` is the stream of a `TextPairs`' token ids in a seeded order that depends
   on the epoch; `epoch_batches` batches one epoch of it, each batch splitting evenly over the
   replicas of a `tf.distribute` strategy, and `count_batches` counts those batches from the
   pairs' lengths, without tokenizing.
4. `training_batches` is the endless stream of epochs a run trains on, which can start at any
   (epoch, batch): a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.data import TOKENIZE_BATCH_SIZE, TextPairs, TokenizedPairs

# Whole batches are shuffled in a buffer of this many after bucketing (see `batch_by_length`).
BATCH_SHUFFLE_BUFFER = 64

# --- 1. Teacher forcing ----------------------------------------------------------------------


def teacher_forcing_pair(source_ids: tf.Tensor, target_ids: tf.Tensor):
    """Teacher forcing: `(source, target[:, :-1]) → target[:, 1:]`.

    The decoder reads `[START] y1 … yn` and learns to predict `y1 … yn [END]`: at every step
    its input is the true previous token, not its own guess.
    """
    return (source_ids, target_ids[:, :-1]), target_ids[:, 1:]


# --- 2. Batches of similar length ------------------------------------------------------------


def length_buckets(max_length: int) -> list[int]:
    """Bucket boundaries for grouping batches by length: fine for short, coarse for long."""
    boundaries = [4, 6, 8, 10, 12, 14, 16, 20, 24, 32, 48]
    return [boundary for boundary in boundaries if boundary < max_length]


def pair_buckets(config: Seq2SeqConfig) -> list[int]:
    """The length-bucket boundaries of `config`'s pairs."""
    return length_buckets(max(config.max_source_length, config.max_target_length))


def bucket_keys(source_lengths, target_lengths, config: Seq2SeqConfig) -> np.ndarray:
    """The bucket of every pair, as `batch_by_length` groups them (`config.bucket_by`): the
    longer side's length bucket, or one key for each pair of source and target buckets."""
    boundaries = pair_buckets(config)
    if config.bucket_by == "both":
        source = np.searchsorted(boundaries, source_lengths, side="right")
        target = np.searchsorted(boundaries, target_lengths, side="right")
        return source * (len(boundaries) + 1) + target
    return np.searchsorted(boundaries, np.maximum(source_lengths, target_lengths), side="right")


def leftover_key(keys, config: Seq2SeqConfig):
    """The key a pair of both-sides bucket `keys` takes when it is left over: its longer side's
    bucket (the larger of its two buckets), numbered after every both-sides key."""
    buckets = len(pair_buckets(config)) + 1
    return buckets * buckets + tf.maximum(keys // buckets, keys % buckets)


def merged_keys(keys: tf.Tensor, config: Seq2SeqConfig) -> tf.Tensor:
    """`keys` (both-sides buckets of the pairs in an epoch's order), with every bucket's last
    `size % batch_size` pairs moved to their `leftover_key`.

    Grouped by both sides' buckets alone, each of the ~80 buckets ends the epoch with a partial
    batch, some of a few pairs, each a full optimizer step on a noisy gradient. Moved to the
    longer side's bucket, the leftovers of several buckets fill whole batches together, as
    `bucket_by="longer"` would have batched them.
    """
    keys = tf.cast(keys, tf.int64)
    order = tf.cast(tf.argsort(keys, stable=True), tf.int64)
    sorted_keys = tf.gather(keys, order)
    first_of_key = tf.searchsorted(
        sorted_keys[tf.newaxis], sorted_keys[tf.newaxis], out_type=tf.int64
    )
    rank_in_order = tf.range(tf.size(keys, tf.int64)) - first_of_key[0]
    rank = tf.scatter_nd(order[:, tf.newaxis], rank_in_order, tf.shape(keys, tf.int64))
    sizes = tf.gather(tf.math.bincount(keys, dtype=tf.int64), keys)
    full = sizes // config.batch_size * config.batch_size
    return tf.where(rank < full, keys, leftover_key(keys, config))


def batch_by_length(
    keyed_pairs: tf.data.Dataset, config: Seq2SeqConfig, shuffle_seed: int | tf.Tensor | None
) -> tf.data.Dataset:
    """Batches of `((source_ids, decoder_input_ids), target_ids)`, right-padded with 0.

    `keyed_pairs` yields `((source_ids, target_ids), key)` one pair at a time, targets in
    `[START] … [END]`, the key its length bucket (`bucket_keys`; in an epoch, `merged_keys`).
    Pairs of one bucket are batched together, so a batch of short
    sentences is not padded to the length of a long one: padding costs compute in every
    recurrent step and softmax. A bucket's batch goes out as soon as it is full; at the end,
    every bucket's rest goes out as a partial batch. With a `shuffle_seed`, whole batches are
    shuffled too, because buckets fill at different rates; `None` keeps their order.
    """
    dataset = keyed_pairs.group_by_window(
        key_func=lambda pair, key: key,
        reduce_func=lambda key, window: window.map(lambda pair, _: pair).padded_batch(
            config.batch_size
        ),
        window_size=config.batch_size,
    )
    if shuffle_seed is not None:
        dataset = dataset.shuffle(BATCH_SHUFFLE_BUFFER, seed=shuffle_seed)
    return dataset.map(teacher_forcing_pair, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


def plain_rows(source_ids, target_ids) -> tuple[tf.Tensor, tf.Tensor]:
    """One pair's ids as plain tensors: rows of a ragged tensor arrive as rank-0-ragged
    values, and padded batching wants plain tensors."""
    return tf.identity(source_ids), tf.identity(target_ids)


def make_dataset(
    tokens: TokenizedPairs, config: Seq2SeqConfig, shuffle: bool = True
) -> tf.data.Dataset:
    """`batch_by_length` batches of token ids already in memory, reshuffled at every pass.

    For a few pairs vectorized at once (`data.vectorize_pairs`); training streams its pairs
    from text instead (`epoch_batches`).
    """
    keys = bucket_keys(
        tokens.source_ids.row_lengths().numpy(), tokens.target_ids.row_lengths().numpy(), config
    )
    dataset = tf.data.Dataset.from_tensor_slices(((tokens.source_ids, tokens.target_ids), keys))
    dataset = dataset.map(lambda pair, key: (plain_rows(*pair), key))
    if shuffle:
        dataset = dataset.shuffle(len(tokens), seed=config.seed, reshuffle_each_iteration=True)
    return batch_by_length(dataset, config, config.seed if shuffle else None)


# --- 3. One epoch of text pairs, tokenized as it streams -------------------------------------


def pair_order(num_pairs: int, seed: int, epoch: int | tf.Tensor) -> tf.Tensor:
    """A permutation of `range(num_pairs)` fixed by `(seed, epoch)`: an epoch's order.

    A stateless shuffle of indices: the same in every run and every process, 8 bytes a pair,
    and any epoch's order is computed directly, without drawing the epochs before it.
    """
    seed_pair = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(num_pairs, dtype=tf.int64), seed_pair)


def streamed_pair_ids(pairs: TextPairs, order: tf.Tensor) -> tf.data.Dataset:
    """`(source_ids, target_ids)` of the pairs in `order`, one pair at a time.

    The sentences are tokenized `TOKENIZE_BATCH_SIZE` at a time, in parallel, then cut back
    into pairs: only the ids of the batches in flight exist at any moment.
    """
    indices = tf.data.Dataset.from_tensor_slices(order).batch(TOKENIZE_BATCH_SIZE)
    pair_ids = indices.map(pairs.token_ids, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    return pair_ids.map(plain_rows)


def epoch_batches(
    pairs: TextPairs,
    config: Seq2SeqConfig,
    shuffle: bool,
    num_replicas: int = 1,
    epoch: int | tf.Tensor = 0,
) -> tf.data.Dataset:
    """One epoch of `batch_by_length` batches of `pairs`, each splitting evenly over replicas.

    Shuffled, the pairs come in `pair_order(seed, epoch)` and the batches are shuffled with a
    seed of that epoch too; not shuffled, in their own order (validation).

    A length bucket's last batch is partial. Keras (3.15) builds a distributed model from the
    replicas' mean first batch, which fails when the replicas' shares differ in size ("Inputs to
    operation AddN must have the same size"), so with several replicas each batch is cut to a
    multiple of their number: at most `num_replicas - 1` pairs per bucket sit out an epoch
    (other pairs each epoch, since the order changes).
    """
    if shuffle:
        order = pair_order(len(pairs), config.seed, epoch)
        shuffle_seed = config.seed + tf.cast(epoch, tf.int64)
    else:
        order, shuffle_seed = tf.range(len(pairs), dtype=tf.int64), None
    keys = tf.gather(bucket_keys(pairs.source_lengths, pairs.target_lengths, config), order)
    if config.bucket_by == "both":
        keys = merged_keys(keys, config)
    keyed_pairs = tf.data.Dataset.zip(
        streamed_pair_ids(pairs, order), tf.data.Dataset.from_tensor_slices(keys)
    )
    dataset = batch_by_length(keyed_pairs, config, shuffle_seed)
    if num_replicas == 1:
        return dataset

    def even_split(inputs, target):
        size = tf.shape(target)[0] // num_replicas * num_replicas
        return tf.nest.map_structure(lambda ids: ids[:size], (inputs, target))

    return dataset.map(even_split).filter(lambda inputs, target: tf.shape(target)[0] > 0)


def count_batches(pairs: TextPairs, config: Seq2SeqConfig, num_replicas: int = 1) -> int:
    """Batches in one `epoch_batches` epoch, from the pairs' lengths, without tokenizing.

    Fixed by the lengths, not by the order: each bucket of `n` pairs (`bucket_keys`) gives
    `n // batch_size` full batches and, at the epoch's end, one partial batch of the rest,
    which survives the even split over the replicas when it has a pair for every replica.
    Grouped by both sides, a bucket's rest first joins its `leftover_key`'s bucket.
    """
    keys = bucket_keys(pairs.source_lengths, pairs.target_lengths, config)
    bucket_sizes = np.bincount(keys)
    if config.bucket_by == "both":
        buckets = np.arange(len(bucket_sizes))
        rest = bucket_sizes % config.batch_size
        bucket_sizes = bucket_sizes - rest
        bucket_sizes = np.bincount(
            np.concatenate([buckets, leftover_key(tf.constant(buckets), config).numpy()]),
            weights=np.concatenate([bucket_sizes, rest]),
        ).astype(np.int64)
    full, rest = np.divmod(bucket_sizes, config.batch_size)
    return int(np.sum(full) + np.count_nonzero(rest >= num_replicas))


# --- 4. The training stream ------------------------------------------------------------------


def training_batches(
    pairs: TextPairs,
    config: Seq2SeqConfig,
    epoch: int = 0,
    batch: int = 0,
    num_replicas: int = 1,
) -> tf.data.Dataset:
    """The endless stream of training batches, epoch after epoch, from `(epoch, batch)` on.

    Every epoch is reshuffled, but from `config.seed` and its number: the stream is the same in
    every run, so a resumed run starts at the killed run's epoch and skips the batches it had
    already trained on, seeing exactly the batches it would have seen.
    """
    epochs = tf.data.Dataset.counter(start=epoch)
    batches = epochs.flat_map(
        lambda number: epoch_batches(pairs, config, True, num_replicas, epoch=number)
    )
    return batches.skip(batch).prefetch(tf.data.AUTOTUNE)

"""Pipeline: token ids → `tf.data` batches for `model.fit`, in the order they are built.

1. `teacher_forcing_pair` turns a batch of target ids into the decoder's input and its expected
   output; the teacher-forcing shift lives here and nowhere else.
2. `length_buckets` and `make_dataset` batch pairs of similar length together, right-padded
   with 0, as `((source_ids, decoder_input_ids), target_ids)`.
3. `epoch_batches` is one epoch of those batches, each splitting evenly over the replicas of a
   `tf.distribute` strategy; `count_batches` counts them.
4. `training_batches` is the endless, seeded stream of epochs a run trains on, which can start
   at any (epoch, batch): a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.data import TokenizedPairs

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


def make_dataset(
    tokens: TokenizedPairs, config: Seq2SeqConfig, shuffle: bool = True
) -> tf.data.Dataset:
    """Batches of `((source_ids, decoder_input_ids), target_ids)`, right-padded with 0.

    Pairs of similar length are batched together (`bucket_by_sequence_length`), so a batch of
    short sentences is not padded to the length of a long one: padding costs compute in every
    LSTM step and softmax. Shuffling happens before bucketing, so batches still vary by epoch.
    """
    dataset = tf.data.Dataset.from_tensor_slices((tokens.source_ids, tokens.target_ids))
    # Rows of a ragged tensor arrive as rank-0-ragged values; padded batching wants plain tensors.
    dataset = dataset.map(lambda source, target: (tf.identity(source), tf.identity(target)))
    if shuffle:
        dataset = dataset.shuffle(len(tokens), seed=config.seed, reshuffle_each_iteration=True)
    boundaries = length_buckets(max(config.max_source_length, config.max_target_length))
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda source, target: tf.maximum(
            tf.shape(source)[0], tf.shape(target)[0]
        ),
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[config.batch_size] * (len(boundaries) + 1),
    )
    if shuffle:
        # Buckets fill at different rates; shuffling whole batches mixes lengths within an epoch.
        dataset = dataset.shuffle(64, seed=config.seed)
    return dataset.map(teacher_forcing_pair, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


# --- 3. One epoch, split over the replicas ---------------------------------------------------


def epoch_batches(
    tokens: TokenizedPairs, config: Seq2SeqConfig, shuffle: bool, num_replicas: int = 1
) -> tf.data.Dataset:
    """One epoch of `make_dataset` batches, each splitting evenly over the replicas.

    A length bucket's last batch is partial. Keras (3.15) builds a distributed model from the
    replicas' mean first batch, which fails when the replicas' shares differ in size ("Inputs to
    operation AddN must have the same size"), so with several replicas each batch is cut to a
    multiple of their number: at most `num_replicas - 1` pairs per bucket sit out an epoch
    (other pairs each epoch, since the order changes).
    """
    dataset = make_dataset(tokens, config, shuffle=shuffle)
    if num_replicas == 1:
        return dataset

    def even_split(inputs, target):
        size = tf.shape(target)[0] // num_replicas * num_replicas
        return tf.nest.map_structure(lambda ids: ids[:size], (inputs, target))

    return dataset.map(even_split).filter(lambda inputs, target: tf.shape(target)[0] > 0)


def count_batches(tokens: TokenizedPairs, config: Seq2SeqConfig, num_replicas: int = 1) -> int:
    """Batches in one epoch. Fixed by the pair lengths (each length bucket ends in one partial
    batch), not by the shuffle; counted by running the pipeline once, which is cheap."""
    dataset = epoch_batches(tokens, config, shuffle=False, num_replicas=num_replicas)
    return int(dataset.reduce(np.int64(0), lambda count, _: count + 1))


# --- 4. The training stream ------------------------------------------------------------------


def training_batches(
    tokens: TokenizedPairs,
    config: Seq2SeqConfig,
    epoch: int = 0,
    batch: int = 0,
    num_replicas: int = 1,
) -> tf.data.Dataset:
    """The endless stream of training batches, epoch after epoch, from `(epoch, batch)` on.

    Every epoch is reshuffled, but from `config.seed`: the stream is the same in every run, so a
    resumed run skips to where the killed one stopped and sees exactly the batches it would
    have seen. Skipping only runs the input pipeline (about a second per epoch on spa-eng).
    """
    batches = epoch_batches(tokens, config, shuffle=True, num_replicas=num_replicas)
    steps_per_epoch = count_batches(tokens, config, num_replicas)
    return batches.repeat().skip(epoch * steps_per_epoch + batch)

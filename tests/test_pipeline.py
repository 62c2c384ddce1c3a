"""Pipeline: teacher-forced, right-padded batches grouped by length, split evenly over replicas,
and a training stream that can start at any (epoch, batch)."""

import dataclasses

import numpy as np
import tensorflow as tf

from seq2seq_keras import data as data_lib
from seq2seq_keras import pipeline
from seq2seq_keras import text as text_lib
from seq2seq_keras.config import Seq2SeqConfig

from conftest import TINY_PAIRS, build_tiny, padded


def test_teacher_forcing_shifts_the_target_by_one():
    target = tf.constant([[2, 7, 8, 3]])
    (source, decoder_input), expected = pipeline.teacher_forcing_pair(tf.constant([[5]]), target)
    assert decoder_input.numpy().tolist() == [[2, 7, 8]]
    assert expected.numpy().tolist() == [[7, 8, 3]]
    assert source.numpy().tolist() == [[5]]


def test_dataset_is_teacher_forced_right_padded_and_covers_every_pair(tiny_config):
    tiny = build_tiny(tiny_config, TINY_PAIRS, epochs=0)
    batches = list(pipeline.make_dataset(tiny.tokens, tiny_config, shuffle=True))
    seen = 0
    for (source_ids, decoder_input_ids), target_ids in batches:
        source_ids, decoder_input_ids, target_ids = (
            source_ids.numpy(), decoder_input_ids.numpy(), target_ids.numpy()
        )
        seen += len(source_ids)
        assert (decoder_input_ids[:, 0] == text_lib.START_ID).all()
        # Teacher forcing: the decoder input is the target shifted right by one.
        np.testing.assert_array_equal(decoder_input_ids[:, 1:], target_ids[:, :-1])
        # Right padding only: every row is real tokens, then nothing but padding.
        for part in (source_ids, target_ids):
            for row in part:
                real = np.flatnonzero(row)
                assert real.size and (row[: real[-1] + 1] != 0).all()
        assert (target_ids == text_lib.END_ID).sum() == len(target_ids)
    assert seen == len(TINY_PAIRS)
    full_source = padded(tiny.tokens.source_ids)
    assert full_source.shape[0] == len(TINY_PAIRS)


def test_batches_are_grouped_by_length(spa_eng_path):
    config = Seq2SeqConfig(batch_size=64, source_vocab_size=2000, target_vocab_size=2000)
    pairs = data_lib.read_pairs(spa_eng_path, max_pairs=20000).pairs[::3]
    tokens = data_lib.vectorize_pairs(pairs, *text_lib.build_vocabularies(pairs, config), config)
    real = padding = 0
    for (source_ids, _), target_ids in pipeline.make_dataset(tokens, config):
        real += int(tf.math.count_nonzero(target_ids))
        padding += int(tf.size(target_ids)) - int(tf.math.count_nonzero(target_ids))
    assert padding / (real + padding) < 0.15


def test_length_buckets_stop_below_the_longest_sentence():
    assert pipeline.length_buckets(12) == [4, 6, 8, 10]
    assert pipeline.length_buckets(64)[-1] == 48


def test_every_batch_splits_evenly_over_the_replicas(tiny_config):
    tiny = build_tiny(tiny_config, TINY_PAIRS, epochs=0)
    config = dataclasses.replace(tiny_config, batch_size=4)
    sizes = [
        int(target.shape[0])
        for _, target in pipeline.epoch_batches(tiny.tokens, config, shuffle=True, num_replicas=3)
    ]
    assert sizes and all(size > 0 and size % 3 == 0 for size in sizes)
    assert pipeline.count_batches(tiny.tokens, config, num_replicas=3) == len(sizes)


def test_a_stream_started_midway_sees_the_batches_of_an_uninterrupted_one(tiny_config):
    tiny = build_tiny(tiny_config, TINY_PAIRS, epochs=0)
    config = dataclasses.replace(tiny_config, batch_size=4)
    steps_per_epoch = pipeline.count_batches(tiny.tokens, config)

    def targets(dataset, count):
        return [target.numpy().tolist() for _, target in dataset.take(count)]

    whole = targets(pipeline.training_batches(tiny.tokens, config), 3 * steps_per_epoch)
    resumed = targets(pipeline.training_batches(tiny.tokens, config, epoch=1, batch=2),
                      2 * steps_per_epoch - 2)
    assert resumed == whole[steps_per_epoch + 2:]
    assert whole[:steps_per_epoch] != whole[steps_per_epoch:2 * steps_per_epoch]  # reshuffled

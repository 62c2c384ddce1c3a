"""Pipeline: teacher-forced, right-padded batches grouped by length, tokenized as they stream
from text, split evenly over replicas, counted without tokenizing, and a training stream that
can start at any (epoch, batch)."""

import collections
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from seq2seq_keras import data as data_lib
from seq2seq_keras import pipeline
from seq2seq_keras import text as text_lib
from seq2seq_keras import tokenizers
from seq2seq_keras.config import Seq2SeqConfig

from conftest import TINY_PAIRS, build_tiny, padded

# Pairs a streamed epoch must drop as `vectorize_pairs` does: empty after standardization on
# either side (symbols no vocabulary holds), and too long on either side for `CORPUS_CONFIG`.
PAIRS_TO_DROP = [
    ("😀 🎉", "Hola."),
    ("Hello.", "🎉"),
    ("one two three four five six seven eight nine ten eleven twelve thirteen", "Uno."),
    ("One.", "uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece"),
]
CORPUS_CONFIG = Seq2SeqConfig(
    tokenizer="word", batch_size=64, max_source_length=12, max_target_length=14, seed=3
)


def text_pairs(pairs, vocabularies, config: Seq2SeqConfig) -> data_lib.TextPairs:
    source_vocabulary, target_vocabulary = vocabularies
    return data_lib.text_pairs(
        pairs,
        tokenizers.make_tokenizer(config.tokenizer, source_vocabulary),
        tokenizers.make_tokenizer(config.tokenizer, target_vocabulary),
        config,
    )


def tiny_text_pairs(tiny) -> data_lib.TextPairs:
    return text_pairs(TINY_PAIRS, (tiny.source_vocabulary, tiny.target_vocabulary), tiny.config)


def pairs_in(batches) -> collections.Counter:
    """The `(source_ids, target_ids)` of every pair in the batches, padding removed and the
    target rebuilt as `[START] y1 … yn [END]`, counted: a multiset of pairs."""
    seen = collections.Counter()
    for (source_ids, decoder_input_ids), target_ids in batches:
        for source, decoder_input, target in zip(
            source_ids.numpy(), decoder_input_ids.numpy(), target_ids.numpy()
        ):
            full_target = [decoder_input[0], *target]
            seen[tuple(source[source != 0]), tuple(int(i) for i in full_target if i)] += 1
    return seen


def pairs_of(tokens: data_lib.TokenizedPairs) -> collections.Counter:
    return collections.Counter(
        zip(map(tuple, tokens.source_ids.to_list()), map(tuple, tokens.target_ids.to_list()))
    )


@pytest.fixture(scope="module", params=["word", "wordpiece"])
def corpus(request, spa_eng_path):
    """Two thousand spa-eng pairs and `PAIRS_TO_DROP`, with `request.param` vocabularies
    learned from the spa-eng pairs."""
    config = dataclasses.replace(CORPUS_CONFIG, tokenizer=request.param)
    sample = data_lib.read_pairs(spa_eng_path, max_pairs=40000).pairs[::20]
    return config, sample + PAIRS_TO_DROP, tokenizers.build_vocabularies(sample, config)


# --- teacher forcing and batches -------------------------------------------------------------


def test_teacher_forcing_shifts_the_target_by_one():
    target = tf.constant([[2, 7, 8, 3]])
    (source, decoder_input), expected = pipeline.teacher_forcing_pair(tf.constant([[5]]), target)
    assert decoder_input.numpy().tolist() == [[2, 7, 8]]
    assert expected.numpy().tolist() == [[7, 8, 3]]
    assert source.numpy().tolist() == [[5]]


@pytest.mark.parametrize("source", ["token ids", "streamed text"])
def test_dataset_is_teacher_forced_right_padded_and_covers_every_pair(tiny_config, source):
    tiny = build_tiny(tiny_config, TINY_PAIRS, epochs=0)
    if source == "token ids":
        batches = list(pipeline.make_dataset(tiny.tokens, tiny_config, shuffle=True))
    else:
        batches = list(pipeline.epoch_batches(tiny_text_pairs(tiny), tiny_config, shuffle=True))
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


@pytest.mark.parametrize("bucket_by", ["longer", "both"])
def test_in_memory_batches_each_hold_one_length_bucket(corpus, bucket_by):
    config, pairs, vocabularies = corpus
    config = dataclasses.replace(config, bucket_by=bucket_by)
    tokens = data_lib.vectorize_pairs(pairs, *vocabularies, config)
    batches = list(pipeline.make_dataset(tokens, config, shuffle=True))
    for (source_ids, decoder_input_ids), _ in batches:
        # The target's length is its whole `[START] … [END]`, one more than the decoder's input.
        keys = pipeline.bucket_keys(
            tf.math.count_nonzero(source_ids, axis=1).numpy(),
            tf.math.count_nonzero(decoder_input_ids, axis=1).numpy() + 1,
            config,
        )
        assert len(set(keys)) == 1
    assert pairs_in(batches) == pairs_of(tokens)


def test_batches_are_grouped_by_length(spa_eng_path):
    config = Seq2SeqConfig(tokenizer="word", batch_size=64, source_vocab_size=2000,
                           target_vocab_size=2000)
    pairs = data_lib.read_pairs(spa_eng_path, max_pairs=20000).pairs[::3]
    streamed = text_pairs(pairs, tokenizers.build_vocabularies(pairs, config), config)
    real = padding = 0
    for (source_ids, _), target_ids in pipeline.epoch_batches(streamed, config, shuffle=True):
        real += int(tf.math.count_nonzero(target_ids))
        padding += int(tf.size(target_ids)) - int(tf.math.count_nonzero(target_ids))
    assert padding / (real + padding) < 0.15


def test_bucketing_by_both_sides_pads_less_and_keeps_every_pair(corpus):
    config, pairs, vocabularies = corpus
    streamed = text_pairs(pairs, vocabularies, config)
    boundaries = pipeline.pair_buckets(config)

    def padding_pairs_and_partials(bucket_by: str):
        batches = pipeline.epoch_batches(
            streamed, dataclasses.replace(config, bucket_by=bucket_by), shuffle=True)
        real = computed = partial = 0
        for (source_ids, decoder_input_ids), _ in batches:
            # A target's bucket is that of its whole `[START] … [END]`, one longer than the
            # decoder's input.
            sides = []
            for ids, marker in ((source_ids, 0), (decoder_input_ids, 1)):
                lengths = tf.math.count_nonzero(ids, axis=1).numpy()
                real, computed = real + lengths.sum(), computed + ids.numpy().size
                sides.append(np.searchsorted(boundaries, lengths + marker, side="right"))
            partial += len(sides[0]) < config.batch_size
            if bucket_by == "both":
                # Every row of a side in the same bucket, or, for the pairs left over by their
                # buckets, every row's longer side in the same bucket.
                same_buckets = len(set(sides[0])) == len(set(sides[1])) == 1
                assert same_buckets or len(set(np.maximum(*sides))) == 1
        return 1 - real / computed, pairs_in(batches), partial

    longer_padding, longer_pairs, longer_partial = padding_pairs_and_partials("longer")
    both_padding, both_pairs, both_partial = padding_pairs_and_partials("both")
    assert both_pairs == longer_pairs
    assert both_padding < 0.75 * longer_padding
    # Leftovers are merged by the longer side: no more partial batches than its buckets.
    assert both_partial <= len(boundaries) + 1
    assert longer_partial <= len(boundaries) + 1


def test_merged_keys_move_each_buckets_last_pairs_to_the_longer_sides_bucket(tiny_config):
    config = dataclasses.replace(tiny_config, batch_size=2)
    buckets = len(pipeline.pair_buckets(config)) + 1
    small, mixed = 0, 1 * buckets + 2  # (source, target) buckets (0, 0) and (1, 2)
    keys = tf.constant([small, mixed, small, small, mixed, mixed, mixed, small, small])
    merged = pipeline.merged_keys(keys, config).numpy().tolist()
    # Five pairs of `small`: two batches of two, the fifth (last in order) left over; four of
    # `mixed`: two whole batches, none left over.
    left_small = buckets * buckets + 0
    assert merged == [small, mixed, small, small, mixed, mixed, mixed, small, left_small]
    assert pipeline.leftover_key(tf.constant(mixed), config).numpy() == buckets * buckets + 2


def test_length_buckets_stop_below_the_longest_sentence():
    assert pipeline.length_buckets(12) == [4, 6, 8, 10]
    assert pipeline.length_buckets(64)[-1] == 48


# --- text tokenized as it streams ------------------------------------------------------------


def test_a_streamed_epoch_holds_exactly_the_pairs_vectorize_pairs_gives(corpus):
    config, pairs, vocabularies = corpus
    tokens = data_lib.vectorize_pairs(pairs, *vocabularies, config)
    streamed = text_pairs(pairs, vocabularies, config)
    assert streamed.dropped == tokens.dropped
    assert streamed.dropped["empty_after_standardize"] >= 2 and streamed.dropped["too_long"] >= 2
    expected = pairs_of(tokens)
    assert pairs_in(pipeline.epoch_batches(streamed, config, shuffle=True, epoch=4)) == expected
    assert pairs_in(pipeline.epoch_batches(streamed, config, shuffle=False)) == expected


def test_epochs_come_in_different_orders_fixed_by_the_seed(corpus):
    config, pairs, vocabularies = corpus
    streamed = text_pairs(pairs, vocabularies, config)

    def first_targets(epoch, seed=config.seed):
        batches = pipeline.epoch_batches(
            streamed, dataclasses.replace(config, seed=seed), shuffle=True, epoch=epoch
        )
        return [target.numpy().tolist() for _, target in batches.take(3)]

    assert first_targets(1) == first_targets(1)
    assert first_targets(1) != first_targets(2)
    assert first_targets(1) != first_targets(1, seed=config.seed + 1)


@pytest.mark.parametrize("batch_size, num_replicas, bucket_by", [
    (64, 1, "longer"), (50, 1, "longer"), (64, 3, "longer"), (10, 4, "longer"),
    (64, 1, "both"), (10, 4, "both"),
])
def test_count_batches_from_lengths_equals_the_batches_of_an_epoch(
    corpus, batch_size, num_replicas, bucket_by
):
    config, pairs, vocabularies = corpus
    config = dataclasses.replace(config, batch_size=batch_size, bucket_by=bucket_by)
    streamed = text_pairs(pairs, vocabularies, config)
    batches = pipeline.epoch_batches(streamed, config, shuffle=True, num_replicas=num_replicas)
    assert pipeline.count_batches(streamed, config, num_replicas) == len(list(batches))


# --- replicas and the training stream --------------------------------------------------------


def test_every_batch_splits_evenly_over_the_replicas(tiny_config):
    tiny = build_tiny(tiny_config, TINY_PAIRS, epochs=0)
    config = dataclasses.replace(tiny_config, batch_size=4)
    streamed = tiny_text_pairs(tiny)
    sizes = [
        int(target.shape[0])
        for _, target in pipeline.epoch_batches(streamed, config, shuffle=True, num_replicas=3)
    ]
    assert sizes and all(size > 0 and size % 3 == 0 for size in sizes)
    assert pipeline.count_batches(streamed, config, num_replicas=3) == len(sizes)


def test_a_stream_started_midway_sees_the_batches_of_an_uninterrupted_one(tiny_config):
    tiny = build_tiny(tiny_config, TINY_PAIRS, epochs=0)
    config = dataclasses.replace(tiny_config, batch_size=4)
    streamed = tiny_text_pairs(tiny)
    steps_per_epoch = pipeline.count_batches(streamed, config)

    def targets(dataset, count):
        return [target.numpy().tolist() for _, target in dataset.take(count)]

    whole = targets(pipeline.training_batches(streamed, config), 3 * steps_per_epoch)
    resumed = targets(pipeline.training_batches(streamed, config, epoch=1, batch=2),
                      2 * steps_per_epoch - 2)
    assert resumed == whole[steps_per_epoch + 2:]
    assert whole[:steps_per_epoch] != whole[steps_per_epoch:2 * steps_per_epoch]  # reshuffled
    # The stream is the epochs of `epoch_batches`, one after the other, each whole.
    for epoch in range(3):
        one_epoch = pipeline.epoch_batches(streamed, config, shuffle=True, epoch=epoch)
        assert targets(one_epoch, steps_per_epoch + 1) == (
            whole[epoch * steps_per_epoch:(epoch + 1) * steps_per_epoch]
        )

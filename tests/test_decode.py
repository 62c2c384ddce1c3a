"""The encoder and the decoder step: Keras inference models, the stepwise and the graph decoder.

Both paths run `decode.encode` and `decode.decoder_step` over the same trained layers, so they
must agree exactly: same probabilities as the teacher-forced training model, same tokens.
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from seq2seq_keras import search
from seq2seq_keras import text as text_lib
from seq2seq_keras.decode import build_inference_models, greedy_decode_stepwise
from seq2seq_keras.graph_decoder import GraphDecoder

from conftest import (
    TINY_PAIRS,
    assert_differs_only_on_near_ties,
    build_tiny,
    greedy_and_beam_one,
    padded,
    real_source_ids,
)

PAD, START, END = text_lib.PAD_ID, text_lib.START_ID, text_lib.END_ID
A, C = 4, 6  # two word ids of the tiny target vocabulary


# --- The Keras inference models (the teaching path) ------------------------------------------


def test_inference_models_reproduce_teacher_forced_probabilities(overfit_model):
    tiny = overfit_model
    source_ids = padded(tiny.tokens.source_ids)
    target_ids = padded(tiny.tokens.target_ids)
    decoder_input_ids, next_ids = target_ids[:, :-1], target_ids[:, 1:]
    expected = tiny.model([source_ids, decoder_input_ids]).numpy()  # (batch, steps, vocab)

    models = build_inference_models(tiny.model)
    state_h, state_c = models.encoder(tf.constant(source_ids))
    for step in range(decoder_input_ids.shape[1]):
        tokens = tf.constant(decoder_input_ids[:, step : step + 1])
        probabilities, state_h, state_c = models.decoder_step([tokens, state_h, state_c])
        real = next_ids[:, step] != text_lib.PAD_ID
        difference = np.abs(probabilities.numpy()[:, 0, :] - expected[:, step, :])[real]
        assert difference.max() <= 1e-5, f"step {step}: max difference {difference.max()}"


def test_stepwise_decoder_stops_at_end_and_respects_max_length(overfit_model):
    models = build_inference_models(overfit_model.model)
    source_ids = padded(overfit_model.tokens.source_ids)
    short = greedy_decode_stepwise(models, source_ids, max_length=2)
    assert short.shape == (len(source_ids), 2)
    full = greedy_decode_stepwise(models, source_ids, max_length=12)
    for row in full:
        ends = np.flatnonzero(row == text_lib.END_ID)
        assert ends.size >= 1 and (row[ends[0] + 1 :] == text_lib.PAD_ID).all()


# --- The trained tiny models ---------------------------------------------------------------


@pytest.fixture(scope="module")
def half_trained_model(tiny_config):
    """Less peaked than `overfit_model`: near-ties that would expose any numeric difference.
    Ten epochs: with label smoothing, after eight it still wrote the same few sentences."""
    return build_tiny(tiny_config, TINY_PAIRS, epochs=10)


@pytest.fixture(scope="module")
def bfloat16_model(tiny_config):
    """Trained under mixed bfloat16: the cells compute, and carry their states, in bfloat16."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        tiny = build_tiny(tiny_config, TINY_PAIRS, epochs=8)
        assert tiny.model.get_layer("decoder_lstm").cell.compute_dtype == "bfloat16"
        return tiny
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.fixture(scope="module")
def many_source_ids(spa_eng_path, overfit_model):
    """Padded ids of 300 real English sentences (mostly unknown words to the tiny vocabulary)."""
    return real_source_ids(spa_eng_path, overfit_model)


def teacher_forced_log_probs(tiny, source_ids, token_ids):
    """The training model's log-probability of each row of `token_ids` (up to its [END])."""
    decoder_input = np.concatenate([np.full((len(token_ids), 1), START), token_ids[:, :-1]], 1)
    probabilities = tiny.model([source_ids, decoder_input]).numpy()
    chosen = np.take_along_axis(probabilities, token_ids[..., None], axis=-1)[..., 0]
    real = np.cumsum(np.cumsum(token_ids == END, axis=1), axis=1) <= 1  # through the 1st [END]
    return np.where(real, np.log(chosen), 0.0).sum(axis=1)


@pytest.mark.parametrize("which", ["overfit_model", "half_trained_model"])
def test_graph_greedy_equals_the_stepwise_decoder_exactly(which, request, many_source_ids):
    tiny = request.getfixturevalue(which)
    max_length = tiny.config.max_decode_length
    models = build_inference_models(tiny.model)
    expected = greedy_decode_stepwise(models, many_source_ids, max_length)
    decoder = GraphDecoder(tiny.model, max_length)
    result = decoder.greedy(tf.constant(many_source_ids))
    np.testing.assert_array_equal(result.token_ids.numpy(), expected)
    assert len(np.unique(expected, axis=0)) > 5  # the sentences do not all decode alike
    # Its scores are the model's log-probabilities of those tokens.
    np.testing.assert_allclose(
        result.log_probs.numpy(),
        teacher_forced_log_probs(tiny, many_source_ids, expected),
        rtol=1e-4, atol=1e-4,
    )


@pytest.mark.bfloat16
def test_graph_greedy_in_bfloat16_differs_from_the_stepwise_decoder_only_on_near_ties(
    bfloat16_model, many_source_ids
):
    # The graph decoder steps only the sentences still translating, so its matmuls see fewer
    # rows than the stepwise decoder's once sentences finish. In float32 that changes nothing
    # (the test above); in bfloat16 the rounding of a row can depend on the batch's shape, so
    # a sentence may take the other of two tokens the model finds about equally likely.
    tiny = bfloat16_model
    max_length = tiny.config.max_decode_length
    expected = greedy_decode_stepwise(build_inference_models(tiny.model), many_source_ids,
                                      max_length)
    actual = GraphDecoder(tiny.model, max_length).greedy(tf.constant(many_source_ids))
    assert_differs_only_on_near_ties(tiny.model, many_source_ids, actual.token_ids, expected)


def test_graph_beam_on_the_model_width_one_is_greedy_and_width_four_scores_higher(
    half_trained_model, many_source_ids
):
    tiny = half_trained_model
    decoder = GraphDecoder(tiny.model, tiny.config.max_decode_length)
    greedy, beam_one = greedy_and_beam_one(decoder, many_source_ids)
    np.testing.assert_array_equal(beam_one.token_ids, greedy.token_ids)

    alpha = search.DEFAULT_LENGTH_ALPHA
    beam = decoder.beam(tf.constant(many_source_ids), tf.constant(4), tf.constant(alpha))
    beam_scores = search.normalized_scores(beam, alpha).numpy()
    greedy_scores = search.normalized_scores(greedy, alpha).numpy()
    assert (beam_scores >= greedy_scores - 1e-6).all()
    assert (beam_scores > greedy_scores + 1e-3).sum() >= 1  # beam search did find better ones
    # The beam's bookkeeping (parents, states) is right: rescoring its tokens agrees.
    np.testing.assert_allclose(
        beam.log_probs.numpy(),
        teacher_forced_log_probs(tiny, many_source_ids, beam.token_ids.numpy()),
        rtol=1e-4, atol=1e-4,
    )


def test_graph_decoder_handles_empty_batches_and_empty_sources(overfit_model):
    decoder = GraphDecoder(overfit_model.model, overfit_model.config.max_decode_length)
    empty = decoder.greedy(tf.zeros([0, 0], tf.int64))
    assert empty.token_ids.shape == (0, 0)
    assert decoder.decode(tf.zeros([0, 3], tf.int64), beam_width=3).token_ids.shape[0] == 0
    # A row of padding only decodes from the zero state, like the stepwise decoder does.
    expected = greedy_decode_stepwise(
        build_inference_models(overfit_model.model), np.zeros((2, 1), np.int64), 12
    )
    np.testing.assert_array_equal(decoder.greedy(tf.zeros([2, 1], tf.int64)).token_ids, expected)


def test_ids_past_the_vocabulary_are_never_chosen(overfit_model):
    # A softmax layer wider than the learned vocabulary (a small corpus) has ids with no token.
    # Sampling at a high temperature picks nearly uniformly, so a decoder that did not rule
    # them out would choose some; one told the vocabulary's size never does, nor does its beam.
    model, max_length = overfit_model.model, overfit_model.config.max_decode_length
    known = model.output_shape[-1] - 3
    full, cut = GraphDecoder(model, max_length), GraphDecoder(model, max_length, vocabulary_size=known)
    sources = [source for source, _ in TINY_PAIRS] * 8
    vectorizer = text_lib.make_vectorizer(overfit_model.source_vocabulary)
    source_ids = tf.constant(padded(vectorizer(tf.constant(sources))), tf.int64)
    hot, seed = tf.constant(50.0), tf.constant(7, tf.int64)
    assert np.any(full.sample(source_ids, hot, seed).token_ids.numpy() >= known)
    for result in (cut.sample(source_ids, hot, seed), cut.decode(source_ids, beam_width=4)):
        assert result.token_ids.numpy().max() < known


def test_a_padding_token_is_the_same_step_in_both_decoders(half_trained_model):
    # The stepwise decoder feeds padding to finished sentences; the functional step model does
    # not mask it (its state changes), and the graph step must do exactly the same.
    models = build_inference_models(half_trained_model.model)
    decoder = GraphDecoder(half_trained_model.model, 12)
    state = decoder.encode(padded(half_trained_model.tokens.source_ids)[:4])
    tokens = np.array([PAD, A, PAD, C], np.int64)
    probabilities, h, c = models.decoder_step([tf.constant(tokens[:, None]), *state])
    logits, (graph_h, graph_c) = decoder.step(tf.constant(tokens), state)
    # The graph step stops before the softmax layer's softmax (the searches need the logits).
    np.testing.assert_array_equal(probabilities[:, 0, :], keras.ops.softmax(logits, axis=-1))
    np.testing.assert_array_equal(h, graph_h)
    np.testing.assert_array_equal(c, graph_c)


# --- Length caps relative to the source ----------------------------------------------------

# Tight enough that the tiny models' translations of real sentences often reach it.
LENGTH_FACTOR, LENGTH_OFFSET = 0.5, 1


@pytest.fixture(scope="module")
def untrained_attention_model(tiny_config):
    """An untrained model with attention: a confused one, rarely choosing [END]."""
    config = dataclasses.replace(tiny_config, attention="luong", reverse_source=False)
    return build_tiny(config, TINY_PAIRS, epochs=0)


def expected_caps(source_ids: np.ndarray, max_length: int) -> np.ndarray:
    """`min(max_length, floor(0.5 * n) + 1)` for n source tokens, written out by hand."""
    return np.minimum(max_length, np.count_nonzero(source_ids, axis=1) // 2 + LENGTH_OFFSET)


def capped_decoder(tiny, length_offset: int = LENGTH_OFFSET) -> GraphDecoder:
    return GraphDecoder(tiny.model, tiny.config.max_decode_length,
                        length_factor=LENGTH_FACTOR, length_offset=length_offset)


def test_graph_decoder_caps_every_search_by_the_source_length(half_trained_model,
                                                              many_source_ids):
    tiny, source_ids = half_trained_model, tf.constant(many_source_ids)
    max_length = tiny.config.max_decode_length
    caps = expected_caps(many_source_ids, max_length)
    free, capped = GraphDecoder(tiny.model, max_length), capped_decoder(tiny)
    np.testing.assert_array_equal(capped.max_lengths(source_ids), caps)
    np.testing.assert_array_equal(free.max_lengths(source_ids), [max_length] * len(caps))

    # Greedy: a row over its cap is cut there (no [END]), the others are unchanged.
    free_greedy, greedy = free.greedy(source_ids), capped.greedy(source_ids)
    over = free_greedy.lengths.numpy() > caps
    assert over.sum() >= 5 and len(np.unique(caps[over])) >= 2  # different caps bind
    np.testing.assert_array_equal(greedy.lengths, np.minimum(free_greedy.lengths, caps))
    free_ids = free_greedy.token_ids.numpy()
    kept = np.arange(free_ids.shape[1])[None, :] < caps[:, None]
    width = greedy.token_ids.shape[1]
    np.testing.assert_array_equal(greedy.token_ids, np.where(kept, free_ids, PAD)[:, :width])

    # Beam search and sampling: no row passes its cap, and without it some rows would.
    beam_args = (tf.constant(4), tf.constant(search.DEFAULT_LENGTH_ALPHA))
    sample_args = (tf.constant(1.0), tf.constant(3, tf.int64))
    for name, args in (("beam", beam_args), ("sample", sample_args)):
        free_lengths = getattr(free, name)(source_ids, *args).lengths.numpy()
        lengths = getattr(capped, name)(source_ids, *args).lengths.numpy()
        assert (free_lengths > caps).any(), name
        assert (lengths <= caps).all() and (lengths == caps).any(), name


@pytest.mark.parametrize("which", ["half_trained_model", "untrained_attention_model"])
def test_stepwise_decoder_with_a_cap_equals_the_graph_decoder(which, request, many_source_ids):
    tiny = request.getfixturevalue(which)
    max_length = tiny.config.max_decode_length
    expected = greedy_decode_stepwise(build_inference_models(tiny.model), many_source_ids,
                                      max_length, LENGTH_FACTOR, LENGTH_OFFSET)
    result = capped_decoder(tiny).greedy(tf.constant(many_source_ids))
    np.testing.assert_array_equal(result.token_ids, expected)
    caps = expected_caps(many_source_ids, max_length)
    assert (result.lengths.numpy() == caps).mean() > 0.5  # mostly capped, not ended


def test_greedy_with_attention_is_capped_too(untrained_attention_model, many_source_ids):
    source_ids = tf.constant(many_source_ids)
    result, weights = capped_decoder(untrained_attention_model).greedy_with_attention(source_ids)
    caps = expected_caps(many_source_ids, untrained_attention_model.config.max_decode_length)
    assert (result.lengths.numpy() <= caps).all() and (result.lengths.numpy() == caps).any()
    assert weights.shape[:2] == result.token_ids.shape


def test_a_cap_of_zero_for_empty_sources_decodes_nothing(overfit_model):
    decoder = capped_decoder(overfit_model, length_offset=0)  # an empty source: cap 0
    empty_sources = tf.zeros([2, 1], tf.int64)
    for result in (
        decoder.greedy(empty_sources),
        decoder.beam(empty_sources, tf.constant(3), tf.constant(0.6)),
        decoder.sample(empty_sources, tf.constant(1.0), tf.constant(0, tf.int64)),
    ):
        assert result.token_ids.shape == (2, 0)
        np.testing.assert_array_equal(result.lengths, [0, 0])
    stepwise = greedy_decode_stepwise(build_inference_models(overfit_model.model),
                                      np.zeros((2, 1), np.int64), 12, LENGTH_FACTOR, 0)
    assert stepwise.shape == (2, 0)

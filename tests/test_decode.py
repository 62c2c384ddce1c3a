"""The encoder and the decoder step: Keras inference models, the stepwise and the graph decoder.

Both paths run `decode.encode` and `decode.decoder_step` over the same trained layers, so they
must agree exactly: same probabilities as the teacher-forced training model, same tokens.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from seq2seq_keras import data as data_lib
from seq2seq_keras import search
from seq2seq_keras import text as text_lib
from seq2seq_keras.decode import build_inference_models, greedy_decode_stepwise
from seq2seq_keras.graph_decoder import GraphDecoder

from conftest import TINY_PAIRS, build_tiny, padded

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
    """Less peaked than `overfit_model`: near-ties that would expose any numeric difference."""
    return build_tiny(tiny_config, TINY_PAIRS, epochs=8)


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
    pairs = data_lib.read_pairs(spa_eng_path, max_pairs=30000).pairs
    sentences = [source for source, _ in pairs[::100]][:300] + [s for s, _ in TINY_PAIRS]
    vectorizer = text_lib.make_vectorizer(overfit_model.source_vocabulary)
    ragged = vectorizer(tf.constant(sentences))[:, : overfit_model.config.max_source_length]
    ragged = tf.ragged.boolean_mask(ragged, ragged.row_lengths() > 0)
    return padded(ragged)


def teacher_forced_log_probs(tiny, source_ids, token_ids):
    """The training model's log-probability of each row of `token_ids` (up to its [END])."""
    decoder_input = np.concatenate([np.full((len(token_ids), 1), START), token_ids[:, :-1]], 1)
    probabilities = tiny.model([source_ids, decoder_input]).numpy()
    chosen = np.take_along_axis(probabilities, token_ids[..., None], axis=-1)[..., 0]
    real = np.cumsum(np.cumsum(token_ids == END, axis=1), axis=1) <= 1  # through the 1st [END]
    return np.where(real, np.log(chosen), 0.0).sum(axis=1)


@pytest.mark.parametrize("which", ["overfit_model", "half_trained_model", "bfloat16_model"])
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


def test_graph_beam_on_the_model_width_one_is_greedy_and_width_four_scores_higher(
    half_trained_model, many_source_ids
):
    tiny = half_trained_model
    decoder = GraphDecoder(tiny.model, tiny.config.max_decode_length)
    state = decoder.encode(many_source_ids)
    batch_size, max_length = len(many_source_ids), tiny.config.max_decode_length
    greedy = search.greedy_search(decoder.step, state, batch_size, max_length)
    beam_one = search.beam_search(decoder.step, state, batch_size, max_length, beam_width=1,
                                  alpha=0.0, include_greedy=False)
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


def test_a_padding_token_is_the_same_step_in_both_decoders(half_trained_model):
    # The stepwise decoder feeds padding to finished sentences; the functional step model does
    # not mask it (its state changes), and the graph step must do exactly the same.
    models = build_inference_models(half_trained_model.model)
    decoder = GraphDecoder(half_trained_model.model, 12)
    state = decoder.encode(padded(half_trained_model.tokens.source_ids)[:4])
    tokens = np.array([PAD, A, PAD, C], np.int64)
    probabilities, h, c = models.decoder_step([tf.constant(tokens[:, None]), *state])
    log_probs, (graph_h, graph_c) = decoder.step(tf.constant(tokens), state)
    np.testing.assert_array_equal(tf.math.log(probabilities[:, 0, :]), log_probs)
    np.testing.assert_array_equal(h, graph_h)
    np.testing.assert_array_equal(c, graph_c)

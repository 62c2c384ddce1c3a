"""Decoding precision: bfloat16 copies of the matmul weights, and the choice between precisions.

A bfloat16 cell must compute what the Keras cell computes, up to bfloat16's rounding of its
matmuls; a decoder over them must translate as the float32 one does except on near-ties.
"""


import keras
import numpy as np
import pytest
import tensorflow as tf

from seq2seq_keras import export
from seq2seq_keras import hardware
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.decode_precision import (
    Bfloat16GRUCell,
    Bfloat16LSTMCell,
    Bfloat16Matmuls,
    resolve_decode_precision,
)
from seq2seq_keras.graph_decoder import GraphDecoder
from seq2seq_keras.model_dir import TrainedModel
from seq2seq_keras.translator import Translator

from conftest import TINY_PAIRS, assert_differs_only_on_near_ties, build_tiny, real_source_ids

# bfloat16 keeps 8 significant bits: a product of weights and inputs of magnitude ~1 is off by
# at most a few parts in 256, and the gates squash that further.
BFLOAT16_TOLERANCE = 3e-2


# --- Choosing the precision ------------------------------------------------------------------


def test_auto_is_bfloat16_only_on_a_cpu_with_bfloat16_dot_products(monkeypatch):
    assert resolve_decode_precision("float32") == "float32"
    assert resolve_decode_precision("bfloat16") == "bfloat16"
    monkeypatch.setattr(hardware, "cpu_has_native_bfloat16", lambda: True)
    assert resolve_decode_precision("auto") == "bfloat16"
    monkeypatch.setattr(hardware, "cpu_has_native_bfloat16", lambda: False)
    assert resolve_decode_precision("auto") == "float32"
    with pytest.raises(ValueError, match="decode_precision"):
        resolve_decode_precision("float16")
    with pytest.raises(ValueError, match="decode_precision"):
        Seq2SeqConfig(decode_precision="int8")


# --- The cells -------------------------------------------------------------------------------


@pytest.mark.bfloat16
@pytest.mark.parametrize("cell_class", [keras.layers.LSTMCell, keras.layers.GRUCell])
def test_a_bfloat16_cell_computes_what_the_keras_cell_computes(cell_class):
    keras.utils.set_random_seed(3)
    cell = cell_class(24)
    inputs = tf.random.normal([5, 12])
    num_states = 2 if cell_class is keras.layers.LSTMCell else 1
    states = [tf.random.normal([5, 24]) for _ in range(num_states)]
    cell.build(inputs.shape)
    # Non-zero biases, so that a bias applied to the wrong gate would show.
    cell.bias.assign(tf.random.normal(cell.bias.shape))
    expected_output, expected_states = cell(inputs, states)
    copy = {keras.layers.LSTMCell: Bfloat16LSTMCell, keras.layers.GRUCell: Bfloat16GRUCell}[
        cell_class
    ](cell)
    output, new_states = copy(inputs, states)
    assert copy.kernel.dtype == tf.bfloat16 and output.dtype == tf.float32
    np.testing.assert_allclose(output, expected_output, atol=BFLOAT16_TOLERANCE)
    for state, expected in zip(new_states, expected_states):
        np.testing.assert_allclose(state, expected, atol=BFLOAT16_TOLERANCE)
    # The rounding is real: the copy is not secretly float32.
    assert not np.array_equal(output.numpy(), expected_output.numpy())


# --- The decoder -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def half_trained_model(tiny_config):
    return build_tiny(tiny_config, TINY_PAIRS, epochs=8)


@pytest.fixture(scope="module")
def source_ids(spa_eng_path, half_trained_model):
    return real_source_ids(spa_eng_path, half_trained_model)


@pytest.mark.bfloat16
def test_a_bfloat16_decoder_translates_as_float32_except_on_near_ties(
    half_trained_model, source_ids
):
    tiny = half_trained_model
    max_length = tiny.config.max_decode_length
    float32 = GraphDecoder(tiny.model, max_length)
    bfloat16 = GraphDecoder(tiny.model, max_length, precision="bfloat16")
    assert isinstance(bfloat16.runner, Bfloat16Matmuls)
    expected = float32.greedy(tf.constant(source_ids))
    actual = bfloat16.greedy(tf.constant(source_ids))
    assert_differs_only_on_near_ties(tiny.model, source_ids, actual.token_ids, expected.token_ids)
    # Where the tokens agree, so do the scores, up to the rounding.
    same = [np.array_equal(a[a != 0], e[e != 0]) for a, e in
            zip(actual.token_ids.numpy(), expected.token_ids.numpy())]
    assert sum(same) >= 0.9 * len(same)
    np.testing.assert_allclose(actual.log_probs.numpy()[same], expected.log_probs.numpy()[same],
                               atol=0.05)
    # Beam search over the bfloat16 step still scores at least as well as its greedy search.
    beam = bfloat16.beam(tf.constant(source_ids), tf.constant(4), tf.constant(0.0))
    assert np.all(beam.log_probs.numpy() >= actual.log_probs.numpy())


@pytest.mark.bfloat16
def test_an_exported_bfloat16_translator_translates_as_in_python(half_trained_model, tmp_path):
    tiny = half_trained_model
    trained = TrainedModel(tiny.config, tiny.model, tiny.source_vocabulary,
                           tiny.target_vocabulary).with_decode_precision("bfloat16")
    translator = Translator.from_trained(trained)
    assert translator.module.decode_precision == "bfloat16"
    sentences = [source for source, _ in TINY_PAIRS]
    version_dir = export.export_saved_model(trained, "bf16", str(tmp_path))
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    served_texts = [t.decode("utf-8") for t in served(sentences=tf.constant(sentences))[
        "translations"].numpy()]
    assert served_texts == translator.translate(sentences)

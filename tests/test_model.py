import numpy as np
import pytest
import tensorflow as tf

from seq2seq_keras import model as model_lib
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.text import PAD_ID


@pytest.fixture(scope="module")
def small_model():
    config = Seq2SeqConfig(source_vocab_size=30, target_vocab_size=40, embedding_dim=8, units=16)
    return model_lib.build_training_model(config)


def test_graph_has_the_named_layers_of_the_diagram(small_model):
    names = {layer.name for layer in small_model.layers}
    assert {
        model_lib.ENCODER_EMBEDDING,
        model_lib.ENCODER_LSTM,
        model_lib.DECODER_EMBEDDING,
        model_lib.DECODER_LSTM,
        model_lib.DECODER_DENSE,
    } <= names
    probabilities = small_model([tf.constant([[5, 6, 7]]), tf.constant([[2, 9]])])
    assert probabilities.shape == (1, 2, 40)
    np.testing.assert_allclose(tf.reduce_sum(probabilities, -1).numpy(), 1.0, rtol=1e-5)


def test_the_softmax_layer_is_the_softmax_of_its_logits(small_model):
    # Decoding reads the logits alone (no softmax); they must be what the softmax is taken of.
    dense = small_model.get_layer(model_lib.DECODER_DENSE)
    vectors = tf.random.stateless_normal([3, 16], seed=[1, 2])
    logits = dense.logits(vectors)
    assert logits.shape == (3, 40)
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), dense(vectors).numpy(), atol=1e-6)


def test_decoder_starts_from_the_encoder_context(small_model):
    # Changing only the source must change the decoder's predictions: the context flows over.
    decoder_input = tf.constant([[2, 9, 10]])
    first = small_model([tf.constant([[5, 6, 7]]), decoder_input])
    second = small_model([tf.constant([[8, 8, 8]]), decoder_input])
    assert not np.allclose(first.numpy(), second.numpy())


def manual_masked_loss(targets: np.ndarray, probabilities: np.ndarray) -> float:
    real = targets != PAD_ID
    picked = np.take_along_axis(probabilities, targets[..., None], axis=-1)[..., 0]
    return float(-np.log(picked[real]).mean())


def test_loss_is_the_mean_over_real_tokens_and_ignores_padding(small_model):
    source = tf.constant([[5, 6, 7, 0], [8, 9, 0, 0]])
    decoder_input = tf.constant([[2, 11, 12, 0, 0], [2, 13, 0, 0, 0]])
    targets = np.array([[11, 12, 3, 0, 0], [13, 3, 0, 0, 0]])
    probabilities = small_model([source, decoder_input])
    keras_loss = float(small_model.compute_loss(y=tf.constant(targets), y_pred=probabilities))
    assert keras_loss == pytest.approx(manual_masked_loss(targets, probabilities.numpy()), rel=1e-5)
    # The same batch with less padding has the same loss.
    trimmed = small_model([source[:, :3], decoder_input[:, :3]])
    trimmed_loss = float(small_model.compute_loss(y=tf.constant(targets[:, :3]), y_pred=trimmed))
    assert trimmed_loss == pytest.approx(keras_loss, rel=1e-5)


def test_evaluate_reports_the_masked_loss_and_accuracy(small_model):
    source = tf.constant([[5, 6, 7, 0], [8, 9, 0, 0]])
    decoder_input = tf.constant([[2, 11, 12, 0], [2, 13, 0, 0]])
    targets = np.array([[11, 12, 3, 0], [13, 3, 0, 0]])
    probabilities = small_model([source, decoder_input]).numpy()
    results = small_model.evaluate(
        (source, decoder_input), tf.constant(targets), return_dict=True, verbose=0
    )
    real = targets != PAD_ID
    accuracy = (probabilities.argmax(-1) == targets)[real].mean()
    assert results["loss"] == pytest.approx(manual_masked_loss(targets, probabilities), rel=1e-4)
    assert results["masked_accuracy"] == pytest.approx(accuracy)


def test_masked_accuracy_counts_only_real_tokens():
    metric = model_lib.MaskedAccuracy()
    targets = tf.constant([[1, 2, 0, 0]])
    # Predicts 1, 5, and (wrongly but irrelevantly) 7, 7 on the padding.
    probabilities = tf.one_hot([[1, 5, 7, 7]], 10)
    metric.update_state(targets, probabilities)
    assert float(metric.result()) == pytest.approx(0.5)

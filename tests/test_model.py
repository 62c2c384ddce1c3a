import keras
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
    keras_loss = float(small_model.compute_loss(y=tf.constant(targets), y_pred=probabilities,
                                                training=False))
    assert keras_loss == pytest.approx(manual_masked_loss(targets, probabilities.numpy()), rel=1e-5)
    # The same batch with less padding has the same loss.
    trimmed = small_model([source[:, :3], decoder_input[:, :3]])
    trimmed_loss = float(small_model.compute_loss(y=tf.constant(targets[:, :3]), y_pred=trimmed,
                                                  training=False))
    assert trimmed_loss == pytest.approx(keras_loss, rel=1e-5)
    # Keras' own masked cross-entropy gives the same number (it does more work for it).
    keras_own = keras.losses.SparseCategoricalCrossentropy(ignore_class=PAD_ID)
    assert float(keras_own(tf.constant(targets), probabilities)) == pytest.approx(keras_loss,
                                                                                rel=1e-5)


def test_label_smoothing_applies_to_the_training_loss_only(small_model):
    source = tf.constant([[5, 6, 7, 0], [8, 9, 0, 0]])
    decoder_input = tf.constant([[2, 11, 12, 0, 0], [2, 13, 0, 0, 0]])
    targets = np.array([[11, 12, 3, 0, 0], [13, 3, 0, 0, 0]])
    probabilities = small_model([source, decoder_input])
    assert small_model.label_smoothing == Seq2SeqConfig().label_smoothing == 0.1
    plain = manual_masked_loss(targets, probabilities.numpy())
    # Cross-entropy against the uniform distribution over the 40 tokens, real positions only.
    uniform = float(-np.log(probabilities.numpy()).mean(-1)[targets != PAD_ID].mean())
    smoothed = float(small_model.compute_loss(y=tf.constant(targets), y_pred=probabilities,
                                              training=True))
    assert smoothed == pytest.approx(0.9 * plain + 0.1 * uniform, rel=1e-5)
    evaluated = float(small_model.compute_loss(y=tf.constant(targets), y_pred=probabilities,
                                               training=False))
    assert evaluated == pytest.approx(plain, rel=1e-5)


def test_a_factorized_output_layer_projects_first_and_saves_its_projection(tmp_path):
    config = Seq2SeqConfig(source_vocab_size=30, target_vocab_size=40, embedding_dim=8, units=16,
                           output_projection_dim=6)
    model = model_lib.build_training_model(config)
    dense = model.get_layer(model_lib.DECODER_DENSE)
    assert [tuple(weight.shape) for weight in dense.weights] == [(16, 6), (6, 40), (40,)]
    vectors = tf.random.stateless_normal([3, 16], seed=[1, 2])
    expected = (vectors.numpy() @ dense.projection.numpy()) @ dense.kernel.numpy() + dense.bias
    np.testing.assert_allclose(dense.logits(vectors), expected, rtol=1e-5, atol=1e-5)
    # Saved and loaded by plain Keras (the package imported): the same weights and outputs.
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    inputs = [tf.constant([[5, 6, 7]]), tf.constant([[2, 9]])]
    assert isinstance(loaded, model_lib.Seq2SeqModel)
    np.testing.assert_array_equal(loaded(inputs), model(inputs))


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

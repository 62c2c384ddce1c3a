import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from seq2seq_keras import model as model_lib
from seq2seq_keras import objective
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



def test_the_smoothed_loss_has_the_gradient_of_its_two_terms(small_model):
    # The training loss is one cross-entropy against smoothed targets; written as its two
    # terms it must give the same gradient: (1 - ε)(softmax - one-hot) + ε(softmax - 1/V) per
    # real token, 0 on padding. Both sides sum 40 float32 terms a token, in different orders:
    # agreement to a few float32 ulps of the largest gradient, not bit for bit.
    targets = tf.constant([[11, 12, 3, 0, 0], [13, 3, 0, 0, 0]])
    logits = tf.random.stateless_normal([2, 5, 40], seed=[3, 4]) * 3.0
    real = tf.cast(targets != PAD_ID, tf.float32)
    weights = real / tf.reduce_sum(real)

    def gradient(loss_of):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = loss_of(keras.ops.softmax(logits, axis=-1))
        return loss, tape.gradient(loss, logits)

    smoothed, smoothed_gradient = gradient(
        lambda probabilities: small_model.compute_loss(y=targets, y_pred=probabilities)
    )

    def two_terms(_):
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
            tf.where(targets == PAD_ID, 0, targets), logits
        )
        uniform = tf.reduce_logsumexp(logits, -1) - tf.reduce_mean(logits, -1)
        return tf.reduce_sum((0.9 * cross_entropy + 0.1 * uniform) * weights)

    reference, reference_gradient = gradient(two_terms)
    assert float(smoothed) == pytest.approx(float(reference), rel=1e-6)
    np.testing.assert_allclose(smoothed_gradient, reference_gradient, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(smoothed_gradient.numpy()[real.numpy() == 0], 0.0)


def test_fused_adam_updates_as_keras_adam():
    # The fused kernel computes Keras' Adam in another order of float operations (β·m + (1-β)·g
    # against m + (g - m)(1 - β)): after five steps the weights agree to float32 rounding of
    # updates of about 1e-2, with gradients clipped (Keras' clipnorm, in both) or not.
    def weights_after_five_steps(optimizer_class, sparse: bool, clipnorm):
        dense = tf.Variable(tf.random.stateless_normal([6, 4], seed=[1, 1]))
        embedding = tf.Variable(tf.random.stateless_normal([10, 4], seed=[2, 2]))
        optimizer = optimizer_class(1e-2, clipnorm=clipnorm)
        for step in range(5):
            dense_gradient = tf.random.stateless_normal([6, 4], seed=[step, 3]) * 2.0
            rows = tf.IndexedSlices(
                tf.random.stateless_normal([3, 4], seed=[step, 4]), tf.constant([1, 7, 1]),
                tf.constant([10, 4]),
            )
            embedding_gradient = rows if sparse else tf.convert_to_tensor(rows)
            optimizer.apply_gradients([(dense_gradient, dense), (embedding_gradient, embedding)])
        return optimizer, [dense.numpy(), embedding.numpy()]

    for clipnorm in (1.0, None):
        keras_adam, expected = weights_after_five_steps(keras.optimizers.Adam, False, clipnorm)
        fused_adam, fused = weights_after_five_steps(objective.FusedAdam, False, clipnorm)
        for got, want in zip(fused, expected):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # An embedding's sparse gradient (IndexedSlices, row 1 twice) updates as the dense gradient
    # it stands for: summed per row first, textbook Adam. (Keras' own update squares the
    # slices one by one: g1² + g2² for a repeated row, not (g1 + g2)².)
    _, fused = weights_after_five_steps(objective.FusedAdam, True, None)
    for got, want in zip(fused, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # Rows no gradient touched keep their initial values.
    np.testing.assert_array_equal(fused[1][0], expected[1][0])
    # The same variables under the same names ("adam/…"; Keras numbers the optimizers of a
    # process "adam", "adam_1", …), so checkpoints load into either.
    def names(optimizer):
        return [re.sub(r"^adam(_\d+)?/", "adam/", v.path) for v in optimizer.variables]

    assert names(fused_adam) == names(keras_adam)
    assert names(fused_adam)[0] == "adam/iteration"


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

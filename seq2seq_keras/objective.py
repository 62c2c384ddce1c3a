"""What training optimizes: the softmax layer, the masked loss and metric, and `compile_model`.

Every architecture (the RNN family in `model.py`, the Transformer in `transformer.py`) ends in
the same `SoftmaxDense` layer named `decoder_dense` and is compiled by the same function, so
losses and validation losses of every configuration compare, and every decoder reads logits
the same way.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.text import PAD_ID

@keras.saving.register_keras_serializable(package="seq2seq_keras")
class SoftmaxDense(keras.layers.Dense):
    """A `Dense` layer followed by a softmax that always runs in float32.

    Mixed precision's rule (TensorFlow's guide: "the last layer's softmax in float32"): the
    matmul computes in the layer's compute dtype (bfloat16 on a CPU, float16 on a GPU, float32
    otherwise), the logits are cast to float32, and the softmax and the loss are float32. It is
    one layer, so decoders that call `decoder_dense` by name still get probabilities.
    """

    def __init__(self, units: int, projection_dim: int = 0, **kwargs):
        super().__init__(units, **kwargs)
        self.projection_dim = projection_dim

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if self.projection_dim:
            # (input_dim, projection_dim), then Dense's kernel (projection_dim, vocab).
            self.projection = self.add_weight(
                name="projection", shape=(input_dim, self.projection_dim),
                initializer=self.kernel_initializer,
            )
            input_shape = (*input_shape[:-1], self.projection_dim)
        super().build(input_shape)
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs):
        return ops.softmax(ops.cast(self.logits(inputs), "float32"), axis=-1)

    def logits(self, inputs):
        """The `Dense` part alone: `(..., vocab)` logits in the compute dtype.

        Decoding reads these: the largest logit is the most probable token, and a beam needs
        the log-probabilities of its best few tokens only (`seq2seq_keras.search`). With a
        `projection_dim`, the inputs are first projected to that size (a factorized output
        layer: units × vocab multiply-adds per token become units × dim + dim × vocab).
        """
        if self.projection_dim:
            inputs = ops.matmul(inputs, self.projection)
        return super().call(inputs)

    def get_config(self):
        return {**super().get_config(), "projection_dim": self.projection_dim}

    # Dense saves its kernel and bias under its own keys; the projection is saved beside them.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.built and self.projection_dim:
            store["projection"] = self.projection

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built and self.projection_dim:
            self.projection.assign(store["projection"])

    def compute_output_spec(self, inputs):
        spec = super().compute_output_spec(inputs)
        return keras.KerasTensor(spec.shape, dtype="float32")


def compile_model(model: "Seq2SeqModel", config: Seq2SeqConfig) -> None:
    """Compile with Adam (`FusedAdam`), the masked cross-entropy and the masked token accuracy.

    The cross-entropy is averaged over real target tokens only: padding neither adds loss nor
    dilutes the mean, so a batch's loss does not depend on how much it was padded. Label
    smoothing (`config.label_smoothing`) applies to the training loss only
    (`Seq2SeqModel.compute_loss`): the validation loss stays the plain cross-entropy.
    """
    model.compile(
        optimizer=FusedAdam(config.learning_rate, clipnorm=config.clipnorm),
        loss=MaskedCrossEntropy(),
        metrics=[MaskedAccuracy()],
    )
    model.label_smoothing = config.label_smoothing
    # Adam's moments now (under the caller's distribution scope, as the model's variables):
    # left to the first training step, they would be created inside its `tf.function`, which
    # then traces the whole step a second time.
    model.optimizer.build(model.trainable_variables)


@keras.saving.register_keras_serializable(package="seq2seq_keras")
class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam, each variable updated by TensorFlow's fused `ResourceApplyAdam` kernel.

    The same update (Kingma & Ba 2015, with Keras' "epsilon hat": `lr_t · m / (√v + ε)`,
    `lr_t = lr · √(1 - β2^t) / (1 - β1^t)`), the same variables under the same names, so
    checkpoints and saved optimizers load either way. Keras writes the update as about ten
    element-wise ops a variable, each a pass over memory; the fused kernel reads and writes
    the variable and its two moments once: on the models here (9–10 M weights) an update
    takes about half the time (docs/training.md). Gradient clipping (`clipnorm`) stays Keras'.
    An embedding's gradient (`IndexedSlices`, a row per token of the batch) is summed per row
    first, as the dense gradient it stands for (textbook Adam, as TensorFlow's kernels do);
    Keras' own update squares the slices one by one, so a token seen twice in a batch adds
    g1² + g2² to its second moment there, not (g1 + g2)².
    """

    def __init__(self, *args, name: str = "adam", **kwargs):
        super().__init__(*args, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        momentum, velocity = self._momentums[index].value, self._velocities[index].value
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=momentum.handle, v=velocity.handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            # The kernel takes dense gradients: an embedding's (IndexedSlices) rows are summed.
            grad=tf.convert_to_tensor(tf.cast(gradient, dtype)),
        )


@keras.saving.register_keras_serializable(package="seq2seq_keras")
class Seq2SeqModel(keras.Model):
    """The functional training model, whose training loss can be label-smoothed.

    Label smoothing (Szegedy et al. 2016; Vaswani et al. 2017 use 0.1) trains towards
    `(1 - ε)` on the right token and `ε` spread evenly over the vocabulary:
    `loss = (1 - ε) · cross-entropy + ε · mean over the vocabulary of -log p`. It keeps the
    model from growing ever more confident and helps BLEU. Only training applies it
    (`training=True`), in place of the compiled cross-entropy (`smoothed_cross_entropy`);
    evaluation reports the plain cross-entropy, so validation losses of runs with and without
    smoothing compare. Everything else is Keras' functional `Model`.
    """

    label_smoothing = 0.0  # set by `compile_model` from the config

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not (training and self.label_smoothing):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        loss = replica_share(smoothed_cross_entropy(y, y_pred, self.label_smoothing))
        # Regularization losses, as Keras adds them (the models here have none).
        return sum((ops.cast(extra, loss.dtype) for extra in self.losses), loss)


def softmax_logits(probabilities):
    """The logits a softmax output was computed from, or log-probabilities where unknown.

    Keras' TensorFlow softmax keeps its input on its output (`_keras_logits`), as its own
    cross-entropy uses it; log-probabilities are logits of the same softmax.
    """
    logits = getattr(probabilities, "_keras_logits", None)
    if logits is not None:
        return ops.cast(logits, "float32")
    return ops.log(ops.clip(probabilities, keras.config.epsilon(), 1.0))


def replica_share(loss):
    """`loss` divided by the replicas of the `tf.distribute` strategy, as Keras scales a mean
    loss: each replica's gradients are summed over the replicas, so their mean is what the
    optimizer gets (Keras' reported loss multiplies it back). 1 replica: `loss` itself."""
    return loss / tf.distribute.get_strategy().num_replicas_in_sync


def real_token_weights(target_ids, dtype="float32"):
    """`(batch, target_len)` weights that sum to 1 over the real (non-padding) target tokens
    and are 0 on padding: a weighted sum with them is the mean over real tokens."""
    real = ops.cast(ops.not_equal(target_ids, PAD_ID), dtype)
    return real / ops.maximum(ops.sum(real), 1.0)


def lookup_ids(target_ids):
    """int64 target ids with padding as token 0, safe to look up; its weight is 0 anyway."""
    target_ids = ops.cast(target_ids, "int64")
    return ops.where(ops.not_equal(target_ids, PAD_ID), target_ids, 0)


def smoothed_cross_entropy(target_ids, probabilities, smoothing: float):
    """The label-smoothed cross-entropy, averaged over real target tokens, as one
    cross-entropy against smoothed targets: `1 - ε + ε/V` on the right token, `ε/V` on each
    of the V tokens of the vocabulary (ε = `smoothing`).

    The same number as `(1 - ε) · cross-entropy + ε · mean over the vocabulary of -log p`
    computed term by term, for less work: one fused softmax cross-entropy reads the logits
    once, and its gradient is `softmax - targets`, where the uniform term computed apart adds
    a second log-sum-exp over the vocabulary and its own softmax in the backward pass.
    """
    logits = softmax_logits(probabilities)  # (batch, target_len, vocab) float32
    vocab = logits.shape[-1]
    targets = tf.one_hot(
        lookup_ids(target_ids), vocab,
        on_value=1.0 - smoothing + smoothing / vocab, off_value=smoothing / vocab,
    )
    per_token = tf.nn.softmax_cross_entropy_with_logits(targets, logits)
    return ops.sum(per_token * real_token_weights(target_ids, per_token.dtype))


@keras.saving.register_keras_serializable(package="seq2seq_keras")
class MaskedCrossEntropy(keras.losses.Loss):
    """Sparse cross-entropy averaged over real target tokens, from the softmax's logits.

    The same value as `SparseCategoricalCrossentropy(ignore_class=PAD_ID)`, for less work:
    Keras' `ignore_class` first zeroes the padded rows of the probabilities, which hides the
    softmax from its cross-entropy, so it takes their logarithm and a second softmax over the
    whole vocabulary. Here the probabilities go to the cross-entropy untouched, which then
    reads the softmax's logits (one fused softmax-cross-entropy op), and only the per-token
    losses are masked.
    """

    def __init__(self, name: str = "masked_cross_entropy", **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum", **kwargs)

    def call(self, target_ids, probabilities):
        per_token = ops.sparse_categorical_crossentropy(lookup_ids(target_ids), probabilities)
        # Weighted here, summed by the "sum" reduction: the mean over real tokens only, this
        # replica's share of it under a tf.distribute strategy (as Keras' mean losses).
        return replica_share(per_token * real_token_weights(target_ids, per_token.dtype))


@keras.saving.register_keras_serializable(package="seq2seq_keras")
class MaskedAccuracy(keras.metrics.Mean):
    """Share of real (non-padding) target tokens whose most probable prediction is right.

    The padding mask is computed from the targets here rather than taken from Keras' mask
    propagation, so the metric is right whether or not the predictions carry a mask.
    """

    def __init__(self, name: str = "masked_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, target_ids, probabilities, sample_weight=None):
        # The largest logit is the most probable token: read from the logits, the training
        # step needs no softmax at all (its loss reads the logits too).
        predicted = ops.argmax(softmax_logits(probabilities), axis=-1)
        target_ids = ops.cast(target_ids, predicted.dtype)
        real = ops.cast(ops.not_equal(target_ids, PAD_ID), "float32")  # (batch, target_len)
        if sample_weight is not None:
            real = real * ops.cast(sample_weight, "float32")
        correct = ops.cast(ops.equal(predicted, target_ids), "float32")
        return super().update_state(correct, sample_weight=real)

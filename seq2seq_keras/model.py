"""The encoder–decoder training graph, built from named layers.

    source ids ─ encoder_embedding ─ encoder_lstm ──(h_T, c_T): the context vector
                                                         │ initial_state
    [START] y1 … y(n-1) ─ decoder_embedding ─ decoder_lstm ─ decoder_dense (softmax) → y1 … yn [END]

The encoder keeps only its final states; the decoder starts from them and, during training,
reads the true previous tokens (teacher forcing). Inference models are rebuilt from these same
layers by name in `seq2seq_keras.decode`, which is why every layer here has a fixed name.

This is the default, classic graph. GRU cells, stacked and bidirectional encoders and attention
(`Seq2SeqConfig.cell`, `num_layers`, `bidirectional`, `attention`) are built in
`seq2seq_keras.variants` from layers named `encoder_rnn_1`, `decoder_rnn_1`, `attention`, ….
"""

from __future__ import annotations

import keras
from keras import ops

from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.text import PAD_ID

# Layer names: the contract between the training graph and the inference models.
SOURCE_INPUT = "source_ids"
DECODER_INPUT = "decoder_input_ids"
ENCODER_EMBEDDING = "encoder_embedding"
ENCODER_LSTM = "encoder_lstm"
DECODER_EMBEDDING = "decoder_embedding"
DECODER_LSTM = "decoder_lstm"
DECODER_DENSE = "decoder_dense"
# The variants (GRU, bidirectional, stacked, attention: docs/variants.md) number their RNN
# layers from 1, "encoder_rnn_1" … "encoder_rnn_N", and name their attention layers.
ENCODER_RNN = "encoder_rnn"
DECODER_RNN = "decoder_rnn"
ATTENTION_KEY = "attention_key"  # projects the encoder outputs once per sentence
ATTENTION_QUERY = "attention_query"  # bahdanau only: projects the decoder outputs
ATTENTION = "attention"  # scores, softmax over the unpadded source, context vector
ATTENTION_COMBINE = "attention_combine"  # tanh(W_c [context; decoder output])


def is_classic(config: Seq2SeqConfig) -> bool:
    """True for the README's classic graph: one LSTM layer each side, no attention."""
    return (
        config.cell == "lstm"
        and not config.bidirectional
        and config.num_layers == 1
        and config.attention == "none"
    )


def build_training_model(config: Seq2SeqConfig) -> keras.Model:
    """The teacher-forced training model: `(source_ids, decoder_input_ids) → probabilities`.

    Args:
      config: sizes of the vocabularies, embeddings and LSTM states.
    Returns:
      A functional `keras.Model` with inputs `(batch, source_len)` and `(batch, target_len)`
      int ids and output `(batch, target_len, target_vocab_size)` probabilities, compiled with
      the masked loss and accuracy.

    Any other cell, a bidirectional or stacked encoder, or attention is built by
    `seq2seq_keras.variants.build_variant_model`; this function builds the classic graph.
    """
    if not config.is_classic:
        from seq2seq_keras.variants import build_variant_model  # it imports this module

        return build_variant_model(config)

    # === Layers ===
    encoder_embedding = keras.layers.Embedding(
        config.source_vocab_size, config.embedding_dim, mask_zero=True, name=ENCODER_EMBEDDING
    )
    # We discard the encoder's per-step outputs and keep only its final states (h_T, c_T).
    encoder_lstm = keras.layers.LSTM(
        config.units,
        return_state=True,
        go_backwards=config.reverse_source,
        dropout=config.dropout,
        name=ENCODER_LSTM,
    )
    decoder_embedding = keras.layers.Embedding(
        config.target_vocab_size, config.embedding_dim, mask_zero=True, name=DECODER_EMBEDDING
    )
    decoder_lstm = keras.layers.LSTM(
        config.units,
        return_sequences=True,
        return_state=True,
        dropout=config.dropout,
        name=DECODER_LSTM,
    )
    # Under mixed precision its matmul (two thirds of the model's FLOPs) runs in bfloat16 or
    # float16 and its softmax in float32, where small probabilities would underflow.
    decoder_dense = SoftmaxDense(config.target_vocab_size, name=DECODER_DENSE)

    # === Functional Model ===
    source_ids = keras.Input(shape=(None,), dtype="int64", name=SOURCE_INPUT)
    decoder_input_ids = keras.Input(shape=(None,), dtype="int64", name=DECODER_INPUT)

    source_vectors = encoder_embedding(source_ids)  # (batch, source_len, embedding_dim)
    _, state_h, state_c = encoder_lstm(source_vectors)  # 2 × (batch, units): the context

    target_vectors = decoder_embedding(decoder_input_ids)  # (batch, target_len, embedding_dim)
    decoder_outputs, _, _ = decoder_lstm(target_vectors, initial_state=[state_h, state_c])
    probabilities = decoder_dense(decoder_outputs)  # (batch, target_len, target_vocab)

    model = keras.Model([source_ids, decoder_input_ids], probabilities, name="seq2seq_lstm")
    compile_model(model, config)
    return model


@keras.saving.register_keras_serializable(package="seq2seq_keras")
class SoftmaxDense(keras.layers.Dense):
    """A `Dense` layer followed by a softmax that always runs in float32.

    Mixed precision's rule (TensorFlow's guide: "the last layer's softmax in float32"): the
    matmul computes in the layer's compute dtype (bfloat16 on a CPU, float16 on a GPU, float32
    otherwise), the logits are cast to float32, and the softmax and the loss are float32. It is
    one layer, so decoders that call `decoder_dense` by name still get probabilities.
    """

    def call(self, inputs):
        logits = super().call(inputs)  # (..., vocab) in the compute dtype
        return ops.softmax(ops.cast(logits, "float32"), axis=-1)

    def compute_output_spec(self, inputs):
        spec = super().compute_output_spec(inputs)
        return keras.KerasTensor(spec.shape, dtype="float32")


def compile_model(model: keras.Model, config: Seq2SeqConfig) -> None:
    """Compile with Adam, the masked cross-entropy and the masked token accuracy.

    `ignore_class=PAD_ID` makes Keras average the cross-entropy over real target tokens only:
    padding neither adds loss nor dilutes the mean, so a batch's loss does not depend on how
    much it was padded.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm),
        loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=PAD_ID),
        metrics=[MaskedAccuracy()],
    )


@keras.saving.register_keras_serializable(package="seq2seq_keras")
class MaskedAccuracy(keras.metrics.Mean):
    """Share of real (non-padding) target tokens whose most probable prediction is right.

    The padding mask is computed from the targets here rather than taken from Keras' mask
    propagation, so the metric is right whether or not the predictions carry a mask.
    """

    def __init__(self, name: str = "masked_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, target_ids, probabilities, sample_weight=None):
        predicted = ops.argmax(probabilities, axis=-1)
        target_ids = ops.cast(target_ids, predicted.dtype)
        real = ops.cast(ops.not_equal(target_ids, PAD_ID), "float32")  # (batch, target_len)
        if sample_weight is not None:
            real = real * ops.cast(sample_weight, "float32")
        correct = ops.cast(ops.equal(predicted, target_ids), "float32")
        return super().update_state(correct, sample_weight=real)

"""The Transformer (Vaswani et al. 2017): an encoder–decoder where attention does everything.

    source ids ─ encoder_embedding ─ encoder_positions ─ encoder_block_1 … _N ─ encoder_norm ─ memory
                                                                                                │
    [START] y1 … y(n-1) ─ decoder_embedding ─ decoder_positions ─ decoder_block_1 … _N ─ decoder_norm
                                                                    (cross-attention)  ─ decoder_dense → y1 … yn [END]

The LSTM reads a sentence one token at a time and hands the decoder what it kept. Here every
encoder block lets each source token look at every other (self-attention); every decoder block
lets each target position look at the positions before it (masked self-attention) and at every
source token (cross-attention, the LSTM's attention, in every block and with several heads).
Nothing runs token by token in training: the whole teacher-forced target is one computation.
Order comes only from the sinusoidal position vectors added to the token embeddings.

The blocks are pre-layer-norm (Xiong et al. 2020): each sublayer reads a normalised copy of
the stream and adds its output back, `x + f(norm(x))`, and one last norm closes each side.
Unlike the paper's post-norm blocks they train stably without a long learning-rate warmup,
which matters for a 30-minute budget. The layers are Keras' own (`MultiHeadAttention`,
`LayerNormalization`, `Dense`, `Dropout`); keras-hub's Transformer layers would install beside
TensorFlow 2.21 too, but bring fifteen more packages, and written out here the cached decoder
step sits next to the training computation it must equal (`transformer_blocks.DecoderBlock`:
`call` and `step`).

Every layer has a fixed name, as in the RNN family: `TransformerLayers.find` looks them up in a
fresh or a loaded model, and `transformer_decode` runs the encoder and the cached decoder step
with exactly these layers.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
from keras import ops

from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.objective import Seq2SeqModel, SoftmaxDense, compile_model
from seq2seq_keras.text import PAD_ID
from seq2seq_keras.transformer_blocks import (
    NORM_EPSILON,
    DecoderBlock,
    EncoderBlock,
    PositionalEncoding,
)

# Layer names shared with the RNN family (the same inputs, embeddings and softmax layer) ...
SOURCE_INPUT = "source_ids"
DECODER_INPUT = "decoder_input_ids"
ENCODER_EMBEDDING = "encoder_embedding"
DECODER_EMBEDDING = "decoder_embedding"
DECODER_DENSE = "decoder_dense"
# ... and the Transformer's own. Blocks are numbered from 1: "encoder_block_1" … "_N".
ENCODER_POSITIONS = "encoder_positions"
DECODER_POSITIONS = "decoder_positions"
ENCODER_BLOCK = "encoder_block"
DECODER_BLOCK = "decoder_block"
ENCODER_NORM = "encoder_norm"
DECODER_NORM = "decoder_norm"


def block_names(encoder_layers: int, decoder_layers: int) -> tuple[list[str], list[str]]:
    """The encoder's and the decoder's block names, first block first."""
    return ([f"{ENCODER_BLOCK}_{i}" for i in range(1, encoder_layers + 1)],
            [f"{DECODER_BLOCK}_{i}" for i in range(1, decoder_layers + 1)])


def build_transformer_model(config: Seq2SeqConfig) -> keras.Model:
    """The teacher-forced Transformer: `(source_ids, decoder_input_ids) → probabilities`.

    The same inputs, output and compiled loss as `model.build_training_model` builds for the
    RNN family, so the same pipeline, `model.fit`, callbacks and decoders train and run it.
    """
    width = config.transformer_width
    dropout = config.transformer_dropout_rate(keras.config.dtype_policy().name)
    encoder_names, decoder_names = block_names(
        config.transformer_layers, config.transformer_decoder_blocks
    )
    block_sizes = dict(
        width=width, heads=config.transformer_heads,
        feed_forward=config.transformer_feed_forward, dropout=dropout,
    )

    # === Layers ===
    decoder_embedding = target_embedding(config)
    encoder_embedding = source_embedding(config, decoder_embedding)
    encoder_positions = PositionalEncoding(dropout, name=ENCODER_POSITIONS)
    encoder_blocks = [EncoderBlock(**block_sizes, name=name) for name in encoder_names]
    encoder_norm = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name=ENCODER_NORM)
    decoder_positions = PositionalEncoding(dropout, name=DECODER_POSITIONS)
    decoder_blocks = [DecoderBlock(**block_sizes, name=name) for name in decoder_names]
    decoder_norm = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name=DECODER_NORM)
    decoder_dense = output_layer(config)

    # === Functional Model ===
    source_ids = keras.Input(shape=(None,), dtype="int64", name=SOURCE_INPUT)
    decoder_input_ids = keras.Input(shape=(None,), dtype="int64", name=DECODER_INPUT)
    source_mask = ops.not_equal(source_ids, PAD_ID)  # (batch, source_len): False on padding

    memory = encoder_positions(encoder_embedding(source_ids))  # (batch, source_len, width)
    for block in encoder_blocks:
        memory = block(memory, source_mask)
    memory = encoder_norm(memory)

    outputs = decoder_positions(decoder_embedding(decoder_input_ids))  # (batch, target_len, width)
    for block in decoder_blocks:
        outputs = block(outputs, memory, source_mask)
    outputs = decoder_norm(outputs)
    if config.transformer_tie_embeddings:  # the embedding matrix, transposed, makes the logits
        outputs = decoder_embedding(outputs, reverse=True)
    probabilities = decoder_dense(outputs)  # (batch, target_len, target_vocab)

    model = Seq2SeqModel([source_ids, decoder_input_ids], probabilities, name="seq2seq_transformer")
    compile_model(model, config)
    return model


def shares_all_embeddings(config: Seq2SeqConfig) -> bool:
    """Whether one matrix embeds source and target tokens and makes the logits: a shared
    vocabulary with tied embeddings (`config.shared_vocabulary`)."""
    return config.shared_vocabulary and config.transformer_tie_embeddings


def source_embedding(config: Seq2SeqConfig, decoder_embedding) -> keras.layers.Embedding:
    """The encoder's embedding: its own, or the decoder's tied one (`shares_all_embeddings`),
    which the model then calls on both sides under the decoder's name."""
    if shares_all_embeddings(config):
        return decoder_embedding
    return keras.layers.Embedding(config.source_vocab_size, config.transformer_width, name=ENCODER_EMBEDDING)


def target_embedding(config: Seq2SeqConfig) -> keras.layers.Embedding:
    """The decoder's embedding: Keras' `ReversibleEmbedding` when it is tied to the output
    layer (`transformer_tie_embeddings`), else a plain `Embedding`.

    A tied matrix starts from N(0, 1/width), as in the paper's shared matrices: scaled by
    √width (`PositionalEncoding`), the embeddings then have unit variance, and a normalised
    output vector times the matrix gives logits of unit variance too.
    """
    vocab, width = config.target_vocab_size, config.transformer_width
    if not config.transformer_tie_embeddings:
        return keras.layers.Embedding(vocab, width, name=DECODER_EMBEDDING)
    initializer = keras.initializers.RandomNormal(stddev=width**-0.5)
    return keras.layers.ReversibleEmbedding(
        vocab, width, embeddings_initializer=initializer, name=DECODER_EMBEDDING
    )


def output_layer(config: Seq2SeqConfig) -> keras.layers.Layer:
    """The layer named `decoder_dense`: a `SoftmaxDense`, or with tied embeddings a
    `TiedSoftmax` that adds its bias to the embedding's logits."""
    if config.transformer_tie_embeddings:
        return TiedSoftmax(config.target_vocab_size, name=DECODER_DENSE)
    return SoftmaxDense(
        config.target_vocab_size, projection_dim=config.output_projection_dim, name=DECODER_DENSE
    )


@keras.saving.register_keras_serializable(package="seq2seq_keras")
class TiedSoftmax(keras.layers.Layer):
    """The output layer of a decoder whose embedding makes the logits: a bias, then the softmax.

    The matmul belongs to the tied `ReversibleEmbedding` (`call(..., reverse=True)`); this
    layer adds the per-token bias a `Dense` would have and takes the softmax, both in float32
    whatever the model's precision (the layer's own dtype), as `SoftmaxDense` does.
    """

    def __init__(self, units: int, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.units = units

    def build(self, logits_shape):
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, logits):
        return ops.softmax(self.with_bias(logits), axis=-1)

    def with_bias(self, logits):
        """`(..., vocab)` float32 logits: the embedding's products plus the bias."""
        return ops.cast(logits, "float32") + self.bias

    def compute_output_spec(self, logits):
        return keras.KerasTensor(logits.shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)  # always float32 (`__init__`)
        return {**config, "units": self.units}


# === Finding the layers of a trained model ===


class TransformerLayers(NamedTuple):
    """Every layer the encoder and the decoder step need, found by name in a trained model."""

    encoder_embedding: keras.layers.Layer
    encoder_positions: PositionalEncoding
    encoder_blocks: list
    encoder_norm: keras.layers.Layer
    decoder_embedding: keras.layers.Layer
    decoder_positions: PositionalEncoding
    decoder_blocks: list
    decoder_norm: keras.layers.Layer
    decoder_dense: SoftmaxDense | TiedSoftmax

    @classmethod
    def find(cls, training_model: keras.Model) -> "TransformerLayers":
        """Look the layers up with `get_layer(name)`, never by position."""
        if not is_transformer(training_model):
            raise ValueError(f"model {training_model.name!r} has no {ENCODER_BLOCK}_1: "
                             "it is not a Transformer built by seq2seq_keras.")
        names = {layer.name for layer in training_model.layers}
        encoder_names, decoder_names = block_names(
            numbered_layers(ENCODER_BLOCK, names), numbered_layers(DECODER_BLOCK, names)
        )
        get = training_model.get_layer
        # With all embeddings shared, the encoder reads the decoder's (`source_embedding`).
        encoder_embedding = ENCODER_EMBEDDING if ENCODER_EMBEDDING in names else DECODER_EMBEDDING
        return cls(
            get(encoder_embedding), get(ENCODER_POSITIONS), [get(n) for n in encoder_names],
            get(ENCODER_NORM), get(DECODER_EMBEDDING), get(DECODER_POSITIONS),
            [get(n) for n in decoder_names], get(DECODER_NORM), get(DECODER_DENSE),
        )

    def logits(self, outputs):
        """`(..., vocab)` next-token logits of the decoder's normalised `outputs`: through the
        output layer, or through the tied embedding matrix and the output layer's bias."""
        if isinstance(self.decoder_dense, TiedSoftmax):
            return self.decoder_dense.with_bias(self.decoder_embedding(outputs, reverse=True))
        return self.decoder_dense.logits(outputs)

    @property
    def cache_shape(self) -> tuple[int, int]:
        """`(heads, head_width)` of every cached key and value."""
        attention = self.decoder_blocks[0].self_attention
        return attention.num_heads, attention.key_dim


def numbered_layers(prefix: str, names: set[str]) -> int:
    """How many layers `prefix_1`, `prefix_2`, … the set of layer names holds: the block count
    of a Transformer's side, the layer count of a stacked RNN (`model.ModelLayers.find`)."""
    count = 0
    while f"{prefix}_{count + 1}" in names:
        count += 1
    return count


def is_transformer(training_model: keras.Model) -> bool:
    """True for a model `build_transformer_model` made (it has an `encoder_block_1`)."""
    return any(layer.name == f"{ENCODER_BLOCK}_1" for layer in training_model.layers)

"""The encoder–decoder training graph: one builder for every configuration, from named layers.

    source ids ─ encoder_embedding ─ encoder_lstm ──(h_T, c_T): the context vector
                                                         │ initial_state
    [START] y1 … y(n-1) ─ decoder_embedding ─ decoder_lstm ─ decoder_dense (softmax) → y1 … yn [END]

The encoder keeps only its final states; the decoder starts from them and, during training,
reads the true previous tokens (teacher forcing). That is the classic graph, the default, and
the simplest case of `build_training_model`. The same function builds the RNN family and
attention (`Seq2SeqConfig.cell`, `num_layers`, `bidirectional`, `attention`; docs/variants.md):

    source ids ─ encoder_embedding ─ encoder_rnn_1 … encoder_rnn_N ─── per-step outputs ──┐
                                          │ final states, layer i → decoder layer i       │
    [START] y1 … ─ decoder_embedding ─ decoder_rnn_1 … decoder_rnn_N ─ [attention] ─ decoder_dense

- **Stacked** (`num_layers`): encoder layer i's final states start decoder layer i; each layer
  reads the previous layer's per-step outputs.
- **Bidirectional**: each encoder layer reads the source both ways with `units // 2` per
  direction; its outputs and its final states are `[forward; backward]` (size `units`).
- **Attention** (Luong et al. 2015, without input feeding): after the decoder RNN, each step's
  output `h_t` scores every unpadded source position, the softmax of the scores weights the
  encoder outputs into a context `c_t`, and `h̃_t = tanh(W_c [c_t; h_t])` goes to the softmax
  layer. "luong" scores with Luong's *general* form, scaled: `h_t · W_a h̄_s / √units`;
  "bahdanau" with Bahdanau's additive form `v_a · tanh(W_a h_t + U_a h̄_s)`, on the current
  output `h_t` (docs/variants.md says what that changes).

Every layer has a fixed name: `ModelLayers.find` looks them up by name (never by position) in a
fresh or a loaded model, and `seq2seq_keras.decode` runs the encoder and the decoder step with
exactly these layers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import keras
from keras import ops

from seq2seq_keras.config import Seq2SeqConfig
# The softmax layer, loss and metric every architecture shares; imported here too, where the
# RNN family's graph and older code find them.
from seq2seq_keras.objective import (  # noqa: F401
    MaskedAccuracy,
    MaskedCrossEntropy,
    Seq2SeqModel,
    SoftmaxDense,
    compile_model,
)
from seq2seq_keras.text import PAD_ID
from seq2seq_keras.transformer import build_transformer_model, numbered_layers

# Layer names: the contract between the training graph and everything that decodes with it.
SOURCE_INPUT = "source_ids"
DECODER_INPUT = "decoder_input_ids"
ENCODER_EMBEDDING = "encoder_embedding"
DECODER_EMBEDDING = "decoder_embedding"
DECODER_DENSE = "decoder_dense"
# The classic graph's two recurrent layers keep the names of the README's diagram ...
ENCODER_LSTM = "encoder_lstm"
DECODER_LSTM = "decoder_lstm"
# ... every other configuration numbers them from 1: "encoder_rnn_1" … "encoder_rnn_N".
ENCODER_RNN = "encoder_rnn"
DECODER_RNN = "decoder_rnn"
ATTENTION_KEY = "attention_key"  # projects the encoder outputs once per sentence
ATTENTION_QUERY = "attention_query"  # bahdanau only: projects the decoder outputs
ATTENTION = "attention"  # scores, softmax over the unpadded source, context vector
ATTENTION_COMBINE = "attention_combine"  # tanh(W_c [context; decoder output])

RNN_CLASSES = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


def rnn_layer_names(num_layers: int, classic: bool) -> tuple[list[str], list[str]]:
    """The encoder's and the decoder's RNN layer names, first layer first."""
    if classic:
        return [ENCODER_LSTM], [DECODER_LSTM]
    numbers = range(1, num_layers + 1)
    return [f"{ENCODER_RNN}_{i}" for i in numbers], [f"{DECODER_RNN}_{i}" for i in numbers]


def build_training_model(config: Seq2SeqConfig) -> keras.Model:
    """The teacher-forced training model: `(source_ids, decoder_input_ids) → probabilities`.

    Args:
      config: sizes of the vocabularies, embeddings and states, and the RNN family's switches.
    Returns:
      A functional `keras.Model` with inputs `(batch, source_len)` and `(batch, target_len)`
      int ids and output `(batch, target_len, target_vocab_size)` probabilities, compiled with
      the masked loss and accuracy. `config.architecture="transformer"` builds the
      Transformer (`transformer.build_transformer_model`), with the same inputs and output.
    """
    if config.is_transformer:
        return build_transformer_model(config)
    with_attention = config.attention != "none"
    encoder_names, decoder_names = rnn_layer_names(config.num_layers, config.is_classic)

    # === Layers ===
    encoder_embedding = keras.layers.Embedding(
        config.source_vocab_size, config.embedding_dim, mask_zero=True, name=ENCODER_EMBEDDING
    )
    encoder_rnns = [
        # The last layer's per-step outputs are needed only by attention: without it we
        # discard them and keep only the final states, the context vector.
        make_encoder_rnn(config, name, return_sequences=number < len(encoder_names) or with_attention)
        for number, name in enumerate(encoder_names, start=1)
    ]
    decoder_embedding = keras.layers.Embedding(
        config.target_vocab_size, config.embedding_dim, mask_zero=True, name=DECODER_EMBEDDING
    )
    decoder_rnns = [
        RNN_CLASSES[config.cell](
            config.units, return_sequences=True, return_state=True, dropout=config.dropout,
            name=name,
        )
        for name in decoder_names
    ]
    attention_layers = make_attention_layers(config) if with_attention else None
    # Under mixed precision its matmuls (the largest of the model) run in bfloat16 or float16
    # and its softmax in float32, where small probabilities would underflow. With an
    # `output_projection_dim` it first projects the outputs to that size (factorized).
    decoder_dense = SoftmaxDense(
        config.target_vocab_size, projection_dim=config.output_projection_dim, name=DECODER_DENSE
    )

    # === Functional Model ===
    source_ids = keras.Input(shape=(None,), dtype="int64", name=SOURCE_INPUT)
    decoder_input_ids = keras.Input(shape=(None,), dtype="int64", name=DECODER_INPUT)

    encoder_outputs = encoder_embedding(source_ids)  # (batch, source_len, embedding_dim)
    initial_states = []  # one list of states per decoder layer: the context vector
    for layer in encoder_rnns:
        encoder_outputs, *states = layer(encoder_outputs)  # (batch, source_len, units)
        initial_states.append(merge_directions(states) if config.bidirectional else states)

    decoder_outputs = decoder_embedding(decoder_input_ids)  # (batch, target_len, embedding_dim)
    for layer, states in zip(decoder_rnns, initial_states):
        decoder_outputs, *_ = layer(decoder_outputs, initial_state=states)  # (batch, target_len, units)
    if with_attention:
        memory = attention_memory(attention_layers, encoder_outputs, source_ids)
        decoder_outputs, _ = attend(attention_layers, decoder_outputs, *memory)
    probabilities = decoder_dense(decoder_outputs)  # (batch, target_len, target_vocab)

    model = Seq2SeqModel(
        [source_ids, decoder_input_ids], probabilities, name=f"seq2seq_{config.cell}"
    )
    compile_model(model, config)
    return model


def float32_model(training_model: keras.Model, config: Seq2SeqConfig) -> keras.Model:
    """The model that decoding runs: `training_model` itself if it computes in float32, else
    the same architecture built at float32 with the same weights.

    Mixed precision keeps the variables in float32, so the weights copy over exactly; only the
    arithmetic changes. Decoding is where lower precision stops paying: measured on this
    project's 2-core CPU (docs/serving.md), the float32 copy of a mixed-bfloat16 model decodes
    faster at batch 64 and several times faster one sentence at a time, and its tokens are what
    a LiteRT export (float32 kernels) computes too.
    """
    if all(layer.compute_dtype == "float32" for layer in training_model.layers if layer.weights):
        return training_model
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = build_training_model(config)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    model.set_weights(training_model.get_weights())
    return model


def make_encoder_rnn(config: Seq2SeqConfig, name: str, return_sequences: bool) -> keras.layers.Layer:
    """One encoder RNN layer: `config.cell`, bidirectional or read in `reverse_source` order."""
    rnn_class = RNN_CLASSES[config.cell]
    if config.bidirectional:
        return keras.layers.Bidirectional(
            rnn_class(config.units // 2, return_sequences=return_sequences, return_state=True,
                      dropout=config.dropout),
            name=name,
        )
    return rnn_class(
        config.units, return_sequences=return_sequences, return_state=True,
        go_backwards=config.reverse_source, dropout=config.dropout, name=name,
    )


def merge_directions(states: list) -> list:
    """A bidirectional layer's `[fw states…, bw states…]` → `[[h_fw; h_bw], [c_fw; c_bw]]`."""
    half = len(states) // 2
    return [
        ops.concatenate([forward, backward], axis=-1)
        for forward, backward in zip(states[:half], states[half:])
    ]


# === Attention ===


class AttentionLayers(NamedTuple):
    """The layers of the attention block; `query` is None for Luong's general score."""

    key: keras.layers.Layer  # W_a (luong) or U_a (bahdanau), on the encoder outputs
    query: keras.layers.Layer | None  # W_a (bahdanau), on the decoder outputs
    attention: keras.layers.Layer  # keras.layers.Attention or AdditiveAttention
    combine: keras.layers.Layer  # tanh(W_c [context; decoder output])


def make_attention_layers(config: Seq2SeqConfig) -> AttentionLayers:
    """New attention layers for `config.attention` ("luong" or "bahdanau"), by their names."""

    def projection(name, **kwargs):
        return keras.layers.Dense(config.units, use_bias=False, name=name, **kwargs)

    if config.attention == "luong":
        # score(h_t, h̄_s) = h_t · (W_a h̄_s) / sqrt(units): a scaled dot product with
        # projected keys (the scale is applied to the query in `attend`).
        query, attention = None, keras.layers.Attention(name=ATTENTION)
    else:
        # score(h_t, h̄_s) = v_a · tanh(W_a h_t + U_a h̄_s); Keras' `scale` is v_a.
        query = projection(ATTENTION_QUERY)
        attention = keras.layers.AdditiveAttention(name=ATTENTION)
    combine = projection(ATTENTION_COMBINE, activation="tanh")
    return AttentionLayers(projection(ATTENTION_KEY), query, attention, combine)


def attention_memory(layers: AttentionLayers, encoder_outputs, source_ids) -> tuple:
    """What every decoder step looks at: `(values, keys, source_mask)`, computed once a sentence.

    `values` are the encoder outputs `(batch, source_len, units)`, `keys` their projection
    `layers.key(values)`, and `source_mask` `(batch, source_len)` is False on padding.
    """
    return encoder_outputs, layers.key(encoder_outputs), ops.not_equal(source_ids, PAD_ID)


def attend(layers: AttentionLayers, decoder_outputs, values, keys, source_mask):
    """The attention block, shared by training, the inference models and the graph decoder.

    Args:
      layers: the trained attention layers.
      decoder_outputs: `(batch, target_len, units)` decoder RNN outputs h_t.
      values, keys, source_mask: the sentence's `attention_memory`.
    Returns:
      `(batch, target_len, units)` attentional outputs h̃_t, and the attention weights
      `(batch, target_len, source_len)` (each row sums to 1 over the unpadded positions).
    """
    if layers.query is None:
        # Luong's dot score, scaled by 1/sqrt(units) as in Vaswani et al. (2017). Unscaled, the
        # scores of 512-unit states start large enough to saturate the softmax; measured here,
        # the weights then collapsed onto the last source token for good (docs/variants.md).
        query = decoder_outputs * (1.0 / math.sqrt(decoder_outputs.shape[-1]))
    else:
        query = layers.query(decoder_outputs)
    # The query mask is not passed: padded target positions are ignored by the loss anyway.
    context, weights = layers.attention(
        [query, values, keys], mask=[None, source_mask], return_attention_scores=True
    )
    combined = layers.combine(ops.concatenate([context, decoder_outputs], axis=-1))
    return combined, weights


# === Finding the layers of a trained model ===


def num_states(cell: keras.layers.Layer) -> int:
    """States a recurrent cell carries: 2 for an LSTM (h, c), 1 for a GRU (h)."""
    return len(cell.state_size) if isinstance(cell.state_size, (list, tuple)) else 1


class ModelLayers(NamedTuple):
    """Every layer the encoder and the decoder step need, found by name in a trained model."""

    encoder_embedding: keras.layers.Layer
    encoder_rnns: list  # LSTM, GRU or Bidirectional layers, first to last
    decoder_embedding: keras.layers.Layer
    decoder_rnns: list  # LSTM or GRU layers, first to last
    decoder_dense: keras.layers.Layer
    attention: AttentionLayers | None

    @classmethod
    def find(cls, training_model: keras.Model) -> "ModelLayers":
        """Look the layers up with `get_layer(name)`, never by position."""
        names = {layer.name for layer in training_model.layers}
        get = training_model.get_layer
        classic = ENCODER_LSTM in names
        num_layers = 1 if classic else max(numbered_layers(ENCODER_RNN, names), 1)
        encoder_names, decoder_names = rnn_layer_names(num_layers, classic)
        if encoder_names[0] not in names:
            raise ValueError(
                f"model {training_model.name!r} has neither {ENCODER_LSTM!r} nor "
                f"{encoder_names[0]!r}: it was not built by seq2seq_keras."
            )
        attention = None
        if ATTENTION in names:
            query = get(ATTENTION_QUERY) if ATTENTION_QUERY in names else None
            attention = AttentionLayers(
                get(ATTENTION_KEY), query, get(ATTENTION), get(ATTENTION_COMBINE)
            )
        return cls(
            get(ENCODER_EMBEDDING), [get(name) for name in encoder_names],
            get(DECODER_EMBEDDING), [get(name) for name in decoder_names],
            get(DECODER_DENSE), attention,
        )

    @property
    def bidirectional(self) -> bool:
        return isinstance(self.encoder_rnns[0], keras.layers.Bidirectional)

    @property
    def states_per_layer(self) -> int:
        """2 for an LSTM (h, c), 1 for a GRU (h)."""
        return num_states(self.decoder_rnns[0].cell)

"""The RNN family and attention: GRU cells, bidirectional and stacked encoders, attention.

    source ids ─ encoder_embedding ─ encoder_rnn_1 … encoder_rnn_N ─── per-step outputs ──┐
                                          │ final states, layer i → decoder layer i       │
    [START] y1 … ─ decoder_embedding ─ decoder_rnn_1 … decoder_rnn_N ─ [attention] ─ decoder_dense

`model.build_training_model` builds the classic graph itself and hands every other config
(`cell`, `bidirectional`, `num_layers`, `attention`) to `build_variant_model` here. The
variants keep the classic graph's shape: the decoder is still one RNN call over the whole
teacher-forced target, so training is the same `model.fit` on the same dataset.

- **Stacked** (`num_layers`): encoder layer i's final states are decoder layer i's initial
  states; each layer reads the previous layer's per-step outputs.
- **Bidirectional**: each encoder layer reads the source forwards and backwards with
  `units // 2` per direction; its outputs are `[forward; backward]` (size `units`) and so are
  its final states, `h = [h_fw; h_bw]` (and `c` likewise), which start the decoder layer.
- **Attention** (Luong et al. 2015, *without* input feeding): after the decoder RNN, each
  step's output `h_t` scores every unpadded source position, the softmax of the scores weights
  the encoder outputs into a context `c_t`, and `h̃_t = tanh(W_c [c_t; h_t])` goes to the
  softmax layer. "luong" scores with Luong's *general* form, scaled: `h_t · W_a h̄_s / √units`;
  "bahdanau" with Bahdanau's additive form `v_a · tanh(W_a h_t + U_a h̄_s)`, but on the current
  output `h_t` and without feeding the context back into the RNN (docs/variants.md says what
  that changes).

`ModelLayers` finds every layer of any variant (classic included) by name; `decode` and
`search` rebuild their decoders from it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import keras
from keras import ops

from seq2seq_keras import model as model_lib
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.text import PAD_ID

RNN_CLASSES = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


def encoder_rnn_name(index: int) -> str:
    """Name of the encoder's RNN layer `index` (from 1) in a variant model."""
    return f"{model_lib.ENCODER_RNN}_{index}"


def decoder_rnn_name(index: int) -> str:
    """Name of the decoder's RNN layer `index` (from 1) in a variant model."""
    return f"{model_lib.DECODER_RNN}_{index}"


def build_variant_model(config: Seq2SeqConfig) -> keras.Model:
    """The teacher-forced training model of a non-classic config (see the module docstring).

    Same inputs, output and compilation as `model.build_training_model`.
    """
    units = config.units
    rnn_class = RNN_CLASSES[config.cell]
    with_attention = config.attention != "none"

    # === Layers ===
    encoder_embedding = keras.layers.Embedding(
        config.source_vocab_size, config.embedding_dim, mask_zero=True,
        name=model_lib.ENCODER_EMBEDDING,
    )
    encoder_rnns = []
    for index in range(1, config.num_layers + 1):
        # The last layer's per-step outputs are needed only by attention.
        return_sequences = index < config.num_layers or with_attention
        if config.bidirectional:
            layer = keras.layers.Bidirectional(
                rnn_class(units // 2, return_sequences=return_sequences, return_state=True,
                          dropout=config.dropout),
                name=encoder_rnn_name(index),
            )
        else:
            layer = rnn_class(
                units, return_sequences=return_sequences, return_state=True,
                go_backwards=config.reverse_source, dropout=config.dropout,
                name=encoder_rnn_name(index),
            )
        encoder_rnns.append(layer)
    decoder_embedding = keras.layers.Embedding(
        config.target_vocab_size, config.embedding_dim, mask_zero=True,
        name=model_lib.DECODER_EMBEDDING,
    )
    decoder_rnns = [
        rnn_class(units, return_sequences=True, return_state=True, dropout=config.dropout,
                  name=decoder_rnn_name(index))
        for index in range(1, config.num_layers + 1)
    ]
    attention_layers = make_attention_layers(config) if with_attention else None
    decoder_dense = model_lib.SoftmaxDense(config.target_vocab_size, name=model_lib.DECODER_DENSE)

    # === Functional Model ===
    source_ids = keras.Input(shape=(None,), dtype="int64", name=model_lib.SOURCE_INPUT)
    decoder_input_ids = keras.Input(shape=(None,), dtype="int64", name=model_lib.DECODER_INPUT)

    encoder_outputs = encoder_embedding(source_ids)  # (batch, source_len, embedding_dim)
    initial_states = []  # one list of states per decoder layer
    for layer in encoder_rnns:
        encoder_outputs, *states = layer(encoder_outputs)  # (batch, source_len, units)
        initial_states.append(merge_directions(states) if config.bidirectional else states)

    decoder_outputs = decoder_embedding(decoder_input_ids)  # (batch, target_len, embedding_dim)
    for layer, states in zip(decoder_rnns, initial_states):
        decoder_outputs, *_ = layer(decoder_outputs, initial_state=states)
    if with_attention:
        source_mask = ops.not_equal(source_ids, PAD_ID)  # (batch, source_len)
        keys = attention_layers.key(encoder_outputs)  # (batch, source_len, units)
        decoder_outputs, _ = attend(
            attention_layers, decoder_outputs, encoder_outputs, keys, source_mask
        )
    probabilities = decoder_dense(decoder_outputs)  # (batch, target_len, target_vocab)

    model = keras.Model(
        [source_ids, decoder_input_ids], probabilities, name=f"seq2seq_{config.cell}"
    )
    model_lib.compile_model(model, config)
    return model


class AttentionLayers(NamedTuple):
    """The layers of the attention block; `query` is None for Luong's general score."""

    key: keras.layers.Layer  # W_a (luong) or U_a (bahdanau), on the encoder outputs
    query: keras.layers.Layer | None  # W_a (bahdanau), on the decoder outputs
    attention: keras.layers.Layer  # keras.layers.Attention or AdditiveAttention
    combine: keras.layers.Layer  # tanh(W_c [context; decoder output])


def make_attention_layers(config: Seq2SeqConfig) -> AttentionLayers:
    """New attention layers for `config.attention` ("luong" or "bahdanau"), by their names."""
    dense = lambda name, **kwargs: keras.layers.Dense(  # noqa: E731
        config.units, use_bias=False, name=name, **kwargs
    )
    if config.attention == "luong":
        # score(h_t, h̄_s) = h_t · (W_a h̄_s) / sqrt(units): a scaled dot product with
        # projected keys (the scale is applied to the query in `attend`).
        query, attention = None, keras.layers.Attention(name=model_lib.ATTENTION)
    else:
        # score(h_t, h̄_s) = v_a · tanh(W_a h_t + U_a h̄_s); Keras' `scale` is v_a.
        query = dense(model_lib.ATTENTION_QUERY)
        attention = keras.layers.AdditiveAttention(name=model_lib.ATTENTION)
    combine = dense(model_lib.ATTENTION_COMBINE, activation="tanh")
    return AttentionLayers(dense(model_lib.ATTENTION_KEY), query, attention, combine)


def attend(layers: AttentionLayers, decoder_outputs, values, keys, source_mask):
    """The attention block, shared by training, the inference models and the graph decoder.

    Args:
      layers: the trained attention layers.
      decoder_outputs: `(batch, target_len, units)` decoder RNN outputs h_t.
      values: `(batch, source_len, units)` encoder outputs h̄_s.
      keys: `layers.key(values)`, computed once per sentence.
      source_mask: `(batch, source_len)` bool, False on padding: those positions get weight 0.
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


def merge_directions(states: list) -> list:
    """A bidirectional layer's `[fw states…, bw states…]` → `[[h_fw; h_bw], [c_fw; c_bw]]`."""
    half = len(states) // 2
    return [
        ops.concatenate([forward, backward], axis=-1)
        for forward, backward in zip(states[:half], states[half:])
    ]


class ModelLayers(NamedTuple):
    """Every layer an inference model needs, found by name in a classic or variant model."""

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
        if model_lib.ENCODER_LSTM in names:  # the classic graph
            encoder_rnns = [get(model_lib.ENCODER_LSTM)]
            decoder_rnns = [get(model_lib.DECODER_LSTM)]
        else:
            count = 0
            while encoder_rnn_name(count + 1) in names:
                count += 1
            if count == 0:
                raise ValueError(
                    f"model {training_model.name!r} has neither {model_lib.ENCODER_LSTM!r} nor "
                    f"{encoder_rnn_name(1)!r}: it was not built by seq2seq_keras."
                )
            encoder_rnns = [get(encoder_rnn_name(i)) for i in range(1, count + 1)]
            decoder_rnns = [get(decoder_rnn_name(i)) for i in range(1, count + 1)]
        attention = None
        if model_lib.ATTENTION in names:
            query = get(model_lib.ATTENTION_QUERY) if model_lib.ATTENTION_QUERY in names else None
            attention = AttentionLayers(
                get(model_lib.ATTENTION_KEY), query, get(model_lib.ATTENTION),
                get(model_lib.ATTENTION_COMBINE),
            )
        return cls(
            get(model_lib.ENCODER_EMBEDDING), encoder_rnns, get(model_lib.DECODER_EMBEDDING),
            decoder_rnns, get(model_lib.DECODER_DENSE), attention,
        )

    @property
    def bidirectional(self) -> bool:
        return isinstance(self.encoder_rnns[0], keras.layers.Bidirectional)

    @property
    def states_per_layer(self) -> int:
        """2 for an LSTM (h, c), 1 for a GRU (h)."""
        return 2 if isinstance(self.decoder_rnns[0], keras.layers.LSTM) else 1

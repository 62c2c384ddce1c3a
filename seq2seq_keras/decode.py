"""Decoding: the trained layers as an encoder and a one-token decoder step, written once.

Training runs the decoder over a whole known target at once (teacher forcing). At inference
the target is unknown, so the decoder runs one step at a time, feeding each predicted token
back in. Everything that decodes does it with the two functions of this module, over the
*same trained layers* found by name (`model.ModelLayers`):

    encode(source_ids)            → decoder states (the context vector) and attention memory
    decoder_step(token, states)   → next-token probabilities, new states, attention weights
                                    (`decoder_logits`: the same before the softmax)

They serve two paths:

1. **The teaching path**, `build_inference_models`: two small Keras models, as in the Keras
   seq2seq example, driven token by token by `greedy_decode_stepwise`:

       encoder:      source_ids      → [h, c]                     the context vector
       decoder_step: [token, h, c]   → [probabilities, h, c]

2. **The fast path**, `graph_decoder.GraphDecoder`: the step as a callable for the searches
   of `seq2seq_keras.search` (greedy, beam, sampling), compiled into one `tf.function` per
   search. `translator.TranslatorModule` and the export decode through it.

The one difference between the paths is how a recurrent layer runs (`rnn_runners.RNNRunner`):
the Keras models call the Keras layers themselves (`KERAS_LAYERS`), the graph decoder steps their
trained *cells* (`CELLS`, over the source in a `tf.while_loop`). Both compute the same; stepping the
cells keeps cuDNN-only kernels out of the graph, so a SavedModel exported on a GPU machine
still runs on a CPU server.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from seq2seq_keras import transformer_decode
from seq2seq_keras.decoding_options import DEFAULT_MAX_DECODE_LENGTH
from seq2seq_keras.model import ModelLayers, attend, attention_memory
from seq2seq_keras.rnn_runners import KERAS_LAYERS, RNNRunner
from seq2seq_keras.search import decode_length_caps, source_lengths
from seq2seq_keras.text import END_ID, PAD_ID, START_ID
from seq2seq_keras.transformer import is_transformer

# The decoder's state is a flat tuple: the decoder RNN states layer by layer (`h, c` for an
# LSTM, `h` for a GRU), then, with attention, the memory every step reads: the encoder
# outputs, their attention keys and the source mask. The classic model's state is `(h, c)`.
State = tuple


# === The encoder and the decoder step ===


def encode(layers: ModelLayers, source_ids, runner: RNNRunner) -> tuple[list, tuple]:
    """Run the encoder over `(batch, source_len)` right-padded source ids.

    Each encoder layer reads the previous layer's outputs; its final states start the decoder
    layer of the same depth (a bidirectional layer's as `[forward; backward]`).

    Returns:
      The decoder's initial states (a flat list, layer by layer) and the attention memory
      `(values, keys, source_mask)`, or `()` without attention.
    """
    source_mask = ops.not_equal(source_ids, PAD_ID)  # (batch, source_len)
    vectors = layers.encoder_embedding(source_ids)  # (batch, source_len, embedding_dim)
    states = []
    for number, layer in enumerate(layers.encoder_rnns, start=1):
        # The last layer's per-step outputs are needed only by attention.
        keep_outputs = number < len(layers.encoder_rnns) or layers.attention is not None
        vectors, layer_states = runner.encoder_layer(layer, vectors, source_mask, keep_outputs)
        states += layer_states
    if layers.attention is None:
        return states, ()
    return states, attention_memory(layers.attention, vectors, source_ids)


def decoder_step(layers: ModelLayers, token_ids, states, memory, runner: RNNRunner):
    """One decoder step: the previous tokens and states → next-token probabilities.

    A padding token is an ordinary step (the step-by-step decoder feeds one to a finished
    sentence and ignores what happens to it).

    Args:
      token_ids: `(batch,)` int ids of the previous tokens (`[START]` first).
      states: the flat decoder states, layer by layer.
      memory: `(values, keys, source_mask)` from `encode`, or `()` without attention.
      runner: how the decoder RNN layers run one step.
    Returns:
      `(batch, target_vocab)` float32 probabilities, the new states (a list), and the
      attention weights `(batch, source_len)` (None without attention).
    """
    outputs, new_states, weights = decoder_features(layers, token_ids, states, memory, runner)
    probabilities = layers.decoder_dense(ops.expand_dims(outputs, 1))[:, 0, :]
    return probabilities, new_states, weights


def decoder_logits(layers: ModelLayers, token_ids, states, memory, runner: RNNRunner):
    """`decoder_step` without the softmax: `(batch, target_vocab)` float32 logits.

    What the searches read (`graph_decoder.GraphDecoder`): the most probable token is the
    largest logit, so decoding never needs the softmax over the whole vocabulary.
    """
    outputs, new_states, weights = decoder_features(layers, token_ids, states, memory, runner)
    logits = runner.logits(layers.decoder_dense, outputs)
    return ops.cast(logits, "float32"), new_states, weights


def decoder_features(layers: ModelLayers, token_ids, states, memory, runner: RNNRunner):
    """The decoder step up to the softmax layer: `(batch, units)` vectors it reads.

    Returns the vectors, the new states and the attention weights (see `decoder_step`).
    """
    # A single step has no time axis to mask: the embedding's padding mask is dropped (a copy
    # carries none), so a finished sentence's padding token is an ordinary step.
    outputs = ops.copy(layers.decoder_embedding(token_ids))  # (batch, embedding_dim)
    per_layer, new_states = layers.states_per_layer, []
    for index, layer in enumerate(layers.decoder_rnns):
        layer_states = list(states[index * per_layer : (index + 1) * per_layer])
        outputs, layer_states = runner.decoder_step(layer, outputs, layer_states)
        new_states += layer_states
    weights = None
    if layers.attention is not None:
        # Attention takes sequences: this is one of length 1.
        outputs, weights = attend(layers.attention, ops.expand_dims(outputs, 1), *memory)
        outputs, weights = outputs[:, 0, :], weights[:, 0, :]  # (batch, units), (batch, source_len)
    return outputs, new_states, weights




# === The teaching path: Keras inference models ===


@dataclasses.dataclass
class InferenceModels:
    """The encoder and the one-step decoder, sharing the trained model's layers and weights.

    Classic model: `encoder` maps source ids to `[h, c]` and `decoder_step` maps
    `[token, h, c]` to `[probabilities, h, c]`. Other configurations keep that layout with
    their states (`h` only for a GRU; layer by layer when stacked); with attention the encoder
    also returns its per-step outputs first, and the step takes them and the source mask after
    the token and returns the attention weights last:

        encoder:      source_ids → [encoder_outputs, *states]
        decoder_step: [token, encoder_outputs, source_mask, *states]
                      → [probabilities, *states, attention_weights (batch, 1, source_len)]

    The Transformer's pair has the same layout with its own state (`transformer_decode`):
    `encoder: source_ids → [*state]`, `decoder_step: [token, *state] → [probabilities,
    *state]`, caches of `cache_length` positions inside the state.
    """

    encoder: keras.Model  # source_ids (batch, source_len) → [h, c], each (batch, units)
    decoder_step: keras.Model  # [token (batch, 1), h, c] → [probabilities (batch, 1, vocab), h, c]
    attention: bool = False
    cache_length: int | None = None  # the Transformer's: the most steps its caches hold


def build_inference_models(
    training_model: keras.Model, max_length: int = DEFAULT_MAX_DECODE_LENGTH
) -> InferenceModels:
    """Rebuild the encoder and a one-step decoder from the trained layers, found by name.

    Both are `encode` and `decoder_step` applied to `keras.Input`s, so they compute exactly
    what the graph decoder computes. Works on a fresh and on a loaded model alike.
    `max_length` sizes a Transformer's caches (`transformer_decode.build_inference_models`);
    recurrent states need no size.
    """
    if is_transformer(training_model):
        encoder, step = transformer_decode.build_inference_models(training_model, max_length)
        return InferenceModels(encoder, step, cache_length=max_length)
    layers = ModelLayers.find(training_model)
    with_attention = layers.attention is not None

    source_ids = keras.Input(shape=(None,), dtype="int64", name="source_ids")
    states, memory = encode(layers, source_ids, KERAS_LAYERS)
    encoder = keras.Model(source_ids, memory[:1] + tuple(states), name="encoder")

    token_ids = keras.Input(shape=(1,), dtype="int64", name="token_ids")
    suffix = lambda number: "" if len(layers.decoder_rnns) == 1 else f"_{number}"  # noqa: E731
    input_states = [
        keras.Input(shape=(layer.units,), name=f"state_{kind}{suffix(number)}")
        for number, layer in enumerate(layers.decoder_rnns, start=1)
        for kind in ("h", "c")[: layers.states_per_layer]
    ]
    memory_inputs, step_memory = [], ()
    if with_attention:
        values = keras.Input(shape=(None, encoder.outputs[0].shape[-1]), name="encoder_outputs")
        source_mask = keras.Input(shape=(None,), dtype="bool", name="source_mask")
        keys = layers.attention.key(values)
        memory_inputs, step_memory = [values, source_mask], (values, keys, source_mask)
    probabilities, output_states, weights = decoder_step(
        layers, token_ids[:, 0], input_states, step_memory, KERAS_LAYERS
    )
    extra_outputs = [ops.expand_dims(weights, 1)] if with_attention else []
    step = keras.Model(
        [token_ids, *memory_inputs, *input_states],
        [ops.expand_dims(probabilities, 1), *output_states, *extra_outputs],
        name="decoder_step",
    )
    return InferenceModels(encoder, step, attention=with_attention)


def as_list(outputs) -> list:
    """A Keras model's outputs as a list, also when it has a single output."""
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def greedy_decode_stepwise(
    models: InferenceModels,
    source_ids: np.ndarray,
    max_length: int,
    length_factor: float | None = None,
    length_offset: int = 0,
) -> np.ndarray:
    """Greedy decoding with the inference models, one Python step per token.

    The teaching path: clear, but each step is a separate model call. All sentences of the
    batch advance together; a sentence that has produced `[END]`, or as many tokens as its
    source allows, is fed padding until every sentence is done, and whatever the model then
    computes for it is ignored.

    Args:
      models: the encoder and one-step decoder.
      source_ids: `(batch, source_len)` int ids, right-padded with 0.
      max_length: the most tokens to generate per sentence.
      length_factor, length_offset: with a `length_factor`, a sentence of n source tokens
        also stops, without `[END]`, after `floor(length_factor * n) + length_offset` tokens
        (`search.decode_length_caps`, as `GraphDecoder` does).
    Returns:
      `(batch, steps)` int64 token ids, `steps <= max_length`; a row ends at its first `[END]`
      (or at its cap) and is padded with 0 after it.
    """
    if models.cache_length is not None and max_length > models.cache_length:
        raise ValueError(
            f"max_length {max_length} exceeds the {models.cache_length} positions the decoder "
            "step's caches hold; rebuild the inference models with a larger max_length."
        )
    batch_size = source_ids.shape[0]
    caps = decode_length_caps(
        source_lengths(source_ids), max_length, length_factor, length_offset
    ).numpy()
    states = as_list(models.encoder(tf.constant(source_ids), training=False))
    memory = []  # with attention: what every step looks at, the encoder outputs and the mask
    if models.attention:
        memory = [states.pop(0), tf.constant(source_ids != PAD_ID)]
    tokens = np.full((batch_size, 1), START_ID, dtype=np.int64)
    done = caps <= 0
    generated = []
    while len(generated) < max_length and not done.all():
        outputs = as_list(
            models.decoder_step([tf.constant(tokens), *memory, *states], training=False)
        )
        probabilities, states = outputs[0], outputs[1 : 1 + len(states)]
        next_ids = np.argmax(np.asarray(probabilities)[:, -1, :], axis=-1).astype(np.int64)
        next_ids = np.where(done, PAD_ID, next_ids)
        generated.append(next_ids)
        done |= (next_ids == END_ID) | (len(generated) >= caps)
        tokens = next_ids[:, None]
    if not generated:
        return np.zeros((batch_size, 0), dtype=np.int64)
    return np.stack(generated, axis=1)

"""Decoding with the Transformer: its encoder and a cached one-token decoder step.

The same step contract as the RNN family (`decode.py`), so every search of
`seq2seq_keras.search` runs it unchanged:

    encode(source_ids)              → the decoder's state
    decoder_logits(token, state)    → next-token logits, the new state, cross-attention weights

Training computes every target position at once; generating, the target is unknown, so
positions come one at a time. Re-running the model over the whole prefix at every new token
(what the Keras example and the TensorFlow tutorial do) costs a prefix's worth of work per
token. The step here keeps, per decoder block, the self-attention keys and values of the
tokens already written, and the cross-attention keys and values of the source, computed once
by `encode`: each step then projects one token and attends over what is cached
(`transformer_blocks.DecoderBlock.step`). The self-attention cache either grows a position a step
(the graph decoder's searches) or is preallocated to the length cap (fixed shapes, for the
LiteRT export and the Keras step model). The state is a flat tuple, so searches can keep and
drop its rows like the LSTM's `(h, c)`:

    (positions,                       (batch,) int32: where the next token goes
     keys_1, values_1, … keys_N, values_N,              (batch, heads, length, head_width)
     cross_keys_1, cross_values_1, …, cross_values_N,   (batch, heads, source_len, head_width)
     source_mask)                     (batch, source_len) bool, last as in the RNN family

`whole_model_logits` is the tutorials' way, kept as the baseline that `benchmarks/decode.py`
measures the cache against (with `uncached_decoder_logits`, the encoder run once but no cache).
"""

from __future__ import annotations

import keras
from keras import ops

from seq2seq_keras.text import PAD_ID
from seq2seq_keras.transformer import TransformerLayers

State = tuple


def encode(layers: TransformerLayers, source_ids, max_length: int) -> State:
    """The decoder's initial state for `(batch, source_len)` right-padded source ids.

    Runs the encoder blocks once, projects their output into every decoder block's
    cross-attention keys and values, and makes empty self-attention caches of `max_length`
    positions (the most tokens a search generates; 0 for caches that grow, see
    `decoder_logits`). Written with shape-free ops only, so it
    builds a Keras model from `keras.Input`s as well as a graph (`build_inference_models`).
    """
    memory, source_mask = encoder_memory(layers, source_ids)
    heads, head_width = layers.cache_shape
    nothing = ops.zeros_like(memory[:, :1, :1])  # (batch, 1, 1): zeros of the batch's size
    empty = ops.tile(ops.expand_dims(nothing, 3), (1, heads, max_length, head_width))
    caches = [empty] * (2 * len(layers.decoder_blocks))
    cross = [tensor for block in layers.decoder_blocks for tensor in block.cross_keys_and_values(memory)]
    positions = ops.cast(ops.zeros_like(source_ids[:, 0]), "int32")
    return (positions, *caches, *cross, source_mask)


def encoder_memory(layers: TransformerLayers, source_ids) -> tuple:
    """The encoder's output `(batch, source_len, width)` and the source mask (False on padding)."""
    source_mask = ops.not_equal(source_ids, PAD_ID)
    memory = layers.encoder_positions(layers.encoder_embedding(source_ids))
    for block in layers.encoder_blocks:
        memory = block(memory, source_mask)
    return layers.encoder_norm(memory), source_mask


def split_state(layers: TransformerLayers, state: State) -> tuple:
    """`(positions, caches, cross_caches, source_mask)`: caches as `(keys, values)` pairs."""
    pairs = len(layers.decoder_blocks)
    positions, flat, source_mask = state[0], state[1:-1], state[-1]
    as_pairs = lambda tensors: [tuple(tensors[i : i + 2]) for i in range(0, len(tensors), 2)]  # noqa: E731
    return positions, as_pairs(flat[: 2 * pairs]), as_pairs(flat[2 * pairs :]), source_mask


def decoder_logits(layers: TransformerLayers, token_ids, state: State, grow: bool = False):
    """One cached decoder step: `(batch,)` previous tokens → `(batch, vocab)` float32 logits.

    Returns the logits, the new state (the caches with this token's keys and values, the
    positions one further) and the last block's cross-attention weights averaged over its
    heads, `(batch, source_len)`: where the decoder looked (`plot --sentence` draws them).
    `grow` says how the caches hold the positions so far (`DecoderBlock.step`): False for
    caches preallocated by `encode(…, max_length)`, True for caches that start empty
    (`encode(…, 0)`) and grow a position a step.
    """
    positions, caches, cross_caches, source_mask = split_state(layers, state)
    x = layers.decoder_positions.at(layers.decoder_embedding(token_ids), positions)
    new_caches = []
    for block, cache, cross_cache in zip(layers.decoder_blocks, caches, cross_caches):
        x, cache, weights = block.step(x, positions, cache, cross_cache, source_mask, grow)
        new_caches += cache
    logits = layers.logits(layers.decoder_norm(x))
    cross = [tensor for pair in cross_caches for tensor in pair]
    new_state = (positions + 1, *new_caches, *cross, source_mask)
    return ops.cast(logits, "float32"), new_state, ops.mean(weights, axis=1)


def whole_model_logits(layers: TransformerLayers, token_ids, state: State):
    """The next-token logits the tutorials' way: the whole model re-run at every token.

    The Keras example and the TensorFlow tutorial call the trained model on the source and
    the prefix so far at each step: the encoder again, every decoder block over the whole
    prefix, the output layer at every position, of which only the last is used. The state is
    `uncached_encode`'s; each step appends `token_ids` (`[START]` first) to the prefix.
    """
    source_ids, prefix, _, _ = state
    prefix = with_token(prefix, token_ids)
    memory, source_mask = encoder_memory(layers, source_ids)
    outputs = prefix_outputs(layers, prefix, memory, source_mask)
    logits = layers.logits(layers.decoder_norm(outputs))[:, -1]
    return ops.cast(logits, "float32"), (source_ids, prefix, memory, source_mask)


def uncached_decoder_logits(layers: TransformerLayers, token_ids, state: State):
    """The next-token logits with the encoder run once but no cache: every decoder block
    re-run over the whole prefix at every token, the output layer at the last position only.
    Between the tutorials' step (`whole_model_logits`) and the cached one."""
    source_ids, prefix, memory, source_mask = state
    prefix = with_token(prefix, token_ids)
    outputs = prefix_outputs(layers, prefix, memory, source_mask)
    logits = layers.logits(layers.decoder_norm(outputs[:, -1]))
    return ops.cast(logits, "float32"), (source_ids, prefix, memory, source_mask)


def uncached_encode(layers: TransformerLayers, source_ids) -> State:
    """The uncached steps' initial state: `(source_ids, empty prefix, memory, source_mask)`."""
    memory, source_mask = encoder_memory(layers, source_ids)
    return source_ids, source_ids[:, :0], memory, source_mask


def with_token(prefix, token_ids):
    """`(batch, n)` prefix → `(batch, n + 1)`, `token_ids` `(batch,)` appended."""
    return ops.concatenate([prefix, ops.expand_dims(ops.cast(token_ids, prefix.dtype), 1)], axis=1)


def prefix_outputs(layers: TransformerLayers, prefix, memory, source_mask):
    """The last decoder block's outputs at every position of `prefix`, as in training."""
    outputs = layers.decoder_positions(layers.decoder_embedding(prefix))
    for block in layers.decoder_blocks:
        outputs = block(outputs, memory, source_mask)
    return outputs


# === The teaching path: Keras inference models ===


def build_inference_models(training_model: keras.Model, max_length: int):
    """An encoder model and a one-step decoder model (cache in, cache out), from the trained
    layers found by name:

        encoder:      source_ids → [positions, *empty caches, *cross caches, source_mask]
        decoder_step: [token (batch, 1), *state] → [probabilities (batch, 1, vocab), *new state]

    The state is this module's flat tuple (see the module docstring); `max_length` sizes the
    caches, so it is the most tokens a decoding loop may generate.
    """
    layers = TransformerLayers.find(training_model)
    source_ids = keras.Input(shape=(None,), dtype="int64", name="source_ids")
    state = StepLayer(layers, max_length, name="encode")(source_ids)
    encoder = keras.Model(source_ids, list(state), name="encoder")

    token_ids = keras.Input(shape=(1,), dtype="int64", name="token_ids")
    state_inputs = [
        keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=name)
        for tensor, name in zip(state, state_names(layers))
    ]
    probabilities, *new_state = StepLayer(layers, max_length, name="decoder_step")(
        token_ids, *state_inputs
    )
    step = keras.Model([token_ids, *state_inputs], [probabilities, *new_state], name="decoder_step")
    return encoder, step


class StepLayer(keras.layers.Layer):
    """`encode` (one input) or the cached step (a token and the state) as one Keras layer.

    Inside a block, every attention layer has sublayers of the same names ("query", "key",
    …); a functional model calling them one by one would hold several operations of one
    name, which Keras refuses. Wrapped in a layer, the trained layers run as they are.
    """

    def __init__(self, layers: TransformerLayers, max_length: int, **kwargs):
        super().__init__(**kwargs)
        self.trained, self.max_length = layers, max_length

    def call(self, token_or_source_ids, *state):
        if not state:
            return list(encode(self.trained, token_or_source_ids, self.max_length))
        logits, new_state, _ = decoder_logits(self.trained, token_or_source_ids[:, 0], state)
        return [ops.expand_dims(ops.softmax(logits, axis=-1), 1), *new_state]


def state_names(layers: TransformerLayers) -> list[str]:
    """Names of the state's tensors, in order (the inference models' input names)."""
    numbers = range(1, len(layers.decoder_blocks) + 1)
    caches = [f"{kind}_{i}" for i in numbers for kind in ("keys", "values")]
    cross = [f"cross_{kind}_{i}" for i in numbers for kind in ("keys", "values")]
    return ["positions", *caches, *cross, "source_mask"]

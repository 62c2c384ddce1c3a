"""The Transformer's layers: positions, encoder and decoder blocks, and the cached step's
attention.

    EncoderBlock:  x + self-attention(norm(x)),  then + feed-forward(norm(·))
    DecoderBlock:  x + masked self-attention(norm(x)),  + cross-attention(norm(·), memory),
                   then + feed-forward(norm(·))

`transformer.build_transformer_model` wires them into the teacher-forced model. Each
`DecoderBlock` has two ways to run: `call`, every target position at once (training), and
`step`, one new position per sentence over the keys and values cached so far (decoding,
`transformer_decode`). The two must compute the same numbers, so they sit side by side here,
with the helpers `step` attends through.
"""

from __future__ import annotations

import math

import keras
from keras import ops

# LayerNormalization's epsilon in the paper's reference code (tensor2tensor) and keras-hub.
NORM_EPSILON = 1e-6
# What masked attention scores become before the softmax: exp() of it is exactly 0 in float32,
# and a row with every position masked (an empty source) becomes uniform, never NaN.
MASKED_SCORE = -1e9
# The wavelength scale of the sinusoidal positions (Vaswani et al. 2017, section 3.5).
MAX_WAVELENGTH = 10_000.0


# === Positions ===


@keras.saving.register_keras_serializable(package="seq2seq_keras")
class PositionalEncoding(keras.layers.Layer):
    """Token embeddings scaled by √width, plus the sinusoidal vector of their position.

    Position p gets `[sin(p·ω_0) … sin(p·ω_{d/2-1}), cos(p·ω_0) … cos(p·ω_{d/2-1})]` with
    wavelengths 2π/ω_i from 2π to 10,000·2π (the paper's functions, sines and cosines in two
    halves rather than interleaved). Computed from the positions, not read from a table, so no
    length is too long, and the decoder step computes exactly what training computed
    (`at`). Dropout follows, as in the paper.
    """

    def __init__(self, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.rate = dropout
        self.dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def call(self, embeddings, training=None):
        """`(batch, length, width)` embeddings of the positions 0 … length - 1."""
        positions = ops.arange(ops.shape(embeddings)[1], dtype="float32")
        vectors = self.add_to(embeddings, position_vectors(positions, embeddings.shape[-1])[None])
        return self.dropout(vectors, training=training)

    def at(self, embeddings, positions):
        """`(batch, width)` embeddings, each at its own position `(batch,)`: a decoder step."""
        vectors = position_vectors(ops.cast(positions, "float32"), embeddings.shape[-1])
        return self.add_to(embeddings, vectors)

    def add_to(self, embeddings, vectors):
        scale = math.sqrt(embeddings.shape[-1])
        return embeddings * ops.cast(scale, embeddings.dtype) + ops.cast(vectors, embeddings.dtype)

    def get_config(self):
        return {**super().get_config(), "dropout": self.rate}


def position_vectors(positions, width: int):
    """`(..., width)` float32 sinusoidal vectors of float32 `positions` (see PositionalEncoding)."""
    half = width // 2
    frequencies = ops.exp(
        ops.arange(half, dtype="float32") * (-math.log(MAX_WAVELENGTH) / max(half - 1, 1))
    )
    angles = ops.expand_dims(positions, -1) * frequencies
    return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)


# === Blocks ===


def attention_layer(width: int, heads: int, dropout: float, name: str, dtype):
    return keras.layers.MultiHeadAttention(
        heads, key_dim=width // heads, dropout=dropout, name=name, dtype=dtype
    )


def norm_layer(name: str, dtype):
    return keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name=name, dtype=dtype)


class Block(keras.layers.Layer):
    """What both kinds of block share: sizes, the feed-forward sublayer and its residual.

    Every sublayer takes the block's own dtype policy. Left to default, they would take the
    global policy of the moment: right while a mixed-precision model is built, wrong when it
    is loaded later in a float32 process (bfloat16 residuals added to float32 sublayer outputs).
    """

    def __init__(self, width: int, heads: int, feed_forward: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.sizes = dict(width=width, heads=heads, feed_forward=feed_forward, dropout=dropout)
        policy = self.dtype_policy
        self.feed_forward_norm = norm_layer("feed_forward_norm", policy)
        self.feed_forward_inner = keras.layers.Dense(
            feed_forward, activation="relu", name="feed_forward_inner", dtype=policy
        )
        self.feed_forward_outer = keras.layers.Dense(width, name="feed_forward_outer", dtype=policy)
        self.residual_dropout = keras.layers.Dropout(dropout, dtype=policy)

    def build_feed_forward(self, x_shape):
        """Build the feed-forward sublayers for inputs of `x_shape` (Keras builds a layer
        before loading its weights, so every sublayer is built here, not on first use)."""
        self.feed_forward_norm.build(x_shape)
        self.feed_forward_inner.build(x_shape)
        self.feed_forward_outer.build((*x_shape[:-1], self.sizes["feed_forward"]))

    def add_feed_forward(self, x, training=None):
        """`x + FFN(norm(x))`, the FFN's output dropped out in training."""
        h = self.feed_forward_outer(self.feed_forward_inner(self.feed_forward_norm(x)))
        return x + self.residual_dropout(h, training=training)

    def get_config(self):
        return {**super().get_config(), **self.sizes}


@keras.saving.register_keras_serializable(package="seq2seq_keras")
class EncoderBlock(Block):
    """Self-attention over the unpadded source, then a feed-forward network, each pre-norm."""

    def __init__(self, width: int, heads: int, feed_forward: int, dropout: float, **kwargs):
        super().__init__(width, heads, feed_forward, dropout, **kwargs)
        self.self_attention_norm = norm_layer("self_attention_norm", self.dtype_policy)
        self.self_attention = attention_layer(
            width, heads, dropout, "self_attention", self.dtype_policy
        )

    def build(self, x_shape, source_mask_shape=None):
        self.self_attention_norm.build(x_shape)
        self.self_attention.build(x_shape, x_shape)
        self.build_feed_forward(x_shape)

    def call(self, x, source_mask, training=None):
        """`(batch, source_len, width)` → the same shape; `source_mask` is False on padding."""
        h = self.self_attention_norm(x)
        h = self.self_attention(
            h, h, attention_mask=ops.expand_dims(source_mask, 1), training=training
        )
        x = x + self.residual_dropout(h, training=training)
        return self.add_feed_forward(x, training=training)


@keras.saving.register_keras_serializable(package="seq2seq_keras")
class DecoderBlock(Block):
    """Masked self-attention, cross-attention over the source, a feed-forward network.

    `call` computes every target position at once (teacher forcing; each position sees only
    the positions before it). `step` computes one new position from the keys and values of
    the positions before it, kept in a cache: the same numbers for the cost of one token.
    """

    def __init__(self, width: int, heads: int, feed_forward: int, dropout: float, **kwargs):
        super().__init__(width, heads, feed_forward, dropout, **kwargs)
        self.self_attention_norm = norm_layer("self_attention_norm", self.dtype_policy)
        self.self_attention = attention_layer(
            width, heads, dropout, "self_attention", self.dtype_policy
        )
        self.cross_attention_norm = norm_layer("cross_attention_norm", self.dtype_policy)
        self.cross_attention = attention_layer(
            width, heads, dropout, "cross_attention", self.dtype_policy
        )

    def build(self, x_shape, memory_shape, source_mask_shape=None):
        self.self_attention_norm.build(x_shape)
        self.self_attention.build(x_shape, x_shape)
        self.cross_attention_norm.build(x_shape)
        self.cross_attention.build(x_shape, memory_shape)
        self.build_feed_forward(x_shape)

    def call(self, x, memory, source_mask, training=None):
        """`(batch, target_len, width)` → the same shape, reading the encoder's `memory`."""
        h = self.self_attention_norm(x)
        h = self.self_attention(h, h, use_causal_mask=True, training=training)
        x = x + self.residual_dropout(h, training=training)
        h = self.cross_attention_norm(x)
        h = self.cross_attention(
            h, memory, attention_mask=ops.expand_dims(source_mask, 1), training=training
        )
        x = x + self.residual_dropout(h, training=training)
        return self.add_feed_forward(x, training=training)

    def cross_keys_and_values(self, memory) -> tuple:
        """The cross-attention's keys and values of the encoder output, `(batch, heads,
        source_len, head_width)` each: computed once a sentence, read by every step."""
        attention = self.cross_attention
        return by_head(attention.key_dense(memory)), by_head(attention.value_dense(memory))

    def step(self, x, positions, cache, cross_cache, source_mask, grow: bool = False):
        """One new target position per sentence, against the cache of the ones before it.

        Args:
          x: `(batch, width)` the new position's input vectors.
          positions: `(batch,)` int32, where the new position is (0 for `[START]`).
          cache: `(keys, values)`, each `(batch, heads, length, head_width)`: this block's
            self-attention keys and values of every position so far.
          cross_cache: `cross_keys_and_values` of the sentence.
          source_mask: `(batch, source_len)` bool, False on padding.
          grow: how the cache holds the positions so far. False: in slots preallocated to the
            length cap, later slots unused (fixed shapes, which the LiteRT export and the Keras
            step model need); the new keys and values are written at `positions`. True: the
            cache holds exactly the positions so far, every row at the same position (as the
            searches step them), and the new ones are appended: a step then reads and copies
            only the prefix, not every slot of the cap.
        Returns:
          The `(batch, width)` output, the cache with this position's keys and values, and
          the cross-attention weights `(batch, heads, source_len)`.
        """
        h = self.self_attention_norm(x)
        attention = self.self_attention
        new_keys = ops.expand_dims(heads_of(attention.key_dense, h), 2)  # (batch, heads, 1, head_width)
        new_values = ops.expand_dims(heads_of(attention.value_dense, h), 2)
        if grow:
            keys, values, seen = *appended(cache, new_keys, new_values), None
        else:
            keys, values, seen = written_at(cache, new_keys, new_values, positions)
        h, _ = cached_attention(attention, h, keys, values, seen)
        x = x + h
        h = self.cross_attention_norm(x)
        h, weights = cached_attention(self.cross_attention, h, *cross_cache, source_mask)
        x = x + h
        return self.add_feed_forward(x), (keys, values), weights


def appended(cache, new_keys, new_values) -> tuple:
    """A growing cache one position longer: every position in it is one the new position may
    see (causal), so attention over it needs no mask."""
    keys, values = cache
    return ops.concatenate([keys, new_keys], axis=2), ops.concatenate([values, new_values], axis=2)


def written_at(cache, new_keys, new_values, positions) -> tuple:
    """A preallocated cache with the new keys and values written at each row's position, and
    the `(batch, max_length)` mask of the slots the new position may see (causal, as in
    training: the slots up to its own)."""
    keys, values = cache
    # New axes come from expand_dims, not `[:, None]`: the step is exported to LiteRT,
    # whose strided slice cannot add axes (nor slice booleans) with built-in ops.
    slots = ops.expand_dims(ops.arange(ops.shape(keys)[2], dtype="int32"), 0)  # (1, max_length)
    positions = ops.expand_dims(positions, 1)  # (batch, 1)
    here = ops.expand_dims(ops.equal(slots, positions), (1, 3))  # (batch, 1, max_length, 1)
    keys = ops.where(here, new_keys, keys)
    values = ops.where(here, new_values, values)
    return keys, values, slots <= positions


def cached_attention(layer: keras.layers.MultiHeadAttention, query_vectors, keys, values, mask):
    """A `MultiHeadAttention` layer's output for one query position, from projected keys and
    values: the computation of its `call`, without projecting the keys and values again.

    The projections multiply the layer's kernels as plain 2-D matmuls (`heads_of`,
    `from_heads`); the attention itself is two small batched matmuls over the heads.

    Args:
      query_vectors: `(batch, width)` the position's (normalised) vectors.
      keys, values: `(batch, heads, length, head_width)`, already projected.
      mask: `(batch, length)` bool, False where the query may not look; None: everywhere.
    Returns:
      `(batch, width)` outputs and `(batch, heads, length)` float32 attention weights.
    """
    query = heads_of(layer.query_dense, query_vectors)  # (batch, heads, head_width)
    query = query * ops.cast(1.0 / math.sqrt(layer.key_dim), query.dtype)
    scores = ops.matmul(ops.expand_dims(query, 2), ops.swapaxes(keys, -1, -2))[:, :, 0, :]
    scores = ops.cast(scores, "float32")
    if mask is not None:
        scores = ops.where(ops.expand_dims(mask, 1), scores, MASKED_SCORE)
    weights = ops.softmax(scores, axis=-1)
    context = ops.matmul(ops.expand_dims(ops.cast(weights, values.dtype), 2), values)[:, :, 0, :]
    return from_heads(layer.output_dense, context), weights


def heads_of(projection: keras.layers.EinsumDense, vectors):
    """`(batch, width)` vectors through an attention's query, key or value projection:
    `(batch, heads, head_width)`, what the layer computes (up to the order of float additions).

    The layer's call reads `(batch, length, width)` and multiplies by its `(width, heads,
    head_width)` kernel as a batched matmul, which for one position is `batch` products of a
    single row. Viewed as `(width, heads · head_width)`, the same kernel is one 2-D matmul of
    `batch` rows, a faster kernel (docs/transformer.md times both steps)."""
    _, heads, head_width = projection.kernel.shape
    return ops.reshape(as_matmul(projection, vectors), (-1, heads, head_width))


def from_heads(projection: keras.layers.EinsumDense, context):
    """`(batch, heads, head_width)` through an attention's output projection: `(batch, width)`,
    its `(heads, head_width, width)` kernel as one plain matmul (see `heads_of`)."""
    heads, head_width, _ = projection.kernel.shape
    return as_matmul(projection, ops.reshape(context, (-1, heads * head_width)))


def as_matmul(projection: keras.layers.EinsumDense, rows):
    """`rows @ kernel + bias` of an `EinsumDense` whose kernel, flattened to a matrix, has as
    many rows as `rows` has columns: its input axes first, its output axes after."""
    kernel = ops.reshape(ops.cast(projection.kernel, rows.dtype), (rows.shape[-1], -1))
    return ops.matmul(rows, kernel) + ops.reshape(ops.cast(projection.bias, rows.dtype), (-1,))


def by_head(tensor):
    """`(batch, length, heads, head_width)` ↔ `(batch, heads, length, head_width)`: the layout
    of Keras' attention projections and the layout the cache keeps, heads first, so that
    attention is one batched matmul per step."""
    return ops.transpose(tensor, (0, 2, 1, 3))

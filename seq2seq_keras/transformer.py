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
step sits next to the training computation it must equal (`DecoderBlock.call` and `.step`).

Every layer has a fixed name, as in the RNN family: `TransformerLayers.find` looks them up in a
fresh or a loaded model, and `transformer_decode` runs the encoder and the cached decoder step
with exactly these layers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import keras
from keras import ops

from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.objective import Seq2SeqModel, SoftmaxDense, compile_model
from seq2seq_keras.text import PAD_ID

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
# LayerNormalization's epsilon in the paper's reference code (tensor2tensor) and keras-hub.
NORM_EPSILON = 1e-6
# What masked attention scores become before the softmax: exp() of it is exactly 0 in float32,
# and a row with every position masked (an empty source) becomes uniform, never NaN.
MASKED_SCORE = -1e9
# The wavelength scale of the sinusoidal positions (Vaswani et al. 2017, section 3.5).
MAX_WAVELENGTH = 10_000.0


def block_names(encoder_layers: int, decoder_layers: int) -> tuple[list[str], list[str]]:
    """The encoder's and the decoder's block names, first block first."""
    return ([f"{ENCODER_BLOCK}_{i}" for i in range(1, encoder_layers + 1)],
            [f"{DECODER_BLOCK}_{i}" for i in range(1, decoder_layers + 1)])


def build_transformer_model(config: Seq2SeqConfig) -> keras.Model:
    """The teacher-forced Transformer: `(source_ids, decoder_input_ids) → probabilities`.

    The same inputs, output and compiled loss as `model.build_training_model` builds for the
    RNN family, so the same pipeline, `model.fit`, callbacks and decoders train and run it.
    """
    width, dropout = config.transformer_width, config.transformer_dropout
    encoder_names, decoder_names = block_names(
        config.transformer_layers, config.transformer_decoder_blocks
    )
    block_sizes = dict(
        width=width, heads=config.transformer_heads,
        feed_forward=config.transformer_feed_forward, dropout=dropout,
    )

    # === Layers ===
    encoder_embedding = keras.layers.Embedding(config.source_vocab_size, width, name=ENCODER_EMBEDDING)
    encoder_positions = PositionalEncoding(dropout, name=ENCODER_POSITIONS)
    encoder_blocks = [EncoderBlock(**block_sizes, name=name) for name in encoder_names]
    encoder_norm = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name=ENCODER_NORM)
    decoder_embedding = target_embedding(config)
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
        return cls(
            get(ENCODER_EMBEDDING), get(ENCODER_POSITIONS), [get(n) for n in encoder_names],
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

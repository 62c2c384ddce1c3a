"""The fast path: the trained model's step with the searches, compiled into one graph each.

`GraphDecoder` runs `decode.encode` and `decode.decoder_step` with the trained *cells*
(`rnn_runners.CELLS`) and hands the step to `seq2seq_keras.search`: greedy, beam and sampling each
become one `tf.function`, so a batch of sentences is translated by a single graph call. It
returns exactly the tokens of the teaching path (`decode.greedy_decode_stepwise`), which calls
the same step through Keras models one token at a time.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from seq2seq_keras import search, transformer_decode
from seq2seq_keras.decoding_options import check_beam_width
from seq2seq_keras.decode import State, decoder_logits, encode
from seq2seq_keras.rnn_runners import CELLS, RNNRunner
from seq2seq_keras.decode_precision import Bfloat16Matmuls
from seq2seq_keras.model import ModelLayers
from seq2seq_keras.text import END_ID, START_ID
from seq2seq_keras.transformer import TransformerLayers, is_transformer

SOURCE_IDS_SPEC = tf.TensorSpec([None, None], tf.int64, name="source_ids")
# The searches are written with `tf.while_loop` and `tf.cond` already, so AutoGraph, which
# would rewrite every Python function they call into graph control flow, has nothing to add:
# leaving it off takes seconds off each trace (a `translate` command's start-up among them).
AUTOGRAPH = False


class GraphDecoder(tf.Module):
    """The trained layers as `encode` and `step` callables, and the searches compiled over them.

    Layers are shared with the training model (same weights). Every configuration works: LSTM
    or GRU cells, stacked and bidirectional encoders, Luong or Bahdanau attention, and the
    Transformer, whose step keeps its attention keys and values in a cache that grows a
    position a step (`transformer_decode`).

    Args:
      training_model: the model built by `model.build_training_model` (fresh or loaded).
      max_length: the most tokens generated per sentence, `[END]` included.
      vocabulary_size: the tokens of the target vocabulary. On a small corpus it can be
        smaller than the softmax layer (`config.target_vocab_size`); the ids past it stand for
        no token, so no search may choose them (sampling otherwise would, rarely).
      length_factor, length_offset: when `length_factor` is given, every search also stops a
        sentence of n source tokens after `floor(length_factor * n) + length_offset` tokens
        (`search.decode_length_caps`, see `max_lengths`), so that a confused model stops
        early instead of repeating itself up to `max_length`.
      precision: "float32" runs the trained layers' own weights (`rnn_runners.CELLS`); "bfloat16"
        runs the matmuls over bfloat16 copies of them (`decode_precision.Bfloat16Matmuls`;
        the RNN family only).
      runner: how the layers run instead of `precision`'s (the LiteRT export passes
        `rnn_runners.LITE_CELLS`).
      fixed_shapes: keep every state tensor's shape from step to step, as the LiteRT export
        needs: a Transformer's caches are then preallocated to the length cap and written in
        place, instead of growing a position a step.
    Example:
      >>> decoder = GraphDecoder(trained.training_model, config.max_decode_length)
      >>> decoder.greedy(tf.constant([[12, 7, 4]], tf.int64)).token_ids
    """

    def __init__(
        self,
        training_model: keras.Model,
        max_length: int,
        vocabulary_size: int | None = None,
        length_factor: float | None = None,
        length_offset: int = 0,
        precision: str = "float32",
        runner: RNNRunner | None = None,
        fixed_shapes: bool = False,
        name: str = "graph_decoder",
    ):
        super().__init__(name=name)
        self.is_transformer = is_transformer(training_model)
        if self.is_transformer:
            if precision != "float32":
                raise ValueError(f'the Transformer decodes in "float32", not {precision!r}.')
            self.layers = TransformerLayers.find(training_model)
        else:
            self.layers = ModelLayers.find(training_model)
            if runner is None:
                runner = self.precision_runner(precision)
        self.runner = runner
        self.fixed_shapes = fixed_shapes
        self.max_length = max_length
        self.vocabulary_size = vocabulary_size
        self.length_factor = length_factor
        self.length_offset = length_offset
        self.greedy = tf.function(
            self._greedy, input_signature=[SOURCE_IDS_SPEC], autograph=AUTOGRAPH
        )
        self.beam = tf.function(
            self._beam,
            autograph=AUTOGRAPH,
            input_signature=[
                SOURCE_IDS_SPEC,
                tf.TensorSpec([], tf.int32, name="beam_width"),
                tf.TensorSpec([], tf.float32, name="alpha"),
            ],
        )
        self.sample = tf.function(
            self._sample,
            autograph=AUTOGRAPH,
            input_signature=[
                SOURCE_IDS_SPEC,
                tf.TensorSpec([], tf.float32, name="temperature"),
                tf.TensorSpec([], tf.int64, name="seed"),
            ],
        )
        if self.has_attention:
            self.greedy_with_attention = tf.function(
                self._greedy_with_attention, input_signature=[SOURCE_IDS_SPEC],
                autograph=AUTOGRAPH,
            )

    def precision_runner(self, precision: str):
        """How the layers run at `precision`: "float32" or "bfloat16" (see __init__)."""
        if precision == "float32":
            return CELLS
        if precision == "bfloat16":
            return Bfloat16Matmuls(self.layers)
        raise ValueError(f'precision must be "float32" or "bfloat16", got {precision!r}.')

    @property
    def has_attention(self) -> bool:
        return self.is_transformer or self.layers.attention is not None

    def max_lengths(self, source_ids: tf.Tensor) -> tf.Tensor:
        """`(batch,)` int32: the most tokens each sentence may get, from its source length.

        `min(max_length, floor(length_factor * n) + length_offset)` for a right-padded source
        row of n tokens; `max_length` for every row without a `length_factor`.
        """
        return search.decode_length_caps(
            search.source_lengths(source_ids), self.max_length,
            self.length_factor, self.length_offset,
        )

    def encode(self, source_ids: tf.Tensor, max_steps: int | tf.Tensor | None = None) -> State:
        """The decoder's initial state for `(batch, source_len)` right-padded source ids.

        A padding position leaves the states unchanged, as Keras' masked RNNs do, so a row's
        final state is the state after its last real token (zeros for an empty row). A
        Transformer's caches start empty, or with `fixed_shapes` hold `max_steps` positions
        (default: `max_length`).
        """
        source_ids = tf.convert_to_tensor(source_ids, tf.int64)
        # Per-step outputs cannot be stacked from zero steps: one padding column gives sources
        # of width 0 a step. It is masked, so it changes nothing (no state update, attention
        # weight 0; a row of only padding gets a zero context either way).
        missing = tf.maximum(1 - tf.shape(source_ids)[1], 0)
        source_ids = tf.pad(source_ids, [[0, 0], [0, missing]])
        if self.is_transformer:
            return transformer_decode.encode(self.layers, source_ids, self.cache_length(max_steps))
        states, memory = encode(self.layers, source_ids, self.runner)
        return (*states, *memory)

    def step(self, token_ids: tf.Tensor, state: State) -> tuple[tf.Tensor, State]:
        """`search`'s step: `(batch,)` previous tokens and the state → next-token logits."""
        logits, state, _ = self.step_with_attention(token_ids, state)
        return logits, state

    def step_with_attention(self, token_ids: tf.Tensor, state: State):
        """`step`, also returning the attention weights `(batch, source_len)` (None without)."""
        if self.is_transformer:
            logits, state, weights = transformer_decode.decoder_logits(
                self.layers, token_ids, state, grow=not self.fixed_shapes
            )
            return self.known_tokens_only(logits), state, weights
        num_rnn_states = len(self.layers.decoder_rnns) * self.layers.states_per_layer
        rnn_states, memory = state[:num_rnn_states], state[num_rnn_states:]
        logits, new_states, weights = decoder_logits(
            self.layers, token_ids, rnn_states, memory, self.runner
        )
        return self.known_tokens_only(logits), (*new_states, *memory), weights

    def known_tokens_only(self, logits: tf.Tensor) -> tf.Tensor:
        """`logits` with -inf past `vocabulary_size`, so no search picks an id without a token."""
        if self.vocabulary_size is not None and self.vocabulary_size < logits.shape[-1]:
            has_token = tf.range(tf.shape(logits)[1]) < self.vocabulary_size
            logits = tf.where(has_token[None, :], logits, float("-inf"))
        return logits

    def attention_weights(self, source_ids: tf.Tensor, token_ids: tf.Tensor) -> tf.Tensor:
        """The attention weights of every step that produced `token_ids`, by re-running them.

        Args:
          source_ids: `(batch, source_len)` padded source ids.
          token_ids: `(batch, steps)` a search's tokens (a row is 0 after its `[END]`).
        Returns:
          `(batch, steps, source_len)` float32: row `t` is where the decoder looked when it
          chose token `t`; it sums to 1 over the unpadded source and is 0 on padding, and it is
          all 0 after the row's `[END]`.
        """
        source_ids = tf.convert_to_tensor(source_ids, tf.int64)
        token_ids = tf.convert_to_tensor(token_ids, tf.int64)
        state = self.encode(source_ids)
        batch_size, steps = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
        start = tf.fill([batch_size, 1], tf.constant(START_ID, tf.int64))
        previous = tf.concat([start, token_ids[:, :-1]], axis=1)  # what each step was fed
        is_end = tf.cast(tf.equal(token_ids, END_ID), tf.int32)
        produced = tf.cumsum(is_end, axis=1, exclusive=True) == 0  # through the first [END]
        columns = tf.range(steps)
        weights = tf.zeros([batch_size, steps, tf.shape(state[-1])[1]], tf.float32)

        def one_step(t, state, weights):
            _, state, step_weights = self.step_with_attention(previous[:, t], state)
            here = tf.equal(columns, t)[None, :, None] & produced[:, :, None]
            weights = tf.where(here, tf.cast(step_weights, tf.float32)[:, None, :], weights)
            return t + 1, state, weights

        loop_vars = (tf.constant(0), state, weights)
        _, _, weights = tf.while_loop(
            lambda t, *_: t < steps, one_step, loop_vars,
            shape_invariants=search.any_shape(loop_vars),
        )
        return weights[:, :, : tf.shape(source_ids)[1]]

    def cache_length(self, max_steps: int | tf.Tensor | None = None) -> int | tf.Tensor:
        """The positions a Transformer's self-attention caches start with: none when they
        grow, else `max_steps` (default: `max_length`), all preallocated."""
        if not self.fixed_shapes:
            return 0
        return self.max_length if max_steps is None else max_steps

    def search_state(self, source_ids: tf.Tensor, max_lengths: tf.Tensor) -> State:
        """`encode` for a search whose rows stop at `max_lengths`: preallocated Transformer
        caches hold only the batch's longest cap, not `max_length`. A step reads and writes
        its whole cache, so on everyday sentences (caps near 30 tokens of 64) this halves it."""
        preallocated = self.is_transformer and self.fixed_shapes
        longest = tf.maximum(tf.reduce_max(max_lengths), 1) if preallocated else None
        return self.encode(source_ids, longest)

    def _greedy(self, source_ids):
        max_lengths = self.max_lengths(source_ids)
        return search.greedy_search(
            self.step, self.search_state(source_ids, max_lengths), tf.shape(source_ids)[0],
            self.max_length, max_lengths=max_lengths,
        )

    def _beam(self, source_ids, beam_width, alpha):
        max_lengths = self.max_lengths(source_ids)
        return search.beam_search(
            self.step, self.search_state(source_ids, max_lengths), tf.shape(source_ids)[0],
            self.max_length, beam_width, alpha, max_lengths=max_lengths,
        )

    def _sample(self, source_ids, temperature, seed):
        max_lengths = self.max_lengths(source_ids)
        return search.sample_search(
            self.step, self.search_state(source_ids, max_lengths), tf.shape(source_ids)[0],
            self.max_length, temperature, seed, max_lengths=max_lengths,
        )

    def _greedy_with_attention(self, source_ids):
        result = self._greedy(source_ids)
        return result, self.attention_weights(source_ids, result.token_ids)

    def decode(self, source_ids, beam_width: int = 1, alpha: float = search.DEFAULT_LENGTH_ALPHA):
        """Greedy search when `beam_width` is 1, else beam search; returns a `SearchResult`."""
        check_beam_width(beam_width)
        source_ids = tf.convert_to_tensor(source_ids, tf.int64)
        if beam_width == 1:
            return self.greedy(source_ids)
        return self.beam(source_ids, tf.constant(beam_width, tf.int32), tf.constant(alpha))

"""Fast decoding: greedy, beam and sampling searches over a step function, inside one graph.

`decode.greedy_decode_stepwise` is the teaching path: one Python loop iteration and one Keras
model call per token. Here the whole loop is a `tf.while_loop` inside a `tf.function`, so a
batch of sentences is translated by a single graph call. The module has two halves:

1. **Searches** (`greedy_search`, `beam_search`, `sample_search`) know nothing about LSTMs. They
   take a step callable and its state, as keras-hub's samplers and flax's `beam_search` do:

       step(token_ids, state) -> (log_probs, new_state)
         token_ids: (batch,) int64, the previous token of every sentence (or beam)
         log_probs: (batch, vocab) float32, log-probabilities of the next token
         state:     any nest of tensors with a leading batch dimension

   They work on whole batches and keep a per-sentence `done` mask: the loop ends when every
   sentence has produced `[END]`, or after `max_length` tokens.
2. **`GraphDecoder`** turns the trained layers (found by name) into `encode` and `step`, by
   calling the LSTM or GRU *cells* with the trained weights (every variant of
   docs/variants.md: stacked, bidirectional, attention). Stepping the cell keeps the graph free
   of cuDNN-only kernels, so a SavedModel built on a GPU machine still runs on a CPU server.

Every search returns a `SearchResult`: token ids shaped like the step-by-step decoder's output
(`(batch, steps)`, a row ends at its first `[END]` and is 0 after it), the model's
log-probability of each row (its "score", `[END]` included) and each row's length.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import keras
import tensorflow as tf

from seq2seq_keras import variants
from seq2seq_keras.text import END_ID, PAD_ID, START_ID

# The step contract shared by all searches (see the module docstring).
State = Any  # a nest of (batch, ...) tensors, e.g. the LSTM's (h, c)
StepFn = Callable[[tf.Tensor, State], "tuple[tf.Tensor, State]"]

# GNMT's length-normalization exponent (Wu et al. 2016, also flax's wmt default): beam search
# ranks finished hypotheses by log P / ((5 + length) / 6) ** alpha, so that longer translations
# are not penalized merely for having more (negative) log-probability terms.
DEFAULT_LENGTH_ALPHA = 0.6
NEG_INF = float("-inf")


class SearchResult(NamedTuple):
    """What every search returns; a NamedTuple so that `tf.function` can return it."""

    token_ids: tf.Tensor  # (batch, steps) int64; a row stops at its first [END], then 0s
    log_probs: tf.Tensor  # (batch,) float32, sum of the chosen tokens' log-probabilities
    lengths: tf.Tensor  # (batch,) int32, tokens generated per row, [END] included


def length_penalty(lengths: tf.Tensor, alpha: float | tf.Tensor) -> tf.Tensor:
    """GNMT's length penalty `((5 + length) / 6) ** alpha`; 1 for every length when alpha is 0."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, tf.cast(alpha, tf.float32))


def normalized_scores(result: SearchResult, alpha: float | tf.Tensor) -> tf.Tensor:
    """The beam-search objective of each row: its log-probability over its length penalty."""
    return result.log_probs / length_penalty(result.lengths, alpha)


def _any_shape(loop_vars):
    """Shape invariants keeping each loop variable's rank but no dimension (beam may vary)."""
    return tf.nest.map_structure(lambda v: tf.TensorShape([None] * v.shape.rank), loop_vars)


# === Greedy search and sampling: one token per sentence per step ===


def _decode_one_token_at_a_time(
    step: StepFn,
    state: State,
    batch_size: tf.Tensor,
    max_length: int | tf.Tensor,
    choose: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
) -> SearchResult:
    """The loop shared by greedy search and sampling; `choose(log_probs, t)` picks the tokens.

    A sentence that has produced `[END]` is fed padding and emits padding until the loop ends,
    exactly as the step-by-step decoder does; its state changes no longer matter.
    """
    max_length = tf.convert_to_tensor(max_length, tf.int32)
    tokens = tf.fill([batch_size], tf.constant(START_ID, tf.int64))
    done = tf.zeros([batch_size], tf.bool)
    log_probs = tf.zeros([batch_size], tf.float32)
    lengths = tf.zeros([batch_size], tf.int32)
    # Written column by column; a TensorArray cannot be stacked when the batch is empty.
    output = tf.zeros([batch_size, max_length], tf.int64)
    columns = tf.range(max_length)

    def keep_going(t, tokens, state, done, log_probs, lengths, output):
        return (t < max_length) & ~tf.reduce_all(done)

    def one_step(t, tokens, state, done, log_probs, lengths, output):
        token_log_probs, state = step(tokens, state)  # (batch, vocab)
        next_ids = tf.where(done, tf.constant(PAD_ID, tf.int64), choose(token_log_probs, t))
        chosen = tf.gather(token_log_probs, next_ids, batch_dims=1)  # (batch,)
        log_probs += tf.where(done, 0.0, chosen)
        lengths += tf.cast(~done, tf.int32)
        output = tf.where(tf.equal(columns, t)[None, :], next_ids[:, None], output)
        done |= tf.equal(next_ids, END_ID)
        return t + 1, next_ids, state, done, log_probs, lengths, output

    loop_vars = (tf.constant(0), tokens, state, done, log_probs, lengths, output)
    steps, _, _, _, log_probs, lengths, output = tf.while_loop(
        keep_going, one_step, loop_vars, shape_invariants=_any_shape(loop_vars)
    )
    return SearchResult(output[:, :steps], log_probs, lengths)


def greedy_search(
    step: StepFn, state: State, batch_size: tf.Tensor, max_length: int | tf.Tensor
) -> SearchResult:
    """Greedy decoding: every sentence takes its most probable next token, all in one loop.

    Args:
      step: `step(token_ids (batch,), state) -> (log_probs (batch, vocab), state)`.
      state: the decoder's initial state (a nest of `(batch, ...)` tensors).
      batch_size: number of sentences (a scalar; `tf.shape` of a state works in a graph).
      max_length: the most tokens to generate per sentence, `[END]` included.
    Returns:
      A `SearchResult`; `token_ids` is `(batch, steps)` with `steps` the longest row's length.

    Example:
      >>> result = greedy_search(step, encoder_state, batch_size=2, max_length=64)
      >>> result.token_ids  # [[57, 12, 5, 3], [88, 5, 3, 0]]
    """
    return _decode_one_token_at_a_time(
        step, state, batch_size, max_length,
        lambda log_probs, t: tf.argmax(log_probs, axis=-1, output_type=tf.int64),
    )


def sample_search(
    step: StepFn,
    state: State,
    batch_size: tf.Tensor,
    max_length: int | tf.Tensor,
    temperature: float | tf.Tensor = 1.0,
    seed: int | tf.Tensor = 0,
) -> SearchResult:
    """Temperature sampling: draw each next token from softmax(log_probs / temperature).

    Deterministic for a given seed and batch (stateless random ops seeded with `[seed, step]`).
    A low temperature approaches greedy search; a high one approaches uniform draws. The
    returned `log_probs` are the *model's* log-probabilities of the drawn tokens (temperature 1).

    Args:
      temperature: > 0. Checked when given as a Python number; a tensor is floored at 1e-6.
      seed: an integer; the same seed and batch give the same samples.
    """
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature}; use greedy_search for temperature 0."
        )
    temperature = tf.maximum(tf.cast(temperature, tf.float32), 1e-6)
    seed = tf.cast(seed, tf.int64)

    def draw(log_probs, t):
        seeds = tf.stack([seed, tf.cast(t, tf.int64)])
        drawn = tf.random.stateless_categorical(log_probs / temperature, 1, seed=seeds)
        return tf.cast(drawn[:, 0], tf.int64)

    return _decode_one_token_at_a_time(step, state, batch_size, max_length, draw)


# === Beam search ===


def expand_to_beams(tensor: tf.Tensor, beam_width: tf.Tensor) -> tf.Tensor:
    """Repeat every row `beam_width` times: `(batch, ...)` → `(batch * beam, ...)`."""
    return tf.repeat(tensor, beam_width, axis=0)


def flatten_beam_dim(tensor: tf.Tensor) -> tf.Tensor:
    """Merge the batch and beam axes: `(batch, beam, ...)` → `(batch * beam, ...)`."""
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))


def unflatten_beam_dim(tensor: tf.Tensor, batch_size: tf.Tensor) -> tf.Tensor:
    """Split the batch and beam axes: `(batch * beam, ...)` → `(batch, beam, ...)`."""
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([[batch_size, shape[0] // batch_size], shape[1:]], 0))


def gather_beams(tensor: tf.Tensor, beam_indices: tf.Tensor) -> tf.Tensor:
    """Pick beams per sentence: `(batch, beam, ...)`, `(batch, n)` indices → `(batch, n, ...)`."""
    return tf.gather(tensor, beam_indices, batch_dims=1)


def beam_search(
    step: StepFn,
    state: State,
    batch_size: tf.Tensor,
    max_length: int | tf.Tensor,
    beam_width: int | tf.Tensor = 4,
    alpha: float | tf.Tensor = DEFAULT_LENGTH_ALPHA,
    include_greedy: bool = True,
) -> SearchResult:
    """Batched beam search with GNMT length normalization, in one `tf.while_loop`.

    Each step extends every live hypothesis by every token and keeps the `2k` best candidates
    (so that `k` remain alive even if up to `k` of them end). As in fairseq, a candidate ending
    in `[END]` is kept as finished only when it ranks in the top `k`; the others stay alive.
    Finished hypotheses are ranked by `log P / length_penalty`. A sentence is `done` once no
    live hypothesis can still beat its best finished one: a live log-probability `s` can only
    fall, so `s / length_penalty(max_length)` bounds every completion (for alpha >= 0).

    Plain beam search can prune the greedy path and end up *worse* than greedy. With
    `include_greedy` (the default) the greedy translation seeds the finished set, so the
    result always scores at least as well as greedy search, at the cost of one greedy pass.
    With `beam_width=1` and `alpha=0` the result is exactly greedy search's.

    Args:
      step, state, batch_size, max_length: as for `greedy_search`.
      beam_width: hypotheses kept per sentence, k >= 1 (an int, or an int32 scalar tensor).
      alpha: length-normalization exponent >= 0; 0 ranks by plain log-probability.
      include_greedy: seed the finished hypotheses with the greedy translation.
    Returns:
      The best hypothesis of every sentence as a `SearchResult`.
    """
    if isinstance(beam_width, int) and beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}.")
    if isinstance(alpha, (int, float)) and alpha < 0:
        raise ValueError(f"alpha must be >= 0 (0: no length normalization), got {alpha}.")
    max_length = tf.convert_to_tensor(max_length, tf.int32)
    beam_width = tf.convert_to_tensor(beam_width, tf.int32)
    alpha = tf.cast(alpha, tf.float32)
    batch_size = tf.convert_to_tensor(batch_size, tf.int32)
    max_penalty = length_penalty(max_length, alpha)

    # 1. Alive hypotheses: only beam 0 starts alive, so k copies of [START] are not k beams.
    alive_ids = tf.zeros([batch_size, beam_width, max_length], tf.int64)
    alive_last = tf.fill([batch_size, beam_width], tf.constant(START_ID, tf.int64))
    first_beam = tf.equal(tf.range(beam_width), 0)[None, :]
    alive_log_probs = tf.where(first_beam, 0.0, tf.fill([batch_size, beam_width], NEG_INF))
    alive_state = tf.nest.map_structure(lambda s: expand_to_beams(s, beam_width), state)

    # 2. Finished hypotheses, optionally seeded with the greedy translation in slot 0.
    finished_ids = tf.zeros([batch_size, beam_width, max_length], tf.int64)
    finished_scores = tf.fill([batch_size, beam_width], NEG_INF)
    finished_log_probs = tf.zeros([batch_size, beam_width], tf.float32)
    finished_lengths = tf.zeros([batch_size, beam_width], tf.int32)
    if include_greedy:
        greedy = greedy_search(step, state, batch_size, max_length)
        greedy_ids = tf.pad(
            greedy.token_ids, [[0, 0], [0, max_length - tf.shape(greedy.token_ids)[1]]]
        )

        def seed_slot0(slots, value):
            return tf.where(first_beam, value[:, None], slots)

        finished_ids = tf.where(first_beam[..., None], greedy_ids[:, None, :], finished_ids)
        finished_scores = seed_slot0(finished_scores, normalized_scores(greedy, alpha))
        finished_log_probs = seed_slot0(finished_log_probs, greedy.log_probs)
        finished_lengths = seed_slot0(finished_lengths, greedy.lengths)

    columns = tf.range(max_length, dtype=tf.int32)
    done = tf.zeros([batch_size], tf.bool)

    def keep_going(t, *loop_vars):
        done = loop_vars[-1]
        return (t < max_length) & ~tf.reduce_all(done)

    def one_step(t, alive_ids, alive_last, alive_log_probs, alive_state,
                 finished_ids, finished_scores, finished_log_probs, finished_lengths, done):
        # 3. Score every extension of every live hypothesis.
        token_log_probs, new_state = step(flatten_beam_dim(alive_last), alive_state)
        token_log_probs = unflatten_beam_dim(token_log_probs, batch_size)  # (batch, k, vocab)
        vocab_size = tf.shape(token_log_probs)[2]
        candidates = alive_log_probs[..., None] + token_log_probs
        candidates = tf.reshape(candidates, [batch_size, -1])  # (batch, k * vocab)
        num_candidates = tf.minimum(2 * beam_width, beam_width * vocab_size)
        top_log_probs, top_indices = tf.math.top_k(candidates, k=num_candidates)
        top_beams = top_indices // vocab_size  # (batch, 2k)
        top_tokens = tf.cast(top_indices % vocab_size, tf.int64)
        top_ids = gather_beams(alive_ids, top_beams)  # (batch, 2k, max_length)
        top_ids = tf.where(tf.equal(columns, t)[None, None, :], top_tokens[..., None], top_ids)

        # 4. Finished: candidates ending here that rank in the top k (all of them at the end).
        ranks = tf.range(num_candidates)[None, :]
        last_step = tf.equal(t, max_length - 1)
        ends = (tf.equal(top_tokens, END_ID) | last_step) & (ranks < beam_width)
        ends &= top_log_probs > NEG_INF
        new_scores = tf.where(ends, top_log_probs / length_penalty(t + 1, alpha), NEG_INF)
        # Older hypotheses come first, so on a tie the earlier (or greedy) one is kept.
        merged_scores = tf.concat([finished_scores, new_scores], axis=1)
        merged_ids = tf.concat([finished_ids, top_ids], axis=1)
        merged_log_probs = tf.concat([finished_log_probs, top_log_probs], axis=1)
        merged_lengths = tf.concat(
            [finished_lengths, tf.fill(tf.shape(top_tokens), t + 1)], axis=1
        )
        best_scores, best = tf.math.top_k(merged_scores, k=beam_width)
        keep = ~done  # a done sentence's finished set is final
        finished_scores = tf.where(keep[:, None], best_scores, finished_scores)
        finished_ids = tf.where(keep[:, None, None], gather_beams(merged_ids, best), finished_ids)
        finished_log_probs = tf.where(
            keep[:, None], gather_beams(merged_log_probs, best), finished_log_probs
        )
        finished_lengths = tf.where(
            keep[:, None], gather_beams(merged_lengths, best), finished_lengths
        )

        # 5. Alive: the best k candidates that did not end; their states follow their beams.
        alive_candidates = tf.where(tf.equal(top_tokens, END_ID), NEG_INF, top_log_probs)
        alive_log_probs, survivors = tf.math.top_k(alive_candidates, k=beam_width)
        alive_ids = gather_beams(top_ids, survivors)
        alive_last = gather_beams(top_tokens, survivors)
        parent_beams = gather_beams(top_beams, survivors)  # (batch, k)
        alive_state = tf.nest.map_structure(
            lambda s: flatten_beam_dim(
                gather_beams(unflatten_beam_dim(s, batch_size), parent_beams)
            ),
            new_state,
        )

        # 6. Done: no live hypothesis can still beat the best finished one. (flax compares with
        # the worst of the k finished, which is needed for k-best lists; we return the best.)
        best_alive_bound = alive_log_probs[:, 0] / max_penalty
        nothing_alive = tf.equal(alive_log_probs[:, 0], NEG_INF)
        done |= (best_alive_bound < finished_scores[:, 0]) | nothing_alive
        return (t + 1, alive_ids, alive_last, alive_log_probs, alive_state,
                finished_ids, finished_scores, finished_log_probs, finished_lengths, done)

    loop_vars = (tf.constant(0), alive_ids, alive_last, alive_log_probs, alive_state,
                 finished_ids, finished_scores, finished_log_probs, finished_lengths, done)
    final = tf.while_loop(keep_going, one_step, loop_vars, shape_invariants=_any_shape(loop_vars))
    finished_ids, finished_log_probs, finished_lengths = final[5], final[7], final[8]
    lengths = finished_lengths[:, 0]
    width = tf.reduce_max(tf.concat([lengths, [0]], axis=0))
    return SearchResult(finished_ids[:, 0, :width], finished_log_probs[:, 0], lengths)


# === The trained encoder–decoder as `encode` and `step` ===

SOURCE_IDS_SPEC = tf.TensorSpec([None, None], tf.int64, name="source_ids")


class GraphDecoder(tf.Module):
    """The trained layers as an encoder and a step function, and the searches compiled over them.

    Layers are found by name in the training model (`variants.ModelLayers.find`) and shared
    with it (same weights). The RNN layers are not called; their cells are, one step at a time
    with the trained kernels, which is the computation the Keras LSTM and GRU layers perform on
    a CPU, without their cuDNN branch. Every variant works: LSTM or GRU cells, stacked and
    bidirectional encoders, Luong or Bahdanau attention.

    The decoder state is a flat tuple: the decoder RNN states layer by layer (`h, c` for an
    LSTM, `h` for a GRU; the classic model's state is `(h, c)`), then, with attention, the
    encoder outputs, their attention keys and the source mask, which every step reads.

    Args:
      training_model: the model built by `model.build_training_model` (fresh or loaded).
      max_length: the most tokens generated per sentence, `[END]` included.
    Example:
      >>> decoder = GraphDecoder(trained.training_model, config.max_decode_length)
      >>> decoder.greedy(tf.constant([[12, 7, 4]], tf.int64)).token_ids
    """

    def __init__(self, training_model: keras.Model, max_length: int, name: str = "graph_decoder"):
        super().__init__(name=name)
        layers = variants.ModelLayers.find(training_model)
        self.encoder_embedding = layers.encoder_embedding
        self.encoder_rnns = layers.encoder_rnns
        self.decoder_embedding = layers.decoder_embedding
        self.decoder_cells = [layer.cell for layer in layers.decoder_rnns]
        self.decoder_dense = layers.decoder_dense
        self.attention = layers.attention  # None without attention
        self.states_per_layer = layers.states_per_layer
        self.max_length = max_length
        self.greedy = tf.function(self._greedy, input_signature=[SOURCE_IDS_SPEC])
        self.beam = tf.function(
            self._beam,
            input_signature=[
                SOURCE_IDS_SPEC,
                tf.TensorSpec([], tf.int32, name="beam_width"),
                tf.TensorSpec([], tf.float32, name="alpha"),
            ],
        )
        self.sample = tf.function(
            self._sample,
            input_signature=[
                SOURCE_IDS_SPEC,
                tf.TensorSpec([], tf.float32, name="temperature"),
                tf.TensorSpec([], tf.int64, name="seed"),
            ],
        )
        if self.attention is not None:
            self.greedy_with_attention = tf.function(
                self._greedy_with_attention, input_signature=[SOURCE_IDS_SPEC]
            )

    def encode(self, source_ids: tf.Tensor) -> State:
        """The decoder's initial state for `(batch, source_len)` right-padded source ids.

        Each encoder layer runs over the previous layer's outputs; its final states start the
        decoder layer of the same depth (a bidirectional layer's as `[forward; backward]`). A
        padding position leaves the states unchanged, as Keras' masked RNNs do, so a row's
        final state is the state after its last real token (zeros for an empty row).
        """
        source_ids = tf.convert_to_tensor(source_ids, tf.int64)
        if len(self.encoder_rnns) > 1 or self.attention is not None:
            # Per-step outputs cannot be stacked from zero steps: one padding column gives
            # sources of width 0 a step. It is masked, so it changes nothing (no state update,
            # attention weight 0; a row of only padding gets a zero context either way).
            missing = tf.maximum(1 - tf.shape(source_ids)[1], 0)
            source_ids = tf.pad(source_ids, [[0, 0], [0, missing]])
        vectors = self.encoder_embedding(source_ids)  # (batch, source_len, embedding_dim)
        vectors = tf.transpose(vectors, [1, 0, 2])  # (source_len, batch, embedding_dim)
        is_real = tf.transpose(tf.not_equal(source_ids, PAD_ID))  # (source_len, batch)
        states = []
        for index, layer in enumerate(self.encoder_rnns, start=1):
            # The last layer's per-step outputs are needed only by attention.
            keep_outputs = index < len(self.encoder_rnns) or self.attention is not None
            if isinstance(layer, keras.layers.Bidirectional):
                forward, forward_states = run_cell(
                    layer.forward_layer.cell, vectors, is_real, False, keep_outputs
                )
                backward, backward_states = run_cell(
                    layer.backward_layer.cell, vectors, is_real, True, keep_outputs
                )
                if keep_outputs:
                    vectors = tf.concat([forward, backward], axis=-1)  # (source_len, batch, units)
                states += [tf.concat(pair, axis=-1) for pair in zip(forward_states, backward_states)]
            else:
                vectors, layer_states = run_cell(
                    layer.cell, vectors, is_real, layer.go_backwards, keep_outputs
                )
                states += layer_states
        if self.attention is None:
            return tuple(states)
        values = tf.transpose(vectors, [1, 0, 2])  # (batch, source_len, units)
        keys = self.attention.key(values)  # computed once per sentence, not once per step
        return (*states, values, keys, tf.not_equal(source_ids, PAD_ID))

    def step(self, token_ids: tf.Tensor, state: State) -> tuple[tf.Tensor, State]:
        """One decoder step: `(batch,)` previous tokens and the state → next-token log-probs.

        Like the step-by-step decoder's functional `decoder_step` model (where the embedding's
        padding mask does not reach the RNN), a padding token is an ordinary step. Only a
        finished sentence is fed one, and the search ignores what happens to it.
        """
        log_probs, state, _ = self.step_with_attention(token_ids, state)
        return log_probs, state

    def step_with_attention(self, token_ids: tf.Tensor, state: State):
        """`step`, also returning the attention weights `(batch, source_len)` (None without)."""
        num_rnn_states = len(self.decoder_cells) * self.states_per_layer
        rnn_states, memory = state[:num_rnn_states], state[num_rnn_states:]
        # tf.identity drops the Keras mask the embedding attaches: the cell takes none.
        outputs = tf.identity(self.decoder_embedding(token_ids))  # (batch, embedding_dim)
        new_states = []
        for index, cell in enumerate(self.decoder_cells):
            first = index * self.states_per_layer
            layer_states = list(rnn_states[first : first + self.states_per_layer])
            outputs, layer_states = cell(outputs, layer_states, training=False)
            new_states += layer_states
        # Called on (batch, 1, units) as in the step-by-step decoder, for bit-identical results.
        outputs = outputs[:, None, :]
        weights = None
        if self.attention is not None:
            values, keys, source_mask = memory
            outputs, weights = variants.attend(self.attention, outputs, values, keys, source_mask)
            weights = weights[:, 0, :]  # (batch, source_len)
        # The dense layer ends in a softmax: log turns its probabilities into log-probabilities.
        probabilities = self.decoder_dense(outputs)[:, 0, :]  # (batch, vocab)
        log_probs = tf.math.log(tf.cast(probabilities, tf.float32))
        return log_probs, (*new_states, *memory), weights

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
            lambda t, *_: t < steps, one_step, loop_vars, shape_invariants=_any_shape(loop_vars)
        )
        return weights[:, :, : tf.shape(source_ids)[1]]

    def _greedy(self, source_ids):
        state = self.encode(source_ids)
        return greedy_search(self.step, state, tf.shape(source_ids)[0], self.max_length)

    def _beam(self, source_ids, beam_width, alpha):
        state = self.encode(source_ids)
        return beam_search(
            self.step, state, tf.shape(source_ids)[0], self.max_length, beam_width, alpha
        )

    def _sample(self, source_ids, temperature, seed):
        state = self.encode(source_ids)
        return sample_search(
            self.step, state, tf.shape(source_ids)[0], self.max_length, temperature, seed
        )

    def _greedy_with_attention(self, source_ids):
        result = self._greedy(source_ids)
        return result, self.attention_weights(source_ids, result.token_ids)

    def decode(self, source_ids, beam_width: int = 1, alpha: float = DEFAULT_LENGTH_ALPHA):
        """Greedy search when `beam_width` is 1, else beam search; returns a `SearchResult`."""
        if beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {beam_width}.")
        source_ids = tf.convert_to_tensor(source_ids, tf.int64)
        if beam_width == 1:
            return self.greedy(source_ids)
        return self.beam(source_ids, tf.constant(beam_width, tf.int32), tf.constant(alpha))


def run_cell(
    cell: keras.layers.Layer,
    vectors: tf.Tensor,
    is_real: tf.Tensor,
    backwards: bool,
    keep_outputs: bool,
) -> tuple[tf.Tensor | None, list[tf.Tensor]]:
    """Run an RNN cell over a masked time-major sequence, as Keras' masked RNN layer does.

    Args:
      cell: a trained `LSTMCell` or `GRUCell`.
      vectors: `(steps, batch, features)` inputs.
      is_real: `(steps, batch)` bool, False on padding, where the states stay unchanged.
      backwards: read the sequence last step first (Keras' `go_backwards`, padding first).
      keep_outputs: also return the per-step outputs.
    Returns:
      The outputs `(steps, batch, units)` in the input's order (0 on padding), or None, and
      the final states (`[h, c]` for an LSTM, `[h]` for a GRU).
    """
    if backwards:
        vectors, is_real = tf.reverse(vectors, [0]), tf.reverse(is_real, [0])
    steps, batch_size = tf.shape(vectors)[0], tf.shape(vectors)[1]
    # Under mixed precision the cell computes in bfloat16 or float16; so do its states.
    dtype = cell.compute_dtype
    num_states = 2 if isinstance(cell, keras.layers.LSTMCell) else 1
    states = tuple(tf.zeros([batch_size, cell.units], dtype) for _ in range(num_states))
    outputs = tf.TensorArray(dtype, size=steps, element_shape=tf.TensorShape([None, cell.units]))

    def one_token(t, states, outputs):
        output, new_states = cell(vectors[t], list(states), training=False)
        real = is_real[t][:, None]
        states = tuple(tf.where(real, new, old) for new, old in zip(new_states, states))
        if keep_outputs:
            outputs = outputs.write(t, tf.where(real, output, tf.zeros_like(output)))
        return t + 1, states, outputs

    _, states, outputs = tf.while_loop(
        lambda t, *_: t < steps, one_token, (tf.constant(0), states, outputs)
    )
    if not keep_outputs:
        return None, list(states)
    outputs = outputs.stack()  # (steps, batch, units)
    return (tf.reverse(outputs, [0]) if backwards else outputs), list(states)

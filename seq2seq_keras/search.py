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
   calling the LSTM *cells* with the trained weights. Stepping the cell keeps the graph free of
   cuDNN-only kernels, so a SavedModel built on a GPU machine still runs on a CPU server.

Every search returns a `SearchResult`: token ids shaped like the step-by-step decoder's output
(`(batch, steps)`, a row ends at its first `[END]` and is 0 after it), the model's
log-probability of each row (its "score", `[END]` included) and each row's length.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import keras
import tensorflow as tf

from seq2seq_keras import model as model_lib
from seq2seq_keras.data import END_ID, PAD_ID, START_ID

# The step contract shared by all searches (see the module docstring).
State = Any  # a nest of (batch, ...) tensors, e.g. the LSTM's (h, c)
StepFn = Callable[[tf.Tensor, State], "tuple[tf.Tensor, State]"]
LstmState = tuple[tf.Tensor, tf.Tensor]  # (h, c), each (batch, units)

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

    Layers are found by name in the training model and shared with it (same weights). The LSTM
    layers are not called; their cells are, one step at a time with the trained kernels, which
    is the computation the Keras LSTM layer performs on a CPU, without its cuDNN branch.

    Args:
      training_model: the model built by `model.build_training_model` (fresh or loaded).
      max_length: the most tokens generated per sentence, `[END]` included.
    Example:
      >>> decoder = GraphDecoder(trained.training_model, config.max_decode_length)
      >>> decoder.greedy(tf.constant([[12, 7, 4]], tf.int64)).token_ids
    """

    def __init__(self, training_model: keras.Model, max_length: int, name: str = "graph_decoder"):
        super().__init__(name=name)
        self.encoder_embedding = training_model.get_layer(model_lib.ENCODER_EMBEDDING)
        self.encoder_cell = training_model.get_layer(model_lib.ENCODER_LSTM).cell
        self.encoder_reads_backwards = training_model.get_layer(model_lib.ENCODER_LSTM).go_backwards
        self.decoder_embedding = training_model.get_layer(model_lib.DECODER_EMBEDDING)
        self.decoder_cell = training_model.get_layer(model_lib.DECODER_LSTM).cell
        self.decoder_dense = training_model.get_layer(model_lib.DECODER_DENSE)
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

    def encode(self, source_ids: tf.Tensor) -> LstmState:
        """The context vector `(h, c)` of `(batch, source_len)` right-padded source ids.

        A padding position leaves the state unchanged, as Keras' masked LSTM does, so a row's
        final state is the state after its last real token (zeros for an empty row).
        """
        source_ids = tf.convert_to_tensor(source_ids, tf.int64)
        vectors = self.encoder_embedding(source_ids)  # (batch, source_len, embedding_dim)
        vectors = tf.transpose(vectors, [1, 0, 2])  # (source_len, batch, embedding_dim)
        is_real = tf.transpose(tf.not_equal(source_ids, PAD_ID))  # (source_len, batch)
        if self.encoder_reads_backwards:
            # As Keras' go_backwards: the padded sequence reversed, padding (masked) first.
            vectors, is_real = tf.reverse(vectors, [0]), tf.reverse(is_real, [0])
        batch_size = tf.shape(source_ids)[0]
        units = self.encoder_cell.units
        # Under mixed precision the cell computes in bfloat16 or float16; so do its states.
        dtype = self.encoder_cell.compute_dtype
        state = (tf.zeros([batch_size, units], dtype), tf.zeros([batch_size, units], dtype))

        def one_token(t, state):
            _, (h, c) = self.encoder_cell(vectors[t], list(state), training=False)
            real = is_real[t][:, None]
            return t + 1, (tf.where(real, h, state[0]), tf.where(real, c, state[1]))

        _, state = tf.while_loop(
            lambda t, state: t < tf.shape(vectors)[0], one_token, (tf.constant(0), state)
        )
        return state

    def step(self, token_ids: tf.Tensor, state: LstmState) -> tuple[tf.Tensor, LstmState]:
        """One decoder step: `(batch,)` previous tokens and `(h, c)` → next-token log-probs.

        Like the step-by-step decoder's functional `decoder_step` model (where the embedding's
        padding mask does not reach the LSTM), a padding token is an ordinary step. Only a
        finished sentence is fed one, and the search ignores what happens to it.
        """
        # tf.identity drops the Keras mask the embedding attaches: the cell takes none.
        vectors = tf.identity(self.decoder_embedding(token_ids))  # (batch, embedding_dim)
        output, (h, c) = self.decoder_cell(vectors, list(state), training=False)
        # The dense layer ends in a softmax: log turns its probabilities into log-probabilities.
        # Called on (batch, 1, units) as in the step-by-step decoder, for bit-identical results.
        probabilities = self.decoder_dense(output[:, None, :])[:, 0, :]  # (batch, vocab)
        return tf.math.log(tf.cast(probabilities, tf.float32)), (h, c)

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

    def decode(self, source_ids, beam_width: int = 1, alpha: float = DEFAULT_LENGTH_ALPHA):
        """Greedy search when `beam_width` is 1, else beam search; returns a `SearchResult`."""
        if beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {beam_width}.")
        source_ids = tf.convert_to_tensor(source_ids, tf.int64)
        if beam_width == 1:
            return self.greedy(source_ids)
        return self.beam(source_ids, tf.constant(beam_width, tf.int32), tf.constant(alpha))

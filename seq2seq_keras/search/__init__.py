"""Searches: greedy, beam and sampling over a step function, each inside one graph.

The searches know nothing about LSTMs, attention or Keras. As keras-hub's samplers and flax's
`beam_search` do, they take a step callable and its initial state:

    step(token_ids, state) -> (logits, new_state)
      token_ids: (batch,) int64, the previous token of every sentence (or beam)
      logits:    (batch, vocab) float32, the next token's unnormalized log-probabilities:
                 its log-probabilities are `logits - logsumexp(logits)` (log-probabilities
                 are logits too)
      state:     any nest of tensors with a leading batch dimension

They work on whole batches. A sentence is done when it has produced `[END]` or reached its own
cap (`max_lengths`, see `decode_length_caps`); the loop ends when every sentence is done, or
after `max_length` tokens. The whole loop is a `tf.while_loop`, so inside a `tf.function` a
batch is translated by one graph call (`graph_decoder.GraphDecoder` compiles them over the
trained model's step).

Each step does the least work the result needs, because the step's output projection (one
logit per vocabulary token) dominates the cost of decoding:

- no softmax is computed: greedy search takes the argmax of the logits and one `logsumexp`
  per row scores the chosen token; beam search keeps each beam's best `2k` logits and
  normalizes only those (a beam contributes at most `2k` of the sentence's `2k` best
  extensions);
- a sentence that is done leaves the batch: the next steps run on the sentences still
  translating only (`rows` below), instead of feeding finished ones padding until the longest
  is done. Rows leave only on the steps where some sentence finishes.

Every search returns a `SearchResult`: token ids shaped like the step-by-step decoder's output
(`(batch, steps)`, a row ends at its first `[END]` and is 0 after it), the model's
log-probability of each row (its "score", `[END]` included) and each row's length.

The package reads top to bottom as `common` (the contract, the result, caps, row bookkeeping),
`greedy` (greedy search and sampling) and `beam` (beam search); every name is importable from
`seq2seq_keras.search` itself.
"""

from seq2seq_keras.search.beam import (
    GreedyRows,
    beam_search,
    expand_to_beams,
    flatten_beam_dim,
    gather_beams,
    unflatten_beam_dim,
)
from seq2seq_keras.search.common import (
    DEFAULT_LENGTH_ALPHA,
    LOGIT_BLOCK,
    NEG_INF,
    SearchResult,
    State,
    chosen_log_probs,
    StepFn,
    any_shape,
    column_blocks,
    decode_length_caps,
    gather_rows,
    keep_rows,
    length_penalty,
    log_normalizer,
    log_softmax,
    most_probable,
    normalized_scores,
    per_sentence_caps,
    source_lengths,
    starting_rows,
    top_k_by_blocks,
)
from seq2seq_keras.search.greedy import greedy_search, sample_search

"""Greedy and beam search in numpy, over a LiteRT decoder step: the host side of the loop.

The same algorithms as `seq2seq_keras.search`, step for step, so that the LiteRT runtime and
the SavedModel choose the same tokens from the same log-probabilities: the per-sentence length
caps, `[END]` handling, GNMT length normalization, fairseq's rule for finished beams, the
greedy translation seeding beam search's finished set, and TensorFlow's `top_k` order on ties
(the lower index first). What differs is where the loop runs: here a Python loop calls the
exported step. As in the graph, a sentence that is done is no longer fed to it; the exported
step returns log-probabilities (the graph's searches normalize the logits themselves).

    step(token_ids, state) -> (log_probs, new_state)
      token_ids: (batch,) int64;  log_probs: (batch, vocab) float32
      state:     a list of arrays with a leading batch dimension
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from seq2seq_keras.tokens import END_ID, PAD_ID, START_ID

StepFn = Callable[[np.ndarray, list], "tuple[np.ndarray, list]"]
NEG_INF = np.float32(-np.inf)


class SearchResult(NamedTuple):
    """As `search.SearchResult`: a row stops at its first `[END]` and is 0 after it."""

    token_ids: np.ndarray  # (batch, steps) int64
    log_probs: np.ndarray  # (batch,) float32, the chosen tokens' log-probabilities summed
    lengths: np.ndarray  # (batch,) int32, tokens per row, [END] included


def length_penalty(lengths, alpha: float) -> np.ndarray:
    """GNMT's `((5 + length) / 6) ** alpha`, in float32 as `search.length_penalty`."""
    lengths = np.asarray(lengths, np.float32)
    return np.power((np.float32(5.0) + lengths) / np.float32(6.0), np.float32(alpha))


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """`(rows, k)` indices of each row's k largest values, largest first, ties lower index
    first, as `tf.math.top_k`. A partition finds the candidates, so wide rows stay cheap."""
    if values.shape[1] > k:
        kth = -np.partition(-values, k - 1, axis=1)[:, k - 1 : k]  # each row's k-th largest
    else:
        kth = np.full((values.shape[0], 1), NEG_INF)
    rows = []
    for row, threshold in zip(values, kth[:, 0]):
        candidates = np.flatnonzero(row >= threshold)  # ascending: ties keep index order
        rows.append(candidates[np.argsort(-row[candidates], kind="stable")[:k]])
    return np.stack(rows).astype(np.int64) if rows else np.zeros((0, k), np.int64)


def take_rows(state: list, rows: np.ndarray) -> list:
    return [part[rows] for part in state]


def greedy_search(step: StepFn, state: list, caps: np.ndarray, max_length: int) -> SearchResult:
    """`search.greedy_search`: every sentence takes its most probable next token.

    Args:
      step, state: the exported decoder step and the encoder's state for the batch.
      caps: `(batch,)` the most tokens each sentence may get (`decode_length_caps`).
      max_length: the overall cap, `caps.max()` at most.
    """
    batch_size = len(caps)
    state = [np.array(part) for part in state]  # updated row by row below: a copy
    tokens = np.full(batch_size, START_ID, np.int64)
    done = caps <= 0
    log_probs = np.zeros(batch_size, np.float32)
    lengths = np.zeros(batch_size, np.int32)
    output = np.zeros((batch_size, max_length), np.int64)
    steps = 0
    while steps < max_length and not done.all():
        active = np.flatnonzero(~done)  # finished sentences cost nothing more
        token_log_probs, new_state = step(tokens[active], take_rows(state, active))
        for part, new in zip(state, new_state):
            part[active] = new
        next_ids = np.argmax(token_log_probs, axis=-1).astype(np.int64)
        tokens[:] = PAD_ID
        tokens[active] = next_ids
        log_probs[active] += token_log_probs[np.arange(len(active)), next_ids]
        lengths[active] += 1
        output[active, steps] = next_ids
        done |= (tokens == END_ID) | (lengths >= caps)
        steps += 1
    return SearchResult(output[:, :steps], log_probs, lengths)


def beam_search(
    step: StepFn,
    state: list,
    caps: np.ndarray,
    max_length: int,
    beam_width: int,
    alpha: float,
) -> SearchResult:
    """`search.beam_search` with `include_greedy=True`: see there for the rules.

    Every live hypothesis is extended by every token; the best `2k` candidates are kept, those
    ending in `[END]` (or reaching the cap) among the top k join the finished set, ranked by
    log P / length penalty, and the best k that did not end stay alive. A sentence is done when
    no live hypothesis can beat its best finished one.
    """
    batch_size, k = len(caps), beam_width
    max_penalty = length_penalty(caps, alpha)
    greedy = greedy_search(step, state, caps, max_length)

    alive_ids = np.zeros((batch_size, k, max_length), np.int64)
    alive_last = np.full((batch_size, k), START_ID, np.int64)
    alive_log_probs = np.where(np.arange(k) == 0, np.float32(0), NEG_INF)
    alive_log_probs = np.tile(alive_log_probs.astype(np.float32), (batch_size, 1))
    alive_state = [np.repeat(part, k, axis=0) for part in state]

    finished_ids = np.zeros((batch_size, k, max_length), np.int64)
    finished_ids[:, 0, : greedy.token_ids.shape[1]] = greedy.token_ids
    finished_scores = np.full((batch_size, k), NEG_INF)
    finished_scores[:, 0] = greedy.log_probs / length_penalty(greedy.lengths, alpha)
    finished_log_probs = np.zeros((batch_size, k), np.float32)
    finished_log_probs[:, 0] = greedy.log_probs
    finished_lengths = np.zeros((batch_size, k), np.int32)
    finished_lengths[:, 0] = greedy.lengths

    batch = np.arange(batch_size)[:, None]
    done = caps <= 0
    t = 0
    while t < max_length and not done.all():
        token_log_probs, new_state = step(alive_last.reshape(-1), alive_state)
        vocab_size = token_log_probs.shape[1]
        candidates = alive_log_probs[..., None] + token_log_probs.reshape(batch_size, k, -1)
        candidates = candidates.reshape(batch_size, -1)
        top = top_k(candidates, min(2 * k, k * vocab_size))
        top_log_probs = np.take_along_axis(candidates, top, axis=1)
        top_beams, top_tokens = top // vocab_size, top % vocab_size
        top_ids = alive_ids[batch, top_beams]  # (batch, 2k, max_length)
        top_ids[:, :, t] = top_tokens

        at_cap = t + 1 >= caps
        ends = (top_tokens == END_ID) | at_cap[:, None]
        ends &= (np.arange(top.shape[1]) < k)[None, :] & (top_log_probs > NEG_INF)
        new_scores = np.where(ends, top_log_probs / length_penalty(t + 1, alpha), NEG_INF)
        merged_scores = np.concatenate([finished_scores, new_scores], axis=1)
        best = top_k(merged_scores, k)
        keep = ~done  # a done sentence's finished set is final
        merged_ids = np.concatenate([finished_ids, top_ids], axis=1)
        merged_log_probs = np.concatenate([finished_log_probs, top_log_probs], axis=1)
        merged_lengths = np.concatenate(
            [finished_lengths, np.full(top_tokens.shape, t + 1, np.int32)], axis=1
        )
        finished_scores[keep] = np.take_along_axis(merged_scores, best, axis=1)[keep]
        finished_ids[keep] = merged_ids[batch, best][keep]
        finished_log_probs[keep] = np.take_along_axis(merged_log_probs, best, axis=1)[keep]
        finished_lengths[keep] = np.take_along_axis(merged_lengths, best, axis=1)[keep]

        alive_candidates = np.where(top_tokens == END_ID, NEG_INF, top_log_probs)
        survivors = top_k(alive_candidates, k)
        alive_log_probs = np.take_along_axis(alive_candidates, survivors, axis=1)
        alive_ids = top_ids[batch, survivors]
        alive_last = np.take_along_axis(top_tokens, survivors, axis=1)
        parents = (np.take_along_axis(top_beams, survivors, axis=1) + batch * k).reshape(-1)
        alive_state = take_rows(new_state, parents)

        nothing_alive = alive_log_probs[:, 0] == NEG_INF
        done |= (alive_log_probs[:, 0] / max_penalty < finished_scores[:, 0]) | nothing_alive
        done |= at_cap
        t += 1
    lengths = finished_lengths[:, 0]
    width = int(lengths.max(initial=0))
    return SearchResult(finished_ids[:, 0, :width], finished_log_probs[:, 0], lengths)

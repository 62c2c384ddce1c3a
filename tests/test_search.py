"""Searches: fake steps with fixed scores and exact outputs (the model's step: test_decode.py).

The fake decoders are Markov tables: the next token's probabilities depend only on the previous
token, and the state says which table a sentence uses, so one batch can mix several cases.
"""

import numpy as np
import pytest
import tensorflow as tf

from seq2seq_keras import search
from seq2seq_keras import text as text_lib

PAD, UNK, START, END = text_lib.PAD_ID, text_lib.UNK_ID, text_lib.START_ID, text_lib.END_ID
# Fake target vocabulary: the four special tokens, then seven words.
A, B, C, D, E, F, G = range(4, 11)
VOCAB_SIZE = 11


def markov_table(rows: dict[int, dict[int, float]], default: dict[int, float]) -> np.ndarray:
    """`(vocab, vocab)` log-probabilities: row = previous token; unspecified mass spread evenly."""
    table = np.zeros((VOCAB_SIZE, VOCAB_SIZE))
    for previous in range(VOCAB_SIZE):
        given = rows.get(previous, default)
        rest = [token for token in range(VOCAB_SIZE) if token not in given]
        spare = 1.0 - sum(given.values())
        for token in rest:
            table[previous, token] = spare / len(rest) if spare > 1e-12 else 0.0
        for token, probability in given.items():
            table[previous, token] = probability
    assert np.allclose(table.sum(axis=1), 1.0)
    with np.errstate(divide="ignore"):
        return np.log(table).astype(np.float32)


# Beam search finds a better translation than greedy: greedy takes A (0.5), then its best is
# [END] (0.3): P = 0.15. B (0.4) then [END] (0.9) has P = 0.36.
BEAM_WINS = markov_table({START: {A: 0.5, B: 0.4}, A: {END: 0.3}, B: {END: 0.9}}, {END: 0.3})
# Plain 2-beam search prunes the greedy path A, C, [END] (P = 0.4 * 0.34 = 0.136): after two
# steps B D and B E (0.19 each) beat A C; every continuation of B then decays by <= 0.35/step.
GREEDY_PRUNED = markov_table(
    {START: {A: 0.40, B: 0.38}, A: {C: 0.34, F: 0.33, END: 0.33}, C: {END: 1.0},
     B: {D: 0.5, E: 0.5}},
    {END: 0.3, G: 0.35},
)
# Length normalization decides: [END] at once (P = 0.4) against A [END] (P = 0.38 * 0.99).
SHORT_OR_LONG = markov_table({START: {END: 0.4, A: 0.38}, A: {END: 0.99}}, {END: 0.5})
# Never ends: only the maximum length stops it.
NO_END = markov_table({}, {A: 1.0})
# One-hot: A, B, C, [END] with certainty.
ONE_HOT = markov_table({START: {A: 1.0}, A: {B: 1.0}, B: {C: 1.0}, C: {END: 1.0}}, {END: 1.0})
# A confused model: A again and again (0.5 each time); [END] is possible but never the best.
REPEATS = markov_table({}, {A: 0.5})
# A first (0.5), then A forever with certainty: longer is better under length normalization.
SURE_AFTER_A = markov_table({START: {A: 0.5}}, {A: 1.0})


def table_step(*tables: np.ndarray):
    """A fake decoder step over Markov tables; the state holds each sentence's table index."""
    stacked = tf.constant(np.stack(tables))  # (num_tables, vocab, vocab)

    def step(token_ids, state):
        return tf.gather_nd(stacked, tf.stack([state, tf.cast(token_ids, tf.int32)], 1)), state

    return step


def run(search_fn, *tables, **kwargs):
    """Run `search_fn` with one sentence per table; returns numpy token ids, log-probs, lengths."""
    state = tf.range(len(tables), dtype=tf.int32)
    result = search_fn(table_step(*tables), state, len(tables), **kwargs)
    return tuple(np.asarray(value) for value in result)


def log(*probabilities):
    return np.float32(np.sum(np.log(probabilities)))


# --- Fake steps: exact outputs -------------------------------------------------------------


def test_greedy_search_takes_the_best_token_and_pads_finished_rows():
    ids, log_probs, lengths = run(search.greedy_search, BEAM_WINS, ONE_HOT, max_length=8)
    np.testing.assert_array_equal(ids, [[A, END, PAD, PAD], [A, B, C, END]])
    np.testing.assert_array_equal(lengths, [2, 4])
    np.testing.assert_allclose(log_probs, [log(0.5, 0.3), 0.0], atol=1e-6)


def test_greedy_search_stops_at_the_maximum_length():
    ids, _, lengths = run(search.greedy_search, NO_END, ONE_HOT, max_length=3)
    np.testing.assert_array_equal(ids, [[A, A, A], [A, B, C]])
    np.testing.assert_array_equal(lengths, [3, 3])


def test_beam_search_finds_the_more_probable_translation():
    ids, log_probs, lengths = run(
        search.beam_search, BEAM_WINS, ONE_HOT, max_length=8, beam_width=2, alpha=0.0
    )
    np.testing.assert_array_equal(ids, [[B, END, PAD, PAD], [A, B, C, END]])
    np.testing.assert_allclose(log_probs, [log(0.4, 0.9), 0.0], atol=1e-6)
    np.testing.assert_array_equal(lengths, [2, 4])


def test_beam_width_one_without_length_penalty_is_greedy():
    for tables in [(BEAM_WINS, ONE_HOT), (GREEDY_PRUNED, SHORT_OR_LONG), (NO_END, BEAM_WINS)]:
        greedy = run(search.greedy_search, *tables, max_length=5)
        beam = run(search.beam_search, *tables, max_length=5, beam_width=1, alpha=0.0,
                   include_greedy=False)
        for greedy_part, beam_part in zip(greedy, beam):
            np.testing.assert_array_equal(greedy_part, beam_part)


def test_seeding_with_greedy_keeps_beam_at_least_as_good_as_greedy():
    plain = run(search.beam_search, GREEDY_PRUNED, max_length=6, beam_width=2, alpha=0.0,
                include_greedy=False)
    # Plain beam search lost the greedy path and ends with a worse translation …
    assert plain[1][0] < log(0.4, 0.34, 1.0) - 0.5
    assert plain[0][0][0] == B
    # … seeded with greedy's translation, beam search keeps it.
    ids, log_probs, lengths = run(search.beam_search, GREEDY_PRUNED, max_length=6, beam_width=2,
                                  alpha=0.0)
    np.testing.assert_array_equal(ids, [[A, C, END]])
    np.testing.assert_allclose(log_probs, [log(0.4, 0.34, 1.0)], atol=1e-6)


def test_length_normalization_alpha_decides_between_short_and_long():
    short, _, _ = run(search.beam_search, SHORT_OR_LONG, max_length=5, beam_width=2, alpha=0.0)
    long, _, _ = run(search.beam_search, SHORT_OR_LONG, max_length=5, beam_width=2, alpha=1.0)
    np.testing.assert_array_equal(short, [[END]])
    np.testing.assert_array_equal(long, [[A, END]])
    # The penalty itself: GNMT's ((5 + length) / 6) ** alpha.
    np.testing.assert_allclose(search.length_penalty(tf.constant([1, 7]), 1.0), [1.0, 2.0])


def test_beam_search_without_end_stops_at_the_maximum_length():
    ids, _, lengths = run(search.beam_search, NO_END, max_length=4, beam_width=3)
    np.testing.assert_array_equal(ids, [[A, A, A, A]])
    np.testing.assert_array_equal(lengths, [4])


def test_beam_width_below_one_and_negative_alpha_are_errors():
    with pytest.raises(ValueError, match="beam_width must be between 1"):
        run(search.beam_search, ONE_HOT, max_length=4, beam_width=0)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        run(search.beam_search, ONE_HOT, max_length=4, alpha=-0.5)


def test_beam_helpers_reshape_and_gather():
    tensor = tf.reshape(tf.range(12), [2, 3, 2])  # (batch 2, beam 3, 2)
    flat = search.flatten_beam_dim(tensor)
    assert flat.shape == (6, 2)
    np.testing.assert_array_equal(search.unflatten_beam_dim(flat, 2), tensor)
    np.testing.assert_array_equal(
        search.gather_beams(tensor, tf.constant([[2, 0], [1, 1]])),
        [[[4, 5], [0, 1]], [[8, 9], [8, 9]]],
    )
    np.testing.assert_array_equal(search.expand_to_beams(tf.constant([[1], [2]]), 2),
                                  [[1], [1], [2], [2]])


def test_sampling_one_hot_scores_gives_the_only_possible_tokens():
    for seed in (0, 1, 99):
        ids, log_probs, _ = run(search.sample_search, ONE_HOT, ONE_HOT, max_length=6, seed=seed)
        np.testing.assert_array_equal(ids, [[A, B, C, END]] * 2)
        np.testing.assert_array_equal(log_probs, [0.0, 0.0])


def test_sampling_is_reproducible_by_seed_and_reports_model_log_probs():
    uniform = markov_table({}, {})
    tables = [uniform] * 4
    first = run(search.sample_search, *tables, max_length=8, seed=3, temperature=1.0)
    again = run(search.sample_search, *tables, max_length=8, seed=3, temperature=1.0)
    other = run(search.sample_search, *tables, max_length=8, seed=4, temperature=1.0)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])
    # Every drawn token of a uniform table has log-probability log(1/11).
    np.testing.assert_allclose(first[1], first[2] * np.log(1 / VOCAB_SIZE), rtol=1e-5)


def test_low_temperature_sampling_is_greedy_and_zero_temperature_is_an_error():
    cold = run(search.sample_search, BEAM_WINS, GREEDY_PRUNED, max_length=6, temperature=1e-3)
    greedy = run(search.greedy_search, BEAM_WINS, GREEDY_PRUNED, max_length=6)
    np.testing.assert_array_equal(cold[0], greedy[0])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        run(search.sample_search, BEAM_WINS, max_length=6, temperature=0.0)


def test_searches_accept_an_empty_batch():
    for search_fn in (search.greedy_search, search.beam_search, search.sample_search):
        no_sentences = tf.zeros([0], tf.int32)
        ids, log_probs, lengths = search_fn(table_step(ONE_HOT), no_sentences, 0, max_length=5)
        assert ids.shape == (0, 0) and log_probs.shape == (0,) and lengths.shape == (0,)


# --- Per-sentence length caps --------------------------------------------------------------


def test_decode_length_caps_floor_factor_times_source_plus_offset_within_the_maximum():
    source_ids = tf.constant([[0, 0, 0], [7, 0, 0], [7, 8, 9], [9, 9, 0]], tf.int64)
    np.testing.assert_array_equal(search.source_lengths(source_ids), [0, 1, 3, 2])
    lengths = tf.constant([0, 1, 5, 27, 40])
    np.testing.assert_array_equal(
        search.decode_length_caps(lengths, 64, factor=1.5, offset=3), [3, 4, 10, 43, 63]
    )  # floor: 1.5 -> 1 and 7.5 -> 7
    np.testing.assert_array_equal(
        search.decode_length_caps(lengths, 64, factor=2.0, offset=10), [10, 12, 20, 64, 64]
    )
    np.testing.assert_array_equal(search.decode_length_caps(lengths, 64), [64] * 5)


def test_greedy_search_stops_each_sentence_at_its_own_cap_without_end():
    ids, log_probs, lengths = run(
        search.greedy_search, REPEATS, REPEATS, ONE_HOT, ONE_HOT, REPEATS,
        max_length=8, max_lengths=tf.constant([2, 5, 3, 8, 0]),
    )
    np.testing.assert_array_equal(ids, [
        [A, A, PAD, PAD, PAD],
        [A, A, A, A, A],
        [A, B, C, PAD, PAD],  # capped just before its [END]
        [A, B, C, END, PAD],  # ends before its cap
        [PAD] * 5,  # a cap of 0 (an empty source with no offset): nothing
    ])
    np.testing.assert_array_equal(lengths, [2, 5, 3, 4, 0])
    np.testing.assert_allclose(
        log_probs, [log(0.5, 0.5), log(*[0.5] * 5), 0.0, 0.0, 0.0], atol=1e-6
    )


def test_a_scalar_cap_applies_to_every_sentence_and_never_exceeds_the_maximum():
    _, _, lengths = run(search.greedy_search, NO_END, ONE_HOT, max_length=8, max_lengths=2)
    np.testing.assert_array_equal(lengths, [2, 2])
    ids, _, lengths = run(search.greedy_search, NO_END, max_length=3, max_lengths=10)
    np.testing.assert_array_equal(ids, [[A, A, A]])


def test_sampling_stops_each_sentence_at_its_own_cap():
    ids, _, lengths = run(
        search.sample_search, NO_END, NO_END, NO_END, ONE_HOT,
        max_length=6, seed=5, max_lengths=tf.constant([1, 3, 5, 6]),
    )
    np.testing.assert_array_equal(ids, [
        [A, PAD, PAD, PAD, PAD],
        [A, A, A, PAD, PAD],
        [A, A, A, A, A],
        [A, B, C, END, PAD],
    ])
    np.testing.assert_array_equal(lengths, [1, 3, 5, 4])


@pytest.mark.parametrize("include_greedy", [True, False])
def test_beam_search_stops_each_sentence_at_its_own_cap(include_greedy):
    ids, log_probs, lengths = run(
        search.beam_search, REPEATS, REPEATS, ONE_HOT, ONE_HOT,
        max_length=8, beam_width=3, max_lengths=tf.constant([2, 4, 3, 8]),
        include_greedy=include_greedy,
    )
    np.testing.assert_array_equal(ids, [
        [A, A, PAD, PAD],
        [A, A, A, A],
        [A, B, C, PAD],
        [A, B, C, END],
    ])
    np.testing.assert_array_equal(lengths, [2, 4, 3, 4])
    np.testing.assert_allclose(log_probs, [log(0.5, 0.5), log(*[0.5] * 4), 0.0, 0.0],
                               atol=1e-6)


def test_beam_search_ranks_hypotheses_capped_without_end_with_those_that_ended():
    # Uncapped, length normalization prefers A [END]; with a cap of 1 only one token fits.
    # SURE_AFTER_A scores better the longer it gets (alpha 1): the cap must still stop it.
    tables = [SHORT_OR_LONG, SHORT_OR_LONG, BEAM_WINS, SURE_AFTER_A]
    ids, log_probs, lengths = run(
        search.beam_search, *tables, max_length=5, beam_width=2, alpha=1.0,
        max_lengths=tf.constant([1, 5, 1, 2]), include_greedy=False,
    )
    np.testing.assert_array_equal(ids, [[END, PAD], [A, END], [A, PAD], [A, A]])
    np.testing.assert_array_equal(lengths, [1, 2, 1, 2])
    np.testing.assert_allclose(
        log_probs, [log(0.4), log(0.38, 0.99), log(0.5), log(0.5)], atol=1e-6
    )


def test_searches_accept_an_empty_batch_with_caps():
    for search_fn in (search.greedy_search, search.beam_search, search.sample_search):
        no_sentences = tf.zeros([0], tf.int32)
        result = search_fn(table_step(ONE_HOT), no_sentences, 0, max_length=5,
                           max_lengths=tf.zeros([0], tf.int32))
        assert result.token_ids.shape == (0, 0) and result.lengths.shape == (0,)


# --- Reading a row of logits by blocks ---------------------------------------------------------


def random_rows(rng, trial: int) -> np.ndarray:
    """Rows of a random width: many ties, plain floats, or ties with -inf."""
    rows, width = int(rng.integers(1, 6)), int(rng.integers(1, 700))
    if trial % 3 == 1:
        return rng.normal(size=(rows, width)).astype(np.float32)
    values = rng.integers(0, 4, size=(rows, width)).astype(np.float32)
    if trial % 3 == 2:
        values[values == 0] = -np.inf
    return values


@pytest.mark.parametrize("block", [1, 3, 128])
def test_top_k_by_blocks_is_top_k_exactly_ties_included(block):
    rng = np.random.default_rng(block)
    for trial in range(60):
        values = random_rows(rng, trial)
        k = int(rng.integers(1, min(values.shape[1], 40) + 1))
        expected_values, expected_indices = tf.math.top_k(values, k)
        actual_values, actual_indices = search.top_k_by_blocks(tf.constant(values), k, block)
        np.testing.assert_array_equal(actual_values, expected_values)
        np.testing.assert_array_equal(actual_indices, expected_indices)


# --- The work per step ---------------------------------------------------------------------


def counting(step, calls: list):
    """`step`, recording how many rows each call steps (the searches run eagerly here)."""

    def counted(token_ids, state):
        calls.append(int(tf.shape(token_ids)[0]))
        return step(token_ids, state)

    return counted


def test_a_finished_sentence_leaves_the_batch():
    # BEAM_WINS ends after 2 tokens, ONE_HOT after 4, NO_END runs to the maximum length.
    calls = []
    state = tf.range(3, dtype=tf.int32)
    step = counting(table_step(BEAM_WINS, ONE_HOT, NO_END), calls)
    ids, _, lengths = search.greedy_search(step, state, 3, max_length=7)
    assert calls == [3, 3, 2, 2, 1, 1, 1]
    np.testing.assert_array_equal(lengths, [2, 4, 7])
    np.testing.assert_array_equal(ids[:2], [[A, END, 0, 0, 0, 0, 0], [A, B, C, END, 0, 0, 0]])

    calls.clear()
    search.sample_search(step, state, 3, max_length=7, temperature=1e-3)
    assert calls == [3, 3, 2, 2, 1, 1, 1]


def test_beam_search_steps_only_the_beams_of_sentences_still_searching():
    calls = []
    state = tf.range(2, dtype=tf.int32)
    step = counting(table_step(ONE_HOT, NO_END), calls)
    result = search.beam_search(step, state, 2, max_length=6, beam_width=2, include_greedy=False)
    # ONE_HOT is certain: once it ends, nothing alive can beat it, and its 2 beams leave.
    assert calls == [4, 4, 4, 4, 2, 2]
    np.testing.assert_array_equal(result.lengths, [4, 6])


def test_beam_search_steps_the_greedy_hypothesis_as_one_more_row_per_sentence():
    calls = []
    state = tf.range(2, dtype=tf.int32)
    step = counting(table_step(ONE_HOT, NO_END), calls)
    result = search.beam_search(step, state, 2, max_length=6, beam_width=2)
    # No greedy pass of its own: each call steps a sentence's 2 beams and its greedy row.
    assert calls == [6, 6, 6, 6, 3, 3]
    np.testing.assert_array_equal(result.lengths, [4, 6])


def test_beam_search_keeps_the_greedy_hypothesis_that_its_beams_pruned():
    # GREEDY_PRUNED ends the greedy path after 3 tokens, SURE_AFTER_A's beams run to the cap.
    greedy = run(search.greedy_search, GREEDY_PRUNED, SURE_AFTER_A, max_length=6)
    beam = run(search.beam_search, GREEDY_PRUNED, SURE_AFTER_A, max_length=6, beam_width=2)
    np.testing.assert_array_equal(beam[0][0, :3], greedy[0][0, :3])
    assert beam[1][0] == greedy[1][0]
    assert beam[1][1] >= greedy[1][1]


def test_beam_search_normalizes_only_each_beams_best_logits():
    # Logits shifted by a different constant per row are the same distribution: the search
    # normalizes them, so its choices and scores are those of the log-probabilities.
    table_steps = table_step(GREEDY_PRUNED, BEAM_WINS)

    def shifted(token_ids, state):
        log_probs, state = table_steps(token_ids, state)
        shift = tf.cast(tf.range(tf.shape(log_probs)[0]), tf.float32)[:, None] * 7.0 + 3.0
        return log_probs + shift, state

    state = tf.range(2, dtype=tf.int32)
    for search_fn, kwargs in ((search.beam_search, dict(beam_width=3)),
                              (search.greedy_search, {})):
        expected = search_fn(table_steps, state, 2, max_length=6, **kwargs)
        actual = search_fn(shifted, state, 2, max_length=6, **kwargs)
        np.testing.assert_array_equal(actual.token_ids, expected.token_ids)
        np.testing.assert_allclose(actual.log_probs, expected.log_probs, atol=1e-5)

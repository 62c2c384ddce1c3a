"""The RNN family's rows of `benchmarks/decode.py` (a module it loads, not a script).

Every row decodes the same sample of test sentences (`--sentences`, picked evenly over the
range of source lengths, in test-split order), after one untimed warm-up pass (the compiled
decoders' batched rows: the best of `FAST_REPEATS` timed passes), in one run:

1. classic: the keras-io way, one sentence at a time, `predict` once per token (the baseline);
2. stepwise: `decode.greedy_decode_stepwise`, a Python loop with one model call per token, at
   batch 1 and batch 64;
3. graph greedy at batch 1 and 64, graph beam 4 at batch 64 (`decode.GraphDecoder`), at the
   translator's decoding precision (`--decode-precision`, default the model's
   `decode_precision`: "auto" is bfloat16 matmuls on a CPU with bfloat16 dot products), and
   the same two at batch 64 in float32 when that precision is bfloat16;
4. the exported SavedModel, reloaded, strings in and out, greedy and beam 4 at batch 64;

then the latency of one sentence per call (p50/p95) for greedy and beam 4, through the graph
decoder (ids in and out) and through the SavedModel (strings in and out). Every row also shows
the fraction of a 2048x2048 float32 matmul's GFLOP/s, measured in the same run, that its
decoder reaches: the FLOPs counted are the matmuls of the LSTM steps and the output projection
that it executed (each search's stepped rows are counted, so work on finished sentences would
count too). The float32 graph decoder's
tokens must equal the stepwise decoder's at the same batch size, and the SavedModel's text the
graph decoder's at the same precision (the exit status is 1 otherwise); against the classic
loop, which runs the models through `predict`, and between bfloat16 and float32 matmuls, it
counts the sentences whose tokens differ by rounding. Ratios are against the classic row; the stepwise
batch-1 row shows how much of the ratio is the per-call overhead of `predict` and how much is
batching and the compiled graph.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from typing import Callable

import numpy as np
import tensorflow as tf

from seq2seq_keras import evaluate, export, search
from seq2seq_keras.decode import as_list, build_inference_models, greedy_decode_stepwise
from seq2seq_keras.decode_precision import resolve_decode_precision
from seq2seq_keras.graph_decoder import GraphDecoder
from seq2seq_keras.model import float32_model
from seq2seq_keras.text import END_ID, PAD_ID, START_ID
from seq2seq_keras.tokenizers import make_tokenizer
from seq2seq_keras.translator import BEAM_SIGNATURE, SERVING_SIGNATURE

MATMUL_SIZE = 2048
# The compiled decoders take a fraction of a second per pass: each batched row of theirs is the
# best of this many timed passes, so that a stray pause does not decide it.
FAST_REPEATS = 5


def classic_decode(models, source_ids: np.ndarray, max_length: int) -> np.ndarray:
    """The tutorial decoder: one sentence at a time, one `predict` call per token. With
    attention, the encoder's outputs and the source mask go to every step too, as in
    `decode.greedy_decode_stepwise`."""
    rows = []
    for sentence in source_ids:
        states = as_list(models.encoder.predict(sentence[None, :], verbose=0))
        memory = [states.pop(0), sentence[None, :] != PAD_ID] if models.attention else []
        token, row = START_ID, []
        for _ in range(max_length):
            outputs = models.decoder_step.predict([np.array([[token]]), *memory, *states], verbose=0)
            probabilities, states = outputs[0], list(outputs[1 : 1 + len(states)])
            token = int(np.argmax(probabilities[0, -1]))
            row.append(token)
            if token == END_ID:
                break
        rows.append(row)
    width = max((len(row) for row in rows), default=0)
    return np.array([row + [PAD_ID] * (width - len(row)) for row in rows], np.int64)


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def matmul_gflops(timed) -> float:
    """Achieved GFLOP/s of a MATMUL_SIZE² float32 matmul (2·n³ FLOPs), best of 10."""
    a = tf.random.normal([MATMUL_SIZE, MATMUL_SIZE])
    b = tf.random.normal([MATMUL_SIZE, MATMUL_SIZE])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    seconds, _ = timed(lambda: matmul().numpy(), repeats=10)
    return 2 * MATMUL_SIZE**3 / seconds / 1e9


def trim(ids: np.ndarray) -> list[tuple[int, ...]]:
    """Rows up to and including their first [END], for comparing decoders of different widths."""
    rows = []
    for row in ids:
        ends = np.flatnonzero(row == END_ID)
        rows.append(tuple(row[: ends[0] + 1] if ends.size else row[row != PAD_ID]))
    return rows


def search_tokens(results) -> list[tuple[int, ...]]:
    """Every sentence's tokens (`trim`) from a list of a graph decoder's `SearchResult`s."""
    return [row for result in results for row in trim(result.token_ids.numpy())]


def differing_rows(rows: list, other_rows: list) -> int:
    """How many sentences two decoders translated to different tokens."""
    return sum(row != other for row, other in zip(rows, other_rows))


def pad_rows(rows: list[list[int]]) -> np.ndarray:
    """`(len(rows), longest)` int64 ids, right-padded."""
    width = max(len(row) for row in rows)
    return np.array([row + [PAD_ID] * (width - len(row)) for row in rows], np.int64)


class FlopCounter:
    """The matmul FLOPs a decoder executes: encoder steps and decoder steps, per row stepped.

    Counts the LSTM's and the output projection's multiply-adds (2 FLOPs each); attention,
    the embeddings and the elementwise work are left out, so a ratio is a lower bound.
    """

    def __init__(self, config, decoder: GraphDecoder):
        units, embedding = config.units, config.embedding_dim
        self.lstm_step = 2 * 4 * units * (embedding + units)
        self.decoder_step = self.lstm_step + 2 * config.output_layer_multiply_adds
        self.decoder = decoder

    def encoder(self, ids: np.ndarray) -> int:
        """The encoder steps every position of the padded batch."""
        return ids.shape[0] * ids.shape[1] * self.lstm_step

    def stepwise(self, ids: np.ndarray, tokens: np.ndarray) -> int:
        """Every sentence of the batch is stepped until the longest is done."""
        return self.encoder(ids) + ids.shape[0] * tokens.shape[1] * self.decoder_step

    def graph(self, ids: np.ndarray, beam_width: int = 1) -> int:
        """The rows a search steps, counted by running it over a counting step."""
        stepped = tf.Variable(0, dtype=tf.int64)

        def counting_step(token_ids, state):
            stepped.assign_add(tf.size(token_ids, out_type=tf.int64))
            return self.decoder.step(token_ids, state)

        @tf.function
        def run(source_ids):
            state = self.decoder.encode(source_ids)
            arguments = (counting_step, state, tf.shape(source_ids)[0], self.decoder.max_length)
            caps = self.decoder.max_lengths(source_ids)
            if beam_width == 1:
                return search.greedy_search(*arguments, max_lengths=caps)
            return search.beam_search(*arguments, beam_width, max_lengths=caps)

        run(tf.constant(ids))
        return self.encoder(ids) + int(stepped.numpy()) * self.decoder_step


def latency_ms(call, inputs: list, calls: int) -> np.ndarray:
    """Milliseconds of each of `calls` calls, one input per call (cycling), after a warm-up."""
    call(inputs[0])
    times = []
    for one in (inputs * (1 + calls // len(inputs)))[:calls]:
        started = time.perf_counter()
        call(one)
        times.append((time.perf_counter() - started) * 1000)
    return np.array(times)


@dataclasses.dataclass
class Bench:
    """What the RNN family's rows share: the model, the sample as id batches, the decoders."""

    args: argparse.Namespace
    trained: object  # model_dir.TrainedModel
    sample: object  # decode.Sample
    precision: str  # the translator's decoding precision
    models: object  # decode.build_inference_models: the stepwise decoders' Keras models
    decoder: GraphDecoder  # at `precision`
    float32_decoder: GraphDecoder
    caps: dict  # the length caps' factor and offset
    timed: Callable  # `decode.timed`: the best wall time of repeated calls, and the result
    count: FlopCounter = dataclasses.field(init=False)  # the FLOPs `decoder` executes
    all_ids: list = dataclasses.field(init=False)  # (batch_size, longest) id batches
    one_ids: list = dataclasses.field(init=False)  # (1, length) one per sentence
    beam_width: tf.Tensor = dataclasses.field(default_factory=lambda: tf.constant(4))
    alpha: tf.Tensor = dataclasses.field(
        default_factory=lambda: tf.constant(search.DEFAULT_LENGTH_ALPHA)
    )

    def __post_init__(self):
        self.count = FlopCounter(self.config, self.decoder)
        self.all_ids = [pad_rows(batch) for batch in batches(self.sample.id_rows, self.args.batch_size)]
        self.one_ids = [pad_rows([row]) for row in self.sample.id_rows]

    @property
    def config(self):
        return self.trained.config

    @property
    def num_sentences(self) -> int:
        return len(self.sample.sources)

    def decode_all(self, decode_batch) -> list:
        return [decode_batch(ids) for ids in self.all_ids]

    def beam(self, decoder: GraphDecoder):
        """`decoder`'s beam 4 as a function of an id batch."""
        return lambda ids: decoder.beam(ids, self.beam_width, self.alpha)


def make_bench(args, trained, sample, timed) -> Bench:
    """Every row decodes what the SavedModel decodes: the float32 model, with its length caps,
    its matmuls at the translator's precision (and in float32, the baseline of that)."""
    config = trained.config
    precision = resolve_decode_precision(config.decode_precision)
    decoding_model = float32_model(trained.training_model, config)
    caps = dict(length_factor=config.decode_length_factor, length_offset=config.decode_length_offset)
    decoders = {
        name: GraphDecoder(decoding_model, config.max_decode_length,
                           vocabulary_size=len(trained.target_vocabulary), precision=name, **caps)
        for name in dict.fromkeys([precision, "float32"])
    }
    return Bench(args, trained, sample, precision, build_inference_models(decoding_model),
                 decoders[precision], decoders["float32"], caps, timed)


def description(bench: Bench) -> str:
    config, lengths = bench.config, [len(row) for row in bench.sample.id_rows]
    return (f"model {bench.args.model_dir}: units {config.units}, embedding {config.embedding_dim}, "
            f"vocab {config.source_vocab_size}/{config.target_vocab_size}; {bench.num_sentences} of "
            f"{bench.sample.candidates} test sentences, {min(lengths)}-{max(lengths)} source tokens "
            f"(mean {np.mean(lengths):.1f}); {os.cpu_count()} CPUs; TF {tf.__version__}; "
            f"decoding precision {bench.precision} (matmuls)")


@dataclasses.dataclass
class Measured:
    """The rows timed so far and what the decoders' outputs showed."""

    rows: list = dataclasses.field(default_factory=list)  # (name, batch, sentences, seconds, FLOPs)
    agreement: dict = dataclasses.field(default_factory=dict)  # checks that must hold exactly
    rounding_checks: dict = dataclasses.field(default_factory=dict)  # sentences that differ
    latencies: dict = dataclasses.field(default_factory=dict)  # ms of one sentence per call
    tokens: dict = dataclasses.field(default_factory=dict)  # each decoder's trimmed token rows
    graph_one_seconds: float = 0.0
    greedy: list = dataclasses.field(default_factory=list)  # graph greedy's batched results
    greedy_seconds: float = 0.0
    greedy_flops: int = 0
    beam_flops: int = 0
    graph_texts: list = dataclasses.field(default_factory=list)  # graph greedy's translations
    served_greedy: list = dataclasses.field(default_factory=list)
    served_beam: list = dataclasses.field(default_factory=list)


def time_one_sentence_per_call(bench: Bench, measured: Measured) -> None:
    """Rows 1 and 2 of the list above, one sentence per call: the classic loop and the stepwise
    decoder (and graph greedy, whose row `time_batched` adds)."""
    count, n = bench.count, bench.num_sentences
    one_ids, max_length = bench.one_ids, bench.config.max_decode_length
    seconds, classic = bench.timed(lambda: [classic_decode(bench.models, ids, max_length) for ids in one_ids])
    classic_flops = sum(count.stepwise(ids, out) for ids, out in zip(one_ids, classic))
    measured.rows.append(("classic (predict per token)", 1, n, seconds, classic_flops))
    measured.tokens["classic"] = [row for ids in classic for row in trim(ids)]
    seconds, stepwise_one = bench.timed(
        lambda: [greedy_decode_stepwise(bench.models, ids, max_length, **bench.caps) for ids in one_ids]
    )
    stepwise_one_flops = sum(count.stepwise(ids, out) for ids, out in zip(one_ids, stepwise_one))
    measured.rows.append(("stepwise (model call per token)", 1, n, seconds, stepwise_one_flops))
    measured.graph_one_seconds, _ = bench.timed(lambda: [bench.decoder.greedy(ids) for ids in one_ids])
    float32_one = [bench.float32_decoder.greedy(ids) for ids in one_ids]
    measured.tokens["stepwise batch 1"] = [r for ids in stepwise_one for r in trim(ids)]
    # The same step on the same batches: these must agree exactly.
    measured.agreement["float32 graph batch 1 vs stepwise batch 1"] = (
        search_tokens(float32_one)
        == measured.tokens["stepwise batch 1"]
    )


def time_batched(bench: Bench, measured: Measured) -> None:
    """Rows 2 and 3 of the list above, batched: stepwise and the graph searches; and the graph
    decoder's latency, one sentence per call."""
    count, n = bench.count, bench.num_sentences
    batch, max_length = bench.args.batch_size, bench.config.max_decode_length
    seconds, stepwise = bench.timed(lambda: bench.decode_all(
        lambda ids: greedy_decode_stepwise(bench.models, ids, max_length, **bench.caps)))
    stepwise_flops = sum(count.stepwise(ids, out) for ids, out in zip(bench.all_ids, stepwise))
    measured.rows.append(("stepwise (model call per token)", batch, n, seconds, stepwise_flops))
    measured.greedy_flops = sum(count.graph(ids) for ids in bench.all_ids)
    measured.beam_flops = sum(count.graph(ids, beam_width=4) for ids in bench.all_ids)
    seconds, measured.greedy = bench.timed(lambda: bench.decode_all(bench.decoder.greedy), FAST_REPEATS)
    measured.rows.append(("graph greedy", batch, n, seconds, measured.greedy_flops))
    measured.greedy_seconds = seconds
    measured.rows.append(("graph greedy", 1, n, measured.graph_one_seconds,
                          sum(count.graph(ids) for ids in bench.one_ids)))
    seconds, _ = bench.timed(lambda: bench.decode_all(bench.beam(bench.decoder)), FAST_REPEATS)
    measured.rows.append(("graph beam 4", batch, n, seconds, measured.beam_flops))
    float32_greedy = measured.greedy
    if bench.precision != "float32":
        float32_greedy = time_float32_baseline(bench, measured)
    tokens = measured.tokens
    tokens["greedy"], tokens["float32"] = search_tokens(measured.greedy), search_tokens(float32_greedy)
    stepwise_tokens = [r for ids in stepwise for r in trim(ids)]
    same = tokens["float32"] == stepwise_tokens
    measured.agreement["float32 graph batch 64 vs stepwise batch 64"] = same
    # `predict` runs the same models as a compiled graph, and other batch sizes sum in another
    # order; bfloat16 matmuls round differently: near-ties may fall the other way, so these
    # are informative only.
    measured.rounding_checks = {
        "stepwise batch 1 vs classic (predict)":
            differing_rows(tokens["stepwise batch 1"], tokens["classic"]),
        f"float32 graph batch {batch} vs classic batch 1":
            differing_rows(tokens["float32"], tokens["classic"]),
        f"{bench.precision} graph vs float32 graph, batch {batch}":
            differing_rows(tokens["greedy"], tokens["float32"]),
    }
    calls = bench.args.latency_calls  # one sentence per call: ids in and out
    measured.latencies["graph greedy"] = latency_ms(bench.decoder.greedy, bench.one_ids, calls)
    measured.latencies["graph beam 4"] = latency_ms(bench.beam(bench.decoder), bench.one_ids, calls)


def time_float32_baseline(bench: Bench, measured: Measured) -> list:
    """The baseline of a bfloat16 decoding precision: the same searches in float32. Returns
    float32 greedy's results."""
    decoder, batch, n = bench.float32_decoder, bench.args.batch_size, bench.num_sentences
    count = FlopCounter(bench.config, decoder)
    seconds, float32_greedy = bench.timed(lambda: bench.decode_all(decoder.greedy), FAST_REPEATS)
    measured.rows.append(("float32 graph greedy", batch, n, seconds,
                          sum(count.graph(ids) for ids in bench.all_ids)))
    seconds, _ = bench.timed(lambda: bench.decode_all(bench.beam(decoder)), FAST_REPEATS)
    measured.rows.append(("float32 graph beam 4", batch, n, seconds,
                          sum(count.graph(ids, beam_width=4) for ids in bench.all_ids)))
    return float32_greedy


def time_saved_model(bench: Bench, measured: Measured) -> None:
    """Row 4 of the list above: the exported SavedModel, reloaded, strings in and out, and its
    latency; its text must equal the graph decoder's."""
    batch, n, calls = bench.args.batch_size, bench.num_sentences, bench.args.latency_calls
    with tempfile.TemporaryDirectory() as export_root:
        version_dir = export.export_saved_model(bench.trained, "benchmark", export_root)
        served = tf.saved_model.load(str(version_dir))
        serve = served.signatures[SERVING_SIGNATURE]
        serve_beam = served.signatures[BEAM_SIGNATURE]
        text_batches = [tf.constant(texts) for texts in batches(bench.sample.sources, batch)]
        seconds, measured.served_greedy = bench.timed(
            lambda: [serve(sentences=texts) for texts in text_batches], FAST_REPEATS)
        measured.rows.append(("SavedModel greedy (strings)", batch, n, seconds, measured.greedy_flops))
        seconds, measured.served_beam = bench.timed(
            lambda: [serve_beam(sentences=texts, beam_width=bench.beam_width) for texts in text_batches],
            FAST_REPEATS,
        )
        measured.rows.append(("SavedModel beam 4 (strings)", batch, n, seconds, measured.beam_flops))
        one_texts = [tf.constant([sentence]) for sentence in bench.sample.sources]
        measured.latencies["SavedModel greedy"] = latency_ms(
            lambda one: serve(sentences=one)["translations"].numpy(), one_texts, calls)
        measured.latencies["SavedModel beam 4"] = latency_ms(
            lambda one: serve_beam(sentences=one, beam_width=bench.beam_width)["translations"].numpy(),
            one_texts, calls,
        )
    target_tokenizer = make_tokenizer(bench.config.tokenizer, bench.trained.target_vocabulary)
    measured.graph_texts = translations(
        [target_tokenizer.detokenize(result.token_ids) for result in measured.greedy]
    )
    served_texts = translations([out["translations"] for out in measured.served_greedy])
    measured.agreement["SavedModel vs graph greedy (text)"] = served_texts == measured.graph_texts


def translations(string_batches) -> list[str]:
    """Every sentence of a list of string-tensor batches, decoded."""
    return [text.decode("utf-8") for strings in string_batches for text in strings.numpy()]


def report(bench: Bench, measured: Measured, baseline_gflops: float) -> None:
    """The table, the latencies, the sample's BLEU and the checks."""
    classic_rate = measured.rows[0][2] / measured.rows[0][3]
    print(f"\n{'decoder':<34}{'batch':>6}{'sentences':>10}{'seconds':>9}{'sent/s':>10}"
          f"{'x classic':>11}{'of matmul':>11}")
    for name, batch, count, seconds, flops in measured.rows:
        rate = count / seconds
        print(f"{name:<34}{batch:>6}{count:>10}{seconds:>9.2f}{rate:>10.1f}"
              f"{rate / classic_rate:>11.1f}{flops / seconds / 1e9 / baseline_gflops:>11.2f}")
    print(f"\n{'one sentence per call':<34}{'calls':>6}{'p50 ms':>10}{'p95 ms':>9}")
    for name, times in measured.latencies.items():
        p50, p95 = np.percentile(times, [50, 95])
        print(f"{name:<34}{len(times):>6}{p50:>10.2f}{p95:>9.2f}")
    for name in ("SavedModel greedy", "SavedModel beam 4"):
        p50, p95 = np.percentile(measured.latencies[name], [50, 95])
        print(f"{name}, one sentence per call ({len(measured.latencies[name])} calls): "
              f"p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    decoder_gflops = measured.greedy_flops / measured.greedy_seconds / 1e9
    print(f"greedy decoder at batch {bench.args.batch_size}: {decoder_gflops:.1f} GFLOP/s executed; "
          f"{MATMUL_SIZE}² float32 matmul: {baseline_gflops:.1f} GFLOP/s "
          f"(ratio {decoder_gflops / baseline_gflops:.2f})")
    references = [bench.sample.references[source] for source in bench.sample.sources]
    beam_texts = translations([out["translations"] for out in measured.served_beam])
    print(f"test BLEU: greedy {evaluate.corpus_scores(measured.graph_texts, references).bleu:.2f}, "
          f"beam 4 {evaluate.corpus_scores(beam_texts, references).bleu:.2f}")
    for check, same in measured.agreement.items():
        print(f"same tokens/text, {check}: {'yes' if same else 'NO'}")
    for check, differing in measured.rounding_checks.items():
        print(f"same tokens, {check}: "
              f"{'yes' if not differing else f'{differing} of {bench.num_sentences} differ (rounding)'}")
    greedy_rate = bench.num_sentences / measured.greedy_seconds
    print(f"\nbatched greedy: {greedy_rate / classic_rate:.0f}x the classic loop's sentences/s")


def run(args: argparse.Namespace, trained, sample, timed) -> int:
    """Time the rows above for `trained` (a `TrainedModel`) on `sample` (`decode.Sample`) with
    `timed` (`decode.timed`) and report; 1 if a check that must hold exactly does not."""
    bench = make_bench(args, trained, sample, timed)
    print(description(bench))
    measured = Measured()
    time_one_sentence_per_call(bench, measured)
    time_batched(bench, measured)
    time_saved_model(bench, measured)
    report(bench, measured, matmul_gflops(timed))
    return 0 if all(measured.agreement.values()) else 1

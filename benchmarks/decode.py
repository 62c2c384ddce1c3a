"""Decoding speed on the test split: the classic per-token loop against the compiled searches.

    python benchmarks/decode.py --model-dir runs/eng_spa [--data spa-eng.zip]

A Transformer's model directory gets its own rows (`decode_transformer.py`: the cached step
against the whole prefix re-run at every token, `cache speedup: X.XX`); the rest of this
docstring is the RNN family's.

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
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The project root in place of this folder, whose litert.py would shadow the `litert` module
# TensorFlow imports.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from seq2seq_keras import data as data_lib  # noqa: E402
from seq2seq_keras import evaluate, export, search  # noqa: E402
from seq2seq_keras.config import DECODE_PRECISIONS  # noqa: E402
from seq2seq_keras.decode import (  # noqa: E402
    build_inference_models,
    greedy_decode_stepwise,
)
from seq2seq_keras.decode_precision import resolve_decode_precision  # noqa: E402
from seq2seq_keras.graph_decoder import GraphDecoder  # noqa: E402
from seq2seq_keras.model_dir import load_trained_model  # noqa: E402
from seq2seq_keras.model import float32_model  # noqa: E402
from seq2seq_keras.text import END_ID, PAD_ID, START_ID  # noqa: E402
from seq2seq_keras.tokenizers import make_tokenizer  # noqa: E402
from seq2seq_keras.translator import BEAM_SIGNATURE, SERVING_SIGNATURE  # noqa: E402


def sibling_module(name: str):
    """benchmarks/NAME.py as a module, without this folder on sys.path (see above)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


decode_transformer = sibling_module("decode_transformer")

MATMUL_SIZE = 2048
# The compiled decoders take a fraction of a second per pass: each batched row of theirs is the
# best of this many timed passes, so that a stray pause does not decide it.
FAST_REPEATS = 5


def classic_decode(models, source_ids: np.ndarray, max_length: int) -> np.ndarray:
    """The tutorial decoder: one sentence at a time, one `predict` call per token."""
    rows = []
    for sentence in source_ids:
        state_h, state_c = models.encoder.predict(sentence[None, :], verbose=0)
        token, row = START_ID, []
        for _ in range(max_length):
            probabilities, state_h, state_c = models.decoder_step.predict(
                [np.array([[token]]), state_h, state_c], verbose=0
            )
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


def timed(function, repeats: int = 1) -> tuple[float, object]:
    """The best wall time of `repeats` calls (after one warm-up call), and the last result."""
    result = function()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def matmul_gflops() -> float:
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


def spread_over_lengths(items: list[tuple[str, list[int]]], count: int) -> list:
    """`count` of the `(source, ids)` items, evenly spaced over their lengths, in their order.

    The test split is mostly short sentences; taking the first N would time only those.
    """
    if count >= len(items):
        return items
    by_length = sorted(range(len(items)), key=lambda index: len(items[index][1]))
    chosen = {by_length[round(i * (len(items) - 1) / (count - 1))] for i in range(count)}
    return [item for index, item in enumerate(items) if index in chosen]


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default="runs/eng_spa")
    parser.add_argument("--data", help="pairs file (default: $SEQ2SEQ_DATA or the download)")
    parser.add_argument("--sentences", type=int, default=128,
                        help="test sentences every row decodes, spread over all source lengths")
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--decode-precision", choices=DECODE_PRECISIONS,
                        help="the translator's decoding precision (default: the model's)")
    parser.add_argument("--against", metavar="MODEL_DIR",
                        help="Transformer only: also time this model's graph greedy decoder")
    args = parser.parse_args(argv)

    # 1. Model, test split, ids.
    # The export below decodes at the precision the translator gets.
    trained = load_trained_model(args.model_dir).with_decode_precision(args.decode_precision)
    config = trained.config
    precision = resolve_decode_precision(config.decode_precision)
    pairs = data_lib.read_pairs(
        data_lib.resolve_data_file(args.data), max_pairs=config.max_pairs, reverse=config.reverse
    ).pairs
    references = data_lib.references_by_source(data_lib.split_pairs(pairs).test)
    source_tokenizer = make_tokenizer(config.tokenizer, trained.source_vocabulary)
    target_tokenizer = make_tokenizer(config.tokenizer, trained.target_vocabulary)
    ragged = source_tokenizer.tokenize(tf.constant(list(references)))
    ragged = ragged[:, : config.max_source_length]
    # A source of only symbols has no ids; its translation is "" without decoding.
    candidates = [(source, row) for source, row in zip(references, ragged.to_list()) if row]
    sample = spread_over_lengths(candidates, args.sentences)
    sources, id_rows = [source for source, _ in sample], [row for _, row in sample]
    if config.is_transformer:
        return decode_transformer.run(args, sources, timed)
    all_ids = [pad_rows(batch) for batch in batches(id_rows, args.batch_size)]
    one_ids = [pad_rows([row]) for row in id_rows]
    num_sentences = len(sources)
    max_length = config.max_decode_length
    # Every row decodes what the SavedModel decodes: the float32 model, with its length caps.
    decoding_model = float32_model(trained.training_model, config)
    caps = dict(length_factor=config.decode_length_factor, length_offset=config.decode_length_offset)
    models = build_inference_models(decoding_model)
    decoders = {
        name: GraphDecoder(decoding_model, max_length, vocabulary_size=len(trained.target_vocabulary),
                           precision=name, **caps)
        for name in dict.fromkeys([precision, "float32"])
    }
    decoder, float32_decoder = decoders[precision], decoders["float32"]
    lengths = [len(row) for row in id_rows]
    print(f"model {args.model_dir}: units {config.units}, embedding {config.embedding_dim}, "
          f"vocab {config.source_vocab_size}/{config.target_vocab_size}; {num_sentences} of "
          f"{len(candidates)} test sentences, {min(lengths)}-{max(lengths)} source tokens "
          f"(mean {np.mean(lengths):.1f}); {os.cpu_count()} CPUs; TF {tf.__version__}; "
          f"decoding precision {precision} (matmuls)")

    rows = []  # (name, batch, sentences, seconds, FLOPs executed)
    count = FlopCounter(config, decoder)

    def decode_all(decode_batch):
        return [decode_batch(ids) for ids in all_ids]

    # 2. The classic loop and the stepwise decoder, one sentence per call.
    seconds, classic = timed(lambda: [classic_decode(models, ids, max_length) for ids in one_ids])
    classic_flops = sum(count.stepwise(ids, out) for ids, out in zip(one_ids, classic))
    rows.append(("classic (predict per token)", 1, num_sentences, seconds, classic_flops))
    classic_tokens = [row for ids in classic for row in trim(ids)]
    seconds, stepwise_one = timed(
        lambda: [greedy_decode_stepwise(models, ids, max_length, **caps) for ids in one_ids]
    )
    stepwise_one_flops = sum(count.stepwise(ids, out) for ids, out in zip(one_ids, stepwise_one))
    rows.append(("stepwise (model call per token)", 1, num_sentences, seconds, stepwise_one_flops))
    graph_one_seconds, _ = timed(lambda: [decoder.greedy(ids) for ids in one_ids])
    float32_one = [float32_decoder.greedy(ids) for ids in one_ids]
    stepwise_one_tokens = [r for ids in stepwise_one for r in trim(ids)]
    agreement = {  # the same step on the same batches: these must agree exactly
        "float32 graph batch 1 vs stepwise batch 1":
            [r for res in float32_one for r in trim(res.token_ids.numpy())] == stepwise_one_tokens,
    }

    # 3. Batched stepwise and the graph searches.
    seconds, stepwise = timed(
        lambda: decode_all(lambda ids: greedy_decode_stepwise(models, ids, max_length, **caps))
    )
    stepwise_flops = sum(count.stepwise(ids, out) for ids, out in zip(all_ids, stepwise))
    rows.append(("stepwise (model call per token)", args.batch_size, num_sentences, seconds,
                 stepwise_flops))
    greedy_flops = sum(count.graph(ids) for ids in all_ids)
    beam_flops = sum(count.graph(ids, beam_width=4) for ids in all_ids)
    seconds, greedy = timed(lambda: decode_all(decoder.greedy), FAST_REPEATS)
    rows.append(("graph greedy", args.batch_size, num_sentences, seconds, greedy_flops))
    greedy_seconds, greedy_rate = seconds, num_sentences / seconds
    rows.append(("graph greedy", 1, num_sentences, graph_one_seconds,
                 sum(count.graph(ids) for ids in one_ids)))
    beam_width = tf.constant(4)
    alpha = tf.constant(search.DEFAULT_LENGTH_ALPHA)
    seconds, beam = timed(lambda: decode_all(lambda ids: decoder.beam(ids, beam_width, alpha)),
                          FAST_REPEATS)
    rows.append(("graph beam 4", args.batch_size, num_sentences, seconds, beam_flops))
    float32_greedy = greedy
    if precision != "float32":  # the baseline of the precision: the same searches in float32
        float32_count = FlopCounter(config, float32_decoder)
        seconds, float32_greedy = timed(lambda: decode_all(float32_decoder.greedy), FAST_REPEATS)
        rows.append(("float32 graph greedy", args.batch_size, num_sentences, seconds,
                     sum(float32_count.graph(ids) for ids in all_ids)))
        seconds, _ = timed(
            lambda: decode_all(lambda ids: float32_decoder.beam(ids, beam_width, alpha)),
            FAST_REPEATS,
        )
        rows.append(("float32 graph beam 4", args.batch_size, num_sentences, seconds,
                     sum(float32_count.graph(ids, beam_width=4) for ids in all_ids)))
    greedy_tokens = [r for result in greedy for r in trim(result.token_ids.numpy())]
    float32_tokens = [r for result in float32_greedy for r in trim(result.token_ids.numpy())]
    stepwise_tokens = [r for ids in stepwise for r in trim(ids)]
    agreement["float32 graph batch 64 vs stepwise batch 64"] = float32_tokens == stepwise_tokens
    # `predict` runs the same models as a compiled graph, and other batch sizes sum in another
    # order; bfloat16 matmuls round differently: near-ties may fall the other way, so these
    # are informative only.
    rounding_checks = {
        "stepwise batch 1 vs classic (predict)": differing_rows(stepwise_one_tokens, classic_tokens),
        f"float32 graph batch {args.batch_size} vs classic batch 1":
            differing_rows(float32_tokens, classic_tokens),
        f"{precision} graph vs float32 graph, batch {args.batch_size}":
            differing_rows(greedy_tokens, float32_tokens),
    }
    latencies = {  # one sentence per call: ids in and out
        "graph greedy": latency_ms(decoder.greedy, one_ids, args.latency_calls),
        "graph beam 4": latency_ms(lambda ids: decoder.beam(ids, beam_width, alpha), one_ids,
                                   args.latency_calls),
    }

    # 4. The exported SavedModel, reloaded: strings in, strings out.
    with tempfile.TemporaryDirectory() as export_root:
        version_dir = export.export_saved_model(trained, "benchmark", export_root)
        served = tf.saved_model.load(str(version_dir))
        serve = served.signatures[SERVING_SIGNATURE]
        serve_beam = served.signatures[BEAM_SIGNATURE]
        text_batches = [tf.constant(batch) for batch in batches(sources, args.batch_size)]
        seconds, served_greedy = timed(lambda: [serve(sentences=b) for b in text_batches],
                                       FAST_REPEATS)
        rows.append(("SavedModel greedy (strings)", args.batch_size, num_sentences, seconds,
                     greedy_flops))
        seconds, served_beam = timed(
            lambda: [serve_beam(sentences=b, beam_width=beam_width) for b in text_batches],
            FAST_REPEATS,
        )
        rows.append(("SavedModel beam 4 (strings)", args.batch_size, num_sentences, seconds,
                     beam_flops))
        one_texts = [tf.constant([sentence]) for sentence in sources]
        latencies["SavedModel greedy"] = latency_ms(
            lambda one: serve(sentences=one)["translations"].numpy(), one_texts,
            args.latency_calls,
        )
        latencies["SavedModel beam 4"] = latency_ms(
            lambda one: serve_beam(sentences=one, beam_width=beam_width)["translations"].numpy(),
            one_texts, args.latency_calls,
        )
    graph_texts = [
        text.decode("utf-8")
        for result in greedy
        for text in target_tokenizer.detokenize(result.token_ids).numpy()
    ]
    served_texts = [t.decode("utf-8") for out in served_greedy for t in out["translations"].numpy()]
    agreement["SavedModel vs graph greedy (text)"] = served_texts == graph_texts
    baseline_gflops = matmul_gflops()

    # 5. Report.
    classic_rate = rows[0][2] / rows[0][3]
    print(f"\n{'decoder':<34}{'batch':>6}{'sentences':>10}{'seconds':>9}{'sent/s':>10}"
          f"{'x classic':>11}{'of matmul':>11}")
    for name, batch, count_, seconds, flops in rows:
        rate = count_ / seconds
        print(f"{name:<34}{batch:>6}{count_:>10}{seconds:>9.2f}{rate:>10.1f}"
              f"{rate / classic_rate:>11.1f}{flops / seconds / 1e9 / baseline_gflops:>11.2f}")
    print(f"\n{'one sentence per call':<34}{'calls':>6}{'p50 ms':>10}{'p95 ms':>9}")
    for name, times in latencies.items():
        p50, p95 = np.percentile(times, [50, 95])
        print(f"{name:<34}{len(times):>6}{p50:>10.2f}{p95:>9.2f}")
    for name in ("SavedModel greedy", "SavedModel beam 4"):
        p50, p95 = np.percentile(latencies[name], [50, 95])
        print(f"{name}, one sentence per call ({len(latencies[name])} calls): "
              f"p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    decoder_gflops = greedy_flops / greedy_seconds / 1e9
    print(f"greedy decoder at batch {args.batch_size}: {decoder_gflops:.1f} GFLOP/s executed; "
          f"{MATMUL_SIZE}² float32 matmul: {baseline_gflops:.1f} GFLOP/s "
          f"(ratio {decoder_gflops / baseline_gflops:.2f})")
    greedy_bleu = evaluate.corpus_scores(graph_texts, [references[s] for s in sources]).bleu
    beam_texts = [t.decode("utf-8") for out in served_beam for t in out["translations"].numpy()]
    beam_bleu = evaluate.corpus_scores(beam_texts, [references[s] for s in sources]).bleu
    print(f"test BLEU: greedy {greedy_bleu:.2f}, beam 4 {beam_bleu:.2f}")
    for check, same in agreement.items():
        print(f"same tokens/text, {check}: {'yes' if same else 'NO'}")
    for check, differing in rounding_checks.items():
        print(f"same tokens, {check}: "
              f"{'yes' if not differing else f'{differing} of {num_sentences} differ (rounding)'}")
    print(f"\nbatched greedy: {greedy_rate / classic_rate:.0f}x the classic loop's sentences/s")
    return 0 if all(agreement.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

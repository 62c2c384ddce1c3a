"""Decoding precision: a model decoded as trained, as a float32 copy, and with bfloat16 matmuls.

    python benchmarks/precision.py --model-dir runs/eng_spa [--data spa-eng.zip]

Training in mixed bfloat16 pays on a CPU with bfloat16 dot products; decoding is another
workload (small matrices, many small steps, batch 1 for a single request). This decodes the
test sources (the first `--sentences`, or all) greedily with the graph decoder three ways: over
the trained model at its training precision (the baseline: mixed precision casts the float32
weights to bfloat16 at every step), over `model.float32_model`'s copy, and over that copy with
its matmul weights stored once in bfloat16 (`decode_precision.Bfloat16Matmuls`). For each:
sentences per second at batch 64, one-sentence latency (p50, p95), test BLEU of the greedy
translations, and how many sentences get the float32 copy's tokens. The translator decodes
with the float32 copy, its matmuls at `config.decode_precision` (docs/serving.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The project root in place of this folder, whose litert.py would shadow the `litert` module
# TensorFlow imports.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from seq2seq_keras import compare, evaluate  # noqa: E402
from seq2seq_keras import data as data_lib  # noqa: E402
from seq2seq_keras.graph_decoder import GraphDecoder  # noqa: E402
from seq2seq_keras.model import float32_model  # noqa: E402
from seq2seq_keras.model_dir import load_trained_model  # noqa: E402
from seq2seq_keras.tokenizers import make_tokenizer  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default="runs/eng_spa")
    parser.add_argument("--data", help="pairs file (default: $SEQ2SEQ_DATA or the download)")
    parser.add_argument("--sentences", type=int, default=0,
                        help="test sources decoded, the first N (default: 0, all of them)")
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    trained = load_trained_model(args.model_dir)
    config = trained.config
    references = compare.held_out_references(
        config, data_lib.resolve_data_file(args.data), ("test",)
    )
    sources = list(references)[: args.sentences or None]
    tokenizer = make_tokenizer(config.tokenizer, trained.source_vocabulary)
    target_tokenizer = make_tokenizer(config.tokenizer, trained.target_vocabulary)
    ids = tokenizer.tokenize(tf.constant(sources))[:, : config.max_source_length]
    batches = [ids[i : i + args.batch_size].to_tensor() for i in range(0, len(sources), args.batch_size)]
    singles = [ids[i : i + 1].to_tensor() for i in range(min(args.latency_calls, len(sources)))]
    copy = float32_model(trained.training_model, config)
    ways = {  # name: (model, GraphDecoder precision)
        f"as trained ({config.precision})": (trained.training_model, "float32"),
        "float32 copy": (copy, "float32"),
        "float32 copy, bfloat16 matmuls": (copy, "bfloat16"),
    }
    print(f"model {args.model_dir}: {config.tokenizer}, units {config.units}; "
          f"{len(sources)} test sources; {os.cpu_count()} CPUs; TF {tf.__version__}")
    print(f"\n{'decoding':<32}{'sent/s (batch ' + str(args.batch_size) + ')':>22}"
          f"{'p50 ms':>9}{'p95 ms':>9}{'x baseline (sent/s, p50)':>27}{'test BLEU':>11}")
    tokens, baseline = {}, None
    for name, (model, precision) in ways.items():
        decoder = GraphDecoder(model, config.max_decode_length, len(trained.target_vocabulary),
                               config.decode_length_factor, config.decode_length_offset,
                               precision=precision)
        decoder.greedy(batches[0]), decoder.greedy(singles[0])  # warm-up: tracing
        started = time.perf_counter()
        results = [decoder.greedy(batch) for batch in batches]
        rate = len(sources) / (time.perf_counter() - started)
        latencies = []
        for single in singles:
            started = time.perf_counter()
            decoder.greedy(single).token_ids.numpy()
            latencies.append(1000 * (time.perf_counter() - started))
        p50, p95 = np.percentile(latencies, [50, 95])
        baseline = baseline or (rate, p50)
        tokens[name] = [
            [t for t in row if t] for result in results for row in result.token_ids.numpy().tolist()
        ]
        texts = [text.decode("utf-8") for result in results
                 for text in target_tokenizer.detokenize(result.token_ids).numpy()]
        bleu = evaluate.corpus_scores(texts, [references[s] for s in sources]).bleu
        print(f"{name:<32}{rate:>22.0f}{p50:>9.2f}{p95:>9.2f}"
              f"{rate / baseline[0]:>14.2f}, {p50 / baseline[1]:.2f}{bleu:>11.2f}")
    print()
    reference = tokens["float32 copy"]
    for name, rows in tokens.items():
        if name != "float32 copy":
            same = sum(a == b for a, b in zip(rows, reference))
            print(f"same tokens as the float32 copy, {name}: {same} of {len(rows)} sentences "
                  f"({same / len(rows):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

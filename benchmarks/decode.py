"""Decoding speed on the test split: the classic per-token loop against the compiled searches.

    python benchmarks/decode.py --model-dir runs/eng_spa [--data spa-eng.zip]

Every row decodes the same sample of test sentences (`--sentences`, picked evenly over the
range of source lengths, in test-split order), in one run. The rows depend on the model's
family: the RNN family's (`decode_rnn.py`) set the classic per-token loop against the stepwise
and compiled searches and the SavedModel, and check that they agree; a Transformer's
(`decode_transformer.py`) set its cached step against the whole prefix re-run at every token
and print `cache speedup: X.XX`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The project root in place of this folder, whose litert.py would shadow the `litert` module
# TensorFlow imports.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import tensorflow as tf  # noqa: E402

from seq2seq_keras import data as data_lib  # noqa: E402
from seq2seq_keras.config_defaults import DECODE_PRECISIONS  # noqa: E402
from seq2seq_keras.model_dir import load_trained_model  # noqa: E402
from seq2seq_keras.tokenizers import make_tokenizer  # noqa: E402


def sibling_module(name: str):
    """benchmarks/NAME.py as a module, without this folder on sys.path (see above)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as `import` would: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


decode_rnn = sibling_module("decode_rnn")
decode_transformer = sibling_module("decode_transformer")


def timed(function, repeats: int = 1) -> tuple[float, object]:
    """The best wall time of `repeats` calls (after one warm-up call), and the last result."""
    result = function()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def spread_over_lengths(items: list[tuple[str, list[int]]], count: int) -> list:
    """`count` of the `(source, ids)` items, evenly spaced over their lengths, in their order.

    The test split is mostly short sentences; taking the first N would time only those.
    """
    if count >= len(items):
        return items
    by_length = sorted(range(len(items)), key=lambda index: len(items[index][1]))
    chosen = {by_length[round(i * (len(items) - 1) / (count - 1))] for i in range(count)}
    return [item for index, item in enumerate(items) if index in chosen]


def parse_args(argv=None) -> argparse.Namespace:
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
    return parser.parse_args(argv)


@dataclasses.dataclass
class Sample:
    """The test sentences every row decodes, their ids, and the test split's references."""

    sources: list[str]
    id_rows: list[list[int]]
    references: dict[str, list[str]]
    candidates: int  # test sources with at least one id, the sample's pool


def test_sample(trained, data: str | None, sentences: int) -> Sample:
    """`sentences` test sources spread over all source lengths (`spread_over_lengths`)."""
    config = trained.config
    pairs = data_lib.read_pairs(
        data_lib.resolve_data_file(data), max_pairs=config.max_pairs, reverse=config.reverse
    ).pairs
    references = data_lib.references_by_source(data_lib.split_pairs(pairs).test)
    source_tokenizer = make_tokenizer(config.tokenizer, trained.source_vocabulary)
    ragged = source_tokenizer.tokenize(tf.constant(list(references)))
    ragged = ragged[:, : config.max_source_length]
    # A source of only symbols has no ids; its translation is "" without decoding.
    candidates = [(source, row) for source, row in zip(references, ragged.to_list()) if row]
    sample = spread_over_lengths(candidates, sentences)
    return Sample([source for source, _ in sample], [row for _, row in sample], references,
                  len(candidates))


def main(argv=None) -> int:
    args = parse_args(argv)
    # The export decodes at the precision the translator gets.
    trained = load_trained_model(args.model_dir).with_decode_precision(args.decode_precision)
    sample = test_sample(trained, args.data, args.sentences)
    if trained.config.is_transformer:
        return decode_transformer.run(args, sample.sources, timed)
    return decode_rnn.run(args, trained, sample, timed)


if __name__ == "__main__":
    sys.exit(main())

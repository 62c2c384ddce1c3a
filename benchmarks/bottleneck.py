"""The bottleneck study: the classic encoder–decoder against attention, same time budget.

    python benchmarks/bottleneck.py [--data PATH] [--minutes 30] [--attention luong]
                                    [--tokenizer wordpiece|word]
                                    [--out runs/bottleneck] [--retrain]

1. Trains two models with `python -m seq2seq_keras train` and the same `--max-minutes`: the
   classic default (`OUT/classic`) and the same model with attention (`OUT/attention`). A model
   directory that already exists is reused (`--retrain` trains it again), so the scoring can be
   re-run without hours of training.
2. Scores both on the fixed test split (greedy and beam 4, multi-reference sacrebleu BLEU), by
   source length on the test split, and on sources of 12+ words over validation and test
   pooled (the test split alone has few long sentences).
3. Prints the tables, the classic model as the baseline (differences and ratios), and writes
   the figures to `OUT/figures/`: BLEU against length, training curves, attention maps.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The project root in place of this folder, whose litert.py would shadow the `litert` module
# TensorFlow imports.
sys.path[0] = str(PROJECT_ROOT)

from seq2seq_keras import compare, evaluate, plots  # noqa: E402
from seq2seq_keras import data as data_lib  # noqa: E402
from seq2seq_keras.cli import SAMPLE_SENTENCES  # noqa: E402
from seq2seq_keras.config import Seq2SeqConfig  # noqa: E402
from seq2seq_keras.config_defaults import TOKENIZERS  # noqa: E402
from seq2seq_keras.model_dir import HISTORY_FILENAME, MODEL_FILENAME  # noqa: E402

BEAM_WIDTH = 4
# Longer sentences than the samples, where attention should matter most.
ATTENTION_SENTENCES = (
    *SAMPLE_SENTENCES,
    "I think that we should leave before it starts to rain.",
    "My brother bought a new car last week, but he still takes the bus to work.",
)


def train_if_needed(name: str, flags: list[str], args) -> Path:
    """Train `OUT/name` with the CLI unless it exists; return the model directory."""
    model_dir = Path(args.out) / name
    if (model_dir / MODEL_FILENAME).is_file() and not args.retrain:
        print(f"{name}: reusing {model_dir} (--retrain trains it again)", flush=True)
        return model_dir
    command = [
        sys.executable, "-m", "seq2seq_keras", "train", "--model-dir", str(model_dir),
        "--max-minutes", str(args.minutes), "--verbose", "2", "--tokenizer", args.tokenizer,
        *flags,
    ]
    if args.data:
        command += ["--data", args.data]
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True, cwd=PROJECT_ROOT)
    print(f"{name}: trained in {(time.monotonic() - started) / 60:.1f} min", flush=True)
    return model_dir


def scores_on(translations: dict, references: dict) -> evaluate.Scores:
    """Corpus scores of the `translations` (source → text) of the sources in `references`."""
    return evaluate.corpus_scores([translations[source] for source in references],
                                  list(references.values()))


def buckets_on(translations: dict, references: dict) -> list[evaluate.LengthBucket]:
    """BLEU by source length of the `translations` of the sources in `references`."""
    return evaluate.bleu_by_length(list(references),
                                   [translations[source] for source in references],
                                   list(references.values()))


def row(label: str, values: list[float], fmt: str = "{:.2f}") -> str:
    """A markdown table row: each model's value, then attention against the classic baseline."""
    cells = [fmt.format(value) for value in values]
    difference = values[-1] - values[0]
    ratio = f" ({values[-1] / values[0]:.2f}×)" if values[0] else ""
    return f"| {label} | " + " | ".join(cells) + f" | {difference:+.2f}{ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="the pairs file (default: $SEQ2SEQ_DATA or the download)")
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per model")
    parser.add_argument("--attention", default="luong", choices=("luong", "bahdanau"))
    parser.add_argument("--out", default="runs/bottleneck", help="model directories and figures")
    parser.add_argument("--tokenizer", default=Seq2SeqConfig().tokenizer, choices=TOKENIZERS,
                        help="the tokenizer of both models (default: %(default)s)")
    parser.add_argument("--retrain", action="store_true", help="train even if a model exists")
    args = parser.parse_args()

    model_dirs = [
        train_if_needed("classic", [], args),
        train_if_needed("attention", ["--attention", args.attention], args),
    ]
    data_file = data_lib.resolve_data_file(args.data)
    models = compare.load_models(model_dirs)
    labels = [model.label for model in models]

    # 1. Whole test split, greedy and beam.
    lines = [f"| | {' | '.join(labels)} | attention − classic |", "|---|" + "---:|" * 3]
    epochs = [len(plots.read_history(d / HISTORY_FILENAME)["loss"]) for d in model_dirs]
    lines.append(row("epochs trained", epochs, "{:.0f}"))
    test_greedy, test_beam, long_pooled = [], [], []
    test_buckets, pooled_buckets = {}, {}
    for model in models:
        config = model.trained.config
        test = compare.held_out_references(config, data_file, ("test",))
        pooled = compare.held_out_references(config, data_file, ("validation", "test"))
        long_references = compare.long_sources(pooled)
        translator = model.translator()
        # Every held-out source is translated once; the test and long-source scores reuse it.
        greedy = dict(zip(pooled, translator.translate(list(pooled))))
        scores = scores_on(greedy, test)
        test_greedy.append(scores.bleu)
        long_pooled.append(scores_on(greedy, long_references).bleu)
        test_buckets[model.label] = buckets_on(greedy, test)
        pooled_buckets[model.label] = buckets_on(greedy, pooled)
        beam = functools.partial(translator.translate, beam_width=BEAM_WIDTH)
        test_beam.append(evaluate.evaluate_translator(beam, test)[0].bleu)
    lines.append(row("test BLEU, greedy", test_greedy))
    lines.append(row(f"test BLEU, beam {BEAM_WIDTH}", test_beam))
    lines.append(row(f"BLEU on {len(long_references)} sources of {compare.LONG_SOURCE_WORDS}+ "
                     "words (validation + test)", long_pooled))
    print("\n" + "\n".join(lines))
    print(f"signature: {scores.bleu_signature}")

    # 2. By source length.
    for title, buckets_by_label in (("test", test_buckets), ("validation + test", pooled_buckets)):
        print(f"\nGreedy BLEU by source length ({title}):\n")
        print(f"| source words | sentences | {' | '.join(labels)} | attention − classic |")
        print("|---|---:|" + "---:|" * 3)
        for buckets in zip(*buckets_by_label.values()):
            span = f"{buckets[0].min_words}–{buckets[0].max_words}"
            print(row(f"{span} | {buckets[0].num_sentences}", [bucket.bleu for bucket in buckets]))

    # 3. Figures.
    figures = Path(args.out) / "figures"
    written = compare.draw_figures(models, figures, test_buckets, ATTENTION_SENTENCES,
                                   bleu_title="Greedy BLEU by source length (test)")
    pooled_figure = plots.plot_bleu_against_length(
        pooled_buckets, figures / "bleu_by_length_validation_test.png",
        title="Greedy BLEU by source length (validation + test)")
    print("\nfigures:", *written, pooled_figure, sep="\n  ")


if __name__ == "__main__":
    main()

"""Comparing trained models: BLEU against source length, training curves, attention maps.

What `python -m seq2seq_keras plot` and `benchmarks/bottleneck.py` draw. The question behind
it is the reference text's: a classic encoder squeezes every source into one fixed-size context
vector, so its BLEU falls as sentences grow; attention lets every decoder step look back at
the whole source. Here both are scored on the same held-out sentences and drawn on one figure.

    model dirs → held-out references → translations → BLEU by length ─┐
               → history.csv ─────────────────────────────────────────┼→ PNG files
               → attention weights of a few sentences ────────────────┘
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from seq2seq_keras import data as data_lib
from seq2seq_keras import evaluate, plots
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.translator import Translator, TranslatorModule
from seq2seq_keras.model_dir import HISTORY_FILENAME, TrainedModel, load_trained_model

# The held-out splits a model can be scored on (the training split is never scored).
HELD_OUT_SPLITS = ("validation", "test")
# Sources at least this long (in words) are "long": the test split has few of them, so the
# study also pools validation and test for them.
LONG_SOURCE_WORDS = 12
# File names written by `draw_figures` in the output directory.
BLEU_FIGURE = "bleu_by_length.png"
CURVES_FIGURE = "training_curves.png"


@dataclasses.dataclass
class LoadedModel:
    """A trained model with the label it gets in tables and legends."""

    label: str
    model_dir: Path
    trained: TrainedModel

    def translator(self) -> Translator:
        return Translator.from_trained(self.trained)


def model_labels(model_dirs: Sequence[str | Path]) -> list[str]:
    """Short labels for model directories: their names, with the parent added where two clash."""
    paths = [Path(directory) for directory in model_dirs]
    names = [path.name for path in paths]
    return [
        f"{path.parent.name}/{path.name}" if names.count(path.name) > 1 else path.name
        for path in paths
    ]


def load_models(model_dirs: Sequence[str | Path]) -> list[LoadedModel]:
    """Load every model directory (raises `ModelDirError` naming the first that is not one)."""
    return [
        LoadedModel(label, Path(directory), load_trained_model(directory))
        for label, directory in zip(model_labels(model_dirs), model_dirs)
    ]


def held_out_references(
    config: Seq2SeqConfig, data_file: str | Path, splits: Sequence[str] = ("test",)
) -> dict[str, list[str]]:
    """Every reference of each source in the named held-out splits, pooled, for this model.

    The pairs are read the way the model was trained on them (its `max_pairs` and direction),
    so the split is the model's own. Validation and test never share a source, so pooling
    them keeps one entry per source.
    """
    unknown = set(splits) - set(HELD_OUT_SPLITS)
    if unknown:
        raise ValueError(f"splits must be among {HELD_OUT_SPLITS}, got {sorted(unknown)}.")
    pairs = data_lib.read_pairs(data_file, max_pairs=config.max_pairs, reverse=config.reverse).pairs
    split = data_lib.split_pairs(pairs)
    return data_lib.references_by_source([pair for name in splits for pair in getattr(split, name)])


def long_sources(references: dict[str, list[str]], min_words: int = LONG_SOURCE_WORDS) -> dict:
    """The entries of `references` whose source has at least `min_words` words."""
    return {
        source: refs for source, refs in references.items()
        if evaluate.source_length(source) >= min_words
    }


@dataclasses.dataclass
class Alignment:
    """Where the decoder looked while translating one sentence."""

    source_tokens: list[str]
    target_tokens: list[str]  # the translation's tokens, [END] last when it was produced
    weights: np.ndarray  # (len(target_tokens), len(source_tokens)); each row sums to 1


def attention_alignments(trained: TrainedModel, sentences: Sequence[str]) -> list[Alignment]:
    """The greedy translation of each sentence with its attention weights, token by token.

    Uses the translator's attention entry point (the export's `attention` signature), so the
    figure shows exactly what a served model returns. A sentence with no source token gets an
    empty alignment.

    Raises:
      ValueError: the model has no attention (`--attention none`).
    """
    if not trained.config.has_attention:
        raise ValueError(
            "this model has no attention to draw (it was trained with attention none)."
        )
    module = TranslatorModule.from_trained(trained)
    outputs = module.translate_with_attention(tf.constant(list(sentences)))
    alignments = []
    for weights, source_row, target_row in zip(
        outputs["attention_weights"].numpy(),
        outputs["source_tokens"].numpy(),
        outputs["target_tokens"].numpy(),
    ):
        source_tokens = [token.decode("utf-8") for token in source_row if token]
        target_tokens = [token.decode("utf-8") for token in target_row if token]
        alignments.append(Alignment(
            source_tokens, target_tokens, weights[: len(target_tokens), : len(source_tokens)]
        ))
    return alignments


def bleu_by_length_of_models(
    models: Sequence[LoadedModel], data_file: str | Path, splits: Sequence[str] = ("test",)
) -> dict[str, list[evaluate.LengthBucket]]:
    """Greedy BLEU per source-length bucket of every model, over the given held-out splits."""
    buckets_by_label = {}
    for model in models:
        references = held_out_references(model.trained.config, data_file, splits)
        _, buckets, _ = evaluate.evaluate_translator(model.translator().translate, references)
        buckets_by_label[model.label] = buckets
    return buckets_by_label


def draw_figures(
    models: Sequence[LoadedModel],
    out_dir: str | Path,
    buckets_by_label: dict[str, list[evaluate.LengthBucket]],
    sentences: Sequence[str] = (),
    bleu_title: str = "Greedy BLEU by source length",
) -> list[Path]:
    """Draw the comparison figures of `models` into `out_dir`; return the files written.

    1. `bleu_by_length.png`: BLEU against source length, one line a model
       (`buckets_by_label`, e.g. from `bleu_by_length_of_models`).
    2. `training_curves.png`: every model's loss and accuracy per epoch, on one figure.
    3. `attention_<label>_<n>.png`: for each attention model, one heatmap a sentence.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [plots.plot_bleu_against_length(buckets_by_label, out_dir / BLEU_FIGURE, bleu_title)]

    histories = {
        model.label: plots.read_history(model.model_dir / HISTORY_FILENAME)
        for model in models if (model.model_dir / HISTORY_FILENAME).is_file()
    }
    if histories:
        written.append(plots.plot_runs(histories, out_dir / CURVES_FIGURE))

    for model in models:
        if not model.trained.config.has_attention or not sentences:
            continue
        for number, (sentence, alignment) in enumerate(
            zip(sentences, attention_alignments(model.trained, sentences)), start=1
        ):
            if not alignment.source_tokens:
                continue
            path = out_dir / f"attention_{model.label.replace('/', '_')}_{number}.png"
            written.append(plots.plot_attention(
                alignment.weights, alignment.source_tokens, alignment.target_tokens, path,
                title=f"{model.label}: {sentence}",
            ))
    return written

"""Figures a person would rather look at than read: training curves (and more to come)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, not windows: works on servers, in CI and in notebooks alike.
import matplotlib.pyplot as plt  # noqa: E402

# (history column, panel title) pairs drawn by `plot_training_curves`.
CURVE_PANELS = (("loss", "Masked cross-entropy"), ("masked_accuracy", "Masked token accuracy"))


def read_history(path: str | Path) -> dict[str, list[float]]:
    """Columns of a Keras `CSVLogger` file as lists of floats, keyed by column name."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = rows[0].keys() if rows else []
    return {column: [float(row[column]) for row in rows] for column in columns}


def plot_training_curves(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Draw train and validation loss and accuracy per epoch into a PNG and return its path."""
    figure, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(10, 4))
    for axis, (metric, panel_title) in zip(axes, CURVE_PANELS):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                epochs = range(1, len(values) + 1)
                axis.plot(epochs, values, marker="o", label=label)
        axis.set_title(panel_title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)



def top_tokens(probabilities, vocabulary: list[str], top_k: int = 10) -> list[tuple[str, float]]:
    """The `top_k` most probable tokens of one decoder step, as `(token, probability)` pairs.

    Ties keep vocabulary order; the padding token "" is labelled "(padding)" so it stays visible.

    Args:
      probabilities: `(target_vocab_size,)` probabilities of one step (any array-like).
      vocabulary: the target vocabulary, so that ids can be labelled with their tokens.
      top_k: how many tokens to return, most probable first.
    """
    values = [float(value) for value in probabilities]
    if len(values) != len(vocabulary):
        raise ValueError(
            f"{len(values)} probabilities but {len(vocabulary)} vocabulary tokens: pass the "
            "probabilities of a single step, shaped (target_vocab_size,)."
        )
    ranked = sorted(range(len(values)), key=lambda token_id: -values[token_id])[:top_k]
    return [(str(vocabulary[token_id]) or "(padding)", values[token_id]) for token_id in ranked]


def plot_next_token_probabilities(
    probabilities, vocabulary: list[str], path: str | Path, top_k: int = 10, title: str = ""
) -> Path:
    """Draw the `top_k` most probable next tokens of one decoder step as horizontal bars.

    What the decoder's softmax says at one step: after training, the first step of "Thank you."
    ranks "gracias" first; before training the probability is spread almost evenly.

    Args:
      probabilities, vocabulary, top_k: as for `top_tokens`.
      path: the PNG to write.
    Returns:
      `path`, as a `Path`.
    """
    ranked = top_tokens(probabilities, vocabulary, top_k)
    figure, axis = plt.subplots(figsize=(6, 0.35 * len(ranked) + 1.2))
    axis.barh(range(len(ranked)), [probability for _, probability in ranked])
    axis.set_yticks(range(len(ranked)), [token for token, _ in ranked])
    axis.invert_yaxis()  # most probable on top
    axis.set_xlim(0, 1)
    axis.set_xlabel("probability")
    axis.grid(axis="x", alpha=0.3)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def plot_bleu_by_length(buckets_by_label: dict, path: str | Path, title: str = "") -> Path:
    """Draw BLEU per source-length bucket, one group of bars per bucket and one bar per label.

    Args:
      buckets_by_label: e.g. `{"greedy": buckets, "beam 4": beam_buckets}`, each a list of
        `evaluate.LengthBucket` from `evaluate.bleu_by_length` over the same sources.
      path: the PNG to write.
    Returns:
      `path`, as a `Path`. The first series' bars are labelled with their sentence counts.
    """
    series = list(buckets_by_label.items())
    spans = [f"{bucket.min_words}-{bucket.max_words}" for bucket in series[0][1]]
    width = 0.8 / len(series)
    figure, axis = plt.subplots(figsize=(8, 4))
    for index, (label, buckets) in enumerate(series):
        positions = [slot + (index - (len(series) - 1) / 2) * width for slot in range(len(spans))]
        bars = axis.bar(positions, [bucket.bleu for bucket in buckets], width, label=label)
        if index == 0:
            counts = [f"n={bucket.num_sentences}" for bucket in buckets]
            axis.bar_label(bars, counts, fontsize=7, padding=2)
    axis.set_xticks(range(len(spans)), spans)
    axis.set_xlabel("source length (words)")
    axis.set_ylabel("BLEU")
    axis.grid(axis="y", alpha=0.3)
    axis.legend()
    if title:
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)

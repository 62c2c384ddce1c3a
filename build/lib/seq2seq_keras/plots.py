"""Figures a person would rather look at than read.

Training curves (one run, or several on one figure), the decoder's next-token probabilities,
BLEU against source length (the bottleneck of the fixed-size context vector, measured) and
attention heatmaps. Every function writes one PNG and returns its path; none opens a window.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, not windows: works on servers, in CI and in notebooks alike.
import matplotlib.pyplot as plt  # noqa: E402

# (history column, panel title) pairs drawn by `plot_training_curves`.
CURVE_PANELS = (("loss", "Masked cross-entropy"), ("masked_accuracy", "Masked token accuracy"))
# Resolution of every PNG: sharp in a README and a notebook, a few tens of kB a figure.
FIGURE_DPI = 100


def save_figure(figure, path: str | Path) -> Path:
    """Lay out, write as PNG and close `figure` (closed figures free their memory); return path."""
    figure.tight_layout()
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)
    return Path(path)


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
    return save_figure(figure, path)


def plot_runs(histories_by_label: dict[str, dict[str, list[float]]], path: str | Path) -> Path:
    """Draw the training curves of several runs on one figure: one colour a run.

    Solid lines are validation, dashed lines training, so runs are compared where it matters
    (held-out loss) while overfitting stays visible as the gap between a run's two lines.

    Args:
      histories_by_label: e.g. `{"classic": read_history(a), "luong": read_history(b)}`.
      path: the PNG to write.
    """
    figure, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(11, 4))
    for axis, (metric, panel_title) in zip(axes, CURVE_PANELS):
        for index, (label, history) in enumerate(histories_by_label.items()):
            colour = f"C{index}"
            for prefix, style, suffix in (("val_", "-", "validation"), ("", "--", "train")):
                values = history.get(prefix + metric)
                if values:
                    epochs = range(1, len(values) + 1)
                    axis.plot(epochs, values, style, color=colour, marker="o", markersize=3,
                              label=f"{label} {suffix}")
        axis.set_title(panel_title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return save_figure(figure, path)


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
    return save_figure(figure, path)


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
    return save_figure(figure, path)


def plot_bleu_against_length(buckets_by_label: dict, path: str | Path, title: str = "") -> Path:
    """Draw BLEU against source length, one line a model: the bottleneck, measured.

    The reference text's figure of BLEU decaying with sentence length, from real scores. Each
    point is a bucket's corpus BLEU at the bucket's middle length; its sentence count is written
    beside the first model's points, since a bucket of six sentences says little.

    Args:
      buckets_by_label: e.g. `{"classic": buckets, "attention": buckets}`, each a list of
        `evaluate.LengthBucket`; the models may have different buckets.
      path: the PNG to write.
    """
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for index, (label, buckets) in enumerate(buckets_by_label.items()):
        middles = [(bucket.min_words + bucket.max_words) / 2 for bucket in buckets]
        axis.plot(middles, [bucket.bleu for bucket in buckets], marker="o", label=label)
        if index == 0:
            for middle, bucket in zip(middles, buckets):
                axis.annotate(f"n={bucket.num_sentences}", (middle, bucket.bleu), fontsize=7,
                              textcoords="offset points", xytext=(0, 6), ha="center")
    axis.set_xlabel("source length (words, bucket middle)")
    axis.set_ylabel("BLEU")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend()
    if title:
        axis.set_title(title)
    return save_figure(figure, path)


def plot_attention(
    weights, source_tokens: list[str], target_tokens: list[str], path: str | Path, title: str = ""
) -> Path:
    """Draw one sentence's attention weights as a heatmap: target tokens down, source across.

    Row `t` is where the decoder looked while writing target token `t`; a good model shows a
    roughly diagonal band that bends where the two languages order words differently.

    Args:
      weights: `(len(target_tokens), len(source_tokens))` weights (any array-like), rows sum to 1.
      source_tokens, target_tokens: the labels of the columns and the rows.
      path: the PNG to write.
    """
    rows = [[float(value) for value in row[: len(source_tokens)]]
            for row in list(weights)[: len(target_tokens)]]
    figure, axis = plt.subplots(
        figsize=(1.0 + 0.45 * max(len(source_tokens), 4), 1.0 + 0.4 * max(len(target_tokens), 4))
    )
    image = axis.imshow(rows, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axis.set_xticks(range(len(source_tokens)), source_tokens, rotation=60, ha="right")
    axis.set_yticks(range(len(target_tokens)), target_tokens)
    axis.set_xlabel("source")
    axis.set_ylabel("translation")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    if title:
        axis.set_title(title, fontsize=9)
    return save_figure(figure, path)

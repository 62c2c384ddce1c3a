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

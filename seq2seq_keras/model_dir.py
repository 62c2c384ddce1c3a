"""The model directory: everything needed to reload a trained model anywhere, written atomically.

    model_dir/
      model.keras              the training model (weights, graph, optimizer state)
      config.json              the Seq2SeqConfig it was built from
      source_vocabulary.txt    one token per line; line 1 is the padding token ""
      target_vocabulary.txt
      history.csv              loss and accuracy per epoch (Keras CSVLogger)
      training_curves.png      the same, drawn

A directory is first written under a temporary name beside its destination and then renamed
into place, so a crash mid-write never leaves a half-written model where a good one was.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import keras

from seq2seq_keras import model as model_lib  # noqa: F401  (registers the custom metric)
from seq2seq_keras.config import CONFIG_FILENAME, Seq2SeqConfig

MODEL_FILENAME = "model.keras"
SOURCE_VOCABULARY_FILENAME = "source_vocabulary.txt"
TARGET_VOCABULARY_FILENAME = "target_vocabulary.txt"
HISTORY_FILENAME = "history.csv"
CURVES_FILENAME = "training_curves.png"


class ModelDirError(Exception):
    """A model directory is missing or incomplete: the message says which file and what to do."""


@dataclasses.dataclass
class TrainedModel:
    """A trained model with the config and vocabularies that give its ids a meaning."""

    config: Seq2SeqConfig
    training_model: keras.Model
    source_vocabulary: list[str]
    target_vocabulary: list[str]


def write_vocabulary(path: Path, vocabulary: list[str]) -> None:
    """One token per line. Tokens never hold whitespace (standardize splits on it)."""
    path.write_text("\n".join(vocabulary) + "\n", encoding="utf-8")


def read_vocabulary(path: Path) -> list[str]:
    """Read a vocabulary written by `write_vocabulary`; the first line is the empty pad token."""
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def write_model_files(directory: Path, trained: TrainedModel) -> None:
    """Write the model, config and vocabularies into an existing directory (not atomic)."""
    trained.training_model.save(directory / MODEL_FILENAME)
    trained.config.save(directory)
    write_vocabulary(directory / SOURCE_VOCABULARY_FILENAME, trained.source_vocabulary)
    write_vocabulary(directory / TARGET_VOCABULARY_FILENAME, trained.target_vocabulary)


def staging_directory(destination: Path) -> Path:
    """A new empty directory beside `destination` (same file system, so rename is atomic)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))


def publish_directory(staging: Path, destination: Path) -> None:
    """Move a fully written `staging` directory to `destination`, replacing an old one.

    The old directory is first renamed aside, then the new one renamed into place, then the old
    one deleted: at every moment `destination` is either the complete old or complete new model.
    """
    previous = None
    if destination.exists():
        previous = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        os.replace(destination, previous)
    os.replace(staging, destination)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def load_trained_model(directory: str | os.PathLike) -> TrainedModel:
    """Load a model directory written by `train`.

    Raises:
      ModelDirError: the directory or one of its files is missing, with a hint to train first.
    """
    directory = Path(directory)
    needed = [MODEL_FILENAME, CONFIG_FILENAME, SOURCE_VOCABULARY_FILENAME, TARGET_VOCABULARY_FILENAME]
    missing = [name for name in needed if not (directory / name).is_file()]
    if missing:
        raise ModelDirError(
            f"{str(directory)!r} is not a trained model directory (missing: {', '.join(missing)}). "
            f"Train one with: python -m seq2seq_keras train --model-dir {directory}"
        )
    return TrainedModel(
        config=Seq2SeqConfig.load(directory),
        training_model=keras.saving.load_model(directory / MODEL_FILENAME, compile=False),
        source_vocabulary=read_vocabulary(directory / SOURCE_VOCABULARY_FILENAME),
        target_vocabulary=read_vocabulary(directory / TARGET_VOCABULARY_FILENAME),
    )

"""The model directory: everything needed to reload a trained model anywhere, written atomically.

    model_dir/
      model.keras              the training model (weights, graph, optimizer state)
      config.json              the Seq2SeqConfig it was built from
      source_vocabulary.txt    one token per line; line 1 is the padding token ""
      target_vocabulary.txt
      history.csv              loss and accuracy per epoch (Keras CSVLogger)
      training_curves.png      the same, drawn

`save_model_directory` writes it under a temporary name beside its destination and then
renames it into place (`storage`), so a crash mid-write never leaves a half-written model where
a good one was.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Callable

import keras

from seq2seq_keras import model as model_lib  # noqa: F401  (registers the custom metric)
from seq2seq_keras import storage
from seq2seq_keras.config import CONFIG_FILENAME, Seq2SeqConfig
from seq2seq_keras.tokens import read_vocabulary, write_vocabulary

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

    def with_decode_precision(self, decode_precision: str | None) -> "TrainedModel":
        """The same model with its config's `decode_precision` replaced (None: unchanged), as
        `translate`, `evaluate` and `export` apply `--decode-precision`."""
        if decode_precision is None:
            return self
        config = dataclasses.replace(self.config, decode_precision=decode_precision)
        return dataclasses.replace(self, config=config)


def write_model_files(directory: Path, trained: TrainedModel) -> None:
    """Write the model, config and vocabularies into an existing directory (not atomic)."""
    trained.training_model.save(directory / MODEL_FILENAME)
    trained.config.save(directory)
    write_vocabulary(directory / SOURCE_VOCABULARY_FILENAME, trained.source_vocabulary)
    write_vocabulary(directory / TARGET_VOCABULARY_FILENAME, trained.target_vocabulary)


def save_model_directory(
    destination: Path,
    trained: TrainedModel,
    add_files: Callable[[Path], None] | None = None,
) -> None:
    """Write `trained` as the model directory `destination`, all at once, replacing an old one.

    The files go into a staging directory beside `destination`, which is then renamed into
    place (`storage.publish_directory`): a crash or an error mid-write leaves the old model
    directory, or none, never a half-written one.

    Args:
      destination: the model directory to create or replace.
      trained: the model, its config and vocabularies.
      add_files: called with the staging directory after the model files are written, to add
        more (the training history and its curves), so they are published together.
    """
    staging = storage.staging_directory(destination)
    try:
        write_model_files(staging, trained)
        if add_files is not None:
            add_files(staging)
        storage.publish_directory(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # still there only if publishing failed


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

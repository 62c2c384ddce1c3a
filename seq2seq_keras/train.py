"""Training: data → vocabularies → `model.fit` → a model directory.

`train` is what `python -m seq2seq_keras train` and the notebooks call. It works in a fixed
scratch directory beside the destination (`.NAME.partial/`) that holds Keras' resume backup and
the history, so a run that is killed and started again with the same command picks up where it
stopped; only a finished run is renamed into `model_dir`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import shutil
import time
from pathlib import Path

import keras

from seq2seq_keras import data as data_lib
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.model import build_training_model
from seq2seq_keras.model_dir import (
    CURVES_FILENAME,
    HISTORY_FILENAME,
    TrainedModel,
    publish_directory,
    write_model_files,
)
from seq2seq_keras.plots import plot_training_curves, read_history

logger = logging.getLogger(__name__)

BACKUP_DIRNAME = "backup"


class TrainingError(Exception):
    """Training could not produce a usable model; the message says why."""


@dataclasses.dataclass
class PreparedData:
    """The split pairs, the vocabularies built on the training split, and their token ids."""

    splits: data_lib.Splits
    skipped_lines: collections.Counter
    source_vocabulary: list[str]
    target_vocabulary: list[str]
    train_tokens: data_lib.TokenizedPairs
    validation_tokens: data_lib.TokenizedPairs


def prepare_data(config: Seq2SeqConfig, data_file: str | os.PathLike) -> PreparedData:
    """Read, split and vectorize the pairs; vocabularies come from the training split only."""
    pairs_file = data_lib.read_pairs(data_file, max_pairs=config.max_pairs, reverse=config.reverse)
    splits = data_lib.split_pairs(pairs_file.pairs)
    if not splits.train or not splits.validation:
        raise data_lib.DataError(
            f"the split left {len(splits.train)} training and {len(splits.validation)} validation "
            f"pairs from {len(pairs_file.pairs)}: use a larger file or a larger --max-pairs."
        )
    source_vocabulary, target_vocabulary = data_lib.build_vocabularies(splits.train, config)
    return PreparedData(
        splits=splits,
        skipped_lines=pairs_file.skipped,
        source_vocabulary=source_vocabulary,
        target_vocabulary=target_vocabulary,
        train_tokens=data_lib.vectorize_pairs(
            splits.train, source_vocabulary, target_vocabulary, config
        ),
        validation_tokens=data_lib.vectorize_pairs(
            splits.validation, source_vocabulary, target_vocabulary, config
        ),
    )


def describe_data(prepared: PreparedData) -> str:
    """One paragraph on what was read, skipped, split and dropped: nothing is lost silently."""
    splits = prepared.splits
    return (
        f"pairs: {len(splits.train)} train / {len(splits.validation)} validation / "
        f"{len(splits.test)} test; malformed lines skipped: "
        f"{data_lib.describe_counts(prepared.skipped_lines)}; training pairs dropped: "
        f"{data_lib.describe_counts(prepared.train_tokens.dropped)}; vocabularies: "
        f"{len(prepared.source_vocabulary)} source / {len(prepared.target_vocabulary)} target tokens"
    )


class TimeBudget(keras.callbacks.Callback):
    """Stop training once `seconds` have passed; the epoch in progress ends and is validated."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if self.seconds and time.monotonic() - self.started > self.seconds:
            self.model.stop_training = True


@dataclasses.dataclass
class TrainResult:
    """What a training run produced."""

    trained: TrainedModel
    prepared: PreparedData
    history: dict[str, list[float]]
    model_dir: Path
    seconds: float


def partial_directory(model_dir: Path) -> Path:
    """The fixed scratch directory of an unfinished run for `model_dir`."""
    return model_dir.with_name(f".{model_dir.name}.partial")


def train(
    config: Seq2SeqConfig,
    model_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    logdir: str | os.PathLike | None = None,
    verbose: int | str = "auto",
) -> TrainResult:
    """Train an encoder–decoder and write its model directory.

    Args:
      config: the run's hyper-parameters.
      model_dir: where the finished model directory goes (replacing an older one).
      data: the pairs file; `None` uses `$SEQ2SEQ_DATA` or downloads spa-eng.
      logdir: where TensorBoard logs go (none when `None`).
      verbose: Keras' progress display (1 progress bar, 2 one line per epoch, 0 silent).
    Returns:
      A `TrainResult` with the trained model, its data and history.
    """
    started = time.monotonic()
    model_dir = Path(model_dir)
    prepared = prepare_data(config, data_lib.resolve_data_file(data))
    logger.info(describe_data(prepared))

    keras.utils.set_random_seed(config.seed)
    model = build_training_model(config)
    work_dir = partial_directory(model_dir)
    if not (work_dir / BACKUP_DIRNAME).exists():
        shutil.rmtree(work_dir, ignore_errors=True)  # a stale scratch dir without a backup
    work_dir.mkdir(parents=True, exist_ok=True)

    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work_dir / BACKUP_DIRNAME)),
        keras.callbacks.CSVLogger(str(work_dir / HISTORY_FILENAME), append=True),
        keras.callbacks.TerminateOnNaN(),
        early_stopping,
        TimeBudget(config.max_train_seconds),
    ]
    if logdir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(logdir)))

    fit_history = model.fit(
        data_lib.make_dataset(prepared.train_tokens, config, shuffle=True),
        validation_data=data_lib.make_dataset(prepared.validation_tokens, config, shuffle=False),
        epochs=config.epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    keep_best_weights(model, early_stopping, fit_history.history)

    trained = TrainedModel(config, model, prepared.source_vocabulary, prepared.target_vocabulary)
    write_model_files(work_dir, trained)
    history = read_history(work_dir / HISTORY_FILENAME)
    plot_training_curves(history, work_dir / CURVES_FILENAME, title=model_dir.name)
    shutil.rmtree(work_dir / BACKUP_DIRNAME, ignore_errors=True)
    publish_directory(work_dir, model_dir)
    return TrainResult(trained, prepared, history, model_dir, time.monotonic() - started)


def keep_best_weights(
    model: keras.Model, early_stopping: keras.callbacks.EarlyStopping, history: dict
) -> None:
    """Leave the model at its best validation epoch, and refuse to keep NaN weights.

    Keras' EarlyStopping restores the best weights only when *it* stopped the run; a run that
    ran out of epochs or of time budget would otherwise keep its last epoch's weights.
    """
    losses = history.get("loss", [])
    diverged = any(math.isnan(loss) for loss in losses)
    if early_stopping.best_weights is not None:
        model.set_weights(early_stopping.best_weights)
    elif diverged:
        raise TrainingError(
            "the loss became NaN before any epoch finished: lower --learning-rate or check the "
            "data. No model was written."
        )
    if diverged:
        logger.warning("the loss became NaN; the model was reset to its best epoch.")

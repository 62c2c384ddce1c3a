"""Training: prepared data → `model.fit` under a tf.distribute strategy → model directory.

`train` is what `python -m seq2seq_keras train` and the notebooks call. In order:

1. `data.prepare_data` reads and splits the pairs and keeps the training and validation pairs
   as text (`data.TextPairs`); vocabularies come from the training split only. The pipeline
   tokenizes the text inside `tf.data` as it streams, so a corpus of any size fits.
2. `build_model` builds and compiles the model inside the strategy's scope, at the configured
   precision (mixed bfloat16 or float16 where the hardware has it; softmax and loss in float32).
   If the scratch directory `.NAME.partial/` beside the model directory holds a checkpoint of
   the same config, the run continues from it (`checkpoints`), even after a `kill -9`.
3. The callbacks (`callbacks`) stop the run on a NaN loss, by early stopping or at the time
   budget, and checkpoint it every `config.checkpoint_seconds` and at every epoch end.
4. `model.fit` reads one endless, seeded stream of epochs (`pipeline.training_batches`), so a
   run can start at any (epoch, batch) and see exactly the batches an uninterrupted run would
   have seen.
5. The best epoch's weights, the history and its curves become the model directory, all at
   once (`model_dir.save_model_directory`); the scratch directory is then deleted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from seq2seq_keras import checkpoints, distribute, hardware, pipeline
from seq2seq_keras import data as data_lib
from seq2seq_keras.callbacks import (
    Checkpoint,
    EpochProgbar,
    LearningRateSchedule,
    ResumableEarlyStopping,
    StopOnNaN,
    TimeBudget,
)
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.config_defaults import PRECISIONS
from seq2seq_keras.model import build_training_model
from seq2seq_keras.model_dir import (
    CURVES_FILENAME,
    HISTORY_FILENAME,
    TrainedModel,
    save_model_directory,
)
from seq2seq_keras.plots import plot_training_curves

logger = logging.getLogger(__name__)


class TrainingError(Exception):
    """Training could not produce a usable model; the message says why."""


# --- 1. Precision and the model --------------------------------------------------------------


def resolve_precision(precision: str) -> str:
    """The Keras dtype policy for `precision`; "auto" picks the fastest the hardware does natively.

    "auto" is "mixed_float16" on a GPU, "mixed_bfloat16" on a CPU with bfloat16 dot-product
    instructions (AVX512_BF16 or AMX: EPYC Zen 4/5, Xeon Cooper Lake and later) and "float32"
    elsewhere: there bfloat16 would be emulated, and slower. Measured on a 2-core EPYC with
    AVX512_BF16, a bfloat16 matmul runs 2.5× as fast as a float32 one (docs/training.md).
    `ONEDNN_MAX_CPU_ISA=AVX2` makes such a CPU choose as an AVX2-only one (`hardware`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if hardware.cpu_has_native_bfloat16() else "float32"


def build_model(
    config: Seq2SeqConfig, strategy: tf.distribute.Strategy | None = None
) -> keras.Model:
    """The compiled training model at `config.precision`, its variables placed by `strategy`.

    Keras reads the dtype policy when a layer is created, so the policy is set only while the
    model is built and then put back: building a model never changes what code run later gets.
    Under mixed precision the variables stay float32 and the layers compute in bfloat16 or
    float16, except the softmax and the loss, which are float32 (see `model.SoftmaxDense`).
    """
    strategy = strategy or tf.distribute.get_strategy()
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(resolve_precision(config.precision))
    try:
        with strategy.scope():
            model = build_training_model(config)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    if config.jit_compile != "auto":
        model.jit_compile = bool(config.jit_compile)
    distribute.prepare_for_multiworker(model, strategy)
    return model


# --- 2. The training run ---------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    """What a training run produced."""

    trained: TrainedModel
    prepared: data_lib.PreparedData
    history: dict[str, list[float]]
    model_dir: Path
    seconds: float
    # Why training ended: "epochs", "early_stopping", "time_budget" or "nan".
    stop_reason: str = "epochs"
    # The epoch (0-based) and batch a resumed run started from; None for a fresh run.
    resumed_from: tuple[int, int] | None = None


def train(
    config: Seq2SeqConfig,
    model_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    logdir: str | os.PathLike | None = None,
    verbose: int | str = "auto",
    strategy: str | tf.distribute.Strategy = "default",
    restart: bool = False,
) -> TrainResult:
    """Train an encoder–decoder and write its model directory; resume an interrupted run.

    Args:
      config: the run's hyper-parameters. `config.precision` "auto" is resolved here and the
        resolved value is what the model directory's `config.json` records.
      model_dir: where the finished model directory goes (replacing an older one).
      data: the pairs file; `None` uses `$SEQ2SEQ_DATA` or downloads spa-eng.
      logdir: where TensorBoard logs go (none when `None`).
      verbose: Keras' progress display (1 progress bar, 2 one line per epoch, 0 silent).
      strategy: "default", "mirrored", "multiworker" (see `seq2seq_keras.distribute`) or a
        `tf.distribute.Strategy`; `config.batch_size` is the global batch over all replicas.
      restart: start over even where an interrupted run of the same config left a checkpoint
        (which is then deleted); by default such a run resumes.
    Returns:
      A `TrainResult` with the trained model, its data and history.
    Raises:
      TrainingError: the loss became NaN before any epoch finished (no model is written, and
        an older model in `model_dir` is left as it was).
    """
    started = time.monotonic()
    model_dir = Path(model_dir)
    try:
        strategy = distribute.make_strategy(strategy)
    except distribute.DistributeError as error:
        raise TrainingError(str(error)) from None
    writes_files = distribute.is_chief(strategy)
    replicas = strategy.num_replicas_in_sync
    config = dataclasses.replace(config, precision=resolve_precision(config.precision))

    # 1. The data.
    prepared = data_lib.prepare_data(config, data_lib.resolve_data_file(data))
    logger.info(data_lib.describe_data(prepared))
    logger.info(f"precision {config.precision}: {hardware.describe_cpu()}")
    if replicas > 1:
        logger.info(
            f"training on {replicas} replicas ({type(strategy).__name__}), "
            f"global batch {config.batch_size}"
        )

    # 2. The model, and the checkpoint of an interrupted run of the same config.
    keras.utils.set_random_seed(config.seed)
    model = build_model(config, strategy)
    store = checkpoints.CheckpointStore(checkpoints.partial_directory(model_dir))
    state, best_weights = resume_or_start(store, model, config, strategy, writes_files, restart)
    resumed_from = (state.epoch, state.batch) if state.epoch or state.batch else None

    # 3. The callbacks, continuing from where the checkpoint left off.
    steps_per_epoch = pipeline.count_batches(prepared.train_pairs, config, replicas)
    run = make_callbacks(
        config, store, state, best_weights, strategy, writes_files, logdir, steps_per_epoch
    )

    # 4. Fit, from the checkpoint's position to the end.
    fit(model, prepared, config, state, steps_per_epoch, run.callbacks, replicas, verbose)

    # 5. The best epoch's weights into the model directory.
    stop_reason = finish(model, run.nan_guard, run.early_stopping, run.time_budget, model_dir)
    trained = TrainedModel(config, model, prepared.source_vocabulary, prepared.target_vocabulary)
    if writes_files:
        write_model_directory(model_dir, trained, state.history)
        shutil.rmtree(store.directory, ignore_errors=True)
    return TrainResult(
        trained,
        prepared,
        history_by_column(state.history),
        model_dir,
        time.monotonic() - started,
        stop_reason,
        resumed_from,
    )


def resume_or_start(
    store: checkpoints.CheckpointStore,
    model: keras.Model,
    config: Seq2SeqConfig,
    strategy: tf.distribute.Strategy,
    writes_files: bool,
    restart: bool = False,
) -> tuple[checkpoints.RunState, list[np.ndarray] | None]:
    """The state of an interrupted run of `config`, its weights loaded into `model`; or a new one.

    A checkpoint of another config is not resumed (its weights may not even fit the model), nor
    any with `restart`: the process that writes files empties the scratch directory for the
    new run.

    Returns:
      The `RunState` and the best epoch's weights so far (`None` when there are none).
    """
    if store.holds_run_of(config) and not restart:
        with strategy.scope():
            state, best_weights = store.load(model)
        logger.info(
            f"resuming from the checkpoint in {store.directory}: epoch {state.epoch + 1}, "
            f"batch {state.batch}, {state.seconds / 60:.1f} min trained"
        )
        return state, best_weights
    if writes_files:
        if store.exists():
            why = "restart asked for" if restart else "it holds a run with another config"
            logger.warning(f"discarding the interrupted run in {store.directory} ({why}): "
                           "starting over.")
        shutil.rmtree(store.directory, ignore_errors=True)
        store.directory.mkdir(parents=True)
    return checkpoints.RunState(), None


@dataclasses.dataclass
class RunCallbacks:
    """A run's callbacks, in the order `fit` calls them; `finish` reads the first three."""

    nan_guard: StopOnNaN
    early_stopping: ResumableEarlyStopping
    time_budget: TimeBudget
    callbacks: list[keras.callbacks.Callback]


def make_callbacks(
    config: Seq2SeqConfig,
    store: checkpoints.CheckpointStore,
    state: checkpoints.RunState,
    best_weights: list[np.ndarray] | None,
    strategy: tf.distribute.Strategy,
    writes_files: bool,
    logdir: str | os.PathLike | None,
    steps_per_epoch: int,
) -> RunCallbacks:
    """The run's callbacks, continuing from `state`.

    Order matters at an epoch's end: early stopping and the time budget decide first, then the
    checkpoint records their decision. The learning-rate schedule comes first of all, so that
    the epoch's logs carry its rate when the checkpoint records them.
    """
    nan_guard = StopOnNaN()
    time_budget = TimeBudget(config.max_train_seconds, spent=state.seconds)
    if distribute.is_multiworker(strategy) and config.max_train_seconds:
        # Each worker has its own clock: one stopping a batch before the others would leave
        # them waiting for it forever in the gradient all-reduce.
        logger.warning("the time budget is ignored under --strategy multiworker; use --epochs.")
        time_budget.seconds = 0
    schedule = None
    if config.learning_rate_schedule == "cosine":
        schedule = LearningRateSchedule(
            config.learning_rate, config.warmup_steps, config.final_learning_rate_fraction,
            config.epochs * steps_per_epoch, steps_per_epoch, state, time_budget,
            config.decay_share, config.decay_on_plateau,
        )
    early_stopping = ResumableEarlyStopping(
        config.patience, state.early_stopping, best_weights,
        holding=schedule.holding if schedule else None,
        on_plateau=schedule.begin_decay if schedule else None,
    )
    checkpoint = Checkpoint(
        store, state, config, early_stopping, config.checkpoint_seconds, enabled=writes_files
    )
    callbacks = [nan_guard, early_stopping, time_budget, checkpoint, EpochProgbar(config.epochs)]
    if schedule:
        callbacks.insert(0, schedule)
    if logdir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(logdir)))
    return RunCallbacks(nan_guard, early_stopping, time_budget, callbacks)


def fit(
    model: keras.Model,
    prepared: data_lib.PreparedData,
    config: Seq2SeqConfig,
    state: checkpoints.RunState,
    steps_per_epoch: int,
    callbacks: list[keras.callbacks.Callback],
    num_replicas: int,
    verbose: int | str,
) -> None:
    """Train from where `state` stands: the rest of an epoch interrupted midway, then the rest.

    `model.fit` starts every epoch at its first batch, so the rest of an interrupted epoch is a
    `fit` of its own. Each `fit` reads the training stream from the position in `state`, which
    the `Checkpoint` callback keeps up to date.
    """
    # A known length spares Keras' "ran out of data" warning after every validation pass.
    validation = pipeline.epoch_batches(
        prepared.validation_pairs, config, False, num_replicas
    ).apply(
        tf.data.experimental.assert_cardinality(
            pipeline.count_batches(prepared.validation_pairs, config, num_replicas)
        )
    )

    def fit_until(epochs: int, steps: int) -> None:
        model.fit(
            pipeline.training_batches(
                prepared.train_pairs, config, state.epoch, state.batch, num_replicas
            ),
            steps_per_epoch=steps,
            initial_epoch=state.epoch,
            epochs=epochs,
            validation_data=validation,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the stream is shuffled already, by epoch and seed
        )

    if state.batch and not state.finished:
        fit_until(state.epoch + 1, steps_per_epoch - state.batch)
    if state.epoch < config.epochs and not state.finished and not model.stop_training:
        fit_until(config.epochs, steps_per_epoch)


def finish(
    model: keras.Model,
    nan_guard: StopOnNaN,
    early_stopping: ResumableEarlyStopping,
    time_budget: TimeBudget,
    model_dir: Path,
) -> str:
    """Leave the model at its best validation epoch and say why training ended.

    A NaN loss ends the run; the model then goes back to its best finished epoch, or, if no
    epoch finished with a finite loss, training fails and nothing is written.
    """
    if nan_guard.nan_epoch is not None and early_stopping.best_weights is None:
        raise TrainingError(
            f"the loss became NaN in epoch {nan_guard.nan_epoch + 1}, before any epoch finished "
            f"with a finite loss: lower --learning-rate or check the data. No model was "
            f"written; {model_dir} was left as it was."
        )
    if early_stopping.best_weights is not None:
        model.set_weights(early_stopping.best_weights)
    if nan_guard.nan_epoch is not None:
        logger.warning(
            f"training stopped: the loss became NaN in epoch {nan_guard.nan_epoch + 1}. Kept the "
            f"last good model, from epoch {early_stopping.best_epoch + 1} "
            f"(val_loss {early_stopping.best:.4f}). Lower --learning-rate to train further."
        )
        return "nan"
    if early_stopping.stopped_epoch or early_stopping.wait >= early_stopping.patience > 0:
        return "early_stopping"
    return "time_budget" if time_budget.stopped else "epochs"


def history_by_column(history: list[dict]) -> dict[str, list[float]]:
    """Epoch logs as columns, `{"epoch": [0, 1], "loss": [...], ...}`, keys in first-seen order."""
    columns = dict.fromkeys(key for row in history for key in row)
    return {key: [row[key] for row in history if key in row] for key in columns}


def write_model_directory(model_dir: Path, trained: TrainedModel, history: list[dict]) -> None:
    """Publish the trained model with its `history.csv` and training curves as `model_dir`."""

    def add_history(staging: Path) -> None:
        (staging / HISTORY_FILENAME).write_text(checkpoints.history_csv(history), encoding="utf-8")
        plot_training_curves(
            history_by_column(history), staging / CURVES_FILENAME, title=model_dir.name
        )

    save_model_directory(model_dir, trained, add_history)

"""Training: data → vocabularies → `model.fit` under a tf.distribute strategy → model directory.

`train` is what `python -m seq2seq_keras train` and the notebooks call. In order:

1. `prepare_data` reads, splits and vectorizes the pairs; vocabularies come from the training
   split only.
2. `build_model` builds and compiles the model inside the strategy's scope, at the configured
   precision (mixed bfloat16 or float16 where the hardware has it; softmax and loss in float32).
3. The batches come from one endless, seeded stream of epochs (`training_batches`), so a run can
   start at any (epoch, batch) and see exactly the batches an uninterrupted run would have seen.
4. During `model.fit`, `Checkpoint` saves the weights, the optimizer state, the position, the
   early-stopping state and the history into `.NAME.partial/` beside the model directory, every
   `config.checkpoint_seconds` and at every epoch end, atomically. The same command started
   again after a crash (even `kill -9`) continues from the last checkpoint.
5. The best epoch's weights are written to a temporary directory that is renamed into
   `model_dir`; the scratch directory is then deleted.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from seq2seq_keras import data as data_lib
from seq2seq_keras import text as text_lib
from seq2seq_keras import distribute
from seq2seq_keras.config import PRECISIONS, Seq2SeqConfig
from seq2seq_keras.model import build_training_model
from seq2seq_keras.model_dir import (
    CURVES_FILENAME,
    HISTORY_FILENAME,
    TrainedModel,
    publish_directory,
    staging_directory,
    write_model_files,
)
from seq2seq_keras.plots import plot_training_curves

logger = logging.getLogger(__name__)

# The one file that says which checkpoint files are current; replaced atomically, last.
CHECKPOINT_FILENAME = "checkpoint.json"



class TrainingError(Exception):
    """Training could not produce a usable model; the message says why."""


# --- 1. Data ---------------------------------------------------------------------------------


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
    source_vocabulary, target_vocabulary = text_lib.build_vocabularies(splits.train, config)
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


def training_batches(
    tokens: data_lib.TokenizedPairs,
    config: Seq2SeqConfig,
    epoch: int = 0,
    batch: int = 0,
    num_replicas: int = 1,
) -> tf.data.Dataset:
    """The endless stream of training batches, epoch after epoch, from `(epoch, batch)` on.

    Every epoch is reshuffled, but from `config.seed`: the stream is the same in every run, so a
    resumed run skips to where the killed one stopped and sees exactly the batches it would
    have seen. Skipping only runs the input pipeline (about a second per epoch on spa-eng).
    """
    batches = epoch_batches(tokens, config, shuffle=True, num_replicas=num_replicas)
    steps_per_epoch = count_batches(tokens, config, num_replicas)
    return batches.repeat().skip(epoch * steps_per_epoch + batch)


def epoch_batches(
    tokens: data_lib.TokenizedPairs, config: Seq2SeqConfig, shuffle: bool, num_replicas: int = 1
) -> tf.data.Dataset:
    """One epoch of `data.make_dataset` batches, each splitting evenly over the replicas.

    A length bucket's last batch is partial. Keras (3.15) builds a distributed model from the
    replicas' mean first batch, which fails when the replicas' shares differ in size ("Inputs to
    operation AddN must have the same size"), so with several replicas each batch is cut to a
    multiple of their number: at most `num_replicas - 1` pairs per bucket sit out an epoch
    (other pairs each epoch, since the order changes).
    """
    dataset = data_lib.make_dataset(tokens, config, shuffle=shuffle)
    if num_replicas == 1:
        return dataset

    def even_split(inputs, target):
        size = tf.shape(target)[0] // num_replicas * num_replicas
        return tf.nest.map_structure(lambda ids: ids[:size], (inputs, target))

    return dataset.map(even_split).filter(lambda inputs, target: tf.shape(target)[0] > 0)


def count_batches(
    tokens: data_lib.TokenizedPairs, config: Seq2SeqConfig, num_replicas: int = 1
) -> int:
    """Batches in one epoch. Fixed by the pair lengths (each length bucket ends in one partial
    batch), not by the shuffle; counted by running the pipeline once, which is cheap."""
    dataset = epoch_batches(tokens, config, shuffle=False, num_replicas=num_replicas)
    return int(dataset.reduce(np.int64(0), lambda count, _: count + 1))


# --- 2. Model --------------------------------------------------------------------------------


def resolve_precision(precision: str) -> str:
    """The Keras dtype policy for `precision`; "auto" picks the fastest the hardware does natively.

    "auto" is "mixed_float16" on a GPU, "mixed_bfloat16" on a CPU with bfloat16 dot-product
    instructions (AVX512_BF16 or AMX: EPYC Zen 4/5, Xeon Cooper Lake and later) and "float32"
    elsewhere: there bfloat16 would be emulated, and slower. Measured on a 2-core EPYC with
    AVX512_BF16, a bfloat16 matmul runs 2.5× as fast as a float32 one (docs/training.md).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_native_bfloat16() else "float32"


def cpu_has_native_bfloat16() -> bool:
    """Whether the CPU advertises bfloat16 dot products (Linux `/proc/cpuinfo`; else False)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo) is not None


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


# --- 3. Callbacks ----------------------------------------------------------------------------


class TimeBudget(keras.callbacks.Callback):
    """Stop training once `seconds` have passed; the epoch in progress ends and is validated.

    `spent` is the training time of earlier runs that this one resumes, so a resumed run gets
    only what is left of the budget.
    """

    def __init__(self, seconds: float, spent: float = 0.0):
        super().__init__()
        self.seconds = seconds
        self.spent = spent
        self.started = time.monotonic()
        self.stopped = False

    def elapsed(self) -> float:
        return self.spent + time.monotonic() - self.started

    def on_train_batch_end(self, batch, logs=None):
        if self.seconds and self.elapsed() > self.seconds:
            self.stopped = True
            self.model.stop_training = True


class StopOnNaN(keras.callbacks.Callback):
    """Stop at the first batch whose loss is NaN or infinite, and remember the epoch.

    Like `keras.callbacks.TerminateOnNaN`, but `train` then says where it happened and keeps
    the last good weights; `Checkpoint` and `ResumableEarlyStopping` ignore the broken epoch.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.nan_epoch: int | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not is_finite((logs or {}).get("loss", 0.0)):
            self.nan_epoch = self.epoch
            self.model.stop_training = True


class EpochProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, numbering epochs out of the run's total even in a resumed epoch's
    separate `fit` (which Keras would show as "Epoch 3/3")."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params({**params, "epochs": self.total_epochs})


def is_finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` on `val_loss` whose state survives a restart and several `fit` calls.

    Unlike Keras' own it (1) starts from a saved state, (2) resets only once, not at every
    `fit`, (3) ignores an epoch whose loss is NaN, and (4) leaves the best weights for `train`
    to restore at the very end (Keras' restores them when each `fit` ends).
    """

    def __init__(self, patience: int, state: dict | None = None, best_weights=None):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self.saved_state = state or {}
        self.saved_best_weights = best_weights
        self.started = False
        self.best_changed = False

    def on_train_begin(self, logs=None):
        if self.started:
            return
        self.started = True
        super().on_train_begin(logs)
        if self.saved_state:
            self.best = self.saved_state["best"]
            self.best_epoch = self.saved_state["best_epoch"]
            self.wait = self.saved_state["wait"]
            self.best_weights = self.saved_best_weights

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not (is_finite(logs.get("loss")) and is_finite(logs.get("val_loss"))):
            return
        previous = self.best_weights
        super().on_epoch_end(epoch, logs)
        self.best_changed = self.best_weights is not previous

    def on_train_end(self, logs=None):
        pass

    def get_state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}


@dataclasses.dataclass
class RunState:
    """Where an unfinished run stands: what a checkpoint holds besides the weights."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches finished in epoch `epoch`
    seconds: float = 0.0  # time spent in `fit`, over all runs so far (for the time budget)
    finished: bool = False  # stopped early or out of time: only the model is left to write
    history: list = dataclasses.field(default_factory=list)  # logs of each finished epoch
    early_stopping: dict = dataclasses.field(default_factory=dict)


class CheckpointStore:
    """A run's checkpoints in its scratch directory, written so that a kill never corrupts one.

    A checkpoint is a weights file (model and optimizer variables), the best epoch's weights
    (`.npz`) and `checkpoint.json`, which names both files and holds the `RunState` and the
    config. New files get new names; `checkpoint.json` is written to a temporary file, flushed
    to disk and renamed over the old one (atomic on POSIX and Windows), and only then are the
    files it no longer names deleted. Killed at any moment, the directory holds one complete
    checkpoint.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.pointer = directory / CHECKPOINT_FILENAME

    def exists(self) -> bool:
        return self.pointer.is_file()

    def read(self) -> dict:
        return json.loads(self.pointer.read_text(encoding="utf-8"))

    def load(self, model: keras.Model) -> tuple[RunState, list[np.ndarray] | None]:
        """Load the checkpoint's weights and optimizer state into `model`; return the run state."""
        record = self.read()
        if model.optimizer is not None and not model.optimizer.built:
            # The optimizer's variables (Adam's moments) must exist before they can be loaded.
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.directory / record["weights"])
        best_weights = None
        if record["best_weights"]:
            with np.load(self.directory / record["best_weights"]) as arrays:
                best_weights = [arrays[f"arr_{index}"] for index in range(len(arrays.files))]
        return RunState(**record["state"]), best_weights

    def save(
        self,
        model: keras.Model,
        state: RunState,
        config: Seq2SeqConfig,
        best_weights: list[np.ndarray] | None,
        best_changed: bool,
    ) -> None:
        previous = self.read() if self.exists() else {"serial": 0, "best_weights": None}
        serial = previous["serial"] + 1
        weights_name = f"weights-{serial:06d}.weights.h5"
        model.save_weights(self.directory / weights_name)
        flush_to_disk(self.directory / weights_name)
        best_name = previous["best_weights"]
        if best_weights is not None and (best_changed or not best_name):
            best_name = f"best-{serial:06d}.npz"
            np.savez(self.directory / best_name, *best_weights)
            flush_to_disk(self.directory / best_name)
        record = {
            "serial": serial,
            "weights": weights_name,
            "best_weights": best_name,
            "state": dataclasses.asdict(state),
            "config": json.loads(config.to_json()),
        }
        write_atomically(self.pointer, json.dumps(record, indent=1))
        for path in self.directory.glob("*"):
            if re.fullmatch(r"(weights|best)-\d+\..*", path.name) and path.name not in (
                weights_name,
                best_name,
            ):
                path.unlink()


def flush_to_disk(path: Path) -> None:
    """Force a written file onto the disk, so a power cut cannot leave it half-written."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` all at once: write a temporary file, flush it, rename it."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def history_csv(history: list[dict]) -> str:
    """Epoch logs in `keras.callbacks.CSVLogger`'s format: an `epoch` column, then sorted keys."""
    keys = sorted({key for row in history for key in row if key != "epoch"})
    lines = [",".join(["epoch", *keys])]
    for row in history:
        lines.append(",".join([str(row["epoch"]), *(repr(row.get(key, "")) for key in keys)]))
    return "\n".join(lines) + "\n"


class Checkpoint(keras.callbacks.Callback):
    """Save the run into a `CheckpointStore` every `every_seconds` and at every epoch end.

    Also writes `history.csv` at every epoch end, from the same state, so the history and the
    checkpoint never disagree about which epochs are finished. Nothing is saved from a batch or
    epoch whose loss is NaN: the last checkpoint stays the last good one. `enabled=False`
    (non-chief workers) keeps the bookkeeping but writes nothing.
    """

    def __init__(
        self,
        store: CheckpointStore,
        state: RunState,
        config: Seq2SeqConfig,
        early_stopping: ResumableEarlyStopping,
        every_seconds: float,
        enabled: bool = True,
    ):
        super().__init__()
        self.store = store
        self.state = state
        self.config = config
        self.early_stopping = early_stopping
        self.every_seconds = every_seconds
        self.enabled = enabled
        self.last_saved = time.monotonic()
        self.first_batch = state.batch  # a resumed epoch continues from this batch
        self.seconds_before = state.seconds
        self.fit_started = time.monotonic()

    def on_train_begin(self, logs=None):
        self.seconds_before = self.state.seconds
        self.fit_started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self.state.batch = self.first_batch + batch + 1
        self.state.seconds = self.seconds_before + time.monotonic() - self.fit_started
        due = self.every_seconds and time.monotonic() - self.last_saved >= self.every_seconds
        if due and is_finite((logs or {}).get("loss")):
            self.save(best_changed=False)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not (is_finite(logs.get("loss")) and is_finite(logs.get("val_loss"))):
            return
        self.first_batch = 0
        self.state.epoch, self.state.batch = epoch + 1, 0
        self.state.seconds = self.seconds_before + time.monotonic() - self.fit_started
        self.state.finished = (
            bool(self.model.stop_training) or self.state.epoch >= self.config.epochs
        )
        self.state.history.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        self.state.early_stopping = self.early_stopping.get_state()
        if self.enabled:
            history_file = self.store.directory / HISTORY_FILENAME
            write_atomically(history_file, history_csv(self.state.history))
        self.save(best_changed=self.early_stopping.best_changed)

    def save(self, best_changed: bool) -> None:
        if self.enabled:
            self.store.save(
                self.model, self.state, self.config, self.early_stopping.best_weights, best_changed
            )
        self.last_saved = time.monotonic()


# --- 4. The training run ---------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    """What a training run produced."""

    trained: TrainedModel
    prepared: PreparedData
    history: dict[str, list[float]]
    model_dir: Path
    seconds: float
    # Why training ended: "epochs", "early_stopping", "time_budget" or "nan".
    stop_reason: str = "epochs"
    # The epoch (0-based) and batch a resumed run started from; None for a fresh run.
    resumed_from: tuple[int, int] | None = None


def partial_directory(model_dir: Path) -> Path:
    """The fixed scratch directory of an unfinished run for `model_dir`."""
    return model_dir.with_name(f".{model_dir.name}.partial")


def train(
    config: Seq2SeqConfig,
    model_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    logdir: str | os.PathLike | None = None,
    verbose: int | str = "auto",
    strategy: str | tf.distribute.Strategy = "default",
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
    config = dataclasses.replace(config, precision=resolve_precision(config.precision))
    prepared = prepare_data(config, data_lib.resolve_data_file(data))
    logger.info(describe_data(prepared))
    if strategy.num_replicas_in_sync > 1:
        logger.info(
            f"training on {strategy.num_replicas_in_sync} replicas "
            f"({type(strategy).__name__}), global batch {config.batch_size}"
        )

    # 1. The model, and the checkpoint of an interrupted run of the same config.
    keras.utils.set_random_seed(config.seed)
    model = build_model(config, strategy)
    work_dir = partial_directory(model_dir)
    store = CheckpointStore(work_dir)
    state, best_weights = RunState(), None
    if store.exists() and store.read()["config"] == json.loads(config.to_json()):
        with strategy.scope():
            state, best_weights = store.load(model)
        logger.info(
            f"resuming from the checkpoint in {work_dir}: epoch {state.epoch + 1}, "
            f"batch {state.batch}, {state.seconds / 60:.1f} min trained"
        )
    elif writes_files:
        if store.exists():
            logger.warning(f"{work_dir} holds a run with another config: starting over.")
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)
    resumed_from = (state.epoch, state.batch) if state.epoch or state.batch else None

    # 2. Callbacks. Order matters at an epoch's end: early stopping and the time budget decide
    #    first, then the checkpoint records their decision.
    replicas = strategy.num_replicas_in_sync
    steps_per_epoch = count_batches(prepared.train_tokens, config, replicas)
    nan_guard = StopOnNaN()
    early_stopping = ResumableEarlyStopping(config.patience, state.early_stopping, best_weights)
    time_budget = TimeBudget(config.max_train_seconds, spent=state.seconds)
    if distribute.is_multiworker(strategy) and config.max_train_seconds:
        # Each worker has its own clock: one stopping a batch before the others would leave
        # them waiting for it forever in the gradient all-reduce.
        logger.warning("the time budget is ignored under --strategy multiworker; use --epochs.")
        time_budget.seconds = 0
    checkpoint = Checkpoint(
        store, state, config, early_stopping, config.checkpoint_seconds, enabled=writes_files
    )
    callbacks = [nan_guard, early_stopping, time_budget, checkpoint, EpochProgbar(config.epochs)]
    if logdir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(logdir)))
    # A known length spares Keras' "ran out of data" warning after every validation pass.
    validation = epoch_batches(prepared.validation_tokens, config, False, replicas).apply(
        tf.data.experimental.assert_cardinality(
            count_batches(prepared.validation_tokens, config, replicas)
        )
    )

    # 3. Fit: first the rest of an epoch interrupted midway, then the remaining epochs.
    def fit(steps: int, epochs: int) -> None:
        model.fit(
            training_batches(prepared.train_tokens, config, state.epoch, state.batch, replicas),
            steps_per_epoch=steps,
            initial_epoch=state.epoch,
            epochs=epochs,
            validation_data=validation,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the stream is shuffled already, by epoch and seed
        )

    if state.batch and not state.finished:
        fit(steps_per_epoch - state.batch, state.epoch + 1)
    if state.epoch < config.epochs and not state.finished and not model.stop_training:
        fit(steps_per_epoch, config.epochs)

    # 4. The best epoch's weights into the model directory.
    stop_reason = finish(model, nan_guard, early_stopping, time_budget, model_dir)
    trained = TrainedModel(config, model, prepared.source_vocabulary, prepared.target_vocabulary)
    columns = dict.fromkeys(key for row in state.history for key in row)
    history = {key: [row[key] for row in state.history if key in row] for key in columns}
    if writes_files:
        staging = staging_directory(model_dir)
        write_model_files(staging, trained)
        (staging / HISTORY_FILENAME).write_text(history_csv(state.history), encoding="utf-8")
        plot_training_curves(history, staging / CURVES_FILENAME, title=model_dir.name)
        publish_directory(staging, model_dir)
        shutil.rmtree(work_dir, ignore_errors=True)
    return TrainResult(
        trained, prepared, history, model_dir, time.monotonic() - started, stop_reason, resumed_from
    )


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

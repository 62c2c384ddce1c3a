"""Callbacks: what `train` hands to `model.fit` to stop, checkpoint and show a run.

Every one of them survives a restart: a resumed run continues the same time budget, early
stopping and epoch numbering, and a loss that turns NaN never reaches a checkpoint.

1. `TimeBudget` and `StopOnNaN` stop training; `ResumableEarlyStopping` stops it too and keeps
   the best epoch's weights; `LearningRateSchedule` warms the learning rate up and decays it
   by the run's end.
2. `Checkpoint` saves the run into a `checkpoints.CheckpointStore` and writes `history.csv`.
3. `EpochProgbar` is Keras' progress bar with the run's epoch numbers.

At an epoch's end their order in the list matters: early stopping and the time budget decide
first, then `Checkpoint` records their decision.
"""

from __future__ import annotations

import math
import time

import keras

from seq2seq_keras.checkpoints import CheckpointStore, RunState, history_csv
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.model_dir import HISTORY_FILENAME
from seq2seq_keras.storage import write_atomically


def is_finite(value) -> bool:
    """Whether a logged loss is a real number: not missing, NaN or infinite."""
    return value is not None and math.isfinite(float(value))


# --- 1. Stopping -----------------------------------------------------------------------------


class TimeBudget(keras.callbacks.Callback):
    """Stop training once `seconds` have passed; the epoch in progress ends and is validated.

    `spent` is the training time of earlier runs that this one resumes, so a resumed run gets
    only what is left of the budget. `clock` reads the time in seconds; tests pass a frozen one
    so that the schedule they check does not move with the wall clock.
    """

    def __init__(self, seconds: float, spent: float = 0.0, clock=time.monotonic):
        super().__init__()
        self.seconds = seconds
        self.spent = spent
        self.clock = clock
        self.started = clock()
        self.stopped = False

    def elapsed(self) -> float:
        return self.spent + self.clock() - self.started

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


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` on `val_loss` whose state survives a restart and several `fit` calls.

    Unlike Keras' own it (1) starts from a saved state, (2) resets only once, not at every
    `fit`, (3) ignores an epoch whose loss is NaN, (4) leaves the best weights for `train`
    to restore at the very end (Keras' restores them when each `fit` ends), and (5) spends no
    patience while `holding()` says the learning rate still holds its peak before a decay
    (`LearningRateSchedule.holding`): at the peak rate the validation loss may drift up for
    epochs, and the decay then brings it below its earlier best (docs/training.md). Such an
    epoch can still become the best one; one that is not calls `on_plateau()`
    (`LearningRateSchedule.begin_decay`).
    """

    def __init__(self, patience: int, state: dict | None = None, best_weights=None, holding=None,
                 on_plateau=None):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self.saved_state = state or {}
        self.saved_best_weights = best_weights
        self.holding = holding or (lambda: False)
        self.on_plateau = on_plateau or (lambda: None)
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
        previous, wait, patience = self.best_weights, self.wait, self.patience
        holding = self.holding()
        if holding:  # no worse epoch can stop the run now
            self.patience = math.inf
        super().on_epoch_end(epoch, logs)
        self.patience = patience
        self.best_changed = self.best_weights is not previous
        if holding and not self.best_changed:
            self.wait = wait
            self.on_plateau()

    def on_train_end(self, logs=None):
        pass

    def get_state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}


WARMUP_SHARE_LIMIT = 10  # the warm-up takes at most 1/10 of a run's steps


class LearningRateSchedule(keras.callbacks.Callback):
    """Set Adam's learning rate before every batch from how far the run has come.

    Warm-up: the rate rises linearly from 0 to `peak` over the first `warmup_steps` steps (at
    most a tenth of `total_steps`).
    Decay: a cosine from `peak` down to `final_fraction` × `peak` at the run's end, over the
    last `decay_share` of the run; before that the rate holds at `peak` (with `decay_share`
    1, the default, the cosine spans the whole run). With `on_plateau`, `begin_decay` (called
    at an epoch at the peak rate that did not improve the validation loss) starts the same
    decay there instead; once it has run its `decay_share` of the run, the rate stays at its
    floor until the run ends. How far the run has come is the larger of its share of
    `total_steps` (the epochs) and its share of the time budget, so the decay ends on time
    whichever limit stops the run. Both shares, and where a plateau began the decay, come
    from the run's own records (`RunState` and `TimeBudget`), so a resumed run continues the
    schedule where it stood.
    """

    def __init__(
        self,
        peak: float,
        warmup_steps: int,
        final_fraction: float,
        total_steps: int,
        steps_per_epoch: int,
        state: RunState,
        time_budget: TimeBudget,
        decay_share: float = 1.0,
        on_plateau: bool = False,
    ):
        super().__init__()
        self.peak = peak
        self.decay_share = decay_share
        self.on_plateau = on_plateau
        # A short run (few epochs of few batches) warms up for a tenth of its steps at most.
        self.warmup_steps = min(warmup_steps, total_steps // WARMUP_SHARE_LIMIT)
        self.final_fraction = final_fraction
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.state = state
        self.time_budget = time_budget

    def progress(self) -> float:
        """The run's share done, in [0, 1]: of its steps or of its time, whichever is ahead."""
        steps = self.steps_done() / max(self.total_steps, 1)
        budget = self.time_budget.seconds
        seconds = self.time_budget.elapsed() / budget if budget else 0.0
        return min(max(steps, seconds), 1.0)

    def steps_done(self) -> int:
        return self.state.epoch * self.steps_per_epoch + self.state.batch

    def decay_start(self) -> float:
        """The run's share done at which the decay begins: where a plateau began it, else the
        start of the last `decay_share`."""
        if self.state.decay_start is not None:
            return self.state.decay_start
        return 1.0 - self.decay_share

    def holding(self) -> bool:
        """Whether the rate still holds its peak, the decay not yet begun; never with the
        whole-run cosine (`decay_share` 1)."""
        return self.progress() < self.decay_start()

    def begin_decay(self) -> None:
        """Start the decay now (with `on_plateau`, while the rate still holds its peak)."""
        if self.on_plateau and self.holding():
            self.state.decay_start = self.progress()
            # On a line of its own, as Keras' ReduceLROnPlateau reports itself.
            print(f"\nEpoch {self.state.epoch + 1}: the validation loss did not improve at the "
                  f"peak learning rate; the rate decays from here, {self.state.decay_start:.0%} "
                  f"into the run, to its floor at {self.decay_start() + self.decay_share:.0%}.")

    def rate(self) -> float:
        """The learning rate for the next step."""
        if self.steps_done() < self.warmup_steps:
            return self.peak * (self.steps_done() + 1) / self.warmup_steps
        into_decay = min(max((self.progress() - self.decay_start()) / self.decay_share, 0.0), 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * into_decay))
        return self.peak * (self.final_fraction + (1.0 - self.final_fraction) * cosine)

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rate())

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.rate()


# --- 2. Checkpointing ------------------------------------------------------------------------


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


# --- 3. Display ------------------------------------------------------------------------------


class EpochProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, numbering epochs out of the run's total even in a resumed epoch's
    separate `fit` (which Keras would show as "Epoch 3/3")."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params({**params, "epochs": self.total_epochs})

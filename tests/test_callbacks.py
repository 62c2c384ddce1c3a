"""Callbacks: the time budget, NaN stops, early stopping across restarts, checkpoints at epoch
ends, and the run's epoch numbers in the progress bar."""

import dataclasses
import math

import keras
import numpy as np
import pytest

from conftest import SMALL
from seq2seq_keras import callbacks, checkpoints


@pytest.fixture
def model() -> keras.Model:
    """A built model for callbacks that read or save weights; what it computes does not matter."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.stop_training = False
    return model


def attached(callback, model):
    callback.set_model(model)
    return callback


def test_is_finite_rejects_missing_nan_and_infinite_losses():
    assert callbacks.is_finite(0.5) and callbacks.is_finite(np.float32(2))
    assert not any(callbacks.is_finite(value) for value in (None, math.nan, math.inf))


def test_the_time_budget_counts_the_time_of_earlier_runs(model):
    budget = attached(callbacks.TimeBudget(seconds=60, spent=59.0), model)
    budget.on_train_batch_end(0)
    assert not budget.stopped and not model.stop_training
    budget.spent = 61.0
    budget.on_train_batch_end(1)
    assert budget.stopped and model.stop_training


def test_no_time_budget_never_stops(model):
    budget = attached(callbacks.TimeBudget(seconds=0, spent=1e9), model)
    budget.on_train_batch_end(0)
    assert not budget.stopped and not model.stop_training


def test_a_nan_loss_stops_training_and_names_its_epoch(model):
    guard = attached(callbacks.StopOnNaN(), model)
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(0, {"loss": 1.5})
    assert guard.nan_epoch is None and not model.stop_training
    guard.on_train_batch_end(1, {"loss": math.nan})
    assert guard.nan_epoch == 2 and model.stop_training


def test_early_stopping_continues_from_a_saved_state_and_ignores_nan_epochs(model):
    saved_weights = [np.full(weights.shape, 7.0) for weights in model.get_weights()]
    early_stopping = attached(
        callbacks.ResumableEarlyStopping(
            patience=2, state={"best": 1.0, "best_epoch": 3, "wait": 1}, best_weights=saved_weights
        ),
        model,
    )
    early_stopping.on_train_begin()
    assert early_stopping.get_state() == {"best": 1.0, "best_epoch": 3, "wait": 1}

    early_stopping.on_epoch_end(4, {"loss": math.nan, "val_loss": 0.1})  # a broken epoch
    assert early_stopping.get_state()["wait"] == 1 and not model.stop_training

    early_stopping.on_train_begin()  # a second `fit` of the same run: no reset
    early_stopping.on_epoch_end(4, {"loss": 1.0, "val_loss": 0.5})
    assert early_stopping.get_state() == {"best": 0.5, "best_epoch": 4, "wait": 0}
    assert early_stopping.best_changed

    early_stopping.on_epoch_end(5, {"loss": 1.0, "val_loss": 0.6})
    assert not early_stopping.best_changed and not model.stop_training
    early_stopping.on_epoch_end(6, {"loss": 1.0, "val_loss": 0.7})
    assert model.stop_training and early_stopping.stopped_epoch == 6

    model.set_weights([np.zeros_like(weights) for weights in saved_weights])
    early_stopping.on_train_end()  # the best weights are left for `train` to restore
    assert all((weights == 0).all() for weights in model.get_weights())


def test_the_checkpoint_records_finished_epochs_and_skips_nan_ones(model, tmp_path):
    store = checkpoints.CheckpointStore(tmp_path)
    state = checkpoints.RunState(epoch=1, batch=5, seconds=30.0)
    early_stopping = attached(callbacks.ResumableEarlyStopping(patience=2), model)
    early_stopping.on_train_begin()
    checkpoint = attached(
        callbacks.Checkpoint(store, state, SMALL, early_stopping, every_seconds=0), model
    )
    checkpoint.on_train_begin()

    checkpoint.on_train_batch_end(2, {"loss": 1.0})  # the resumed epoch's third batch
    assert state.batch == 8 and not store.exists()  # every_seconds=0: only at epoch ends

    early_stopping.on_epoch_end(1, {"loss": 1.0, "val_loss": 2.0})
    checkpoint.on_epoch_end(1, {"loss": 1.0, "val_loss": 2.0})
    assert (state.epoch, state.batch, state.finished) == (2, 0, SMALL.epochs <= 2)
    assert state.history == [{"epoch": 1, "loss": 1.0, "val_loss": 2.0}]
    assert (tmp_path / "history.csv").read_text() == "epoch,loss,val_loss\n1,1.0,2.0\n"
    record = store.read()
    assert record["state"] == dataclasses.asdict(state) and record["best_weights"]

    checkpoint.on_epoch_end(2, {"loss": math.nan, "val_loss": math.nan})
    assert store.read()["serial"] == record["serial"] and len(state.history) == 1


def test_a_checkpoint_that_is_not_enabled_writes_nothing(model, tmp_path):
    store = checkpoints.CheckpointStore(tmp_path)
    early_stopping = attached(callbacks.ResumableEarlyStopping(patience=2), model)
    early_stopping.on_train_begin()
    checkpoint = attached(
        callbacks.Checkpoint(
            store, checkpoints.RunState(), SMALL, early_stopping, every_seconds=1e-9,
            enabled=False,
        ),
        model,
    )
    checkpoint.on_train_batch_end(0, {"loss": 1.0})
    checkpoint.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0})
    assert checkpoint.state.epoch == 1 and list(tmp_path.iterdir()) == []


def test_the_progress_bar_counts_epochs_of_the_whole_run():
    progbar = callbacks.EpochProgbar(total_epochs=20)
    progbar.set_params({"epochs": 3, "steps": 100, "verbose": 1})
    assert progbar.epochs == 20 and progbar.target == 100

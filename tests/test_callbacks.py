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


def frozen_clock() -> float:
    """A clock that never moves: the budget's `spent` alone says how far a run is."""
    return 0.0


def test_is_finite_rejects_missing_nan_and_infinite_losses():
    assert callbacks.is_finite(0.5) and callbacks.is_finite(np.float32(2))
    assert not any(callbacks.is_finite(value) for value in (None, math.nan, math.inf))


def test_the_time_budget_counts_the_time_of_earlier_runs(model):
    budget = attached(callbacks.TimeBudget(seconds=60, spent=59.0, clock=frozen_clock), model)
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


# --- The learning-rate schedule ---------------------------------------------------------------


def schedule_over(model, total_steps=1000, budget_seconds=0.0, warmup_steps=100, spent=0.0,
                  decay_share=1.0, on_plateau=False, state=None):
    """A cosine schedule with peak 1e-3, warm-up, decay to 2%, over 10 epochs of 100 steps."""
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    state = state or checkpoints.RunState()
    budget = callbacks.TimeBudget(budget_seconds, spent=spent, clock=frozen_clock)
    schedule = callbacks.LearningRateSchedule(1e-3, warmup_steps, 0.02, total_steps, 100, state,
                                              budget, decay_share, on_plateau)
    return attached(schedule, model), state, budget


def rate_at(schedule, state, step: int) -> float:
    state.epoch, state.batch = divmod(step, schedule.steps_per_epoch)
    schedule.on_train_batch_begin(state.batch)
    return float(schedule.model.optimizer.learning_rate)


def test_the_rate_warms_up_linearly_then_decays_along_a_cosine_to_its_floor(model):
    schedule, state, _ = schedule_over(model)
    assert rate_at(schedule, state, 0) == pytest.approx(1e-5)  # 1/100 of the peak
    assert rate_at(schedule, state, 49) == pytest.approx(5e-4)
    assert rate_at(schedule, state, 99) == pytest.approx(1e-3)
    # Halfway through the run the cosine is halfway down: (1 + 0.02) / 2 of the peak.
    assert rate_at(schedule, state, 500) == pytest.approx(0.51e-3)
    assert rate_at(schedule, state, 1000) == pytest.approx(0.02e-3)
    rates = [rate_at(schedule, state, step) for step in range(100, 1001, 50)]
    assert rates == sorted(rates, reverse=True)


def test_a_short_decay_holds_the_peak_then_decays_over_the_last_share_of_the_run(model):
    schedule, state, budget = schedule_over(model, decay_share=0.2)
    assert rate_at(schedule, state, 99) == pytest.approx(1e-3)  # warm-up as before
    assert rate_at(schedule, state, 500) == pytest.approx(1e-3)
    assert rate_at(schedule, state, 800) == pytest.approx(1e-3)  # the decay starts here
    # Halfway through the last fifth, the cosine is halfway down.
    assert rate_at(schedule, state, 900) == pytest.approx(0.51e-3)
    assert rate_at(schedule, state, 1000) == pytest.approx(0.02e-3)
    rates = [rate_at(schedule, state, step) for step in range(800, 1001, 20)]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == len(rates)
    # The time budget moves it too: 95% of the budget spent is 3/4 through the decay.
    budget.seconds, budget.spent = 100.0, 95.0
    expected = 1e-3 * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * 0.75)))
    assert rate_at(schedule, state, 100) == pytest.approx(expected, rel=1e-3)


def test_the_time_budget_ends_the_decay_when_it_binds_first(model):
    # 10 epochs would take 1,000 steps, but the budget says the run is 3/4 over after 100.
    schedule, state, budget = schedule_over(model, budget_seconds=100.0, spent=75.0)
    expected = 1e-3 * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * 0.75)))
    assert rate_at(schedule, state, 100) == pytest.approx(expected, rel=1e-3)
    budget.spent = 500.0  # past the budget: the floor, never below
    assert rate_at(schedule, state, 100) == pytest.approx(0.02e-3)


def test_a_short_run_warms_up_for_a_tenth_of_its_steps(model):
    schedule, state, _ = schedule_over(model, total_steps=50, warmup_steps=200)
    assert schedule.warmup_steps == 5
    assert rate_at(schedule, state, 4) == pytest.approx(1e-3)


def test_a_resumed_run_continues_the_schedule_where_it_stood(model):
    schedule, state, _ = schedule_over(model)
    before = rate_at(schedule, state, 612)
    resumed, resumed_state, _ = schedule_over(model)
    resumed_state.epoch, resumed_state.batch = 6, 12  # what a checkpoint restores
    resumed.on_train_batch_begin(0)
    assert float(model.optimizer.learning_rate) == pytest.approx(before)
    logs = {}
    resumed.on_epoch_end(6, logs)
    assert logs["learning_rate"] == pytest.approx(before)


def test_the_schedule_holds_its_peak_until_the_decay_begins(model):
    schedule, state, budget = schedule_over(model, decay_share=0.2)
    state.epoch = 7
    assert schedule.holding()
    state.epoch = 8  # 800 of 1,000 steps: the decay begins
    assert not schedule.holding()
    state.epoch, budget.seconds, budget.spent = 1, 100.0, 85.0  # or the budget says so
    assert not schedule.holding()
    whole_run, _, _ = schedule_over(model, decay_share=1.0)
    assert not whole_run.holding()  # the whole-run cosine decays from the start


def test_early_stopping_spends_no_patience_while_the_rate_holds_its_peak(model):
    # The validation loss of an LSTM at its peak rate: best after epoch 1, then up for three
    # epochs; the decay, from epoch 5, brings it below the best. Without the hold, patience 2
    # would end the run after epoch 3 and the decay would never come.
    holding = {"now": True}
    early_stopping = attached(
        callbacks.ResumableEarlyStopping(patience=2, holding=lambda: holding["now"]), model
    )
    early_stopping.on_train_begin()
    for epoch, val_loss in enumerate([2.0, 1.5, 1.6, 1.7, 1.8]):
        early_stopping.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
        assert not model.stop_training
    assert early_stopping.get_state() == {"best": 1.5, "best_epoch": 1, "wait": 0}

    holding["now"] = False  # the decay has begun: patience counts again
    early_stopping.on_epoch_end(5, {"loss": 1.0, "val_loss": 1.4})
    assert early_stopping.best_changed and early_stopping.best_epoch == 5
    early_stopping.on_epoch_end(6, {"loss": 1.0, "val_loss": 1.45})
    assert not model.stop_training
    early_stopping.on_epoch_end(7, {"loss": 1.0, "val_loss": 1.46})
    assert model.stop_training and early_stopping.stopped_epoch == 7


def end_epochs(early_stopping, state, val_losses, first_epoch=0):
    """End epochs of 100 steps with these validation losses, as `fit` would: early stopping
    sees the state of the epoch that just ended (the checkpoint moves it on after)."""
    for epoch, val_loss in enumerate(val_losses, start=first_epoch):
        state.epoch, state.batch = epoch, 100
        early_stopping.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})


@pytest.mark.parametrize("on_plateau", [True, False])
def test_a_plateau_at_the_peak_rate_begins_the_decay_there(model, on_plateau, capsys):
    schedule, state, _ = schedule_over(model, decay_share=0.2, on_plateau=on_plateau)
    early_stopping = attached(
        callbacks.ResumableEarlyStopping(
            patience=2, holding=schedule.holding, on_plateau=schedule.begin_decay
        ),
        model,
    )
    early_stopping.on_train_begin()
    end_epochs(early_stopping, state, [2.0, 1.5])
    assert state.decay_start is None and schedule.holding()
    end_epochs(early_stopping, state, [1.6], first_epoch=2)  # no better: a plateau
    # The plateau's epoch spends no patience either way: it ended at the peak rate.
    assert early_stopping.wait == 0 and not model.stop_training
    if not on_plateau:  # the decay waits for the last fifth
        assert state.decay_start is None and schedule.holding()
        assert "did not improve" not in capsys.readouterr().out
        assert rate_at(schedule, state, 650) == pytest.approx(1e-3)
        return
    assert state.decay_start == pytest.approx(0.3) and not schedule.holding()
    assert "Epoch 3: the validation loss did not improve" in capsys.readouterr().out
    # The cosine keeps its length, a fifth of the run, from step 300: halfway down at 400, at
    # its floor from 500 to the run's end.
    assert rate_at(schedule, state, 300) == pytest.approx(1e-3)
    assert rate_at(schedule, state, 400) == pytest.approx(0.51e-3)
    assert rate_at(schedule, state, 500) == pytest.approx(0.02e-3)
    assert rate_at(schedule, state, 1000) == pytest.approx(0.02e-3)
    # A later plateau does not move it; a resumed run reads it from the checkpointed state.
    end_epochs(early_stopping, state, [1.7], first_epoch=3)
    assert state.decay_start == pytest.approx(0.3) and early_stopping.wait == 1
    restored = checkpoints.RunState(**dataclasses.asdict(state))
    resumed, _, _ = schedule_over(model, decay_share=0.2, on_plateau=True, state=restored)
    assert rate_at(resumed, restored, 400) == pytest.approx(0.51e-3)

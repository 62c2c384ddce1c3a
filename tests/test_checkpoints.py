"""Checkpoints: a write killed midway leaves the previous checkpoint, old files are deleted,
another config's checkpoint is recognised, and the history is written like Keras' CSVLogger."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SMALL, small_model
from seq2seq_keras import checkpoints


def test_a_checkpoint_write_that_dies_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    store = checkpoints.CheckpointStore(tmp_path)
    model = small_model()
    saved = [weights.copy() for weights in model.get_weights()]
    store.save(model, checkpoints.RunState(epoch=1, batch=4), SMALL, None, best_changed=False)

    model.set_weights([np.zeros_like(weights) for weights in saved])

    def dies_midway(path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise OSError("killed while writing")

    monkeypatch.setattr(model, "save_weights", dies_midway)
    with pytest.raises(OSError, match="killed while writing"):
        store.save(model, checkpoints.RunState(epoch=1, batch=9), SMALL, None, best_changed=False)

    fresh = small_model()
    state, best_weights = store.load(fresh)
    assert (state.epoch, state.batch, best_weights) == (1, 4, None)
    for loaded, expected in zip(fresh.get_weights(), saved):
        np.testing.assert_array_equal(loaded, expected)

    monkeypatch.undo()
    store.save(model, checkpoints.RunState(epoch=2), SMALL, [np.ones(3)], best_changed=True)
    record = store.read()
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [checkpoints.CHECKPOINT_FILENAME, record["weights"], record["best_weights"]]
    )


def test_a_checkpoint_restores_the_dropout_masks_to_come(tmp_path):
    # Keras' weights files leave the dropout's random state out: without it, a resumed run
    # would draw the masks a fresh model draws, not those the interrupted run would have.
    config = dataclasses.replace(
        SMALL, architecture="transformer", transformer_layers=1, transformer_width=16,
        transformer_heads=2, transformer_feed_forward=32, reverse_source=False,
    )
    ids = np.arange(4, 16, dtype="int64").reshape(2, 6)
    model = small_model(config)
    for _ in range(3):  # a run some batches in
        model((ids, ids), training=True)
    store = checkpoints.CheckpointStore(tmp_path)
    store.save(model, checkpoints.RunState(epoch=1), config, None, best_changed=False)
    expected = model((ids, ids), training=True)

    fresh = small_model(config)
    assert not np.array_equal(fresh((ids, ids), training=True), expected)
    store.load(fresh)
    np.testing.assert_array_equal(fresh((ids, ids), training=True), expected)


def test_only_a_checkpoint_of_the_same_config_is_a_run_to_resume(tmp_path):
    store = checkpoints.CheckpointStore(tmp_path)
    assert not store.holds_run_of(SMALL)
    store.pointer.write_text(json.dumps({"config": json.loads(SMALL.to_json())}))
    assert store.holds_run_of(SMALL)
    assert not store.holds_run_of(dataclasses.replace(SMALL, units=16))


def test_the_scratch_directory_is_hidden_beside_the_model_directory(tmp_path):
    assert checkpoints.partial_directory(tmp_path / "eng_spa") == tmp_path / ".eng_spa.partial"


def test_history_csv_is_in_the_csv_logger_format():
    history = [
        {"epoch": 0, "val_loss": 2.5, "loss": 3.0},
        {"epoch": 1, "val_loss": 2.25, "loss": 2.0},
    ]
    assert checkpoints.history_csv(history) == "epoch,loss,val_loss\n0,3.0,2.5\n1,2.0,2.25\n"

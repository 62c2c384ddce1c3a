"""Checkpoints: where an unfinished training run stands, saved so that a kill loses little.

A run for `model_dir` keeps its checkpoints in a fixed scratch directory beside it,
`.NAME.partial/` (`partial_directory`), so the same command started again finds them:

1. `RunState` is the position in the run (epoch, batch, time spent, history, early stopping).
2. `CheckpointStore` saves the weights, the optimizer state, the dropout's random state and
   the `RunState`, and loads them back; every file is flushed to disk and the pointer file
   `checkpoint.json` is replaced atomically, last (`storage.write_atomically`).
3. `history_csv` writes the finished epochs' logs as `history.csv`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import keras
import numpy as np

from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.storage import flush_to_disk, write_atomically

# The one file that says which checkpoint files are current; replaced atomically, last.
CHECKPOINT_FILENAME = "checkpoint.json"


def partial_directory(model_dir: Path) -> Path:
    """The fixed scratch directory of an unfinished run for `model_dir`."""
    return model_dir.with_name(f".{model_dir.name}.partial")


@dataclasses.dataclass
class RunState:
    """Where an unfinished run stands: what a checkpoint holds besides the weights."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches finished in epoch `epoch`
    seconds: float = 0.0  # time spent in `fit`, over all runs so far (for the time budget)
    finished: bool = False  # stopped early or out of time: only the model is left to write
    history: list = dataclasses.field(default_factory=list)  # logs of each finished epoch
    early_stopping: dict = dataclasses.field(default_factory=dict)
    # The run's share done when a plateau began the learning rate's decay (None: it has not).
    decay_start: float | None = None


class CheckpointStore:
    """A run's checkpoints in its scratch directory, written so that a kill never corrupts one.

    A checkpoint is a weights file (model and optimizer variables), the best epoch's weights
    (`.npz`) and `checkpoint.json`, which names both files and holds the `RunState`, the
    dropout's random states and the config. New files get new names; `checkpoint.json` is written to a temporary file, flushed
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

    def holds_run_of(self, config: Seq2SeqConfig) -> bool:
        """Whether the checkpoint is of a run of `config`: another config's weights may not even
        fit the model, and its batches would not be this run's."""
        return self.exists() and self.read()["config"] == json.loads(config.to_json())

    def load(self, model: keras.Model) -> tuple[RunState, list[np.ndarray] | None]:
        """Load the checkpoint's weights and optimizer state into `model`; return the run state."""
        record = self.read()
        if model.optimizer is not None and not model.optimizer.built:
            # The optimizer's variables (Adam's moments) must exist before they can be loaded.
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.directory / record["weights"])
        for variable, value in zip(random_states(model), record.get("random_states", [])):
            variable.assign(value)
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
        """Save a new checkpoint, then delete the files of the previous one.

        The best weights are written again only when they changed (`best_changed`); otherwise
        the new checkpoint names the previous best file.
        """
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
            "random_states": [variable.numpy().tolist() for variable in random_states(model)],
        }
        write_atomically(self.pointer, json.dumps(record, indent=1))
        self.delete_files_except(weights_name, best_name)

    def delete_files_except(self, *current: str | None) -> None:
        """Delete the weights of older checkpoints: the files `checkpoint.json` no longer names."""
        for path in self.directory.glob("*"):
            if re.fullmatch(r"(weights|best)-\d+\..*", path.name) and path.name not in current:
                path.unlink()


def random_states(model: keras.Model) -> list:
    """The model's dropout random states (the `keras.random.SeedGenerator` variables), in a
    fixed order. Keras' weights files leave them out; a resumed run without them would draw
    other dropout masks from the restart on than the run it continues."""
    return [variable for variable in model.variables if variable.path.endswith("seed_generator_state")]


def history_csv(history: list[dict]) -> str:
    """Epoch logs in `keras.callbacks.CSVLogger`'s format: an `epoch` column, then sorted keys."""
    keys = sorted({key for row in history for key in row if key != "epoch"})
    lines = [",".join(["epoch", *keys])]
    for row in history:
        lines.append(",".join([str(row["epoch"]), *(repr(row.get(key, "")) for key in keys)]))
    return "\n".join(lines) + "\n"

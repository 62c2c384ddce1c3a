import json
import os
import subprocess
import sys

import pytest

from seq2seq_keras.decode import Translator
from seq2seq_keras.model_dir import (
    ModelDirError,
    TrainedModel,
    load_trained_model,
    publish_directory,
    staging_directory,
    write_model_files,
)

from conftest import PROJECT_ROOT, TINY_PAIRS

SENTENCES = [source for source, _ in TINY_PAIRS] + ["", "Unknown words here?"]


def write_tiny_model_dir(tiny, destination):
    staging = staging_directory(destination)
    trained = TrainedModel(tiny.config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary)
    write_model_files(staging, trained)
    publish_directory(staging, destination)
    return trained


def test_a_fresh_process_translates_exactly_as_the_training_process(overfit_model, tmp_path):
    model_dir = tmp_path / "model"
    write_tiny_model_dir(overfit_model, model_dir)
    here = Translator(
        overfit_model.config,
        overfit_model.model,
        overfit_model.source_vocabulary,
        overfit_model.target_vocabulary,
    ).translate(SENTENCES)
    completed = subprocess.run(
        [sys.executable, "-m", "seq2seq_keras", "translate", "--model-dir", str(model_dir)],
        input="\n".join(SENTENCES) + "\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split("\n")[:-1] == here
    assert "¿Cómo estás?" in here


def test_loaded_model_has_the_same_config_vocabularies_and_weights(overfit_model, tmp_path):
    trained = write_tiny_model_dir(overfit_model, tmp_path / "model")
    loaded = load_trained_model(tmp_path / "model")
    assert loaded.config == trained.config
    assert loaded.source_vocabulary == trained.source_vocabulary
    assert loaded.target_vocabulary[:4] == ["", "[UNK]", "[START]", "[END]"]
    for saved, restored in zip(trained.training_model.weights, loaded.training_model.weights):
        assert (saved.numpy() == restored.numpy()).all()
    assert json.loads((tmp_path / "model" / "config.json").read_text())["units"] == 32


def test_publishing_replaces_an_old_model_and_leaves_no_temporary_files(tmp_path):
    destination = tmp_path / "model"
    destination.mkdir()
    (destination / "old.txt").write_text("old")
    staging = staging_directory(destination)
    (staging / "new.txt").write_text("new")
    publish_directory(staging, destination)
    assert sorted(p.name for p in destination.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_untrained_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelDirError, match="missing: model.keras.*python -m seq2seq_keras train"):
        load_trained_model(tmp_path)

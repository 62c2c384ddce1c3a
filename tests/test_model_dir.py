import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seq2seq_keras.decoding_options import DEFAULT_BEAM_WIDTH
from seq2seq_keras.translator import Translator
from seq2seq_keras.model_dir import (
    ModelDirError,
    TrainedModel,
    load_trained_model,
    save_model_directory,
)

from conftest import PROJECT_ROOT, TINY_PAIRS

SENTENCES = [source for source, _ in TINY_PAIRS] + ["", "Unknown words here?"]


def write_tiny_model_dir(tiny, destination):
    trained = TrainedModel(tiny.config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary)
    save_model_directory(destination, trained)
    return trained


@pytest.mark.parametrize("tiny_name", ["overfit_model", "wordpiece_model"])
def test_a_fresh_process_translates_exactly_as_the_training_process(tiny_name, request, tmp_path):
    tiny = request.getfixturevalue(tiny_name)
    model_dir = tmp_path / "model"
    write_tiny_model_dir(tiny, model_dir)
    # `translate` searches with the default beam; so does the Python call here.
    here = Translator(
        tiny.config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary
    ).translate(SENTENCES, beam_width=DEFAULT_BEAM_WIDTH)
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


def test_extra_files_are_published_with_the_model(overfit_model, tmp_path):
    trained = write_tiny_model_dir(overfit_model, tmp_path / "first")

    def add_history(staging):
        (staging / "history.csv").write_text("epoch\n")

    save_model_directory(tmp_path / "model", trained, add_files=add_history)
    assert (tmp_path / "model" / "history.csv").read_text() == "epoch\n"
    assert load_trained_model(tmp_path / "model").config == trained.config


def test_a_failed_save_keeps_the_old_model_directory_and_leaves_no_temporary_files(
    overfit_model, tmp_path
):
    model_dir = tmp_path / "model"
    trained = write_tiny_model_dir(overfit_model, model_dir)
    before = {path.name: path.read_bytes() for path in model_dir.iterdir()}

    def fails(staging):
        (staging / "history.csv").write_text("epoch\n")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_model_directory(model_dir, trained, add_files=fails)
    assert {path.name: path.read_bytes() for path in model_dir.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_an_untrained_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelDirError, match="missing: model.keras.*python -m seq2seq_keras train"):
        load_trained_model(tmp_path)


# --- Model directories written by an older version -----------------------------------------------

OLDER_MODEL_DIRS = Path(__file__).parent / "fixtures" / "model_dirs_acc5721"


@pytest.mark.parametrize("name", ["classic", "luong"])
def test_a_model_directory_of_an_older_version_loads_and_translates_the_same(name):
    recorded = json.loads((OLDER_MODEL_DIRS / "translations.json").read_text(encoding="utf-8"))
    trained = load_trained_model(OLDER_MODEL_DIRS / name)
    translator = Translator.from_trained(trained)
    sentences = recorded["sentences"]
    assert translator.translate(sentences) == recorded[name]["greedy"]
    assert translator.translate(sentences, beam_width=3) == recorded[name]["beam3"]
    assert recorded[name]["greedy"][:2] == ["Gracias.", "¿Cómo estás?"]  # a trained model

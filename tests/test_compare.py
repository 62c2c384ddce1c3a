"""Comparing models: held-out references, attention alignments, and the `plot` command."""

import dataclasses

import numpy as np
import pytest

from seq2seq_keras import compare, data as data_lib
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.model_dir import HISTORY_FILENAME, TrainedModel, write_model_files

from conftest import TINY_PAIRS, build_tiny
from test_cli import run_cli
from test_plots import PNG_SIGNATURE

# spa-eng English→Spanish: pairs of the validation and test splits.
VALIDATION_PAIRS, TEST_PAIRS, TEST_SOURCES = 2394, 2358, 2065


def trained_model(tiny) -> TrainedModel:
    return TrainedModel(tiny.config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary)


@pytest.fixture(scope="module")
def attention_tiny(tiny_config):
    """A tiny Luong-attention model trained until it knows most of `TINY_PAIRS`."""
    config = dataclasses.replace(tiny_config, attention="luong", reverse_source=False)
    return build_tiny(config, TINY_PAIRS, epochs=60)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, overfit_model, attention_tiny):
    """A classic and an attention model directory, each with a two-epoch history."""
    root = tmp_path_factory.mktemp("models")
    directories = []
    for name, tiny in (("classic", overfit_model), ("luong", attention_tiny)):
        directory = root / name
        directory.mkdir()
        write_model_files(directory, trained_model(tiny))
        (directory / HISTORY_FILENAME).write_text(
            "epoch,loss,masked_accuracy,val_loss,val_masked_accuracy\n"
            "0,3.0,0.2,3.1,0.2\n1,2.0,0.4,2.4,0.35\n", encoding="utf-8"
        )
        directories.append(directory)
    return directories


def test_labels_are_directory_names_with_the_parent_where_they_clash():
    labels = compare.model_labels(["runs/a/model", "runs/b/model", "runs/luong"])
    assert labels == ["a/model", "b/model", "luong"]


def test_held_out_references_pool_validation_and_test_without_overlap(spa_eng_path):
    config = Seq2SeqConfig()
    test = compare.held_out_references(config, spa_eng_path)
    validation = compare.held_out_references(config, spa_eng_path, ("validation",))
    pooled = compare.held_out_references(config, spa_eng_path, ("validation", "test"))
    assert len(test) == TEST_SOURCES
    assert sum(map(len, test.values())) == TEST_PAIRS
    assert sum(map(len, validation.values())) == VALIDATION_PAIRS
    assert not set(test) & set(validation)
    assert pooled == {**validation, **test}
    with pytest.raises(ValueError, match="train"):
        compare.held_out_references(config, spa_eng_path, ("train",))


def test_long_sources_keeps_sources_of_at_least_that_many_words():
    references = {"one two three": ["a"], "one two three four": ["b"], "x": ["c"]}
    assert compare.long_sources(references, min_words=4) == {"one two three four": ["b"]}
    assert compare.long_sources(references, min_words=1) == references


def test_attention_alignments_label_every_row_and_column(attention_tiny):
    sentences = ["Where is the bathroom?", "I have a dog.", "   "]
    alignments = compare.attention_alignments(trained_model(attention_tiny), sentences)
    where, dog, blank = alignments
    assert where.source_tokens == ["where", "is", "the", "bathroom", "?"]
    assert dog.source_tokens == ["i", "have", "a", "dog", "."]
    for alignment in (where, dog):
        assert alignment.target_tokens[-1] == "[END]"
        assert alignment.weights.shape == (
            len(alignment.target_tokens), len(alignment.source_tokens)
        )
        np.testing.assert_allclose(alignment.weights.sum(axis=1), 1.0, atol=1e-5)
    assert blank.source_tokens == [] and blank.weights.size == 0


def test_a_model_without_attention_has_no_alignments(overfit_model):
    with pytest.raises(ValueError, match="no attention"):
        compare.attention_alignments(trained_model(overfit_model), ["Thank you."])


@pytest.mark.slow
def test_the_plot_command_draws_every_figure(model_dirs, spa_eng_path, tmp_path):
    out = tmp_path / "figures"
    completed = run_cli(
        "plot", "--out", str(out), "--data", str(spa_eng_path),
        *[argument for directory in model_dirs for argument in ("--model-dir", str(directory))],
        "--sentence", "Where is the bathroom?", "--sentence", "I have a dog.",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    expected = {compare.BLEU_FIGURE, compare.CURVES_FIGURE, "attention_luong_1.png",
                "attention_luong_2.png"}
    assert {path.name for path in out.iterdir()} == expected  # no attention map for classic
    assert sorted(completed.stdout.split()) == sorted(str(out / name) for name in expected)
    for name in expected:
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)


def test_plotting_a_directory_that_is_not_a_model_is_one_clear_error(tmp_path):
    completed = run_cli("plot", "--out", str(tmp_path), "--model-dir", str(tmp_path / "nothing"))
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in completed.stderr

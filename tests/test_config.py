import dataclasses

import pytest

from seq2seq_keras.config import Seq2SeqConfig


def test_json_round_trip_keeps_every_field(tmp_path):
    config = dataclasses.replace(Seq2SeqConfig(), units=77, reverse=True, learning_rate=0.005)
    config.save(tmp_path)
    assert Seq2SeqConfig.load(tmp_path) == config


def test_missing_keys_default_and_unknown_keys_are_rejected():
    # A config without "tokenizer" predates the choice: its model was trained on words, while
    # a new config defaults to WordPiece.
    assert Seq2SeqConfig().tokenizer == "wordpiece"
    # Nor had it the factorized output layer, a learning-rate schedule, label smoothing, a
    # short decay or one begun by a plateau, and it grouped its batches by the longer side.
    assert Seq2SeqConfig().bucket_by == "both"
    assert Seq2SeqConfig.from_json('{"units": 8}') == Seq2SeqConfig(
        units=8, tokenizer="word", output_projection_dim=0, learning_rate_schedule="constant",
        label_smoothing=0.0, decay_share=1.0, decay_on_plateau=False, bucket_by="longer",
    )
    assert Seq2SeqConfig.from_json(Seq2SeqConfig().to_json()).tokenizer == "wordpiece"
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        Seq2SeqConfig.from_json('{"colour": "blue"}')


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Seq2SeqConfig().units = 3


def test_the_output_projection_defaults_to_half_the_units_and_is_recorded(tmp_path):
    assert Seq2SeqConfig().output_projection_dim == 256
    assert Seq2SeqConfig(units=32).output_projection_dim == 16
    assert Seq2SeqConfig(units=32, output_projection_dim=0).output_projection_dim == 0
    Seq2SeqConfig(units=32).save(tmp_path)
    assert '"output_projection_dim": 16' in (tmp_path / "config.json").read_text()


def test_the_rnn_family_decays_over_the_last_fifth_and_the_transformer_over_the_whole_run(
        tmp_path):
    assert Seq2SeqConfig().decay_share == 0.2
    assert Seq2SeqConfig(attention="luong").decay_share == 0.2
    assert Seq2SeqConfig(architecture="transformer").decay_share == 1.0
    assert Seq2SeqConfig(architecture="transformer", decay_share=0.5).decay_share == 0.5
    Seq2SeqConfig().save(tmp_path)  # recorded, so a later change of default cannot move it
    assert '"decay_share": 0.2' in (tmp_path / "config.json").read_text()


@pytest.mark.parametrize("field, value", [
    ("label_smoothing", 1.0), ("label_smoothing", -0.1), ("output_projection_dim", -1),
    ("learning_rate_schedule", "linear"), ("warmup_steps", -1),
    ("final_learning_rate_fraction", 1.5), ("decay_share", 0.0), ("decay_share", 1.5),
])
def test_a_recipe_setting_out_of_range_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        Seq2SeqConfig(**{field: value})


def test_a_shared_vocabulary_has_one_size_for_both_sides():
    assert Seq2SeqConfig(shared_vocabulary=True).source_vocab_size == 8000
    shared = Seq2SeqConfig(shared_vocabulary=True, target_vocab_size=6000)
    assert (shared.source_vocab_size, shared.target_vocab_size) == (6000, 6000)
    assert Seq2SeqConfig.from_json(shared.to_json()) == shared  # reloads as it was saved
    assert not Seq2SeqConfig.from_json('{"units": 8}').shared_vocabulary
    with pytest.raises(ValueError, match="one size"):
        Seq2SeqConfig(shared_vocabulary=True, source_vocab_size=5000, target_vocab_size=6000)

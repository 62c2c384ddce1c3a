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
    assert Seq2SeqConfig.from_json('{"units": 8}') == Seq2SeqConfig(units=8, tokenizer="word")
    assert Seq2SeqConfig.from_json(Seq2SeqConfig().to_json()).tokenizer == "wordpiece"
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        Seq2SeqConfig.from_json('{"colour": "blue"}')


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Seq2SeqConfig().units = 3

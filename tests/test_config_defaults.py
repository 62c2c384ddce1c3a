import dataclasses

import pytest

from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.config_defaults import (
    ARCHITECTURE_DEFAULTS,
    CHOICES,
    LEGACY_DEFAULTS,
    default_transformer_dropout,
)

CONFIG_FIELDS = {field.name for field in dataclasses.fields(Seq2SeqConfig)}


def test_every_choice_names_a_config_field_whose_default_is_one_of_its_choices():
    assert set(CHOICES) <= CONFIG_FIELDS
    for field, choices in CHOICES.items():
        assert getattr(Seq2SeqConfig(), field) in choices


@pytest.mark.parametrize("field", sorted(CHOICES))
def test_a_value_outside_a_fields_choices_is_refused_with_the_choices(field):
    choices = CHOICES[field]
    with pytest.raises(ValueError, match=f"{field} must be one of .*{choices[-1]}.*'other'"):
        Seq2SeqConfig(**{field: "other"})


def test_architecture_defaults_fill_the_fields_a_config_leaves_unset():
    assert set(ARCHITECTURE_DEFAULTS) <= CONFIG_FIELDS
    for architecture in CHOICES["architecture"]:
        config = Seq2SeqConfig(architecture=architecture)
        for field, defaults in ARCHITECTURE_DEFAULTS.items():
            assert getattr(config, field) == defaults[architecture]


def test_a_config_json_without_the_legacy_fields_loads_with_their_legacy_values():
    assert set(LEGACY_DEFAULTS) <= CONFIG_FIELDS
    old = Seq2SeqConfig.from_json("{}")
    assert {field: getattr(old, field) for field in LEGACY_DEFAULTS} == LEGACY_DEFAULTS


def test_the_transformer_drops_out_less_in_float32_than_in_mixed_precision():
    assert default_transformer_dropout("float32") < default_transformer_dropout("mixed_bfloat16")
    assert default_transformer_dropout("mixed_bfloat16") == default_transformer_dropout(
        "mixed_float16")

import logging

import numpy as np
import pytest
import tensorflow as tf

from seq2seq_keras import data as data_lib
from seq2seq_keras import text as text_lib
from seq2seq_keras.decode import (
    Translator,
    build_inference_models,
    detokenize,
    greedy_decode_stepwise,
)

from conftest import TINY_PAIRS, padded


def translator_for(tiny) -> Translator:
    return Translator(tiny.config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary)


def test_inference_models_reproduce_teacher_forced_probabilities(overfit_model):
    tiny = overfit_model
    source_ids = padded(tiny.tokens.source_ids)
    target_ids = padded(tiny.tokens.target_ids)
    decoder_input_ids, next_ids = target_ids[:, :-1], target_ids[:, 1:]
    expected = tiny.model([source_ids, decoder_input_ids]).numpy()  # (batch, steps, vocab)

    models = build_inference_models(tiny.model)
    state_h, state_c = models.encoder(tf.constant(source_ids))
    for step in range(decoder_input_ids.shape[1]):
        tokens = tf.constant(decoder_input_ids[:, step : step + 1])
        probabilities, state_h, state_c = models.decoder_step([tokens, state_h, state_c])
        real = next_ids[:, step] != text_lib.PAD_ID
        difference = np.abs(probabilities.numpy()[:, 0, :] - expected[:, step, :])[real]
        assert difference.max() <= 1e-5, f"step {step}: max difference {difference.max()}"


def test_overfit_model_translates_every_training_pair_exactly(overfit_model):
    sources = [source for source, _ in TINY_PAIRS]
    expected = [target for _, target in TINY_PAIRS]
    assert translator_for(overfit_model).translate(sources) == expected


def test_stepwise_decoder_stops_at_end_and_respects_max_length(overfit_model):
    models = build_inference_models(overfit_model.model)
    source_ids = padded(overfit_model.tokens.source_ids)
    short = greedy_decode_stepwise(models, source_ids, max_length=2)
    assert short.shape == (len(source_ids), 2)
    full = greedy_decode_stepwise(models, source_ids, max_length=12)
    for row in full:
        ends = np.flatnonzero(row == text_lib.END_ID)
        assert ends.size >= 1 and (row[ends[0] + 1 :] == text_lib.PAD_ID).all()


def test_detokenize_writes_spanish_punctuation_and_capitalizes():
    vocabulary = tf.constant(["", "[UNK]", "[START]", "[END]", "¿", "qué", "hora", "es", "?", "¡", "él", "!", ".", "y"])
    ids = tf.constant(
        [
            [4, 5, 6, 7, 8, 3, 0, 0],
            [9, 10, 11, 3, 13, 13, 13, 13],  # everything after [END] is dropped
            [2, 5, 12, 0, 0, 0, 0, 0],  # no [END]: stops at the padding, drops [START]
            [3, 5, 0, 0, 0, 0, 0, 0],
        ]
    )
    texts = [text.decode("utf-8") for text in detokenize(ids, vocabulary).numpy()]
    assert texts == ["¿Qué hora es?", "¡Él!", "Qué.", ""]


def test_blank_and_symbol_only_sentences_translate_to_empty(overfit_model):
    assert translator_for(overfit_model).translate(["", "   ", "😀", "Thank you."]) == [
        "",
        "",
        "",
        "Gracias.",
    ]


def test_unknown_words_do_not_crash(overfit_model):
    (translation,) = translator_for(overfit_model).translate(["Zyxwv qwerty blorp?"])
    assert isinstance(translation, str)


def test_over_long_sentences_are_truncated_with_a_warning(overfit_model, caplog):
    translator = translator_for(overfit_model)
    long_sentence = " ".join(["Thank you."] * 40)
    with caplog.at_level(logging.WARNING):
        (translation,) = translator.translate([long_sentence])
    assert "truncated" in caplog.text
    assert isinstance(translation, str)


def test_non_strings_are_a_clear_type_error(overfit_model):
    translator = translator_for(overfit_model)
    with pytest.raises(TypeError, match="sentence 1 is a int"):
        translator.translate(["Hello.", 42])
    with pytest.raises(TypeError, match="not one string"):
        translator.translate("Hello.")

"""The translator: strings in, strings out, the same through Python, the module and a SavedModel."""

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

from seq2seq_keras.decoding_options import MAX_BEAM_WIDTH
from seq2seq_keras.text import UNK_ID
from seq2seq_keras.graph_decoder import GraphDecoder
from seq2seq_keras.export import export_saved_model
from seq2seq_keras.model_dir import TrainedModel, save_model_directory
from seq2seq_keras.translator import (
    BEAM_SIGNATURE,
    SERVING_SIGNATURE,
    Translator,
    TranslatorModule,
    as_utf8_list,
)

from conftest import PROJECT_ROOT, TINY_PAIRS, build_tiny


def translator_for(tiny) -> Translator:
    return Translator(tiny.config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary)


def test_overfit_model_translates_every_training_pair_exactly(overfit_model):
    sources = [source for source, _ in TINY_PAIRS]
    expected = [target for _, target in TINY_PAIRS]
    assert translator_for(overfit_model).translate(sources) == expected


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


def test_translator_decodes_with_the_graph_and_offers_beam_search(overfit_model):
    sources = [source for source, _ in TINY_PAIRS]
    targets = [target for _, target in TINY_PAIRS]
    args = (overfit_model.config, overfit_model.model, overfit_model.source_vocabulary,
            overfit_model.target_vocabulary)
    translator = Translator(*args)
    assert isinstance(translator.module.decoder, GraphDecoder)
    assert translator.translate(sources) == targets
    assert translator.translate(sources, beam_width=4) == targets
    for width in (0, MAX_BEAM_WIDTH + 1):
        with pytest.raises(ValueError, match="beam_width"):
            translator.translate(sources, beam_width=width)
    for alpha in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="length alpha must be a finite number >= 0"):
            Translator(*args, length_alpha=alpha)


# --- One translator: Python, the module and the SavedModel agree -------------------------------

# Inputs that have broken translators: empty and blank lines, emoji, invalid UTF-8 (as bytes
# and as the lone surrogates Python makes of them), control characters, a very long line,
# look-alike Unicode forms, and plain sentences between them.
HOSTILE = [
    "",
    "   ",
    "🙂🙂",
    b"caf\xe9 au lait",
    "caf\udce9 au lait",
    "Thank you.\x00\x07",
    "hello " * 300,
    "Ｔｈａｎｋ ｙｏｕ．",
    "Thank you.",
    "— • ©",
    "Good night.",
]


@pytest.fixture(scope="module")
def trained(overfit_model) -> TrainedModel:
    tiny = overfit_model
    return TrainedModel(tiny.config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary)


@pytest.fixture(scope="module")
def model_dir(trained, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("translator") / "model"
    save_model_directory(directory, trained)
    return directory


def texts(outputs) -> list[str]:
    return [text.decode("utf-8") for text in outputs["translations"].numpy()]


@pytest.mark.parametrize("trained_name", ["trained", "wordpiece_trained"])
def test_translator_module_and_reloaded_savedmodel_give_the_same_strings(
    trained_name, request, tmp_path
):
    trained = request.getfixturevalue(trained_name)
    translator = Translator.from_trained(trained)
    module = TranslatorModule.from_trained(trained)
    reloaded = tf.saved_model.load(str(export_saved_model(trained, "hostile", tmp_path)))
    batch = tf.constant(as_utf8_list(HOSTILE))

    from_python = translator.translate(HOSTILE)
    assert from_python == texts(module(batch))
    assert from_python == texts(reloaded.signatures[SERVING_SIGNATURE](sentences=batch))
    beam = translator.translate(HOSTILE, beam_width=3)
    assert beam == texts(module.translate_beam(batch, 3))
    assert beam == texts(reloaded.signatures[BEAM_SIGNATURE](sentences=batch, beam_width=3))
    # The defined results: nothing to translate gives "", known sentences translate, and the
    # two spellings of the same invalid bytes are repaired alike.
    assert from_python[:3] == ["", "", ""] and from_python[9] == ""
    assert from_python[8] == "Gracias." and from_python[10] == "Buenas noches."
    assert from_python[3] == from_python[4]
    assert from_python[7] == "Gracias."  # full-width letters are NFKC-normalized
    if trained.config.tokenizer == "wordpiece":  # nothing but words reaches the user
        for translation in from_python + beam:
            assert not {"[UNK]", "[START]", "[END]"} & set(translation.split()), translation
            assert "##" not in translation, translation


def test_a_translation_does_not_depend_on_its_batch(trained, splits):
    # `translate` batches sentences of similar length together; the module below decodes
    # them all in one batch, in their order, padded to the longest.
    translator = Translator.from_trained(trained)
    sentences = [source for source, _ in splits.validation[:300]] + HOSTILE
    batch = tf.constant(as_utf8_list(sentences))
    assert translator.translate(sentences, batch_size=7) == texts(translator.module(batch))
    beam = texts(translator.module.translate_beam(batch, 3))
    assert translator.translate(sentences[::-1], beam_width=3, batch_size=16) == beam[::-1]


def test_sampling_is_reproducible_by_seed_and_low_temperature_is_greedy(trained):
    translator = Translator.from_trained(trained)
    sources = [source for source, _ in TINY_PAIRS]
    hot = translator.translate(sources, temperature=5.0, seed=3)
    assert hot == translator.translate(sources, temperature=5.0, seed=3)
    assert hot != translator.translate(sources, temperature=5.0, seed=4)
    assert translator.translate(sources, temperature=1e-3, seed=1) == translator.translate(sources)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        translator.translate(sources, temperature=0.0)


# --- The command line ----------------------------------------------------------------------------


def test_translate_repairs_invalid_utf8_on_stdin_like_the_export(model_dir, trained):
    lines = b"Thank you.\ncaf\xe9 au lait\n\xff\xfe\nGood night.\n"
    # Greedy, as the module's serving signature (the command's default is beam 4).
    completed = run_cli_bytes("translate", "--beam", "1", "--model-dir", str(model_dir),
                              stdin=lines)
    assert completed.returncode == 0, completed.stderr.decode("utf-8", "replace")[-2000:]
    module = TranslatorModule.from_trained(trained)
    expected = texts(module(tf.constant(lines.split(b"\n")[:-1])))
    assert completed.stdout.decode("utf-8").split("\n")[:-1] == expected
    assert expected[0] == "Gracias." and expected[2] == ""


def test_translate_samples_from_the_command_line(model_dir, trained):
    sources = [source for source, _ in TINY_PAIRS[:6]]
    flags = ("translate", "--model-dir", str(model_dir), "--sample", "--temperature", "5",
             "--seed", "11", *sources)
    completed = run_cli_bytes(*flags)
    assert completed.returncode == 0, completed.stderr.decode("utf-8", "replace")[-2000:]
    expected = Translator.from_trained(trained).translate(sources, temperature=5.0, seed=11)
    assert completed.stdout.decode("utf-8").split("\n")[:-1] == expected
    refused = run_cli_bytes("translate", "--model-dir", str(model_dir), "--sample", "--beam",
                            "4", "Hello.")
    assert refused.returncode == 2 and b"--sample" in refused.stderr


def test_tensorflow_start_up_logs_only_with_verbose(model_dir):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = run_cli_bytes("translate", "--model-dir", str(model_dir), "Thank you.", env=env)
    assert quiet.returncode == 0 and quiet.stdout == "Gracias.\n".encode()
    assert quiet.stderr == b"", quiet.stderr.decode("utf-8", "replace")[-2000:]
    loud = run_cli_bytes("--verbose", "translate", "--model-dir", str(model_dir), "Thank you.",
                         env=env)
    assert loud.returncode == 0 and loud.stdout == "Gracias.\n".encode()
    assert loud.stderr != b""  # TensorFlow's own start-up lines


def test_plain_keras_loads_the_training_model_after_importing_the_package(model_dir):
    script = (
        "import sys, keras, seq2seq_keras\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "print(model.name, [layer.name for layer in model.layers if layer.weights])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(model_dir / "model.keras")], capture_output=True,
        text=True, cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "seq2seq_lstm" in completed.stdout and "'decoder_dense'" in completed.stdout


def run_cli_bytes(*args, stdin: bytes = b"", env=None):
    """`python -m seq2seq_keras ARGS` in a fresh process; standard streams as bytes."""
    env = {**(env if env is not None else os.environ), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "seq2seq_keras", *args], input=stdin, capture_output=True,
        cwd=PROJECT_ROOT, env=env, timeout=600,
    )


# --- WordPiece: the same guarantees with case-kept subword pieces ------------------------------


@pytest.fixture(scope="module")
def wordpiece_trained(wordpiece_model) -> TrainedModel:
    tiny = wordpiece_model
    return TrainedModel(tiny.config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary)


def test_wordpiece_model_translates_every_training_pair_with_its_case(wordpiece_trained):
    translator = Translator.from_trained(wordpiece_trained)
    assert translator.translate([source for source, _ in TINY_PAIRS]) == [
        target for _, target in TINY_PAIRS
    ]


def test_a_made_up_name_reaches_the_decoder_as_pieces_not_unk(wordpiece_trained):
    translator = Translator.from_trained(wordpiece_trained)
    (ids,) = translator.source_ids(["Zbigniew lives in Gdańsk."]).to_list()
    assert UNK_ID not in ids and len(ids) > 4


def test_attention_over_wordpiece_pieces_labels_each_piece(tiny_config):
    config = dataclasses.replace(
        tiny_config, tokenizer="wordpiece", attention="luong", reverse_source=False,
        source_vocab_size=160,
        target_vocab_size=200, max_source_length=16, max_target_length=16,
    )
    tiny = build_tiny(config, TINY_PAIRS, epochs=0)  # untrained: the labels are the point
    module = TranslatorModule(config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary)
    outputs = module.translate_with_attention(tf.constant(["Zbigniew is here."]))
    source_tokens = [token.decode("utf-8") for token in outputs["source_tokens"].numpy()[0]]
    (ids,) = module.tokenize(tf.constant(["Zbigniew is here."])).to_list()
    assert source_tokens == [tiny.source_vocabulary[i] for i in ids]
    assert any(token.startswith("##") for token in source_tokens)  # the name, in pieces
    weights = outputs["attention_weights"].numpy()[0]
    assert weights.shape[1] == len(source_tokens)
    row_sums = weights.sum(axis=1)  # 1 while decoding, 0 after [END]
    assert row_sums[0] == pytest.approx(1.0, abs=1e-4)
    assert all(total == pytest.approx(1.0, abs=1e-4) or total == 0.0 for total in row_sums)

"""The LiteRT export and its TensorFlow-free runtime: files, ops, and the SavedModel's behaviour.

`LiteTranslator` must translate as the SavedModel does: the same ids from the same text (on
every source sentence of the data file, for both tokenizers), the same greedy and beam search,
the same odd-input results, for every model variant; and it must run without TensorFlow.
"""

import contextlib
import dataclasses
import io
import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from seq2seq_keras import text as text_lib
from seq2seq_keras import tokenizers
from seq2seq_keras.cli import main as cli_main
from seq2seq_keras.lite import LiteTranslator
from seq2seq_keras.lite import search as lite_search
from seq2seq_keras.lite.export import export_litert
from seq2seq_keras.search import DEFAULT_LENGTH_ALPHA
from seq2seq_keras.lite.runtime_files import (
    ENCODER_SIGNATURE,
    MODEL_FILENAME,
    RUNTIME_FILENAME,
    SOURCE_VOCABULARY_FILENAME,
    STEP_SIGNATURE,
    TARGET_VOCABULARY_FILENAME,
)
from seq2seq_keras.lite.text import WordPieceText, WordText
from seq2seq_keras.model_dir import TrainedModel, write_model_files
from seq2seq_keras.translator import Translator

from conftest import PROJECT_ROOT, TINY_PAIRS, build_tiny
from test_translator import HOSTILE

SOURCES = [source for source, _ in TINY_PAIRS]
TARGETS = [target for _, target in TINY_PAIRS]

# Run by a fresh interpreter: translate with the LiteRT runtime, report whether TensorFlow (or
# Keras) got imported. argv: the export directory, a JSON file of sentences.
FRESH_PROCESS_SCRIPT = """
import json, sys
from seq2seq_keras.lite import LiteTranslator

translator = LiteTranslator(sys.argv[1])
sentences = json.loads(open(sys.argv[2], encoding="utf-8").read())
print(json.dumps({
    "greedy": translator.translate(sentences),
    "beam": translator.translate(sentences, beam_width=4),
    "imported": sorted(m for m in ("tensorflow", "keras", "tensorflow_text") if m in sys.modules),
}))
"""


def as_trained(tiny) -> TrainedModel:
    """The tiny model, its translator decoding in float32: what the LiteRT export computes."""
    trained = TrainedModel(tiny.config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary)
    return trained.with_decode_precision("float32")


@pytest.fixture(scope="module", params=["word", "wordpiece"])
def exported(request, overfit_model, wordpiece_model, tmp_path_factory):
    """(trained model, its LiteRT version directory) for each tokenizer."""
    tiny = overfit_model if request.param == "word" else wordpiece_model
    trained = as_trained(tiny)
    root = tmp_path_factory.mktemp(f"lite_{request.param}")
    return trained, export_litert(trained, "translator", root)


# --- The export ---------------------------------------------------------------------------------


def test_a_bad_length_alpha_is_refused_before_anything_is_converted(overfit_model, tmp_path):
    for alpha in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="length alpha must be a finite number >= 0"):
            export_litert(as_trained(overfit_model), "translator", tmp_path, length_alpha=alpha)
    assert not (tmp_path / "translator").exists()


def test_the_export_writes_a_new_version_of_the_flatbuffer_vocabularies_and_runtime_json(
    overfit_model, tmp_path
):
    trained = as_trained(overfit_model)
    first = export_litert(trained, "translator", tmp_path)
    second = export_litert(trained, "translator", tmp_path, length_alpha=1.5)
    assert first == tmp_path / "translator" / "litert" / "1"
    assert second == tmp_path / "translator" / "litert" / "2"
    assert sorted(path.name for path in first.iterdir()) == sorted(
        [MODEL_FILENAME, RUNTIME_FILENAME, SOURCE_VOCABULARY_FILENAME, TARGET_VOCABULARY_FILENAME]
    )
    assert sorted(path.name for path in (tmp_path / "translator" / "litert").iterdir()) == ["1", "2"]
    spec = json.loads((first / RUNTIME_FILENAME).read_text())
    config = trained.config
    assert (spec["tokenizer"], spec["max_source_length"], spec["max_decode_length"]) == (
        config.tokenizer, config.max_source_length, config.max_decode_length
    )
    assert spec["state_names"] == ["state_00", "state_01"]  # an LSTM's h and c
    assert spec["length_alpha"] == DEFAULT_LENGTH_ALPHA
    assert json.loads((second / RUNTIME_FILENAME).read_text())["length_alpha"] == 1.5
    vocabulary = (first / TARGET_VOCABULARY_FILENAME).read_text(encoding="utf-8")
    assert vocabulary.split("\n")[:-1] == trained.target_vocabulary


def test_the_flatbuffer_has_two_signatures_of_builtin_ops_only(exported):
    _, path = exported
    interpreter = Interpreter(model_path=str(path / MODEL_FILENAME))
    signatures = interpreter.get_signature_list()
    assert set(signatures) == {ENCODER_SIGNATURE, STEP_SIGNATURE}
    assert signatures[ENCODER_SIGNATURE]["inputs"] == ["source_ids"]
    assert sorted(signatures[STEP_SIGNATURE]["inputs"]) == ["state_00", "state_01", "token_ids"]
    ops = model_ops(path / MODEL_FILENAME)
    assert {"WHILE", "FULLY_CONNECTED", "GATHER", "LOG"} <= ops  # the encoder's loop, the step
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops


def model_ops(path) -> set[str]:
    """The op names of every subgraph of a flatbuffer, as LiteRT's analyzer lists them."""
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
        tf.lite.experimental.Analyzer.analyze(model_path=str(path))
    return set(re.findall(r"Op#\d+ (\w+)\(", listing.getvalue()))


def test_a_name_that_is_a_path_or_a_model_directory_is_refused(overfit_model, tmp_path):
    from seq2seq_keras.export import ExportError

    trained = as_trained(overfit_model)
    with pytest.raises(ExportError, match="not usable"):
        export_litert(trained, "../escape", tmp_path)
    (tmp_path / "model").mkdir()
    write_model_files(tmp_path / "model", trained)
    with pytest.raises(ExportError, match="trained model directory"):
        export_litert(trained, "model", tmp_path)


def test_int8_weights_make_the_file_smaller_and_still_translate(overfit_model, tmp_path):
    trained = as_trained(overfit_model)
    float_path = export_litert(trained, "translator", tmp_path)
    int8_path = export_litert(trained, "translator", tmp_path, quantize="int8")
    float_size = (float_path / MODEL_FILENAME).stat().st_size
    int8_size = (int8_path / MODEL_FILENAME).stat().st_size
    assert int8_size < 0.6 * float_size  # the tiny model's graph is a large part of its file
    assert json.loads((int8_path / RUNTIME_FILENAME).read_text())["quantize"] == "int8"
    translations = LiteTranslator(int8_path).translate(SOURCES)
    assert sum(t == r for t, r in zip(translations, TARGETS)) >= len(TARGETS) * 3 // 4


def test_the_cli_exports_litert_and_refuses_quantize_for_a_savedmodel(overfit_model, tmp_path, capsys):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    write_model_files(model_dir, as_trained(overfit_model))
    status = cli_main(["export", "--model-dir", str(model_dir), "--name", "tiny",
                       "--export-dir", str(tmp_path / "exports"), "--format", "litert",
                       "--quantize", "int8"])
    assert status == 0
    out = capsys.readouterr().out
    assert f"exported to {tmp_path / 'exports' / 'tiny' / 'litert' / '1'} (LiteRT" in out
    assert "weights int8" in out
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["export", "--model-dir", str(model_dir), "--name", "tiny", "--quantize", "int8"])
    assert exit_info.value.code == 2
    assert "--quantize applies to --format litert only" in capsys.readouterr().err


# --- The runtime translates as the SavedModel does ---------------------------------------------


def test_greedy_and_beam_translations_equal_the_translators(exported):
    trained, path = exported
    lite = LiteTranslator(path)
    translator = Translator.from_trained(trained)
    assert lite.translate(SOURCES) == translator.translate(SOURCES) == TARGETS
    for width in (2, 4):
        assert lite.translate(SOURCES, beam_width=width) == translator.translate(
            SOURCES, beam_width=width
        )


def test_odd_input_gets_the_translators_results(exported):
    trained, path = exported
    lite = LiteTranslator(path)
    translator = Translator.from_trained(trained)
    assert lite.translate(HOSTILE) == translator.translate(HOSTILE)
    assert lite.translate(HOSTILE, beam_width=3) == translator.translate(HOSTILE, beam_width=3)
    assert lite.translate([]) == []


def test_bad_arguments_get_clear_errors(exported, tmp_path):
    _, path = exported
    lite = LiteTranslator(path)
    with pytest.raises(TypeError, match="not one string"):
        lite.translate("Thank you.")
    with pytest.raises(TypeError, match="sentence 1 is a int"):
        lite.translate(["Thank you.", 3])
    with pytest.raises(ValueError, match="beam_width"):
        lite.translate(["Thank you."], beam_width=0)
    with pytest.raises(FileNotFoundError, match="version directory"):
        LiteTranslator(tmp_path)


def test_a_fresh_process_translates_without_importing_tensorflow(exported, tmp_path):
    trained, path = exported
    sentences = [*SOURCES[:5], "Zbigniew lives in Gdańsk.", "🙂", ""]
    sentences_file = tmp_path / "sentences.json"
    sentences_file.write_text(json.dumps(sentences), encoding="utf-8")
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(path), str(sentences_file)],
        capture_output=True, text=True, env=environment, check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["imported"] == []
    translator = Translator.from_trained(trained)
    assert result["greedy"] == translator.translate(sentences)
    assert result["beam"] == translator.translate(sentences, beam_width=4)


@pytest.mark.parametrize(
    "switches",
    [
        dict(cell="gru"),
        dict(num_layers=2, reverse_source=False),
        dict(bidirectional=True, reverse_source=False),
        dict(attention="luong", reverse_source=False),
        dict(attention="bahdanau", bidirectional=True, reverse_source=False),
    ],
    ids=["gru", "stacked", "bidirectional", "luong", "bahdanau-bidirectional"],
)
def test_every_variant_exports_and_translates_as_the_translator(tiny_config, switches, tmp_path):
    tiny = build_tiny(dataclasses.replace(tiny_config, **switches), TINY_PAIRS, epochs=40)
    trained = as_trained(tiny)
    lite = LiteTranslator(export_litert(trained, "variant", tmp_path))
    translator = Translator.from_trained(trained)
    sentences = SOURCES + ["The dog is here.", "I love the cat."]
    assert lite.translate(sentences) == translator.translate(sentences)
    assert lite.translate(sentences, beam_width=3) == translator.translate(sentences, beam_width=3)


# --- Host-side text processing equals the graph's -----------------------------------------------


def vocabulary_list(tokenizer) -> list[str]:
    return [piece.decode("utf-8") for piece in tokenizer.vocabulary.numpy()]


def graph_ids(tokenizer, sentences: list[str]) -> list[list[int]]:
    ids = []
    for start in range(0, len(sentences), 4096):
        batch = tf.constant(sentences[start : start + 4096])
        ids += tokenizer.tokenize(text_lib.repair_utf8(batch)).to_list()
    return ids


def odd_sentences(seed: int = 5) -> list[str]:
    """Text no corpus sentence has: symbols, scripts, controls, long words, markers typed."""
    rng = random.Random(seed)
    alphabet = "aAñÑéÉüÜçßİıΣσς¿¡?!.,;:'’`´-—\"()[]#@/\\ \t\n\x00\x07\u00a0\u2028\u200b🙂Ωж漢ǆﬁ①½"
    random_texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
                    for _ in range(300)]
    return random_texts + [
        "[START] [END] [UNK] ##ing", "x" * 101, "é" * 51, "Ｔｈａｎｋ ｙｏｕ．", "İstanbul ΣΟΦΙΑ",
        "Zbigniew lives in Gdańsk.", "l'été à l’école", "ﬁne ① ½", "  ", "",
    ]


def test_wordpiece_ids_equal_the_graphs_on_every_source_of_the_data(learned, splits):
    source, _ = learned
    host = WordPieceText(vocabulary_list(source))
    sentences = [s for split in (splits.train, splits.validation, splits.test) for s, _ in split]
    sentences += odd_sentences()
    expected = graph_ids(source, sentences)
    mismatches = [s for s, ids in zip(sentences, expected) if host.tokenize(s) != ids]
    assert not mismatches, mismatches[:5]


def test_word_ids_equal_the_graphs_on_every_source_of_the_data(splits):
    sources = [source for source, _ in splits.train]
    vocabulary = text_lib.build_vocabulary(sources, 10_000)
    graph = tokenizers.WordTokenizer(vocabulary)
    host = WordText(vocabulary)
    sentences = [s for split in (splits.train, splits.validation, splits.test) for s, _ in split]
    sentences += odd_sentences()
    expected = graph_ids(graph, sentences)
    mismatches = [s for s, ids in zip(sentences, expected) if host.tokenize(s) != ids]
    assert not mismatches, mismatches[:5]


@pytest.mark.parametrize("kind", ["word", "wordpiece"])
def test_detokenized_text_equals_the_graphs_for_any_ids(learned, splits, kind):
    if kind == "wordpiece":
        graph = learned[1]
    else:
        graph = tokenizers.WordTokenizer(
            text_lib.build_vocabulary([t for _, t in splits.train[:5000]], 2000,
                                      reserved=(text_lib.START_TOKEN, text_lib.END_TOKEN))
        )
    vocabulary = vocabulary_list(graph)
    host = WordPieceText(vocabulary) if kind == "wordpiece" else WordText(vocabulary)
    rng = np.random.default_rng(3)
    # Random ids, with the markers, padding and `[UNK]` (ids 0-3) made frequent.
    ids = rng.integers(0, len(vocabulary), size=(500, 12))
    ids = np.where(rng.random(ids.shape) < 0.2, rng.integers(0, 4, size=ids.shape), ids)
    expected = [t.decode("utf-8") for t in graph.detokenize(tf.constant(ids)).numpy()]
    assert [host.detokenize(row) for row in ids] == expected


def test_bad_utf8_is_repaired_like_the_graph(learned):
    source, _ = learned
    host = WordPieceText(vocabulary_list(source))
    raw = [b"caf\xe9 au lait", b"\xff\xfeHello", b"abc\xe2\x82", b"\xed\xa0\x80 surrogate", b"ok\xc3"]
    expected = source.tokenize(text_lib.repair_utf8(tf.constant(raw))).to_list()
    assert [host.tokenize(text.decode("utf-8", errors="replace")) for text in raw] == expected


# --- The host searches ---------------------------------------------------------------------------


def test_top_k_orders_ties_as_tensorflow_does():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, size=(6, 40)).astype(np.float32)  # many ties
    values[0, :] = -np.inf
    for k in (1, 3, 8, 40):
        expected = tf.math.top_k(values, k=k).indices.numpy()
        np.testing.assert_array_equal(lite_search.top_k(values, k), expected)

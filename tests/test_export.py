"""The exported SavedModel: layout, completeness, portability, bad input and threads."""

import concurrent.futures
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from seq2seq_keras import export
from seq2seq_keras import data as data_lib
from seq2seq_keras.decoding_options import MAX_BEAM_WIDTH
from seq2seq_keras.translator import (
    BEAM_SIGNATURE,
    SERVING_SIGNATURE,
    Translator,
    TranslatorModule,
)
from seq2seq_keras.model import DECODER_LSTM
from seq2seq_keras.model_dir import TrainedModel, write_model_files

from conftest import TINY_PAIRS

SOURCES = [source for source, _ in TINY_PAIRS]
TARGETS = [target for _, target in TINY_PAIRS]
LONG_TEXT = (" ".join(["Thank you."] * 1000))[:10_000]  # 10,000 characters, ~3,000 tokens

FRESH_PROCESS_SCRIPT = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the NormalizeUTF8 op)

model = tf.saved_model.load(sys.argv[1])
sentences = tf.constant(json.loads(open(sys.argv[2], encoding="utf-8").read()))
greedy = model.signatures["serving_default"](sentences=sentences)
beam = model.signatures["beam_search"](sentences=sentences, beam_width=tf.constant(4))
texts = lambda outputs: [text.decode("utf-8") for text in outputs["translations"].numpy()]
print(json.dumps({
    "greedy": texts(greedy),
    "greedy_scores": greedy["scores"].numpy().tolist(),
    "beam": texts(beam),
    "project_modules": sorted(name for name in sys.modules if name.startswith("seq2seq")),
}))
"""


@pytest.fixture(scope="module")
def trained(overfit_model) -> TrainedModel:
    tiny = overfit_model
    return TrainedModel(tiny.config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary)


@pytest.fixture(scope="module")
def translator(trained) -> Translator:
    return Translator(
        trained.config, trained.training_model, trained.source_vocabulary,
        trained.target_vocabulary,
    )


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    return export.export_saved_model(trained, "eng_spa", tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported))


@pytest.fixture(scope="module")
def sentences(spa_eng_path) -> list[str]:
    """The tiny pairs, 60 real test-split sentences, and the awkward ones (all valid text)."""
    pairs = data_lib.read_pairs(spa_eng_path, max_pairs=20000).pairs
    real = [source for source, _ in data_lib.split_pairs(pairs).test[:60]]
    awkward = ["", "   ", "😀🎉", "Thank you 😀.", "¿Quién? ñandú ÉL", LONG_TEXT,
               "a" * 10_000]
    return SOURCES + real + awkward


def greedy_texts(model, sentences) -> list[str]:
    outputs = model.signatures[SERVING_SIGNATURE](sentences=tf.constant(sentences))
    return [text.decode("utf-8") for text in outputs["translations"].numpy()]


def translate_in_fresh_process(version_dir: Path, sentences: list[str], tmp_path: Path) -> dict:
    """`FRESH_PROCESS_SCRIPT`'s results: the SavedModel loaded by a process without the package."""
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS_SCRIPT, encoding="utf-8")
    inputs = tmp_path / "sentences.json"
    inputs.write_text(json.dumps(sentences, ensure_ascii=False), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run(
        [sys.executable, str(script), str(version_dir), str(inputs)],
        capture_output=True, text=True, encoding="utf-8", cwd=tmp_path, env=env, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def op_types(version_dir: Path) -> set[str]:
    """Every op type of the SavedModel's graph, functions included."""
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    graph = saved_model.meta_graphs[0].graph_def
    return {node.op for node in graph.node} | {
        node.op for function in graph.library.function for node in function.node_def
    }


# --- Layout ----------------------------------------------------------------------------------


def test_export_writes_the_next_version_and_leaves_no_temporary_directory(exported, trained):
    assert exported.name == "1" and exported.parent.name == "eng_spa"
    assert (exported / "saved_model.pb").is_file() and (exported / "variables").is_dir()
    assert oct(exported.stat().st_mode & 0o777) == oct(0o755)
    second = export.export_saved_model(trained, "eng_spa", exported.parent.parent)
    assert second == exported.parent / "2"
    assert sorted(path.name for path in exported.parent.iterdir()) == ["1", "2"]


def test_publishing_never_overwrites_an_existing_version(tmp_path, monkeypatch):
    base = tmp_path / "model"
    for version in ("1", "2"):
        (base / version).mkdir(parents=True)
        (base / version / "saved_model.pb").write_text(f"version {version}")
    staging = base / ".export-tmp-x"
    staging.mkdir()
    (staging / "saved_model.pb").write_text("new")
    monkeypatch.setattr(export, "next_version", lambda base: 1)  # a stale number, as in a race
    assert export.publish_version(staging, base) == base / "3"
    contents = [(base / version / "saved_model.pb").read_text() for version in "123"]
    assert contents == ["version 1", "version 2", "new"]


def test_a_failed_export_leaves_nothing_behind(trained, tmp_path, monkeypatch):
    def broken_save(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_saved_model(trained, "eng_spa", tmp_path)
    assert list((tmp_path / "eng_spa").iterdir()) == []


def test_bad_names_and_model_directories_are_refused(trained, tmp_path):
    for name in ("", "../up", "a/b", ".hidden"):
        with pytest.raises(export.ExportError, match="not usable"):
            export.export_saved_model(trained, name, tmp_path)
    model_dir = tmp_path / "eng_spa"  # a training model directory, as `train` writes
    model_dir.mkdir()
    write_model_files(model_dir, trained)
    with pytest.raises(export.ExportError, match="trained model directory"):
        export.export_saved_model(trained, "eng_spa", tmp_path)


# --- Complete and portable -------------------------------------------------------------------


def test_the_module_translates_like_the_translator_greedy_and_beam(trained, translator, sentences):
    serving = TranslatorModule.from_trained(trained)
    outputs = serving(tf.constant(sentences))
    texts = [text.decode("utf-8") for text in outputs["translations"].numpy()]
    assert texts == translator.translate(sentences)
    assert texts[: len(TARGETS)] == TARGETS
    beam = serving.translate_beam(tf.constant(sentences), tf.constant(4))
    beam_texts = [text.decode("utf-8") for text in beam["translations"].numpy()]
    assert beam_texts == translator.translate(sentences, beam_width=4)


def test_the_beam_search_signature_keeps_the_length_alpha_it_was_exported_with(
    trained, translator, sentences, tmp_path
):
    alpha = 3.0  # far from the default: longer translations rank higher
    version_dir = export.export_saved_model(trained, "eng_spa", tmp_path, length_alpha=alpha)
    served = tf.saved_model.load(str(version_dir)).signatures[BEAM_SIGNATURE](
        sentences=tf.constant(sentences), beam_width=tf.constant(4)
    )
    texts = [text.decode("utf-8") for text in served["translations"].numpy()]
    assert texts == Translator.from_trained(trained, alpha).translate(sentences, beam_width=4)
    assert texts != translator.translate(sentences, beam_width=4)  # the default's ranking


def test_a_fresh_process_with_only_tensorflow_and_text_translates_the_same(
    exported, loaded, translator, sentences, tmp_path
):
    result = translate_in_fresh_process(exported, sentences, tmp_path)
    assert result["project_modules"] == []  # the package was neither imported nor importable
    assert result["greedy"] == translator.translate(sentences)
    in_process = loaded.signatures[SERVING_SIGNATURE](sentences=tf.constant(sentences))
    np.testing.assert_allclose(result["greedy_scores"], in_process["scores"].numpy(), rtol=1e-6)
    assert result["beam"][: len(TARGETS)] == TARGETS


def test_saved_model_cli_lists_both_signatures(exported):
    cli = Path(sys.executable).parent / "saved_model_cli"
    completed = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(exported)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    for expected in ("signature_def['serving_default']", "signature_def['beam_search']",
                     "inputs['sentences']", "inputs['beam_width']", "outputs['translations']",
                     "outputs['scores']", "DT_STRING"):
        assert expected in completed.stdout


def test_the_graph_needs_only_core_ops_and_normalize_utf8(exported):
    ops = op_types(exported)
    assert not any(op.startswith("Cudnn") for op in ops)
    assert {op for op in ops if not hasattr(tf.raw_ops, op)} == {"NormalizeUTF8"}


def test_a_wordpiece_export_uses_serving_ops_and_translates_the_same_in_a_fresh_process(
    wordpiece_model, sentences, tmp_path
):
    tiny = wordpiece_model
    trained = TrainedModel(tiny.config, tiny.model, tiny.source_vocabulary, tiny.target_vocabulary)
    version_dir = export.export_saved_model(trained, "pieces", tmp_path / "exports")
    # tensorflow-text's ops, all in the ops_lib that TensorFlow Serving's model server links.
    assert {op for op in op_types(version_dir) if not hasattr(tf.raw_ops, op)} == {
        "NormalizeUTF8", "FastWordpieceTokenizeWithOffsets", "TFText>FastWordpieceDetokenize"
    }
    result = translate_in_fresh_process(version_dir, sentences, tmp_path)
    assert result["greedy"] == Translator.from_trained(trained).translate(sentences)
    assert result["beam"][: len(TARGETS)] == TARGETS  # with their case: "¿Cómo estás?"


def test_an_export_made_with_a_gpu_visible_has_no_cudnn_kernel(trained, tmp_path, monkeypatch):
    # Keras' LSTM picks its cuDNN kernel when TensorFlow lists a GPU; make it believe so.
    keras_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")
    monkeypatch.setattr(keras_rnn, "_is_gpu_available", lambda: True)
    # Control: calling the trained LSTM layer now puts a cuDNN-only op into the graph …
    lstm = trained.training_model.get_layer(DECODER_LSTM)
    traced = tf.function(lambda vectors: lstm(vectors)).get_concrete_function(
        tf.TensorSpec([None, None, trained.config.embedding_dim])
    )
    graph = traced.graph.as_graph_def()
    control_ops = {node.op for node in graph.node} | {
        node.op for function in graph.library.function for node in function.node_def
    }
    assert any(op.startswith("Cudnn") for op in control_ops)
    # … but the export steps the cells, so its graph has none and runs on this CPU.
    version_dir = export.export_saved_model(trained, "gpu_built", tmp_path)
    assert not any(op.startswith("Cudnn") for op in op_types(version_dir))
    monkeypatch.undo()
    assert greedy_texts(tf.saved_model.load(str(version_dir)), SOURCES[:3]) == TARGETS[:3]


# --- No input crashes the signature ----------------------------------------------------------


def test_awkward_inputs_have_defined_outputs(loaded):
    serve = loaded.signatures[SERVING_SIGNATURE]
    empty = serve(sentences=tf.constant([], tf.string))
    assert empty["translations"].shape == (0,) and empty["scores"].shape == (0,)
    only_blank = serve(sentences=tf.constant(["", "  ", "🎉"]))  # no source token at all
    assert only_blank["translations"].numpy().tolist() == [b"", b"", b""]

    truncated = " ".join(["Thank you."] * 4)  # the 12 tokens (max_source_length) kept
    inputs = ["", "   ", "\t\n", "😀🎉", "Thank you 😀.", b"Thank you.\xff\xfe\xc3",
              LONG_TEXT, "a" * 10_000, "Thank you."]
    outputs = serve(sentences=tf.constant(inputs))
    texts = [text.decode("utf-8") for text in outputs["translations"].numpy()]
    scores = outputs["scores"].numpy()
    assert texts[:4] == ["", "", "", ""] and (scores[:4] == 0).all()
    assert texts[4] == texts[5] == "Gracias."  # emoji and invalid bytes are dropped
    assert texts[6] == greedy_texts(loaded, [truncated])[0]
    assert isinstance(texts[7], str) and scores[7] < 0  # one unknown word, translated
    assert (scores[4:] < 0).all()


def test_beam_width_is_clipped_and_bad_shapes_are_refused(loaded):
    beam = loaded.signatures[BEAM_SIGNATURE]
    sentences = tf.constant(SOURCES[:6])

    def texts(width):
        outputs = beam(sentences=sentences, beam_width=tf.constant(width))
        return [text.decode("utf-8") for text in outputs["translations"].numpy()]

    assert texts(0) == texts(-3) == texts(1) == TARGETS[:6]
    assert texts(1000) == texts(MAX_BEAM_WIDTH) == TARGETS[:6]
    serve = loaded.signatures[SERVING_SIGNATURE]
    for wrong_shape in (tf.constant("Thank you."), tf.constant([["Thank you."]])):
        with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
            serve(sentences=wrong_shape)
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
        serve(sentences=tf.constant([1, 2]))


def test_eight_threads_get_what_serial_calls_get(loaded, sentences):
    batches = [sentences[start::8] for start in range(8)]
    serial = [greedy_texts(loaded, batch) for batch in batches]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            assert list(pool.map(lambda batch: greedy_texts(loaded, batch), batches)) == serial


def test_the_export_command_writes_a_version_and_reports_bad_names(trained, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    write_model_files(model_dir, trained)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "seq2seq_keras", "export", "--model-dir", str(model_dir), *args],
            capture_output=True, text=True, env=env, timeout=300,
        )

    completed = run("--name", "translator", "--export-dir", str(tmp_path / "exports"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"exported to {tmp_path / 'exports' / 'translator' / '1'}" in completed.stdout
    refused = run("--name", "../translator", "--export-dir", str(tmp_path / "exports"))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: model name")
    assert "Traceback" not in refused.stderr

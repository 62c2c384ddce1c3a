import os
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT
from seq2seq_keras import cli
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.decoding_options import DEFAULT_LENGTH_ALPHA


def run_cli(*args, stdin: str = "", env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "seq2seq_keras", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=PROJECT_ROOT,
        env=env,
        timeout=600,
    )


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.mark.parametrize("command", ["train", "translate", "evaluate", "export", "plot"])
def test_every_command_has_help(command):
    completed = run_cli(command, "--help")
    assert completed.returncode == 0
    assert "--model-dir" in completed.stdout


def test_train_help_lists_the_data_and_size_flags():
    text = run_cli("train", "--help").stdout
    for flag in ("--data", "--max-pairs", "--epochs", "--units", "--embedding-dim", "--reverse"):
        assert flag in text


def test_train_seed_flag_sets_the_config_seed_and_defaults_to_it():
    parse = lambda *flags: cli.config_from_args(cli.build_parser().parse_args(["train", *flags]))  # noqa: E731
    assert parse("--seed", "7").seed == 7
    assert parse().seed == Seq2SeqConfig().seed


def test_translating_with_an_untrained_directory_is_one_clear_error(tmp_path):
    completed = run_cli("translate", "--model-dir", str(tmp_path / "nothing"), "Hello.")
    assert completed.returncode == 2
    # TensorFlow's own start-up lines may precede it; ours is the last line, and alone.
    assert last_line(completed.stderr).startswith("error: ")
    assert "Traceback" not in completed.stderr


def test_training_on_a_missing_file_is_one_clear_error(tmp_path):
    completed = run_cli("train", "--data", str(tmp_path / "missing.tsv"), "--model-dir", str(tmp_path / "m"))
    assert completed.returncode == 2
    assert last_line(completed.stderr).startswith("error: ") and "--data PATH" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_decode_precision_is_a_choice_and_litert_refuses_bfloat16(tmp_path):
    wrong = run_cli("translate", "--decode-precision", "float16", "Hello.")
    assert wrong.returncode == 2 and "--decode-precision" in wrong.stderr
    litert = run_cli("export", "--name", "x", "--format", "litert", "--decode-precision",
                     "bfloat16", "--export-dir", str(tmp_path))
    assert litert.returncode == 2
    assert "LiteRT export computes in float32" in last_line(litert.stderr)
    assert "Traceback" not in litert.stderr


@pytest.mark.parametrize("value", ["0", "-3", "twelve"])
def test_min_words_must_be_a_whole_number_of_at_least_one(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["evaluate", "--min-words", value])
    assert exit_info.value.code == 2
    assert f"argument --min-words: {value!r} is not a whole number" in capsys.readouterr().err


class RecordingTranslator:
    """Stands in for a loaded translator: records each call's search, translates to "x"."""

    def __init__(self):
        self.calls = []

    def translate(self, sentences, beam_width=1, temperature=None, seed=0):
        self.calls.append((beam_width, temperature))
        return ["x"] * len(sentences)


@pytest.mark.parametrize("flags, search", [
    ((), (4, None)),  # beam 4 by default, as OpenNMT, fairseq and Marian
    (("--beam", "1"), (1, None)),  # greedy on request
    (("--beam", "7"), (7, None)),
    (("--sample", "--temperature", "0.5"), (1, 0.5)),  # sampling draws, no beam
])
def test_translate_searches_with_beam_4_unless_told_otherwise(monkeypatch, capsys, flags, search):
    translator = RecordingTranslator()
    monkeypatch.setattr(cli, "load_translator",
                        lambda model_dir, precision=None, alpha=DEFAULT_LENGTH_ALPHA: translator)
    assert cli.main(["translate", *flags, "Thank you."]) == 0
    assert translator.calls == [search] and capsys.readouterr().out == "x\n"


@pytest.mark.parametrize("command", ["translate", "evaluate"])
def test_the_length_alpha_reaches_the_translator(monkeypatch, command):
    loaded = []
    def load_translator(model_dir, precision=None, alpha=DEFAULT_LENGTH_ALPHA):
        loaded.append(alpha)
        raise SystemExit(0)  # the flag arrived; nothing to translate here
    monkeypatch.setattr(cli, "load_translator", load_translator)
    for flags, expected in [((), DEFAULT_LENGTH_ALPHA), (("--length-alpha", "1.5"), 1.5)]:
        with pytest.raises(SystemExit):
            sentences = ["Thank you."] if command == "translate" else []
            cli.main([command, *flags, *sentences])
        assert loaded[-1] == expected


@pytest.mark.parametrize("export_format", ["savedmodel", "litert"])
def test_the_length_alpha_reaches_the_export(monkeypatch, tmp_path, export_format):
    from seq2seq_keras import export, model_dir
    from seq2seq_keras.lite import export as lite_export
    from seq2seq_keras.lite.runtime_files import MODEL_FILENAME

    class Loaded:  # what run_export reads of a loaded model directory
        config = type("Config", (), {"has_attention": False})()

        def with_decode_precision(self, precision):
            return self

    exported = []
    def record(trained, name, root, *rest):
        exported.append(rest[-1])  # the length alpha, after --quantize for LiteRT
        (tmp_path / MODEL_FILENAME).write_bytes(b"")  # the LiteRT report reads its size
        return tmp_path
    monkeypatch.setattr(model_dir, "load_trained_model", lambda path: Loaded())
    monkeypatch.setattr(export, "export_saved_model", record)
    monkeypatch.setattr(lite_export, "export_litert", record)
    for flags, expected in [((), DEFAULT_LENGTH_ALPHA), (("--length-alpha", "1.5"), 1.5)]:
        cli.main(["export", "--model-dir", "runs/any", "--name", "translator",
                  "--format", export_format, *flags])
        assert exported[-1] == expected


@pytest.mark.parametrize("value", ["-0.5", "inf", "nan", "x"])
def test_a_length_alpha_below_zero_or_not_a_number_is_refused(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["translate", "--length-alpha", value, "Thank you."])
    assert exit_info.value.code == 2 and "not a number >= 0" in capsys.readouterr().err


def test_sampling_with_a_beam_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["translate", "--sample", "--beam", "4", "Thank you."])
    assert exit_info.value.code == 2 and "drop --beam" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.bfloat16  # one of its translations decodes with bfloat16 weights
def test_train_translate_evaluate_end_to_end(spa_eng_path, tmp_path, capsys):
    model_dir = tmp_path / "model"
    trained = run_cli(
        "train", "--data", str(spa_eng_path), "--max-pairs", "3000", "--epochs", "2",
        "--units", "32", "--embedding-dim", "16", "--model-dir", str(model_dir), "--verbose", "2",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "test split (greedy): BLEU" in trained.stdout
    assert "test split (beam 4): BLEU" in trained.stdout
    assert "sample translations (beam 4):\nThank you.  →" in trained.stdout
    assert "malformed lines skipped: none" in trained.stderr
    names = {path.name for path in model_dir.iterdir()}
    assert {"model.keras", "config.json", "source_vocabulary.txt", "target_vocabulary.txt",
            "history.csv", "training_curves.png"} <= names
    translated = run_cli("translate", "--model-dir", str(model_dir), stdin="Thank you.\n\nHello!\n")
    assert translated.returncode == 0, translated.stderr[-3000:]
    assert len(translated.stdout.split("\n")) == 4  # three lines and the final newline
    for precision in ("float32", "bfloat16"):
        translated = run_cli("translate", "--model-dir", str(model_dir), "--decode-precision",
                             precision, "Thank you.")
        assert translated.returncode == 0, translated.stderr[-3000:]
        assert translated.stdout.count("\n") == 1  # one translation (a tiny model's may be "")
    evaluated = run_cli("evaluate", "--model-dir", str(model_dir), "--data", str(spa_eng_path))
    assert evaluated.returncode == 0 and "source words" in evaluated.stdout
    # Its options, in this process (the same `main` a process runs, without another start-up).
    evaluate = ["evaluate", "--model-dir", str(model_dir), "--data", str(spa_eng_path)]
    capsys.readouterr()
    assert cli.main([*evaluate, "--beam", "1", "--min-words", "4"]) == 0
    long_only = capsys.readouterr().out
    assert "test split, sources of 4+ words (greedy): BLEU" in long_only
    first_bucket = long_only.split("source words")[1].split()[2]  # after "sentences BLEU"
    assert first_bucket == "4-6", long_only  # the 1-3 bucket is gone
    assert cli.main([*evaluate, "--min-words", "1000"]) == 2
    assert capsys.readouterr().err.strip().endswith("error: no test source has 1000 or more words.")

"""Every benchmark script starts: it imports what it needs and answers `--help`.

The benchmarks are run by hand, not by the tests, so a broken import would otherwise go
unnoticed until someone needs a number. Run as scripts, each has its own folder first on
`sys.path`, where `benchmarks/litert.py` would shadow the `litert` module TensorFlow tries to
import: each script must put the project root there instead before it imports anything else.

One fresh process runs every script's `--help` in turn, as `python SCRIPT --help` would (its
folder first on `sys.path`, `__name__ == "__main__"`), so TensorFlow is imported once, not once
a script; what that process cannot see, the order of a script's own lines, is read from its
source. The training benchmark's baseline, the step as the previous version built it, is
checked to be built that way.
"""

import importlib.util
import re
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

from conftest import PROJECT_ROOT, result_line
from seq2seq_keras import objective
from seq2seq_keras.config import Seq2SeqConfig
from seq2seq_keras.model import build_training_model

BENCHMARKS = PROJECT_ROOT / "benchmarks"
# Modules the scripts load, not scripts themselves.
HELPERS = {"decode_rnn.py", "decode_transformer.py"}
SCRIPTS = sorted(path for path in BENCHMARKS.glob("*.py") if path.name not in HELPERS)

# Runs each script named on the command line as `python SCRIPT --help` would and prints, per
# script, its exit status, what it printed, and what it left first on sys.path.
HELP_RUNNER = """
import contextlib, io, json, os, runpy, sys, traceback
results = {}
for script in sys.argv[1:]:
    sys.path[0] = os.path.dirname(script)
    sys.argv = [script, "--help"]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
    except Exception:  # a broken import fails its own script only
        code = traceback.format_exc()
    results[script] = {"code": code, "stdout": printed.getvalue(), "path0": sys.path[0]}
litert = sys.modules.get("litert")
results["litert module"] = getattr(litert, "__file__", None)
print("RESULT " + json.dumps(results))
"""
# What a script must do before anything imports TensorFlow: put the project root first.
PATH_FIX = re.compile(r"^sys\.path\[0\] = ", re.MULTILINE)
FIRST_PROJECT_IMPORT = re.compile(r"^(import (tensorflow|keras)|from seq2seq_keras)", re.MULTILINE)


@pytest.fixture(scope="module")
def help_results() -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", HELP_RUNNER, *map(str, SCRIPTS)], capture_output=True, text=True,
        cwd=PROJECT_ROOT, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return result_line(completed.stdout)


def test_there_are_benchmarks():
    assert {"train.py", "decode.py", "litert.py"} <= {path.name for path in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_benchmark_starts_and_has_help(script, help_results):
    result = help_results[str(script)]
    assert result["code"] == 0, result
    assert result["stdout"].startswith("usage:"), result["stdout"][:500]
    assert result["path0"] == str(PROJECT_ROOT)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_benchmark_puts_the_project_root_first_before_its_imports(script):
    source = script.read_text(encoding="utf-8")
    path_fix, first_import = PATH_FIX.search(source), FIRST_PROJECT_IMPORT.search(source)
    assert path_fix and first_import and path_fix.start() < first_import.start()


def test_tensorflow_found_its_own_litert_module(help_results):
    litert = help_results["litert module"]
    assert litert is None or str(BENCHMARKS) not in litert


def load_benchmark(name: str):
    """A benchmark script as a module, `sys.path` left as it was (a script run from the command
    line puts the project root first; imported here, that must not leak into other tests)."""
    saved = list(sys.path)
    try:
        path = BENCHMARKS / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # where its dataclasses look themselves up
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def test_the_training_benchmark_builds_the_previous_step_as_it_was(monkeypatch):
    # Its `previous` variant is the baseline of the speed ratios in docs/training.md. A switch
    # that sets a name the step no longer reads (the code it replaces moved) would time
    # today's step twice and report a ratio near 1: each must change the compiled model.
    benchmark = load_benchmark("train")
    small = Seq2SeqConfig(source_vocab_size=30, target_vocab_size=40, embedding_dim=8, units=16)

    def build(name: str):
        """The variant's model, its switches set (as in its own process) until the test ends."""
        variant = benchmark.VARIANTS[name]
        for owner, attribute, replacement in benchmark.variant_switches(variant):
            monkeypatch.setattr(owner, attribute, replacement)
        return build_training_model(benchmark.variant_config(variant, small))

    today = build("default")
    assert type(today.optimizer) is objective.FusedAdam
    assert today.label_smoothing == 0.1
    smoothed_today = smoothed_loss(today)
    previous = build("previous")
    assert isinstance(previous.loss, keras.losses.SparseCategoricalCrossentropy)
    assert type(previous.optimizer) is keras.optimizers.Adam
    assert previous.label_smoothing == 0.0
    assert previous.get_layer("decoder_dense").projection_dim == 0
    # and its batches grouped by the longer side, as the previous version grouped them
    configs = {name: benchmark.variant_config(benchmark.VARIANTS[name], small)
               for name in ("default", "previous", "longer_side")}
    assert configs["default"].bucket_by == "both"
    assert configs["previous"].bucket_by == configs["longer_side"].bucket_by == "longer"
    # The smoothing's two terms computed apart: the same number as today's one cross-entropy.
    two_terms = build("two_term_smoothing")
    assert two_terms.compute_loss.__func__ is benchmark.two_term_compute_loss
    two_terms.set_weights(today.get_weights())
    assert smoothed_loss(two_terms) == pytest.approx(smoothed_today, rel=1e-5)


def smoothed_loss(model) -> float:
    """The training loss of a model built on `test_the_training_benchmark…`'s small config."""
    source, decoder_input = tf.constant([[5, 6, 7, 0]]), tf.constant([[2, 11, 12, 0]])
    return float(model.compute_loss(y=tf.constant([[11, 12, 3, 0]]),
                                    y_pred=model([source, decoder_input])))

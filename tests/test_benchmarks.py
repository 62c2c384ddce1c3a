"""Every benchmark script starts: it imports what it needs and answers `--help`.

The benchmarks are run by hand, not by the tests, so a broken import would otherwise go
unnoticed until someone needs a number. Run as scripts, each has its own folder first on
`sys.path`, where `benchmarks/litert.py` would shadow the `litert` module TensorFlow tries to
import: each script must put the project root there instead before it imports TensorFlow.
"""

import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT

BENCHMARKS = PROJECT_ROOT / "benchmarks"
# Modules the scripts load, not scripts themselves.
HELPERS = {"decode_transformer.py"}
SCRIPTS = sorted(path for path in BENCHMARKS.glob("*.py") if path.name not in HELPERS)


def test_there_are_benchmarks():
    assert {"train.py", "decode.py", "litert.py"} <= {path.name for path in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_benchmark_starts_and_has_help(script):
    completed = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True,
        cwd=PROJECT_ROOT, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.startswith("usage:"), completed.stdout[:500]

"""The installed package: pyproject.toml, the `seq2seq-keras` command, installs without TensorFlow.

The venv the tests run in is made by `pip install -r requirements-dev.txt`, which installs this
folder (editable) from pyproject.toml, so the console command exists here as it does for a user.
A base or LiteRT-only install has no TensorFlow; a fresh interpreter whose imports of
TensorFlow fail stands in for one.
"""

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from seq2seq_keras import __version__, cli

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
TENSORFLOW_MODULES = ("tensorflow", "tensorflow_text", "keras")
# A fresh interpreter in which importing TensorFlow, tensorflow-text or Keras fails, as in a
# base or `[lite]` install; then it runs the given code.
WITHOUT_TENSORFLOW = f"""
import sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TENSORFLOW_MODULES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, NoTensorFlow())
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
        cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, timeout=300,
    )


def requirement_names(requirements: list[str]) -> set[str]:
    return {requirement.split("=")[0].split(">")[0].split("[")[0] for requirement in requirements}


def test_the_base_and_lite_installs_bring_no_tensorflow():
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    for install in (project["dependencies"], project["dependencies"] + extras["lite"]):
        assert not requirement_names(install) & {"tensorflow", "keras", "tensorflow-text"}
    assert "ai-edge-litert" in requirement_names(extras["lite"])
    assert {"tensorflow", "keras", "tensorflow-text"} <= requirement_names(extras["tensorflow"])


def test_the_requirements_files_install_the_extras_pyproject_lists():
    """One place lists the versions: the requirements files name pyproject's extras only."""
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    for name, expected in [("requirements.txt", "-e .[tensorflow,lite]"),
                           ("requirements-dev.txt", "-e .[tensorflow,lite,test]"),
                           ("requirements-lite.txt", ".[lite]")]:
        lines = [line for line in (PROJECT_ROOT / name).read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
        assert lines == [expected], name
        assert set(expected.split("[")[1].rstrip("]").split(",")) <= extras


def test_the_console_command_is_the_module_command():
    script = PYPROJECT["project"]["scripts"][cli.CONSOLE_COMMAND]
    assert script == "seq2seq_keras.cli:main"
    command = Path(sys.executable).parent / cli.CONSOLE_COMMAND
    if not command.exists():
        pytest.fail(f"{command} is missing: install the project with "
                    f"pip install -r requirements-dev.txt")
    installed = subprocess.run([str(command), "translate", "--help"], capture_output=True,
                               text=True, timeout=120)
    module = subprocess.run([sys.executable, "-m", "seq2seq_keras", "translate", "--help"],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert installed.returncode == module.returncode == 0
    assert installed.stdout.startswith("usage: seq2seq-keras translate")
    assert module.stdout.startswith("usage: python -m seq2seq_keras translate")
    # The usage lines wrap by the program's name; what follows them is the same parser's.
    assert installed.stdout.split("\n\n", 1)[1] == module.stdout.split("\n\n", 1)[1]


def test_the_installed_distribution_is_this_package():
    assert importlib.metadata.version("seq2seq-keras") == __version__


def test_without_tensorflow_help_works_and_a_command_says_what_to_install(tmp_path):
    code = WITHOUT_TENSORFLOW + f"""
from seq2seq_keras import cli
try:
    cli.main(["train", "--help"])
except SystemExit as done:
    assert done.code == 0
status = cli.main(["translate", "--model-dir", {str(tmp_path)!r}, "Hello."])
print("status", status)
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and done.stdout.strip().endswith("status 2")
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: translate needs TensorFlow")
    assert cli.TENSORFLOW_INSTALL in done.stderr


def test_without_tensorflow_the_lite_runtime_imports():
    done = run_python(WITHOUT_TENSORFLOW + "from seq2seq_keras.lite import LiteTranslator\n"
                      "print(LiteTranslator.__name__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "LiteTranslator"

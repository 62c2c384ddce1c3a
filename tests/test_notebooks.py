"""Every notebook in notebooks/ runs top to bottom, and the committed copies show a full run.

The slow test executes each notebook with nbclient in fast mode (`SEQ2SEQ_FAST=1`: a tiny
model on a few thousand pairs, one epoch) against the local spa-eng copy, with models and
figures written to a temporary directory; any cell that raises fails it. The quick test checks
the committed outputs: they must come from one uninterrupted full-mode run (see
docs/notebooks.md for why outputs are committed and how to re-record them).

Re-record the committed outputs after changing a notebook (full mode, slow on a CPU):

    SEQ2SEQ_DATA=../shared/data/spa-eng.zip .venv/bin/python tests/test_notebooks.py notebooks/NAME.ipynb
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
# The line each notebook's setup cell prints, naming the mode the outputs were recorded in.
FULL_MODE_LINE = "mode: full"
# Longest a single cell may run in fast mode; a full-mode training cell has no limit.
FAST_CELL_TIMEOUT_SECONDS = 300


def execute_notebook(
    path: Path, timeout: int | None, environment: dict[str, str]
) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in a fresh kernel started in its folder; return it executed.

    The kernel gets this process's environment updated with `environment`. A relative
    `SEQ2SEQ_DATA` is made absolute, since the kernel's working directory is the notebook's
    folder, not the project root the README's commands run from. The kernel runs with
    `capture_fd_output` off: TensorFlow 2.21 writes C++ start-up lines (CUDA probing, oneDNN
    notes) straight to file descriptor 2 whatever `TF_CPP_MIN_LOG_LEVEL` says, and they would
    otherwise be saved in the outputs as alarming-looking stderr.

    Raises:
      nbclient.exceptions.CellExecutionError: a cell raised; the message shows the traceback.
    """
    env = {**os.environ, **environment}
    if env.get("SEQ2SEQ_DATA"):
        env["SEQ2SEQ_DATA"] = str(Path(env["SEQ2SEQ_DATA"]).resolve())
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        extra_arguments=["--IPKernelApp.capture_fd_output=False"],
    )
    client.execute(env=env)
    return notebook


def error_outputs(notebook: nbformat.NotebookNode) -> list[str]:
    """`ename: evalue` of every error output in the notebook."""
    return [
        f"{output.ename}: {output.evalue}"
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]


def test_there_are_notebooks():
    names = [path.name for path in NOTEBOOKS]
    assert "01_encoder_decoder_walkthrough.ipynb" in names
    assert "02_english_to_spanish.ipynb" in names


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs_top_to_bottom_in_fast_mode(path, spa_eng_path, tmp_path):
    environment = {
        "SEQ2SEQ_FAST": "1",
        "SEQ2SEQ_DATA": str(spa_eng_path),
        "SEQ2SEQ_WORKDIR": str(tmp_path),
    }
    notebook = execute_notebook(path, FAST_CELL_TIMEOUT_SECONDS, environment)

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)
    assert error_outputs(notebook) == []
    setup_text = "".join(
        output.get("text", "") for cell in code_cells[:2] for output in cell.get("outputs", [])
    )
    assert "mode: FAST" in setup_text, "the notebook did not pick up SEQ2SEQ_FAST=1"
    assert any(tmp_path.iterdir()), "the notebook wrote nothing to SEQ2SEQ_WORKDIR"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_committed_outputs_come_from_one_full_run(path):
    notebook = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code_cells]
    hint = f"re-record it: python tests/test_notebooks.py {path.relative_to(PROJECT_ROOT)}"
    assert counts == list(range(1, len(code_cells) + 1)), (
        f"{path.name} was not saved right after one top-to-bottom run (execution counts "
        f"{counts}); {hint}"
    )
    assert error_outputs(notebook) == [], hint
    printed = "".join(
        output.get("text", "") for cell in code_cells for output in cell.get("outputs", [])
    )
    assert FULL_MODE_LINE in printed, f"{path.name} carries fast-mode or no outputs; {hint}"


def record_full_run(path: Path) -> None:
    """Execute `path` in full mode and save it with its outputs (what the repository commits).

    Models and figures go to the default `saved_models/notebooks/` unless `SEQ2SEQ_WORKDIR`
    says otherwise; `SEQ2SEQ_DATA` is honoured as in the notebooks.
    """
    notebook = execute_notebook(path, timeout=None, environment={"SEQ2SEQ_FAST": "0"})
    nbformat.write(notebook, path)
    print(f"recorded {path}")


if __name__ == "__main__":
    for argument in sys.argv[1:] or map(str, NOTEBOOKS):
        record_full_run(Path(argument).resolve())

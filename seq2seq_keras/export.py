"""Export: the translator as a SavedModel, in TensorFlow Serving's versioned layout.

    saved_models/NAME/        the "base path" TensorFlow Serving watches
      1/                      a version: saved_model.pb + variables/
      2/                      the next export; Serving loads the highest number

What is saved is `translator.TranslatorModule`, the same module `Translator` calls: everything
between the strings lives inside the graph (UTF-8 repair, `text.standardize`, the vocabularies,
the encoder, the search, `text.detokenize`). So a process that imports only `tensorflow` and
`tensorflow_text` (for the `NormalizeUTF8` op) can load it and translate exactly as the Python
translator does; its signatures are listed in `seq2seq_keras.translator`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

import tensorflow as tf

from seq2seq_keras.config import CONFIG_FILENAME, DEFAULT_EXPORT_ROOT
from seq2seq_keras.decoding_options import DEFAULT_LENGTH_ALPHA
from seq2seq_keras.model_dir import MODEL_FILENAME, TrainedModel
from seq2seq_keras.storage import publish_directory, staging_directory
from seq2seq_keras.translator import TranslatorModule, signatures

class ExportError(Exception):
    """The export could not be written: the message says why and what to do."""


# --- TF Serving's versioned layout -----------------------------------------------------------


def check_name(name: str) -> str:
    """Return `name` if it can be a model name (one directory level), else raise `ExportError`."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise ExportError(
            f"model name {name!r} is not usable: use letters, digits, '.', '_' or '-' "
            "(no '/'), starting with a letter or digit, e.g. --name translator."
        )
    return name


def existing_versions(base: Path) -> list[int]:
    """The version numbers already under `base` (numeric subdirectories), ascending."""
    if not base.is_dir():
        return []
    numbered = [path for path in base.iterdir() if path.is_dir() and path.name.isdigit()]
    return sorted(int(path.name) for path in numbered)


def next_version(base: Path) -> int:
    """One more than the highest existing version, or 1."""
    return max(existing_versions(base), default=0) + 1


def export_saved_model(
    trained: TrainedModel,
    name: str,
    export_root: str | os.PathLike = DEFAULT_EXPORT_ROOT,
    length_alpha: float = DEFAULT_LENGTH_ALPHA,
) -> Path:
    """Write the `TranslatorModule` of `trained` to `export_root/name/<next version>/`.

    The SavedModel is first written to a hidden temporary directory beside the versions (TF
    Serving ignores names that are not numbers) and then renamed to the next free version
    number, so Serving never sees a half-written version and an existing one is never
    overwritten: if another export takes the number first, the next one is used.

    Args:
      trained: a loaded model directory (`model_dir.load_trained_model`).
      name: the model's name, the directory TF Serving's `--model_base_path` points at.
      export_root: where model names live (default `saved_models/`).
      length_alpha: the `beam_search` signature's length-normalization exponent, fixed in
        the graph (a signature has no optional inputs; docs/transformer.md measures it).
    Returns:
      The path of the new version directory.
    Raises:
      ExportError: a bad name, or `export_root/name` is a training model directory.
    """
    base = export_base(export_root, name)
    module = TranslatorModule.from_trained(trained, length_alpha)
    return write_version(
        base,
        lambda staging: tf.saved_model.save(module, str(staging), signatures=signatures(module)),
    )


def export_base(export_root: str | os.PathLike, name: str) -> Path:
    """`export_root/name`, created, after checking the name and that it is no model directory."""
    base = Path(export_root) / check_name(name)
    if (base / MODEL_FILENAME).exists() or (base / CONFIG_FILENAME).exists():
        raise ExportError(
            f"{str(base)!r} is a trained model directory, not an export base: retraining would "
            f"replace it and its versions. Choose another --name or --export-dir."
        )
    base.mkdir(parents=True, exist_ok=True)
    return base


def write_version(base: Path, write: Callable[[Path], None]) -> Path:
    """Let `write` fill a staging directory, then publish it as the next version under `base`.

    Staged under `base` as ".export.tmp-…": not a number, so Serving never loads it, and a
    failed or interrupted export leaves no version behind.
    """
    staging = staging_directory(base / "export")
    try:
        write(staging)
        return publish_version(staging, base)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_version(staging: Path, base: Path, attempts: int = 100) -> Path:
    """Rename `staging` to the next free version under `base`; never replaces a version."""
    version = next_version(base)
    for _ in range(attempts):
        destination = base / str(version)
        try:
            publish_directory(staging, destination, replace=False)
            return destination
        except FileExistsError:  # another export took this number first
            version += 1
    raise ExportError(f"no free version number under {str(base)!r} after {attempts} attempts.")

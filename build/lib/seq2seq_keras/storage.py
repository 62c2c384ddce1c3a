"""Storage: files and directories written so that a crash never leaves a half-written one.

Checkpoints (`checkpoints`), model directories (`model_dir`) and SavedModel versions (`export`)
are all written the same way: under a temporary name beside the destination, flushed to disk,
then renamed into place. Beside it means on the same file system, where a rename is atomic: a
reader, or the same command started again after a `kill -9` or a power cut, finds the old
content or the new one, never a mix.

1. `flush_to_disk` and `write_atomically`: one file.
2. `staging_directory` and `publish_directory`: a whole directory.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

# --- 1. One file -----------------------------------------------------------------------------


def flush_to_disk(path: str | os.PathLike) -> None:
    """Force a written file onto the disk, so a power cut cannot leave it half-written.

    A rename can reach the disk before the data it names; flushing first makes sure a file
    that has its final name also has its content.
    """
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_atomically(path: str | os.PathLike, content: str | bytes) -> None:
    """Replace `path` with `content` all at once: write a temporary file, flush it, rename it.

    The temporary file sits in the same directory, so `os.replace` is a rename within one file
    system, atomic on POSIX and Windows: killed at any moment, `path` holds its old content or
    the new one. Text is written as UTF-8, its newlines unchanged. If the write fails, the
    temporary file is removed and `path` is left as it was.

    Args:
      path: the file to create or replace.
      content: the new content, `str` (written as UTF-8) or `bytes`.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# --- 2. A whole directory --------------------------------------------------------------------


def staging_directory(destination: str | os.PathLike) -> Path:
    """A new, empty directory beside `destination`, to fill and then `publish_directory`.

    Beside it means on the same file system, so publishing is a rename, which is atomic (across
    file systems `os.rename` fails, and a copy would not be atomic). The name starts with a dot,
    which TensorFlow Serving and `ls` skip. `mkdtemp` makes the directory private (0700); it is
    opened to 0755 because a model server often runs as another user.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
    staging.chmod(0o755)
    return staging


def publish_directory(
    staging: str | os.PathLike, destination: str | os.PathLike, replace: bool = True
) -> None:
    """Move a fully written `staging` directory to `destination` by renaming it.

    With `replace=True` an existing `destination` is replaced: the old directory is renamed
    aside, the new one renamed into place, then the old one deleted. `destination` is thus the
    complete old directory or the complete new one, never a mix (for the instant between the two
    renames it is absent; a crash there leaves the old one as `.NAME.old-PID` beside it).

    With `replace=False` an existing `destination` is never touched: TensorFlow Serving's
    version directories, for example, must not change once written. Two processes publishing to
    the same name at once are safe: one rename wins, the other raises `FileExistsError`.

    Raises:
      FileExistsError: `replace=False` and `destination` exists, empty or not, or appeared
        during the call. `staging` is left as it was, so the caller can try another name.
    """
    if replace:
        _replace_directory(Path(staging), Path(destination))
    else:
        _rename_without_replacing(Path(staging), Path(destination))


def _replace_directory(staging: Path, destination: Path) -> None:
    """Rename `staging` to `destination`, moving an old `destination` aside first."""
    previous = None
    if destination.exists():
        previous = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        os.replace(destination, previous)
    try:
        os.replace(staging, destination)
    except BaseException:
        if previous is not None:
            os.replace(previous, destination)  # put the old directory back
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _rename_without_replacing(staging: Path, destination: Path) -> None:
    """Rename `staging` to `destination` unless `destination` exists.

    On POSIX `os.rename` replaces an empty directory silently, hence the check first; a
    directory that appears after the check holds a published version, so it is not empty, and
    the rename then fails with EEXIST or ENOTEMPTY (Windows: FileExistsError), mapped here to
    `FileExistsError`.
    """
    if destination.exists() or destination.is_symlink():
        raise FileExistsError(
            errno.EEXIST, "will not replace an existing directory", str(destination)
        )
    try:
        os.rename(staging, destination)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(
                errno.EEXIST, "will not replace a directory that appeared meanwhile",
                str(destination),
            ) from error
        raise

"""Storage: atomic file writes, and directories published whole, replacing or never replacing."""

import errno
import os
import stat

import pytest

from seq2seq_keras import storage


def names(directory) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# --- one file --------------------------------------------------------------------------------


def test_write_atomically_replaces_the_content_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "checkpoint.json"
    storage.write_atomically(path, "first\n")
    storage.write_atomically(path, "¿second?\r\n")
    assert path.read_bytes() == "¿second?\r\n".encode("utf-8")  # UTF-8, newlines unchanged
    storage.write_atomically(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    assert names(tmp_path) == ["checkpoint.json"]


def test_a_write_that_dies_midway_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.json"
    storage.write_atomically(path, "old")

    def dies(descriptor):
        raise OSError("killed while writing")

    monkeypatch.setattr(os, "fsync", dies)  # the new content is written, not yet renamed
    with pytest.raises(OSError, match="killed while writing"):
        storage.write_atomically(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert names(tmp_path) == ["checkpoint.json"]


def test_flush_to_disk_keeps_the_content(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"weights")
    storage.flush_to_disk(path)
    assert path.read_bytes() == b"weights"


# --- a whole directory -----------------------------------------------------------------------


def test_a_staging_directory_is_new_empty_hidden_readable_and_beside_its_destination(tmp_path):
    destination = tmp_path / "models" / "eng_spa"
    staging = storage.staging_directory(destination)
    assert staging.parent == destination.parent and staging.name.startswith(".eng_spa.tmp-")
    assert names(staging) == []
    assert stat.S_IMODE(staging.stat().st_mode) == 0o755
    assert storage.staging_directory(destination) != staging


def test_publishing_replaces_an_old_model_and_leaves_no_temporary_files(tmp_path):
    destination = tmp_path / "model"
    destination.mkdir()
    (destination / "old.txt").write_text("old")
    staging = storage.staging_directory(destination)
    (staging / "new.txt").write_text("new")
    storage.publish_directory(staging, destination)
    assert sorted(p.name for p in destination.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_publishing_creates_a_missing_destination(tmp_path):
    staging = storage.staging_directory(tmp_path / "model")
    (staging / "new.txt").write_text("new")
    storage.publish_directory(staging, tmp_path / "model", replace=False)
    assert names(tmp_path) == ["model"] and names(tmp_path / "model") == ["new.txt"]


def test_a_failed_rename_puts_the_old_directory_back(tmp_path, monkeypatch):
    destination = tmp_path / "model"
    destination.mkdir()
    (destination / "old.txt").write_text("old")
    staging = storage.staging_directory(destination)
    (staging / "new.txt").write_text("new")
    real_replace = os.replace

    def fails_for_staging(source, target):
        if str(source) == str(staging):
            raise OSError("no space left")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", fails_for_staging)
    with pytest.raises(OSError, match="no space left"):
        storage.publish_directory(staging, destination)
    monkeypatch.undo()
    assert names(destination) == ["old.txt"]
    assert names(staging) == ["new.txt"]


@pytest.mark.parametrize("existing_files", [[], ["saved_model.pb"]], ids=["empty", "full"])
def test_publishing_without_replacing_refuses_an_existing_destination(tmp_path, existing_files):
    destination = tmp_path / "1"
    destination.mkdir()
    for name in existing_files:
        (destination / name).write_text("version 1")
    staging = storage.staging_directory(destination)
    (staging / "saved_model.pb").write_text("version 2")

    with pytest.raises(FileExistsError) as raised:
        storage.publish_directory(staging, destination, replace=False)
    assert raised.value.errno == errno.EEXIST
    assert names(destination) == existing_files
    assert (staging / "saved_model.pb").read_text() == "version 2"


def test_publishing_without_replacing_loses_a_race_with_file_exists_error(tmp_path, monkeypatch):
    # Another process publishes the same version between the check and the rename.
    destination = tmp_path / "1"
    staging = storage.staging_directory(destination)
    (staging / "saved_model.pb").write_text("ours")
    real_rename = os.rename

    def another_process_was_faster(source, target):
        os.mkdir(target)
        (destination / "saved_model.pb").write_text("theirs")
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", another_process_was_faster)
    with pytest.raises(FileExistsError):
        storage.publish_directory(staging, destination, replace=False)
    monkeypatch.undo()
    assert (destination / "saved_model.pb").read_text() == "theirs"
    assert (staging / "saved_model.pb").read_text() == "ours"

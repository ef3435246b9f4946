"""Atomic outputs: a file or a directory appears whole or not at all, durable (fsynced before the rename that
publishes it), with the umask's modes, and a directory replaces its old version in one swap."""

import os
import stat

import pytest

from lorarank import io


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_file_is_fsynced_then_renamed_then_its_folder_fsynced(tmp_path, monkeypatch, umask022):
    synced = []
    monkeypatch.setattr(io, "_fsync", lambda p: synced.append((str(p), (tmp_path / "out.json").exists())))
    io.write_json(tmp_path / "out.json", {"a": 1})
    (tmp_file, published_before), (folder, published_after) = synced
    assert tmp_file.endswith(".tmp") and not published_before  # the data, before the name points to it
    assert folder == str(tmp_path) and published_after  # the rename, after
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["out.json"]


def test_a_failed_file_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with io.atomic_path(tmp_path / "out.bin") as t:
            t.write_bytes(b"half")
            raise RuntimeError("crash")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("swap", [True, False], ids=["exchanged", "renamed aside"])
def test_a_directory_replaces_the_old_one_whole_with_the_umasks_modes(tmp_path, monkeypatch, umask022, swap):
    if not swap:  # a filesystem without renameat2's exchange (some NFS, Lustre)
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    final = tmp_path / "final"
    final.mkdir()
    (final / "old.safetensors").write_bytes(b"old")
    with io.atomic_dir(final) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub/adapter.safetensors").write_bytes(b"new")
        os.chmod(tmp / "sub/adapter.safetensors", 0o600)  # as the safetensors writer leaves it
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*")) == ["sub", "sub/adapter.safetensors"]
    assert stat.S_IMODE((final / "sub/adapter.safetensors").stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["final"]  # neither the temporary nor the old directory is left


def test_the_swap_is_one_step_here(tmp_path):
    # this machine's kernel and filesystem can exchange two directories: the old one is never absent
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a/x").write_text("a")
    assert io._exchange(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b/x").read_text() == "a" and not (tmp_path / "a/x").exists()


def test_a_failed_directory_keeps_the_old_one(tmp_path):
    final = tmp_path / "final"
    final.mkdir()
    (final / "kept").write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_dir(final) as tmp:
            (tmp / "partial").write_text("new")
            raise RuntimeError("crash")
    assert os.listdir(final) == ["kept"] and os.listdir(tmp_path) == ["final"]


def test_the_old_directory_is_never_absent_where_the_swap_exists(tmp_path, monkeypatch):
    """README: a directory is "swapped with its old version in one step (renameat2's exchange; renamed aside first
    where a filesystem lacks it)". Where the swap exists (here, `test_the_swap_is_one_step_here`) it is the one
    used: no rename moves the old directory aside, and `final` exists after every step."""
    from pathlib import Path

    final = tmp_path / "final"
    final.mkdir()
    (final / "old").write_text("old")
    swaps, renames = [], []
    real_exchange, real_rename = io._exchange, Path.rename
    monkeypatch.setattr(io, "_exchange", lambda a, b: swaps.append((a, b)) or real_exchange(a, b))
    monkeypatch.setattr(Path, "rename", lambda self, target: renames.append(
        (self, real_rename(self, target), final.is_dir())))
    with io.atomic_dir(final) as tmp:
        (tmp / "new").write_text("new")
        assert os.listdir(final) == ["old"]  # until the block ends, the old output is all there is
    assert swaps == [(final.with_name(".final.tmp"), final)] and renames == []
    assert os.listdir(final) == ["new"] and os.listdir(tmp_path) == ["final"]


def test_a_directory_is_fsynced_whole_before_the_swap_and_its_folder_after(tmp_path, monkeypatch):
    """README: "a directory ... is fsynced whole and swapped": every file and every folder of the new directory
    reaches the disk before the swap publishes it, and the folder holding it after the swap."""
    final = tmp_path / "final"
    final.mkdir()
    (final / "old").write_text("old")
    synced = []
    monkeypatch.setattr(io, "_fsync", lambda p: synced.append((os.path.relpath(p, tmp_path),
                                                                (final / "new").exists())))
    with io.atomic_dir(final) as tmp:
        (tmp / "sub/deeper").mkdir(parents=True)
        (tmp / "sub/deeper/w.safetensors").write_bytes(b"w")
        (tmp / "new").write_text("new")
    before = {p for p, published in synced if not published}
    assert before == {".final.tmp", ".final.tmp/new", ".final.tmp/sub", ".final.tmp/sub/deeper",
                      ".final.tmp/sub/deeper/w.safetensors"}
    assert synced[-1] == (".", True)  # the folder, once it names the new directory
    assert [p for p, published in synced if published] == ["."]


def test_a_leftover_temporary_of_a_killed_writer_is_not_published(tmp_path):
    """A writer killed mid-block leaves `.final.tmp`: the next one starts from an empty directory, so none of the
    dead writer's partial files reach the output."""
    final = tmp_path / "final"
    (tmp_path / ".final.tmp").mkdir()
    (tmp_path / ".final.tmp/partial").write_text("from a killed job")
    with io.atomic_dir(final) as tmp:
        assert os.listdir(tmp) == []
        (tmp / "whole").write_text("new")
    assert os.listdir(final) == ["whole"] and os.listdir(tmp_path) == ["final"]


@pytest.mark.parametrize("swap", [True, False], ids=["exchanged", "renamed aside"])
def test_a_failure_while_publishing_keeps_the_old_directory_and_no_temporary(tmp_path, monkeypatch, swap):
    """A failure after the block (here, fsync of the new files) leaves the old output intact and no temporary."""
    if not swap:
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    final = tmp_path / "final"
    final.mkdir()
    (final / "kept").write_text("old")

    def failing(p):
        raise OSError("disk full")

    monkeypatch.setattr(io, "_fsync", failing)
    with pytest.raises(OSError, match="disk full"):
        with io.atomic_dir(final) as tmp:
            (tmp / "new").write_text("new")
    assert os.listdir(final) == ["kept"] and (final / "kept").read_text() == "old"
    assert os.listdir(tmp_path) == ["final"]

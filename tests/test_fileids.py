"""Content ids in O(files): git's index for tracked, unmodified files, DVC's records, a stat cache for
the rest; the fingerprint's invalidation is the same as when every byte was hashed, case by case."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import git

from mlflow_ci import fileids
from mlflow_ci.config.loader import parse_config
from mlflow_ci.fingerprint import fingerprint


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The files whose bytes were read to identify them."""
    seen: list[str] = []
    real = fileids.blob_id

    def counting(path, algorithm="sha1"):
        seen.append(path.name)
        return real(path, algorithm)

    monkeypatch.setattr(fileids, "blob_id", counting)
    return seen


def project(tmp_path: Path, data: str = "") -> tuple[Path, object]:
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text("print('train')\n")
    (root / "data" / "rows.csv").write_text("a,b\n1,2\n")
    (root / ".gitignore").write_text("big/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")
    cfg = parse_config(f"experiment: e\ntrain: {{command: python train.py{data}}}\n", root / "mlflow-ci.yml")
    return root, cfg


def old(path: Path) -> None:
    """Last written long ago: not racily clean, so the stat cache may remember it."""
    past = time.time() - 3600
    os.utime(path, (past, past))


def test_the_blob_id_is_gits(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello\n\0binary")
    expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()
    assert fileids.blob_id(path) == expected


def test_tracked_unmodified_files_are_not_read(tmp_path, reads):
    root, cfg = project(tmp_path)
    first = fingerprint(cfg)
    assert reads == []  # every input is tracked and clean: the index says what they hold
    (root / "data" / "rows.csv").write_text("a,b\n1,3\n")  # one data byte
    changed = fingerprint(cfg)
    assert changed != first and reads == ["rows.csv"]  # only the modified file is read
    (root / "data" / "rows.csv").write_text("a,b\n1,2\n")
    assert fingerprint(cfg) == first  # content, not history: back to the same id


def test_same_content_same_fingerprint_tracked_or_not(tmp_path):
    root, cfg = project(tmp_path)
    tracked = fingerprint(cfg)
    git(root, "rm", "-q", "--cached", "data/rows.csv")  # now untracked, same bytes
    assert fingerprint(cfg) == tracked


def test_rename_changes_and_mode_does_not(tmp_path):
    root, cfg = project(tmp_path)
    first = fingerprint(cfg)
    (root / "train.py").chmod(0o755)
    git(root, "commit", "-q", "-am", "executable")
    assert fingerprint(cfg) == first  # as before: content and path, not the mode
    git(root, "mv", "data/rows.csv", "data/renamed.csv")
    assert fingerprint(cfg) != first


def test_an_untracked_file_counts_and_is_read_once(tmp_path, reads):
    root, cfg = project(tmp_path)
    first = fingerprint(cfg)
    extra = root / "data" / "extra.csv"
    extra.write_text("x\n")
    old(extra)
    second = fingerprint(cfg)
    assert second != first and reads == ["extra.csv"]
    assert fingerprint(cfg) == second and reads == ["extra.csv"]  # remembered by path, size, times, inode
    extra.write_text("y\n")  # same size, new content, new times
    assert fingerprint(cfg) != second and reads == ["extra.csv", "extra.csv"]


def test_a_git_lfs_pointer_change_changes_the_fingerprint(tmp_path, reads):
    root, cfg = project(tmp_path)
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 2000000000\n"
    (root / "data" / "huge.bin").write_text(pointer.format("a" * 64))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "lfs data")
    first = fingerprint(cfg)
    (root / "data" / "huge.bin").write_text(pointer.format("b" * 64))
    git(root, "commit", "-q", "-am", "new data version")
    assert fingerprint(cfg) != first and reads == []  # the pointer names the content: nothing large is read


def test_dvc_tracked_data_is_identified_by_its_recorded_hash(tmp_path, reads):
    root, cfg = project(tmp_path, data=", data: ['big/**']")
    (root / "big").mkdir()
    data = root / "big" / "table.csv"
    data.write_text("x" * 1000)
    record = "outs:\n- md5: {}\n  size: {}\n  path: big/table.csv\n"
    (root / "table.dvc").write_text(record.format("a" * 32, 1000))
    first = fingerprint(cfg)
    assert reads == ["table.dvc"]  # the new .dvc file itself (untracked); the data is not read
    (root / "table.dvc").write_text(record.format("b" * 32, 1000))  # `dvc add` recorded new data
    assert fingerprint(cfg) != first
    (root / "table.dvc").write_text(record.format("b" * 32, 999))  # the file is not what DVC recorded: read it
    fingerprint(cfg)
    assert "table.csv" in reads


def test_dvc_lock_outputs_count_too(tmp_path, reads):
    root, cfg = project(tmp_path, data=", data: ['big/**']")
    (root / "big").mkdir()
    (root / "big" / "model.pkl").write_bytes(b"m" * 10)
    lock = "schema: '2.0'\nstages:\n  prepare:\n    cmd: python prep.py\n    outs:\n    - path: big/model.pkl\n      md5: {}\n      size: 10\n"
    (root / "dvc.lock").write_text(lock.format("c" * 32))
    first = fingerprint(cfg)
    (root / "dvc.lock").write_text(lock.format("d" * 32))
    assert fingerprint(cfg) != first
    assert "model.pkl" not in reads


def test_a_corrupt_cache_is_ignored(tmp_path):
    root, cfg = project(tmp_path)
    (root / "new.txt").write_text("n")
    old(root / "new.txt")
    first = fingerprint(cfg)
    (root / fileids.CACHE).write_text("{not json")
    assert fingerprint(cfg) == first

"""A file's content id without reading it, where something already knows it.

The id is git's blob id (``git hash-object``: the repository's object format, sha1 or sha256), so the
same content has the same id whichever way it was found:

1. a file git tracks and that is unmodified in the working tree: the blob id in git's index (no byte
   is read; a Git LFS file's blob is its pointer, which names the content's sha256);
2. a file DVC tracks (a ``.dvc`` file or ``dvc.lock`` records its md5 and size) whose size is the
   recorded one: ``dvc-md5:<md5>`` (data is trusted to be what DVC recorded: re-run ``dvc add`` or
   ``dvc repro`` after changing it, as DVC itself asks);
3. anything else: the blob id computed from the bytes, remembered in ``.mlflow-ci/file-ids.json`` by
   path, size, modification and change time and inode, so an unchanged untracked file is read once.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_ci import yamlnodes
from mlflow_ci.gitctx import git, git_names
from mlflow_ci.provenance import file_digest

CACHE = Path(".mlflow-ci") / "file-ids.json"
CACHE_VERSION = 1
RACY_SECONDS = 2  # a file written this recently may change again within the same timestamp: not remembered


def blob_id(path: Path, algorithm: str = "sha1") -> str:
    """git's blob id of the file's bytes (``git hash-object``)."""
    return file_digest(path, algorithm, header=b"blob %d\0" % path.stat().st_size)


def git_index(root: Path) -> tuple[dict[str, str], str]:
    """Blob ids of the tracked, unmodified files under ``root`` (paths relative to it) and the
    repository's object format; empty outside a repository."""
    staged = git_names(["ls-files", "-s", "-z"], root)
    if staged is None:
        return {}, "sha1"
    fmt = git(["rev-parse", "--show-object-format"], root) or "sha1"
    modified = set(git_names(["ls-files", "-m", "-z"], root) or [])
    index = {}
    for entry in staged:
        meta, _, name = entry.partition("\t")
        mode, blob, stage = meta.split(" ")
        if stage == "0" and mode != "160000" and name not in modified:  # not a conflict, not a submodule
            index[name] = blob
    return index, fmt


def dvc_records(root: Path, files: list[str]) -> dict[str, tuple[str, int | None]]:
    """``path -> (md5, size)`` of the single files DVC records, from the ``.dvc`` files among ``files``
    and the ``dvc.lock`` of ``root`` or a folder above it (paths relative to ``root``)."""
    found: dict[str, tuple[str, int | None]] = {}
    for name in files:
        if name.endswith(".dvc"):
            _read_outs(root, root / name, _yaml(root / name).get("outs"), found)
    for folder in (root, *root.parents):
        lock = folder / "dvc.lock"
        if lock.is_file():
            for stage in (_yaml(lock).get("stages") or {}).values():
                if isinstance(stage, dict):
                    _read_outs(root, lock, stage.get("outs"), found)
            break
        if (folder / ".git").exists():
            break
    return found


def _yaml(path: Path) -> dict:
    try:
        data = yamlnodes.load(path.read_text(encoding="utf-8")).data
    except (OSError, ValueError, yamlnodes.YamlSyntaxError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_outs(root: Path, record: Path, outs, found: dict) -> None:
    for out in outs if isinstance(outs, list) else []:
        if not isinstance(out, dict) or not isinstance(out.get("path"), str) or not isinstance(out.get("md5"), str):
            continue
        if out["md5"].endswith(".dir"):  # a folder: its files are listed in DVC's cache, not here
            continue
        target = (record.parent / out["path"]).resolve()
        if target.is_relative_to(root.resolve()):
            size = out.get("size")
            found[target.relative_to(root.resolve()).as_posix()] = (out["md5"], size if isinstance(size, int) else None)


@dataclass
class FileIds:
    """Content ids of the files of one project folder (see the module's docstring)."""
    root: Path
    index: dict[str, str]
    algorithm: str
    dvc: dict[str, tuple[str, int | None]]
    remembered: dict[str, list] = field(default_factory=dict)
    hashed: int = 0  # files read in full this time
    _dirty: bool = False

    @classmethod
    def scan(cls, root: Path, files: list[str]) -> "FileIds":
        index, algorithm = git_index(root)
        return cls(root, index, algorithm, dvc_records(root, files), _load(root / CACHE, algorithm))

    def id(self, rel: str) -> str:
        if rel in self.index:
            return self.index[rel]
        path = self.root / rel
        stat = path.stat()
        recorded = self.dvc.get(rel)
        if recorded and recorded[1] == stat.st_size:
            return f"dvc-md5:{recorded[0]}"
        key = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        known = self.remembered.get(rel)
        if known and known[:4] == key:
            return known[4]
        content = blob_id(path, self.algorithm)
        self.hashed += 1
        if time.time() - stat.st_mtime > RACY_SECONDS:
            self.remembered[rel] = [*key, content]
            self._dirty = True
        return content

    def save(self) -> None:
        """Keep what was hashed for the next check (best effort: a read-only folder only costs time)."""
        if not self._dirty:
            return
        path = self.root / CACHE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"v": CACHE_VERSION, "algorithm": self.algorithm, "files": self.remembered}), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass


def _load(path: Path, algorithm: str) -> dict[str, list]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("v") != CACHE_VERSION or data.get("algorithm") != algorithm:
        return {}
    files = data.get("files")
    return {k: v for k, v in files.items() if isinstance(v, list) and len(v) == 5} if isinstance(files, dict) else {}

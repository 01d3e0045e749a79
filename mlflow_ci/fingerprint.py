"""The run-cache fingerprint: a hash of everything that can change the trained model.

Always included: the experiment and the ``train`` section (command, working directory, environment
variables and their values, metrics file, the input settings themselves; not its timeout). The rest of
``mlflow-ci.yml`` — gate thresholds, evaluation, report and publish settings — trains nothing, so the
configuration file itself is not an input: editing only ``gate:`` reuses the run. Then every input file: its path and its
content id (:mod:`mlflow_ci.fileids`: git's blob id, read from the index for unmodified tracked files,
so a check costs O(files), not O(bytes)). A run is reused only when all of it is identical.

The input files: with ``inputs: auto`` (the default), every file git tracks in the project folder and
every untracked file git does not ignore, plus the files of ``train.data`` (data kept out of git),
minus ``train.ignore`` (documentation by default); outside a git repository, every file under the
project folder minus ``train.ignore``. With a list, the files its globs match.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Iterable

from mlflow_ci.config.models import Config
from mlflow_ci.fileids import FileIds
from mlflow_ci.gitctx import git_names

FINGERPRINT_VERSION = "4"  # 3: files by their git blob id (mlflow_ci.fileids); 4: the config file by its train section
_ALWAYS_SKIPPED = {".git", ".mlflow-ci", "__pycache__", "mlruns", "mlartifacts", ".venv"}


def matched_files(root: Path, patterns: Iterable[str], *, exclude: Iterable[Path] = ()) -> list[Path]:
    """Files under ``root`` matched by the glob patterns (``**`` recurses), sorted, de-duplicated."""
    excluded = {p.resolve() for p in exclude}
    found: set[Path] = set()
    for pattern in patterns:
        # "data/**" means every file below data/ (pathlib before 3.13 yields only folders for it)
        if pattern.rstrip("/").endswith("**"):
            pattern = pattern.rstrip("/") + "/*"
        for path in root.glob(pattern):
            if not path.is_file():
                continue
            rel = path.relative_to(root)
            if _ALWAYS_SKIPPED.intersection(rel.parts[:-1]) or path.resolve() in excluded:
                continue
            found.add(rel)
    return sorted(found, key=lambda p: p.as_posix())


def input_files(cfg: Config, *, exclude: Iterable[Path] = ()) -> list[Path]:
    """The files whose content decides the fingerprint, relative to the project folder, sorted. The app's
    prompt templates (``genai.prompts``) always count: a run validates the prompts it was checked with."""
    train = cfg.train
    if not train.auto_inputs:
        prompts = [p.file for p in cfg.genai.prompts] if cfg.genai else []
        return matched_files(cfg.root, [*train.inputs, *prompts], exclude=exclude)
    excluded = {p.resolve() for p in exclude}
    listed = _git_files(cfg.root)
    found = set(listed if listed is not None else _walk(cfg.root))
    found |= set(matched_files(cfg.root, train.data))
    return sorted((rel for rel in found
                   if not _skipped(rel) and not ignored(rel, train.ignore)
                   and (cfg.root / rel).is_file() and (cfg.root / rel).resolve() not in excluded),
                  key=lambda p: p.as_posix())


def _git_files(root: Path) -> list[Path] | None:
    """Tracked files and untracked ones git does not ignore, under ``root``; None outside a repository."""
    names = git_names(["ls-files", "-z", "--cached", "--others", "--exclude-standard"], root)
    return None if names is None else [Path(name) for name in names]


def _walk(root: Path) -> list[Path]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _ALWAYS_SKIPPED]
        out.extend(Path(folder, name).relative_to(root) for name in names)
    return out


def _skipped(rel: Path) -> bool:
    return bool(_ALWAYS_SKIPPED.intersection(rel.parts[:-1]))


def ignored(rel: Path, patterns: Iterable[str]) -> bool:
    """gitignore-like: a pattern without '/' matches a file name at any depth ('*.md'); 'dir/**'
    matches everything below dir; any other pattern matches the whole relative path."""
    posix = PurePosixPath(rel.as_posix())
    for pattern in patterns:
        if pattern.endswith("/**"):
            if posix.as_posix().startswith(pattern[:-2]):
                return True
        elif "/" not in pattern:
            if fnmatch.fnmatchcase(posix.name, pattern):
                return True
        elif fnmatch.fnmatchcase(posix.as_posix(), pattern):
            return True
    return False


def fingerprint(cfg: Config, *, exclude: Iterable[Path] = (), candidate: str | None = None) -> str:
    """The fingerprint of the configured training, as ``sha256:<hex>``."""
    train = cfg.train
    header = {
        "candidate": candidate,
        "v": FINGERPRINT_VERSION,
        "experiment": cfg.experiment,
        "command": cfg.training_command(),  # an entry point's command as MLproject says it now, parameters filled in
        "workdir": train.workdir,
        "env": sorted(train.env),  # (name, value) pairs
        "metrics_file": train.metrics_file,
        "inputs": "auto" if train.auto_inputs else list(train.inputs),
        **({"ignore": list(train.ignore), "data": list(train.data)} if train.auto_inputs else {}),
        # where it ran, when not here: a job's resources (its GPUs, its packages) may change the model
        **({"engine": train.engine, "ray": train.ray.model_dump(mode="json")} if train.engine != "local" else {}),
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    files = input_files(cfg, exclude=[*exclude, cfg.path])  # the configuration counts by its train section, above
    _add_files(digest, cfg.root, [rel.as_posix() for rel in files]).save()
    return "sha256:" + digest.hexdigest()


def _add_files(digest, root: Path, names: list[str]) -> FileIds:
    """Hash each file by its name and content id into ``digest``; the ids, to save for the next scan."""
    ids = FileIds.scan(root, names)
    for name in names:
        digest.update(b"\0file\0" + name.encode() + b"\0" + ids.id(name).encode())
    return ids


# The files that hold data rather than code, among a training's inputs, when train.data does not name them.
DATA_SUFFIXES = frozenset({".csv", ".tsv", ".parquet", ".pq", ".feather", ".arrow", ".jsonl", ".ndjson", ".npy", ".npz",
                           ".h5", ".hdf5", ".avro", ".orc", ".xlsx", ".xls", ".csv.gz", ".zip", ".tfrecord"})


def data_files(cfg: Config, *, exclude: Iterable[Path] = ()) -> list[Path]:
    """The data the training reads: the files of ``train.data``, else the inputs whose suffix says data."""
    if cfg.train.data:
        return matched_files(cfg.root, cfg.train.data, exclude=exclude)
    return [rel for rel in input_files(cfg, exclude=exclude)
            if rel.suffix.lower() in DATA_SUFFIXES or "".join(rel.suffixes[-2:]).lower() in DATA_SUFFIXES]


def data_fingerprint(cfg: Config, *, exclude: Iterable[Path] = ()) -> str | None:
    """``sha256:<hex>`` of the training's data files (names and git blob ids); None when it reads none we see.
    Two runs with different data fingerprints scored their own training-logged metrics on different rows."""
    names = [rel.as_posix() for rel in data_files(cfg, exclude=exclude)]
    if not names:
        return None
    digest = hashlib.sha256(b"mlflow-ci data v1")
    _add_files(digest, cfg.root, names)
    return "sha256:" + digest.hexdigest()

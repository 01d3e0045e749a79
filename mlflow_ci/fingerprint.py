"""The run-cache fingerprint: a hash of everything that can change the trained model.

Always included: the experiment, the whole ``train`` section (command, working directory,
environment, metrics file, the input globs themselves). Then every file matched by ``train.inputs``
(path and content). A run is reused only when all of it is identical.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from mlflow_ci.config.models import Config

FINGERPRINT_VERSION = "1"
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


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(cfg: Config, *, exclude: Iterable[Path] = (), candidate: str | None = None) -> str:
    """The fingerprint of the configured training, as ``sha256:<hex>``."""
    train = cfg.train
    header = {
        "candidate": candidate,
        "v": FINGERPRINT_VERSION,
        "experiment": cfg.experiment,
        "command": train.command,
        "workdir": train.workdir,
        "env": sorted(train.env),
        "metrics_file": train.metrics_file,
        "inputs": list(train.inputs),
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for rel in matched_files(cfg.root, train.inputs, exclude=exclude):
        digest.update(b"\0file\0" + rel.as_posix().encode() + b"\0" + _hash_file(cfg.root / rel).encode())
    return "sha256:" + digest.hexdigest()

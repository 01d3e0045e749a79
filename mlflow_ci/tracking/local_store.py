"""A local SQLite store that outlives the runner: packed into a folder that GitHub's Actions cache keeps
between workflow runs, and checked as untrusted data when it comes back.

The store is the project's default one: ``mlflow.db`` with its artifacts in ``mlartifacts/`` beside it.
``save`` copies both into a folder (the database through SQLite's backup API, so a consistent copy even
while another process reads it), with ``mlflow-ci-store.json`` saying where it came from. ``restore``
refuses a folder whose database is corrupt, truncated or of another MLflow schema revision (the caller
warns and falls back to training the base commit), copies it into place, and rewrites the absolute
artifact locations MLflow keeps in the database when the project now lives at another path.
``prune`` keeps the store bounded: every run a registered model version points at, plus the newest
``keep`` finished runs per branch; the rest are deleted for good (``mlflow gc``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

from mlflow_ci.errors import ServiceError
from mlflow_ci.result import age
from mlflow_ci.tracking.base import TAG_BRANCH, validated_run_of
from mlflow_ci.tracking.sqlite import KNOWN_REVISIONS, local_dir, read_only_uri, schema_revision

DATABASE = "mlflow.db"
ARTIFACTS = "mlartifacts"
META = "mlflow-ci-store.json"
# Columns where MLflow's SQL store keeps absolute artifact locations (MLflow 3.17 schema).
LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("logged_models", "artifact_location"),
                    ("model_versions", "source"), ("model_versions", "storage_location"))


@dataclass(frozen=True)
class StoreMeta:
    """Where a saved store came from."""

    branch: str | None
    commit: str | None
    saved_at: float  # seconds since the epoch
    artifact_root: str  # the artifacts folder's URI when it was saved
    revision: str | None
    runs: int
    workflow_run: str | None = None
    via: str | None = None  # how the folder reached this machine, as ``store restore --via`` said (the Actions cache)

    def name(self) -> str:
        """``store of main@8ad3e1f2a9b0``."""
        return f"store of {self.branch or 'an unknown branch'}" + (f"@{self.commit[:12]}" if self.commit else "")

    def describe(self, now: float) -> str:
        return f"{self.name()} saved {age(now - self.saved_at)}"


@dataclass(frozen=True)
class Restored:
    status: str  # restored | nothing | rejected | kept
    reason: str
    meta: StoreMeta | None = None


def read_meta(folder: Path) -> StoreMeta | None:
    """The metadata beside a store, or None when there is none or it is not ours."""
    try:
        data = json.loads((folder / META).read_text(encoding="utf-8"))
        return StoreMeta(**{k: data.get(k) for k in StoreMeta.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None


def problem(database: Path) -> str | None:
    """Why a database cannot serve as the store, or None when it can."""
    if not database.is_file():
        return "there is no database"
    try:
        with contextlib.closing(sqlite3.connect(read_only_uri(database), uri=True, timeout=10)) as db:
            check = db.execute("PRAGMA quick_check").fetchone()
    except sqlite3.Error as exc:
        return f"it is not a readable SQLite database ({exc})"
    if not check or check[0] != "ok":
        return f"the database is damaged ({check[0] if check else 'no answer'})"
    revision = schema_revision(database)
    if revision not in KNOWN_REVISIONS:
        return f"its MLflow schema revision {revision or 'is missing'} is not this MLflow's ({', '.join(sorted(KNOWN_REVISIONS))})"
    return None


def count_runs(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(read_only_uri(database), uri=True)) as db:
        return db.execute("SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'").fetchone()[0]


def save(database: Path, dest: Path, meta: StoreMeta) -> None:
    """Copy the store (database, artifacts, metadata) into ``dest``, replacing what was there."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(str(database), timeout=60)) as src, \
            contextlib.closing(sqlite3.connect(str(dest / DATABASE))) as out:
        src.backup(out)
        out.execute("VACUUM")
    artifacts = database.parent / ARTIFACTS
    if artifacts.is_dir():
        shutil.copytree(artifacts, dest / ARTIFACTS, symlinks=True)
    (dest / META).write_text(json.dumps(asdict(meta), indent=2) + "\n", encoding="utf-8")


def restore(src: Path, database: Path, via: str | None = None) -> Restored:
    """Put a saved store in place of the project's (absent) one; refuse a store that is not sound. ``via``: how
    the folder got here, kept with the store for the reports (None: a saved folder)."""
    if not (src / DATABASE).exists():
        return Restored("nothing", "no saved store was restored")
    meta = read_meta(src)
    why = problem(src / DATABASE)
    if why is None and meta is None:
        why = f"{META} is missing or unreadable"
    if why:
        return Restored("rejected", f"the restored store was not used: {why}", meta)
    if database.exists():
        return Restored("kept", f"a store already exists at {database}; the restored one was not used", meta)
    database.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(read_only_uri(src / DATABASE), uri=True)) as source, \
            contextlib.closing(sqlite3.connect(str(database))) as out:
        source.backup(out)
    if (src / ARTIFACTS).is_dir():
        shutil.copytree(src / ARTIFACTS, database.parent / ARTIFACTS, symlinks=True, dirs_exist_ok=True)
    relocate(database, meta.artifact_root, (database.parent / ARTIFACTS).resolve().as_uri())
    meta = replace(meta, via=via)
    (database.parent / META).write_text(json.dumps(asdict(meta), indent=2) + "\n", encoding="utf-8")
    return Restored("restored", "", meta)


def relocate(database: Path, old: str, new: str) -> int:
    """Point the artifact locations under ``old`` at ``new`` (the project moved); returns rows changed."""
    if not old or old == new:
        return 0
    changed = 0
    with contextlib.closing(sqlite3.connect(str(database))) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, column in LOCATION_COLUMNS:
            if table in tables:
                changed += db.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                    (new, len(old) + 1, len(old), old),
                ).rowcount
        db.commit()
    return changed


def prune(tracking_uri: str, keep: int, env: Mapping[str, str], *, run: Callable = subprocess.run) -> int:
    """Delete for good every run that no model version uses and that is not among the newest ``keep``
    finished runs of its branch; returns how many were deleted."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    # a version's run (its release copy) and the gated run it stands for (mlflow_ci.run_id: its baseline metrics)
    pinned = {run_id for mv in client.search_model_versions(max_results=10_000)
              for run_id in (mv.run_id, validated_run_of(mv.run_id, dict(mv.tags or {}))) if run_id}
    doomed: list[str] = []
    folders: list[Path | None] = []
    for experiment in client.search_experiments():
        kept: dict[str, int] = {}
        for found in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=50_000):
            branch = found.data.tags.get(TAG_BRANCH, "")
            if found.info.run_id in pinned:
                continue
            if found.info.status == "FINISHED" and kept.get(branch, 0) < keep:
                kept[branch] = kept.get(branch, 0) + 1
                continue
            doomed.append(found.info.run_id)
            folders.append(local_dir(found.info.artifact_uri))
    for run_id in doomed:
        client.delete_run(run_id)
    if doomed:
        proc = run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", tracking_uri, "--run-ids", ",".join(doomed)],
                   capture_output=True, text=True, check=False, env={**env, "MLFLOW_TRACKING_URI": tracking_uri})
        if proc.returncode != 0:
            last = ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1]
            raise ServiceError(f"mlflow gc failed while pruning the store: {last}")
    for folder in filter(None, folders):  # gc empties a run's artifact folder; the folders stay behind
        for empty in (folder, folder.parent):
            if empty.is_dir() and not any(p.is_file() for p in empty.rglob("*")):
                shutil.rmtree(empty)
    return len(doomed)


"""The PR check's hot path on a local MLflow SQLite store, with the standard library's ``sqlite3``.

Opening a SQLite store through MLflow costs about two seconds (``import mlflow`` and its SQLAlchemy
store), while the check needs a dozen small queries. This client reads and writes the tracking
tables MLflow's SQL store defines (``experiments``, ``runs``, ``tags``, ``params``, ``metrics``,
``latest_metrics``) and reads the registry's aliases and versions, with the same semantics as
MLflow's ``SqlAlchemyStore``: NaN is stored as 0 with ``is_nan``, infinities as the largest double,
the latest metric is the one with the greatest (step, timestamp, value), tag values are cut at 8,000
characters, deleted runs and experiments are not found by searches.

It is used only when the database's schema revision is one this module was verified against
(:data:`KNOWN_REVISIONS`, checked by the test suite against the installed MLflow); any other
revision, a missing database, workspaces, or ``MLFLOW_CI_SQLITE=false`` use MLflow's own client.
Creating the experiment, the first time, is always MLflow's job (it also creates and migrates the
database), and so are artifacts outside the local file system.

MLflow's schema has no index on tag values, so any search by tag (MLflow's own included) reads every
run's tag of that key. On first use this module adds one index, ``mlflow_ci_tags_key_value`` on
``tags (key, value)``, which turns the commit, fingerprint and pull-request lookups into index seeks
however many runs the experiment holds. MLflow neither needs nor minds it (its migrations check the
Alembic revision, which is unchanged); ``DROP INDEX mlflow_ci_tags_key_value`` removes it.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import quote, unquote, urlparse

from mlflow_ci.errors import ServiceError, UsageError
from mlflow_ci.tracking.base import (
    SEARCH_WINDOW,
    TAG_RUN_NAME,
    TAG_USER,
    TAG_VALIDATED_RUN,
    RunSnapshot,
    SearchMixin,
    first_line,
    now_ms,
    sqlite_path,
    validated_run_of,
)
from mlflow_ci.tracking.mlflow_client import MlflowTracker

# Alembic heads of MLflow schemas whose run, tag, metric and alias tables this module matches
# (3.17.x). tests/tracking/test_sqlite.py fails when the installed MLflow creates another one.
KNOWN_REVISIONS = frozenset({"dc11669786a5"})
DEFAULT_WORKSPACE = "default"
MAX_TAG_VALUE = 8000
DOUBLE_MAX = 1.7976931348623157e308
DELETED_VERSION_STAGE = "Deleted_Internal"
TAG_VALUE_INDEX = "mlflow_ci_tags_key_value"
# MLflow's schema indexes neither: runs by tag value (the cache, baseline and PR lookups) and an
# experiment's runs by start time (the trend: the newest runs of a branch, walked newest first).
INDEXES = {TAG_VALUE_INDEX: "tags (key, value)", "mlflow_ci_runs_recent": "runs (experiment_id, start_time)"}
BUSY_TIMEOUT_MS = 60_000  # how long a write waits for another writer (parallel candidates, the training child)


def read_only_uri(path: Path) -> str:
    """The URI that opens a database file read-only, without ever creating it."""
    return f"file:{quote(str(path))}?mode=ro"


def schema_revision(path: Path) -> str | None:
    """The database's Alembic revision, read without creating the file; None if there is none."""
    try:
        with contextlib.closing(sqlite3.connect(read_only_uri(path), uri=True, timeout=30)) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def open_sqlite(tracking_uri: str, env: Mapping[str, str]) -> "SqliteTracker | None":
    """A :class:`SqliteTracker` when the fast path applies to this store, else None."""
    if env.get("MLFLOW_CI_SQLITE", "true").lower() == "false":
        return None
    if env.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in ("true", "1") or env.get("MLFLOW_WORKSPACE"):
        return None
    path = sqlite_path(tracking_uri)
    if path is None or "?" in tracking_uri or not path.is_file() or schema_revision(path) not in KNOWN_REVISIONS:
        return None
    return SqliteTracker(tracking_uri, path)


def stored_metric(value: float) -> tuple[float, int]:
    """(value, is_nan) the way MLflow's SQL store keeps a metric value."""
    value = float(value)
    if math.isnan(value):
        return 0.0, 1
    if math.isinf(value):
        return (DOUBLE_MAX if value > 0 else -DOUBLE_MAX), 0
    return value, 0


def local_dir(uri: str) -> Path | None:
    """The directory behind a local artifact URI (absolute path or ``file://``), else None."""
    if uri.startswith("/"):
        return Path(uri)
    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost") and not parsed.query:
        return Path(unquote(parsed.path))
    return None


class SqliteTracker(SearchMixin):
    """The subset of :class:`mlflow_ci.tracking.MlflowTracker` the PR check needs, on SQLite."""
    def __init__(self, tracking_uri: str, path: Path) -> None:
        self.tracking_uri = tracking_uri
        self.path = path
        self._db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self._mlflow: MlflowTracker | None = None
        self._ensure_indexes()

    def close(self) -> None:
        self._db.close()

    @property
    def mlflow(self) -> MlflowTracker:
        """MLflow's own client, for what this module leaves to it (imported on first use)."""
        if self._mlflow is None:
            self._mlflow = MlflowTracker(self.tracking_uri)
        return self._mlflow

    # -- transport ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _service(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise ServiceError(
                f"could not {what} in {self.path}: {first_line(exc)}",
                hint="check that the file is writable and no other process holds a lock on it, then re-run",
            ) from None

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so concurrent writers queue instead of failing."""
        with self._service(what):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _ensure_indexes(self) -> None:
        """Add mlflow-ci's indexes once. They are an optimisation: a read-only store, or one another
        writer holds for more than half a second, just stays slower this time."""
        with contextlib.suppress(sqlite3.Error):
            present = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            missing = [name for name in INDEXES if name not in present]
            if not missing:
                return
            self._db.execute("PRAGMA busy_timeout = 500")
            try:
                for name in missing:
                    self._db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {INDEXES[name]}")
            finally:
                self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def _rows(self, sql: str, args=()) -> list[tuple]:
        return self._db.execute(sql, args).fetchall()

    # -- experiments and runs ----------------------------------------------------------------------
    def _experiment(self, experiment_id: str) -> tuple[str, str | None]:
        rows = self._rows("SELECT lifecycle_stage, artifact_location FROM experiments WHERE experiment_id = ?",
                          (int(experiment_id),))
        if not rows:
            raise UsageError(f"experiment {experiment_id} does not exist in {self.path}")
        return rows[0]

    def experiment_id(self, name: str, *, create: bool, artifact_location: str | None = None) -> str | None:
        with self._service(f"look up experiment {name!r}"):
            rows = self._rows("SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ? AND workspace = ?",
                              (name, DEFAULT_WORKSPACE))
        if rows:
            if rows[0][1] == "deleted":
                raise UsageError(f"experiment {name!r} is deleted in {self.tracking_uri}",
                                 hint="restore it (mlflow experiments restore) or choose another name")
            return str(rows[0][0])
        if not create:
            return None
        return self.mlflow.experiment_id(name, create=True, artifact_location=artifact_location)

    def start_run(self, experiment_id: str, *, run_name: str, tags: Mapping[str, str]) -> str:
        with self._service("create a run"):
            stage, location = self._experiment(experiment_id)
        if stage != "active":
            raise UsageError(f"experiment {experiment_id} is deleted in {self.tracking_uri}")
        if not location or local_dir(location) is None:
            return self.mlflow.start_run(experiment_id, run_name=run_name, tags=tags)
        run_id = uuid.uuid4().hex
        tags = {**{k: str(v) for k, v in tags.items()}, TAG_RUN_NAME: run_name}
        with self._write("create a run") as db:
            db.execute(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status,"
                " start_time, end_time, deleted_time, source_version, lifecycle_stage, artifact_uri, experiment_id)"
                " VALUES (?, ?, 'UNKNOWN', '', '', ?, 'RUNNING', ?, NULL, NULL, '', 'active', ?, ?)",
                (run_id, run_name, tags.get(TAG_USER, "unknown"), now_ms(),
                 f"{location.rstrip('/')}/{run_id}/artifacts", int(experiment_id)),
            )
            db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                           [(k, v[:MAX_TAG_VALUE], run_id) for k, v in tags.items()])
        return run_id

    def _active_run(self, db: sqlite3.Connection, run_id: str) -> None:
        row = db.execute("SELECT lifecycle_stage FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(f"run {run_id} does not exist in {self.tracking_uri}")
        if row[0] != "active":
            raise UsageError(f"run {run_id} is deleted in {self.tracking_uri}")

    def log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        if not metrics:
            return
        now = now_ms()
        rows = [(key, *stored_metric(value), now, 0) for key, value in metrics.items()]
        with self._write("log metrics") as db:
            self._active_run(db, run_id)
            db.executemany(
                "INSERT OR IGNORE INTO metrics (key, value, is_nan, timestamp, step, run_uuid) VALUES (?, ?, ?, ?, ?, ?)",
                [(*row, run_id) for row in rows],
            )
            for key, value, is_nan, timestamp, step in rows:
                latest = db.execute("SELECT step, timestamp, value FROM latest_metrics WHERE run_uuid = ? AND key = ?",
                                    (run_id, key)).fetchone()
                if latest is None:
                    db.execute("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)"
                               " VALUES (?, ?, ?, ?, ?, ?)", (key, value, timestamp, step, is_nan, run_id))
                elif (step, timestamp, value) > tuple(latest):
                    db.execute("UPDATE latest_metrics SET value = ?, timestamp = ?, step = ?, is_nan = ?"
                               " WHERE run_uuid = ? AND key = ?", (value, timestamp, step, is_nan, run_id, key))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        if not tags:
            return
        with self._write("set run tags") as db:
            self._active_run(db, run_id)
            db.executemany(
                "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)"
                " ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value",
                [(k, str(v)[:MAX_TAG_VALUE], run_id) for k, v in tags.items()],
            )
            if TAG_RUN_NAME in tags:
                db.execute("UPDATE runs SET name = ? WHERE run_uuid = ?", (str(tags[TAG_RUN_NAME]), run_id))

    def end_run(self, run_id: str, status: str) -> None:
        with self._write("finish the run") as db:
            self._active_run(db, run_id)
            db.execute("UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?", (status, now_ms(), run_id))

    def _artifact_dir(self, run_id: str) -> Path | None:
        with self._service(f"read run {run_id}"):
            row = self._db.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        return local_dir(row[0]) if row and row[0] else None

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        root = self._artifact_dir(run_id)
        if root is None:
            return self.mlflow.log_artifact(run_id, path, artifact_path)
        target = root / artifact_path.strip("/") if artifact_path else root
        try:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)
        except OSError as exc:
            raise ServiceError(f"could not store artifact {path.name} in {target}: {exc.strerror or exc}") from None

    def read_artifact(self, run_id: str, artifact: str, dst: Path) -> bytes | None:
        root = self._artifact_dir(run_id)
        if root is None:
            return self.mlflow.read_artifact(run_id, artifact, dst)
        try:
            return (root / artifact).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None


    def get_run(self, run_id: str) -> RunSnapshot | None:
        with self._service(f"read run {run_id}"):
            runs = self._snapshots([run_id])
        return runs[0] if runs else None

    def search_runs(self, experiment_id: str, *, tags: Mapping[str, str], limit: int = SEARCH_WINDOW,
                    since_ms: int | None = None) -> list[RunSnapshot]:
        """Newest FINISHED, active runs whose tags equal ``tags`` (bounded; started at ``since_ms`` or later)."""
        # The plan is chosen here, not left to SQLite's guess (a unary + keeps a column's index out of it):
        # a lookup by tag value seeks the tag-value index (a commit, a fingerprint: a few rows); a recent-runs
        # query walks the experiment's runs newest first and stops at ``limit`` (a branch: many rows).
        value, experiment = ("+t{i}.value", "r.experiment_id") if since_ms is not None else ("t{i}.value", "+r.experiment_id")
        joins = "".join(f" JOIN tags t{i} ON t{i}.run_uuid = r.run_uuid AND t{i}.key = ? AND {value.format(i=i)} = ?"
                        for i in range(len(tags)))
        args = [part for key, value in tags.items() for part in (key, str(value))]
        since = "" if since_ms is None else " AND r.start_time >= ?"
        sql = (f"SELECT r.run_uuid FROM runs r{joins} WHERE {experiment} = ? AND r.status = 'FINISHED'"
               f" AND r.lifecycle_stage = 'active'{since} ORDER BY r.start_time DESC, r.run_uuid LIMIT ?")
        bounds = () if since_ms is None else (int(since_ms),)
        with self._service("search runs"):
            ids = [row[0] for row in self._rows(sql, (*args, int(experiment_id), *bounds, int(limit)))]
            return self._snapshots(ids)

    def _snapshots(self, run_ids: list[str]) -> list[RunSnapshot]:
        """Full snapshots of these runs, in this order, with one query per table."""
        if not run_ids:
            return []
        marks = ",".join("?" * len(run_ids))
        info = {row[0]: row[1:] for row in self._rows(
            f"SELECT run_uuid, experiment_id, status, start_time, name FROM runs WHERE run_uuid IN ({marks})", run_ids)}
        metrics: dict[str, dict[str, float]] = {}
        for run, key, value, is_nan in self._rows(
                f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({marks})", run_ids):
            metrics.setdefault(run, {})[key] = math.nan if is_nan else float(value)
        params: dict[str, dict[str, str]] = {}
        for run, key, value in self._rows(f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", run_ids):
            params.setdefault(run, {})[key] = value
        tags: dict[str, dict[str, str]] = {}
        for run, key, value in self._rows(f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", run_ids):
            tags.setdefault(run, {})[key] = value
        return [
            RunSnapshot(run_id=run, experiment_id=str(info[run][0]), status=info[run][1], start_time=info[run][2],
                        run_name=info[run][3], metrics=metrics.get(run, {}), params=params.get(run, {}),
                        tags=tags.get(run, {}))
            for run in run_ids if run in info
        ]

    # -- registry (reads) --------------------------------------------------------------------------
    def _version_run(self, model: str, version: int) -> str | None:
        """The gated run the version stands for (:func:`validated_run_of`)."""
        row = self._db.execute(
            "SELECT run_id FROM model_versions WHERE workspace = ? AND name = ? AND version = ? AND current_stage != ?",
            (DEFAULT_WORKSPACE, model, version, DELETED_VERSION_STAGE)).fetchone()
        if row is None:
            return None
        tag = self._db.execute(
            "SELECT value FROM model_version_tags WHERE workspace = ? AND name = ? AND version = ? AND key = ?",
            (DEFAULT_WORKSPACE, model, version, TAG_VALIDATED_RUN)).fetchone()
        return validated_run_of(row[0], {TAG_VALIDATED_RUN: tag[0]} if tag and tag[0] else {})

    def run_for_alias(self, model: str, alias: str) -> tuple[RunSnapshot, str] | None:
        with self._service(f"read {model}@{alias}"):
            row = self._db.execute(
                "SELECT version FROM registered_model_aliases WHERE workspace = ? AND name = ? AND alias = ?",
                (DEFAULT_WORKSPACE, model, alias)).fetchone()
            run_id = self._version_run(model, row[0]) if row else None
        run = self.get_run(run_id) if run_id else None
        return (run, str(row[0])) if run else None

    def run_for_version(self, model: str, version: str) -> RunSnapshot | None:
        if not str(version).isdigit():
            return None
        with self._service(f"read {model}/{version}"):
            run_id = self._version_run(model, int(version))
        return self.get_run(run_id) if run_id else None

"""The sqlite3 tracker against stores MLflow itself created: what one writes the other reads back the same."""

from __future__ import annotations

import math
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import clean_env

from mlflow_ci.errors import UsageError
from mlflow_ci.tracking import MlflowTracker, open_tracker
from mlflow_ci.tracking.sqlite import (
    KNOWN_REVISIONS,
    TAG_VALUE_INDEX,
    SqliteTracker,
    local_dir,
    open_sqlite,
    schema_revision,
    sqlite_path,
)

COMMIT = "mlflow.source.git.commit"
BRANCH = "mlflow.source.git.branch"


@pytest.fixture
def store(tmp_path: Path):
    """A SQLite store created and migrated by MLflow, with one experiment; returns (uri, path, experiment id)."""
    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path}"
    exp = MlflowTracker(uri).experiment_id("exp", create=True, artifact_location=str(tmp_path / "artifacts"))
    return uri, path, exp


def fast(uri: str) -> SqliteTracker:
    tracker = open_tracker(uri, {})
    assert isinstance(tracker, SqliteTracker)
    return tracker


def comparable(run):
    """An MLflow run as plain data, without ids and clocks."""
    metrics = {k: ("nan" if math.isnan(v) else v) for k, v in run.data.metrics.items()}
    return {
        "status": run.info.status, "run_name": run.info.run_name, "user_id": run.info.user_id,
        "lifecycle_stage": run.info.lifecycle_stage, "experiment_id": run.info.experiment_id,
        "artifact_uri": run.info.artifact_uri.replace(run.info.run_id, "<run>"),
        "ended": run.info.end_time is not None, "metrics": metrics, "params": dict(run.data.params),
        "tags": dict(run.data.tags),
    }


def plain(snapshot):
    """A RunSnapshot with NaN made comparable."""
    if snapshot is None:
        return None
    return snapshot.__class__(**{**snapshot.__dict__, "metrics": {k: repr(v) for k, v in snapshot.metrics.items()}})


def write_sequence(tracker, exp: str, log: Path) -> str:
    run_id = tracker.start_run(exp, run_name="pr-7@abc", tags={COMMIT: "a" * 40, "mlflow.user": "ci-bot", "k": "v"})
    tracker.log_metrics(run_id, {"acc": 0.9, "loss": float("nan"), "big": float("inf"), "small": float("-inf")})
    tracker.log_metrics(run_id, {"acc": 0.91})
    tracker.set_tags(run_id, {"mlflow_ci.verdict": "pass", "k": "changed", "long": "x" * 9000,
                              "mlflow.runName": "renamed"})
    tracker.log_artifact(run_id, log)
    tracker.log_artifact(run_id, log, "logs/nested")
    tracker.end_run(run_id, "FINISHED")
    return run_id


def test_known_revisions_include_the_installed_mlflow(store):
    _, path, _ = store
    assert schema_revision(path) in KNOWN_REVISIONS, (
        f"MLflow's schema revision {schema_revision(path)} is new: check tracking_sqlite.py against its "
        "migrations (runs, tags, params, metrics, latest_metrics, model_versions, registered_model_aliases) "
        "and add it to KNOWN_REVISIONS"
    )


def test_writes_read_back_by_mlflow_exactly_like_mlflow_own_writes(store, tmp_path):
    uri, _, exp = store
    log = tmp_path / "train.log"
    log.write_text("hello\n")
    ours, theirs = fast(uri), MlflowTracker(uri)
    mine, reference = write_sequence(ours, exp, log), write_sequence(theirs, exp, log)
    client = theirs.client
    assert comparable(client.get_run(mine)) == comparable(client.get_run(reference))
    got = comparable(client.get_run(mine))
    assert got["metrics"]["acc"] == 0.91 and got["metrics"]["loss"] == "nan" and got["run_name"] == "renamed"
    assert got["user_id"] == "ci-bot" and len(got["tags"]["long"]) == 8000
    assert [m.value for m in client.get_metric_history(mine, "acc")] == [0.9, 0.91]
    for run_id in (mine, reference):
        assert sorted(a.path for a in client.list_artifacts(run_id)) == ["logs", "train.log"]
        assert [a.path for a in client.list_artifacts(run_id, "logs/nested")] == ["logs/nested/train.log"]
    # ...and the same read back by us and by MLflow's client
    assert plain(ours.get_run(mine)) == plain(theirs.get_run(mine))
    assert ours.read_artifact_text(mine, "train.log", tmp_path) == "hello\n"
    assert ours.read_artifact_text(mine, "missing.json", tmp_path) is None


def test_reads_match_mlflow_on_runs_mlflow_wrote(store):
    uri, _, exp = store
    theirs = MlflowTracker(uri)
    client = theirs.client
    ids = []
    for i, status in enumerate(["FINISHED", "FAILED", "FINISHED", "FINISHED", "FINISHED"]):
        run = client.create_run(exp, run_name=f"r{i}", tags={BRANCH: "main", COMMIT: f"{i % 2:040x}"},
                                start_time=1_000 + i)
        client.log_param(run.info.run_id, "lr", str(0.1 * i))
        for step in range(3):
            client.log_metric(run.info.run_id, "acc", 0.5 + i / 10 + step / 100, step=step, timestamp=5)
        client.set_terminated(run.info.run_id, status=status)
        ids.append(run.info.run_id)
    client.delete_run(ids[4])  # the newest is deleted: searches never find it
    ours = fast(uri)
    for tags in ({BRANCH: "main"}, {COMMIT: f"{0:040x}"}, {BRANCH: "main", COMMIT: f"{1:040x}"}, {BRANCH: "dev"}):
        assert ours.search_runs(exp, tags=tags) == theirs.search_runs(exp, tags=tags), tags
    assert [r.run_id for r in ours.search_runs(exp, tags={BRANCH: "main"})] == [ids[3], ids[2], ids[0]]
    assert ours.search_runs(exp, tags={BRANCH: "main"}, limit=1)[0].run_id == ids[3]
    assert ours.get_run(ids[3]).metrics == {"acc": pytest.approx(0.82)}  # the latest step wins
    assert ours.get_run(ids[4]) == theirs.get_run(ids[4])  # get_run still sees a deleted run, like MLflow
    assert ours.get_run("0" * 32) is None
    assert ours.search(exp, tags={BRANCH: "main"}, exclude_run_id=ids[3]).run_id == ids[2]


def test_registry_reads_match_mlflow(store, tmp_path):
    uri, _, exp = store
    theirs = MlflowTracker(uri)
    run_id = theirs.start_run(exp, run_name="m", tags={})
    theirs.end_run(run_id, "FINISHED")
    version = theirs.register(run_id, "model-a")
    theirs.set_alias("model-a", "champion", version)
    ours = fast(uri)
    run, number = ours.run_for_alias("model-a", "champion")
    assert (run.run_id, number) == (run_id, version) and run == theirs.get_run(run_id)
    assert ours.run_for_version("model-a", version).run_id == run_id
    assert ours.run_for_alias("model-a", "nope") is None and theirs.run_for_alias("model-a", "nope") is None
    assert ours.run_for_alias("no-model", "champion") is None
    assert ours.run_for_version("model-a", "99") is None and ours.run_for_version("model-a", "x") is None
    theirs.client.delete_model_version("model-a", version)
    assert ours.run_for_version("model-a", version) is None and theirs.run_for_version("model-a", version) is None


def test_register_once_leaves_one_version_when_two_jobs_race(store, monkeypatch):
    uri, _, exp = store
    tracker = MlflowTracker(uri)
    run_id = tracker.start_run(exp, run_name="m", tags={})
    tracker.end_run(run_id, "FINISHED")
    first = tracker.register_once(run_id, "model-r", artifact_path="model", tags={"k": "v"})
    assert tracker.register_once(run_id, "model-r", artifact_path="model", tags={}) == first  # a re-run reuses it
    # the race: the other job's version 1 was not there when this one looked, so this one registered version 2
    real, blind = MlflowTracker.version_for_run, iter(["the first look misses it"])
    monkeypatch.setattr(MlflowTracker, "version_for_run", lambda self, *a: None if next(blind, None) else real(self, *a))
    deleted = []
    monkeypatch.setattr(tracker.client, "delete_model_version", lambda *a, real=tracker.client.delete_model_version: (
        deleted.append(a), real(*a)))
    kept = tracker.register_once(run_id, "model-r", artifact_path="model", tags={})
    assert (kept.version, kept.run_id, kept.tags) == ("1", run_id, {"k": "v", "mlflow_ci.run_id": run_id})
    versions = tracker.client.search_model_versions("name = 'model-r'")
    assert [str(v.version) for v in versions] == ["1"] and deleted == [("model-r", "2")]  # the job that made 2 deleted it


def test_experiments_missing_deleted_and_created_through_mlflow(store, tmp_path):
    uri, _, exp = store
    ours = fast(uri)
    assert ours.experiment_id("exp", create=False) == exp
    assert ours.experiment_id("other", create=False) is None
    created = ours.experiment_id("other", create=True)  # MLflow's job: it knows the default artifact root
    assert created == MlflowTracker(uri).experiment_id("other", create=False)
    assert ours._mlflow is not None
    MlflowTracker(uri).client.delete_experiment(created)
    with pytest.raises(UsageError, match="experiment 'other' is deleted"):
        ours.experiment_id("other", create=False)


def test_writes_to_a_deleted_run_are_refused(store):
    uri, _, exp = store
    ours = fast(uri)
    run_id = ours.start_run(exp, run_name="x", tags={})
    MlflowTracker(uri).client.delete_run(run_id)
    with pytest.raises(UsageError, match="is deleted"):
        ours.log_metrics(run_id, {"a": 1.0})
    with pytest.raises(UsageError, match="does not exist"):
        ours.set_tags("f" * 32, {"a": "b"})


def test_tag_lookups_are_index_seeks_and_mlflow_still_opens_the_store(store):
    uri, path, exp = store
    fast(uri)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = ?", (TAG_VALUE_INDEX,)).fetchone()
        plan = " ".join(str(row) for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT r.run_uuid FROM runs r JOIN tags t0 ON t0.run_uuid = r.run_uuid"
            " AND t0.key = ? AND t0.value = ? WHERE r.experiment_id = ?", (COMMIT, "a", int(exp))))
    assert TAG_VALUE_INDEX in plan
    # MLflow verifies its schema by revision and keeps working with the extra index.
    proc = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", uri], capture_output=True, text=True,
                          env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert MlflowTracker(uri).experiment_id("exp", create=False) == exp


def grow(path: Path, exp: str, runs: int) -> None:
    """``runs`` more finished runs on main, one a minute, written straight into MLflow's tables."""
    with sqlite3.connect(path) as db:
        db.execute(f"""WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < {runs})
            INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time,
                              end_time, source_version, lifecycle_stage, artifact_uri, experiment_id)
            SELECT printf('%032x', n), 'r', 'LOCAL', '', '', 'u', 'FINISHED', 1700000000000 + n * 60000,
                   1700000000000 + n * 60000 + 1, '', 'active', 'x', {int(exp)} FROM i""")
        db.execute(f"""INSERT INTO tags (key, value, run_uuid) SELECT ?, 'main', run_uuid FROM runs
                       WHERE experiment_id = {int(exp)}""", (BRANCH,))
        db.execute(f"""INSERT INTO tags (key, value, run_uuid) SELECT ?, run_uuid, run_uuid FROM runs
                       WHERE experiment_id = {int(exp)}""", (COMMIT,))


def steps(tracker: SqliteTracker, call) -> int:
    """SQLite virtual-machine steps (in thousands) the call takes: work done, whatever the machine's speed."""
    count = [0]

    def tick():
        count[0] += 1
        return 0

    tracker._db.set_progress_handler(tick, 1000)
    try:
        call()
    finally:
        tracker._db.set_progress_handler(None, 0)
    return count[0]


def test_lookups_cost_the_same_at_ten_times_the_runs(tmp_path):
    """The trend's newest-runs query walks runs newest first and stops; the lookup by commit seeks the tag
    index: neither grows with the experiment (counted in SQLite's own steps, not seconds)."""
    cost = {}
    for runs in (500, 5000):
        path = tmp_path / f"s{runs}.db"
        uri = f"sqlite:///{path}"
        exp = MlflowTracker(uri).experiment_id("exp", create=True, artifact_location=str(tmp_path / "a"))
        grow(path, exp, runs)
        tracker = fast(uri)
        newest = 1700000000000 + runs * 60000
        recent = lambda: tracker.search_runs(exp, tags={BRANCH: "main"}, limit=61, since_ms=newest - 14 * 86_400_000)
        assert len(recent()) == 61 and recent()[0].run_id == f"{runs:032x}"
        by_commit = lambda: tracker.search_runs(exp, tags={COMMIT: f"{7:032x}"})
        assert [r.run_id for r in by_commit()] == [f"{7:032x}"]
        cost[runs] = (steps(tracker, recent), steps(tracker, by_commit))
    assert cost[5000][0] <= 1.5 * cost[500][0] + 2, cost
    assert cost[5000][1] <= 1.5 * cost[500][1] + 2, cost


def test_a_busy_store_is_used_without_the_index_and_gets_it_later(store):
    uri, path, exp = store
    MlflowTracker(uri).start_run(exp, run_name="x", tags={COMMIT: "c"})
    with sqlite3.connect(path, isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the store
        tracker = SqliteTracker(uri, path)
        assert tracker.experiment_id("exp", create=False) == exp
        assert tracker.search_runs(exp, tags={COMMIT: "c"}) == []  # RUNNING, not FINISHED
        assert other.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (TAG_VALUE_INDEX,)).fetchone() is None
        other.execute("ROLLBACK")
    SqliteTracker(uri, path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (TAG_VALUE_INDEX,)).fetchone()


def test_when_the_fast_path_applies(store, tmp_path):
    uri, path, _ = store
    assert isinstance(open_tracker(uri, {}), SqliteTracker)
    assert isinstance(open_tracker(uri, {"MLFLOW_CI_SQLITE": "false"}), MlflowTracker)
    assert open_sqlite(uri, {"MLFLOW_ENABLE_WORKSPACES": "true"}) is None
    assert open_sqlite(uri + "?timeout=5", {}) is None
    assert open_sqlite(f"sqlite:///{tmp_path / 'absent.db'}", {}) is None
    assert not (tmp_path / "absent.db").exists()  # probing never creates a database
    other = tmp_path / "other-revision.db"
    shutil.copy(path, other)
    with sqlite3.connect(other) as db:
        db.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    assert open_sqlite(f"sqlite:///{other}", {}) is None
    odd = tmp_path / "we#ird %20 dir" / "mlflow.db"
    odd.parent.mkdir()
    shutil.copy(path, odd)
    assert schema_revision(odd) in KNOWN_REVISIONS and open_sqlite(f"sqlite:///{odd}", {}) is not None
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path("sqlite:////a/b.db") == Path("/a/b.db")
    assert local_dir("/x/y") == Path("/x/y") and local_dir("file:///x/y%20z") == Path("/x/y z")
    assert local_dir("s3://bucket/x") is None and local_dir("mlflow-artifacts:/x") is None


def test_non_local_artifact_roots_go_through_mlflow(store, tmp_path):
    uri, _, _ = store
    theirs = MlflowTracker(uri)
    exp = theirs.experiment_id("remote-art", create=True, artifact_location="mlflow-artifacts:/remote")
    ours = fast(uri)
    assert ours._mlflow is None
    run_id = ours.start_run(exp, run_name="r", tags={})
    assert ours._mlflow is not None  # the run URI for other schemes is MLflow's to build
    assert theirs.client.get_run(run_id).info.artifact_uri == f"mlflow-artifacts:/remote/{run_id}/artifacts"


def test_check_on_a_local_store_never_imports_mlflow_once_the_experiment_exists(project):
    name = f"noimport-{uuid.uuid4().hex[:8]}"
    project.write("mlflow-ci.yml", (project.root / "mlflow-ci.yml").read_text().replace("experiment: churn", f"experiment: {name}"))
    assert project.cli("check", "--no-publish").returncode == 0  # creates the store and the experiment
    project.set_metrics(accuracy=0.91, rmse=4.0)
    project.commit("better")
    code = (
        "import sys\nfrom mlflow_ci.cli import main\n"
        "try:\n    main(['check', '--no-publish'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'mlflow' not in sys.modules, 'mlflow was imported'\nprint('OK no mlflow')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True, env=project.env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK no mlflow" in proc.stdout and "verdict: PASS" in proc.stdout
    run = MlflowTracker(project.uri).client.get_run(project.result()["candidate"]["run_id"])
    assert run.data.metrics == {"accuracy": 0.91, "rmse": 4.0} and run.data.tags["mlflow_ci.verdict"] == "pass"
    assert run.info.status == "FINISHED"


def test_an_alias_lost_to_a_concurrent_insert_is_set_again(store, monkeypatch):
    """Two deploy jobs setting a new alias at once: MLflow's SQL store reads, then inserts, so one fails on
    the alias table's key (as PostgreSQL words it through the server) and sets it again; any other
    failure is not retried."""
    from mlflow.exceptions import MlflowException

    uri, _, exp = store
    tracker = MlflowTracker(uri)
    run_id = tracker.start_run(exp, run_name="m", tags={})
    tracker.end_run(run_id, "FINISHED")
    version = tracker.register(run_id, "model-r")
    real, calls = tracker.client.set_registered_model_alias, []

    def racing(name, alias, number, lost="(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint"):
        calls.append(alias)
        if len(calls) == 1:
            raise MlflowException(f"BAD_REQUEST: {lost} \"registered_model_alias_pk\"")
        return real(name, alias, number)

    monkeypatch.setattr(tracker.client, "set_registered_model_alias", racing)
    tracker.set_alias("model-r", "champion", version)
    assert calls == ["champion", "champion"] and tracker.alias_version("model-r", "champion").version == version

    def refused(name, alias, number):
        calls.append(alias)
        raise MlflowException("PERMISSION_DENIED: no")

    monkeypatch.setattr(tracker.client, "set_registered_model_alias", refused)
    with pytest.raises(MlflowException, match="PERMISSION_DENIED"):
        tracker.set_alias("model-r", "previous", version)
    assert calls[2:] == ["previous"]

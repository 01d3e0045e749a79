"""`mlflow-ci store save / restore`: a real SQLite store and its artifacts across "runners" (folders)."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from pathlib import Path

from conftest import git

from mlflow_ci.commands.check import do_check
from mlflow_ci.commands.session import Options, make_session
from mlflow_ci.commands.store import restore_store, save_store
from mlflow_ci.config.loader import load_config
from mlflow_ci.tracking import MlflowTracker, local_store


def session(project, clock=None, **env):
    cfg = load_config(project.root / "mlflow-ci.yml")
    s = make_session(cfg, {**project.env(), **env}, project.root, io.StringIO())
    return s if clock is None else s.__class__(s.cfg, s.env, s.cwd, s.stream, s.tracking_uri, clock)


def check(project, **env):
    return do_check(session(project, **env), Options(out_dir=project.root / ".mlflow-ci"))


def moved(project, tmp_path: Path, name: str):
    """The same repository cloned to another path with an empty store: the next runner."""
    clone = tmp_path / name / "repo"
    clone.parent.mkdir()
    git(tmp_path, "clone", "-q", str(project.root), str(clone))
    return project.__class__(root=clone, store=clone.parent / "mlflow.db")


def test_a_saved_store_comes_back_elsewhere_with_its_artifacts(project, tmp_path):
    main = check(project)
    saved = tmp_path / "cache" / "store"
    out = save_store(session(project, clock=lambda: 1_000_000.0), saved, keep=5)
    assert out.action == "saved" and out.message.startswith("saved the store of main@") and " saved " not in out.message[6:]
    meta = json.loads((saved / local_store.META).read_text())
    assert meta["branch"] == "main" and meta["runs"] == 1 and meta["revision"]

    runner = moved(project, tmp_path, "runner2")
    restored = restore_store(session(runner, clock=lambda: 1_000_000.0 + 2 * 86400), saved, "GitHub's Actions cache")
    assert restored.action == "restored" and restored.message.startswith("restored the store of main@")
    assert "saved 2 days ago (1 runs)" in restored.message
    run = MlflowTracker(runner.uri).get_run(main.result["candidate"]["run_id"])
    assert run is not None
    artifacts = Path(sqlite3.connect(runner.store).execute(
        "SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run.run_id,)).fetchone()[0].removeprefix("file://"))
    assert artifacts.is_relative_to(runner.store.parent) and (artifacts / "train.log").is_file()

    # the PR on the new runner compares with main's run from the restored store, and says where it came from
    runner.branch("feature")
    runner.set_metrics(accuracy=0.95, rmse=4.0)
    runner.commit("feature")
    pr = check(runner, GITHUB_ACTIONS="true")
    assert pr.result["baseline"]["run_id"] == run.run_id
    origin = pr.result["baseline"]["origin"]
    assert origin.startswith("the restored store of main@") and origin.endswith("(GitHub's Actions cache)")
    assert pr.result["baseline"]["age_days"] < 1


def test_an_unsound_store_is_refused_with_a_warning_and_the_base_is_trained(project, tmp_path):
    check(project)
    saved = tmp_path / "cache" / "store"
    save_store(session(project), saved, keep=0)
    (saved / "mlflow.db").write_bytes((saved / "mlflow.db").read_bytes()[:5000])  # truncated in transit
    runner = moved(project, tmp_path, "runner2")
    s = session(runner, GITHUB_ACTIONS="true")
    out = restore_store(s, saved)
    assert out.action == "rejected" and out.message.startswith("the restored store was not used: ")
    assert "::warning title=mlflow-ci store::the restored store was not used" in s.stream.getvalue()
    assert not runner.store.exists()
    runner.branch("feature")
    runner.set_metrics(accuracy=0.95, rmse=4.0)
    runner.commit("feature")
    assert check(runner, GITHUB_ACTIONS="true").result["baseline"]["source"].startswith("base_trained:")


def test_a_store_of_another_mlflow_schema_is_refused(project, tmp_path):
    check(project)
    saved = tmp_path / "store"
    save_store(session(project), saved, keep=0)
    with sqlite3.connect(saved / "mlflow.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    out = restore_store(session(moved(project, tmp_path, "runner2")), saved)
    assert out.action == "rejected" and "MLflow schema revision ffffffffffff is not this MLflow's" in out.message


def test_nothing_to_restore_and_nothing_to_save(project, tmp_path):
    assert restore_store(session(project), tmp_path / "empty").action == "nothing"
    assert save_store(session(project), tmp_path / "out").action == "nothing"
    remote = session(project, MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    assert save_store(remote, tmp_path / "out").action == "remote"


def test_pruning_keeps_the_registered_runs_and_the_newest_per_branch(project, tmp_path):
    tracker = MlflowTracker(project.uri)
    first = check(project).result["candidate"]["run_id"]
    tracker.register(first, "churn-model", artifact_path="model")  # a version registered from the run itself
    project.set_metrics(accuracy=0.905, rmse=5.0)
    project.commit("main 1")
    second = check(project).result["candidate"]["run_id"]
    # a version registered from a release copy (as promote does): the gated run it stands for stays too
    release = tracker.start_run(tracker.experiment_id("churn", create=False), run_name="release", tags={})
    tracker.end_run(release, "FINISHED")
    tracker.register_once(second, "churn-model", artifact_path="model", tags={}, source_run=release)
    for i in range(2, 5):
        project.set_metrics(accuracy=0.9 + i / 100, rmse=5.0)
        project.commit(f"main {i}")
        check(project)
    project.branch("feature")
    project.set_metrics(accuracy=0.99, rmse=5.0)
    project.commit("feature")
    check(project)
    out = save_store(session(project), tmp_path / "store", keep=2)
    assert out.pruned == 1  # main: 5 runs; the 2 newest, the registered one and the one a release copy stands for stay
    left = {row[0] for row in sqlite3.connect(tmp_path / "store" / "mlflow.db").execute("SELECT run_uuid FROM runs")}
    assert len(left) == 6 and {first, second, release} <= left
    assert json.loads((tmp_path / "store" / local_store.META).read_text())["runs"] == 6
    kept_dirs = {p.name for p in (tmp_path / "store" / "mlartifacts").iterdir() if p.is_dir()}
    assert {first, second} <= kept_dirs
    shutil.rmtree(tmp_path / "store")


def test_store_reset_forgets_exploration_without_deleting_anything(project):
    """Issue #27, item 10: after exploratory runs a user starts over: no run of the experiment is a baseline or
    a cached run any more; the runs stay in the store; nothing happens without a confirmation."""
    explored = check(project)
    project.branch("try-things")
    project.set_metrics(accuracy=0.99, rmse=1.0)
    project.commit("an experiment")
    assert check(project).result["baseline"]["run_id"] == explored.result["candidate"]["run_id"]

    refused = project.cli("store", "reset")  # no terminal to answer: refused, nothing forgotten
    assert refused.returncode == 2 and "would forget 2 runs of churn: pass --yes" in refused.stderr
    done = project.cli("store", "reset", "--yes")
    assert done.returncode == 0 and "forgot 2 runs of churn" in done.stdout, done.stdout + done.stderr
    run = MlflowTracker(project.uri).get_run(explored.result["candidate"]["run_id"])
    assert run is not None and " by " in run.tags["mlflow_ci.forgotten"] and run.tags["mlflow_ci.fingerprint"] == "forgotten"

    again = check(project)  # the same commit: not reused from the cache, and no forgotten run is its baseline
    assert not again.result["candidate"]["cached"]
    assert again.result["baseline"] is None and again.verdict == "pass"
    assert any("forgotten by mlflow-ci store reset" in note for note in again.result["notes"])
    assert project.cli("store", "reset", "--yes").stdout.startswith("forgot 1 runs")  # only the new one is left

"""The verdict on every path a check can take (#24): for each way the baseline can be found — a local store,
a tracking server, a store restored on a runner, nothing restored (a first PR, an evicted cache), a reused
run, a README-only PR, a data-only PR, after a rollback — a regressing PR exits 1, an improving PR exits 0,
and result.json names the baseline that path should pick.

The GenAI row is the GenAI demo's two pull requests (tests/commands/test_demo.py); the fan-out leaderboard
shares this resolution and its fail-closed rule (tests/commands/test_leaderboard.py).

Every scenario runs the demo's real project (scikit-learn on the bundled breast cancer data, ``evaluate:``
with paired bootstrap rules) through ``python -m mlflow_ci`` in real git repositories; the demo itself
builds the repository once (``main`` with a registered champion, ``pr/fewer-features`` that regresses,
``pr/tune-c`` that improves).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_env, git

from mlflow_ci.tracking import MlflowTracker

pytestmark = pytest.mark.slow

REGRESS, IMPROVE = "pr/fewer-features", "pr/tune-c"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo's folder: ``model-repo`` (main, the two PR branches) and ``mlflow.db`` with the champion."""
    root = tmp_path_factory.mktemp("verdicts") / "demo"
    proc = subprocess.run([sys.executable, "-m", "mlflow_ci", "demo", "--dir", str(root)],
                          env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


def clone(demo: Path, where: Path, branch: str = "main") -> Path:
    """A fresh clone of the demo repository on ``branch``, with ``main`` as a local branch (a CI checkout)."""
    repo = where / "repo"
    git(where, "clone", "-q", "-b", branch, str(demo / "model-repo"), str(repo))
    if branch != "main":
        git(repo, "branch", "-q", "main", "origin/main")
    return repo


def copied_store(demo: Path, where: Path) -> str:
    """A copy of the demo's store (its artifacts live beside it, under model-repo/mlartifacts)."""
    where.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(demo / "mlflow.db") as src, sqlite3.connect(where / "mlflow.db") as dst:
        src.backup(dst)
    return f"sqlite:///{where / 'mlflow.db'}"


def check(repo: Path, *args: str, ci: bool = False, **env: str) -> tuple[int, dict, str]:
    extra = {"GITHUB_ACTIONS": "true", "GITHUB_BASE_REF": "main"} if ci else {}
    proc = subprocess.run([sys.executable, "-m", "mlflow_ci", "check", "--no-publish", "--base-branch", "main", *args],
                          cwd=repo, env=clean_env(**extra, **env), capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    result = json.loads((repo / ".mlflow-ci" / "result.json").read_text(encoding="utf-8"))
    return proc.returncode, result, proc.stdout + proc.stderr


def checkout(repo: Path, branch: str) -> None:
    git(repo, "checkout", "-q", "-B", branch, f"origin/{branch}")


def champion_run(uri: str) -> str:
    found = MlflowTracker(uri).run_for_alias("demo-breast-cancer", "champion")
    assert found is not None
    return found[0].run_id


def test_zero_server_first_pr_trains_and_scores_the_base_and_fails_the_regression(demo, tmp_path):
    """Reproduction 1: a runner with no server and nothing restored (a first PR, an evicted cache)."""
    repo = clone(demo, tmp_path, REGRESS)
    main = git(repo, "rev-parse", "main")
    code, result, out = check(repo, ci=True)
    assert code == 1, out
    assert result["baseline"]["source"] == f"base_trained:{main}"
    assert result["baseline"]["origin"] == "trained in this job: no store could serve"
    assert "eval.roc_auc" in result["baseline"]["metrics"]  # the base was scored by the same evaluation
    assert f"baseline: base commit {main[:12]} trained in this job" in out
    failed = {c["metric"] for c in result["checks"] if c["passed"] is False and c["blocking"]}
    assert {"eval.log_loss", "eval.roc_auc"} <= failed

    checkout(repo, IMPROVE)  # the same runner's next PR: the base run is reused by its fingerprint
    code, result, out = check(repo, ci=True)
    assert code == 0, out
    assert result["baseline"]["source"] in (f"base_trained:{main}", f"base_commit:{main}")


def test_local_store_cached_reuse_and_a_readme_only_pr(demo, tmp_path):
    repo = clone(demo, tmp_path, REGRESS)
    uri = copied_store(demo, tmp_path / "store")
    champion = champion_run(uri)
    code, result, out = check(repo, MLFLOW_TRACKING_URI=uri)
    assert code == 1 and result["baseline"]["run_id"] == champion and result["baseline"]["source"] == "alias:champion", out
    assert result["baseline"]["origin"] == f"the local store {tmp_path / 'store' / 'mlflow.db'}"
    code, again, out = check(repo, MLFLOW_TRACKING_URI=uri)  # the same head again: the run is reused
    assert code == 1 and again["candidate"]["cached"] and again["candidate"]["run_id"] == result["candidate"]["run_id"], out

    checkout(repo, IMPROVE)
    code, result, out = check(repo, MLFLOW_TRACKING_URI=uri)
    assert code == 0 and result["baseline"]["run_id"] == champion, out

    # a README-only PR: its candidate is the champion's own run, which is then its baseline (not "none")
    before = MlflowTracker(uri).get_run(champion)
    checkout(repo, "main")
    git(repo, "checkout", "-q", "-b", "docs")
    (repo / "README.md").write_text("# the demo model\n", encoding="utf-8")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "docs only")
    code, result, out = check(repo, MLFLOW_TRACKING_URI=uri)
    assert code == 0, out
    assert result["candidate"]["run_id"] == champion and result["candidate"]["cached"]
    assert result["baseline"]["run_id"] == champion and "no input of the model changed" in result["baseline"]["description"]
    # reproduction 4: the check wrote nothing onto the champion's run (no eval.* of this check, no verdict)
    after = MlflowTracker(uri).get_run(champion)
    assert dict(after.metrics) == dict(before.metrics)
    assert {k: v for k, v in after.tags.items() if not k.startswith("mlflow_ci.verdict_at.")} == dict(before.tags)


def test_a_prs_check_never_writes_onto_the_baseline_run(demo, tmp_path):
    """Reproduction 4: a PR whose evaluation data differs (an edited file) leaves the champion's metrics alone."""
    repo = clone(demo, tmp_path, IMPROVE)
    uri = copied_store(demo, tmp_path / "store")
    champion = champion_run(uri)
    before = MlflowTracker(uri).get_run(champion)
    data = repo / "data.py"  # the PR edits the evaluation rows: another held-out split
    data.write_text(data.read_text(encoding="utf-8").replace("random_state=7", "random_state=11"), encoding="utf-8")
    git(repo, "commit", "-q", "-am", "another holdout")
    code, result, out = check(repo, MLFLOW_TRACKING_URI=uri)
    assert "Traceback" not in out
    scored = result["baseline"]["metrics"]["eval.roc_auc"]
    assert scored != before.metrics["eval.roc_auc"]  # the champion scored on the PR's rows: kept with the candidate
    after = MlflowTracker(uri).get_run(champion)
    assert dict(after.metrics) == dict(before.metrics) and dict(after.tags) == dict(before.tags)


def test_zero_server_with_a_restored_store(demo, tmp_path):
    saved = tmp_path / "cache"
    store = tmp_path / "runner"
    env = {"MLFLOW_TRACKING_URI": copied_store(demo, tmp_path / "main-store")}
    repo = clone(demo, tmp_path, REGRESS)
    save = subprocess.run([sys.executable, "-m", "mlflow_ci", "store", "save", "--to", str(saved)], cwd=repo,
                          env=clean_env(**env), capture_output=True, text=True, timeout=300)
    assert save.returncode == 0, save.stderr
    restore = subprocess.run([sys.executable, "-m", "mlflow_ci", "store", "restore", "--from", str(saved)], cwd=repo,
                             env=clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}", GITHUB_ACTIONS="true"),
                             capture_output=True, text=True, timeout=300)
    assert restore.returncode == 0, restore.stderr
    uri = f"sqlite:///{store / 'mlflow.db'}"
    code, result, out = check(repo, ci=True, MLFLOW_TRACKING_URI=uri)
    assert code == 1 and result["baseline"]["source"] == "alias:champion", out
    assert result["baseline"]["origin"].startswith("the restored store of ") and "training base commit" not in out
    checkout(repo, IMPROVE)
    code, result, out = check(repo, ci=True, MLFLOW_TRACKING_URI=uri)
    assert code == 0 and result["baseline"]["source"] == "alias:champion", out


def test_a_tracking_server(demo, tmp_path, mlflow_server):
    repo = clone(demo, tmp_path)
    experiment = f"verdicts-{tmp_path.name}"[-60:]
    for branch in ("main", REGRESS, IMPROVE):  # one experiment of this test's own on the shared server
        checkout(repo, branch)
        config = (repo / "mlflow-ci.yml").read_text(encoding="utf-8")
        (repo / "mlflow-ci.yml").write_text(config.replace("demo-breast-cancer", experiment), encoding="utf-8")
        git(repo, "commit", "-q", "-am", "own experiment")
        if branch != "main":
            git(repo, "rebase", "-q", "main")
    env = {"MLFLOW_TRACKING_URI": mlflow_server.uri}
    checkout_local = lambda b: git(repo, "checkout", "-q", b)  # noqa: E731 - the rebased local branches
    checkout_local("main")
    code, main_result, out = check(repo, **env)
    assert code == 0, out
    checkout_local(REGRESS)
    code, result, out = check(repo, **env)
    assert code == 1 and result["baseline"]["run_id"] == main_result["candidate"]["run_id"], out
    assert result["baseline"]["origin"].startswith("the tracking server http://127.0.0.1:")  # main's gated run
    checkout_local(IMPROVE)
    code, result, out = check(repo, **env)
    assert code == 0 and result["baseline"]["run_id"] == main_result["candidate"]["run_id"], out


def test_after_a_rollback_the_rolled_back_model_is_never_the_baseline(demo, tmp_path):
    """Reproduction 3's other half: the next PR compares with the champion rolled back to, and a re-run of
    the deploy job (promote again) leaves the rollback alone."""
    repo = clone(demo, tmp_path, IMPROVE)
    uri = copied_store(demo, tmp_path / "store")
    first = champion_run(uri)
    code, improved, out = check(repo, MLFLOW_TRACKING_URI=uri)
    assert code == 0, out

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "mlflow_ci", *args], cwd=repo,
                              env=clean_env(MLFLOW_TRACKING_URI=uri), capture_output=True, text=True, timeout=300)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    run_id = improved["candidate"]["run_id"]
    assert cli("promote", "--run", run_id, "--no-deploy").returncode == 0
    assert champion_run(uri) == run_id
    back = cli("rollback", "--reason", "bad in production", "--no-deploy")
    assert back.returncode == 0, back.stderr
    assert champion_run(uri) == first
    again = cli("promote", "--run", run_id, "--no-deploy")
    assert again.returncode == 1 and "was rolled back" in again.stderr
    assert champion_run(uri) == first

    checkout(repo, REGRESS)
    code, result, out = check(repo, MLFLOW_TRACKING_URI=uri)
    assert code == 1 and result["baseline"]["run_id"] == first, out


# -- a data-only PR: the training scores itself on other rows ------------------------------------------

DATA_TRAIN = """\
import json, mlflow, mlflow.sklearn, pandas as pd, sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
p = json.load(open("params.json"))
data = pd.read_csv("data/train.csv")
cut = int(len(data) * 0.7)
fit, hold = data.iloc[:cut], data.iloc[cut:]
features = [c for c in data.columns if c != "target"]
with mlflow.start_run():
    model = make_pipeline(StandardScaler(), LogisticRegression(C=p["C"], max_iter=500)).fit(fit[features], fit["target"])
    mlflow.log_metric("accuracy", model.score(hold[features], hold["target"]))  # on its own holdout
    mlflow.sklearn.log_model(model, name="model", pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
"""

DATA_CONFIG = """\
experiment: data-change
train:
  command: python train.py
  inputs: ["*.py", "params.json", "data/**"]
evaluate:
  data: eval.csv
  target: target
  task: classification
  metrics: [accuracy]
  resamples: 200
gate:
  accuracy: {max_drop: 0.01}
  eval.accuracy: {max_drop: 0.05}
"""


def _data_project(root: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    root.mkdir()
    (root / "data").mkdir()
    frame.iloc[:400].to_csv(root / "data" / "train.csv", index=False)
    frame.iloc[400:].to_csv(root / "eval.csv", index=False)
    (root / "train.py").write_text(DATA_TRAIN, encoding="utf-8")
    (root / "params.json").write_text('{"C": 1.0}', encoding="utf-8")
    (root / "mlflow-ci.yml").write_text(DATA_CONFIG, encoding="utf-8")
    (root / ".gitignore").write_text(".mlflow-ci/\nmlflow.db\nmlartifacts/\n", encoding="utf-8")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")


@pytest.mark.parametrize("mode", ["inform", "decide"])
def test_a_data_only_pr_does_not_decide_on_metrics_computed_on_other_rows(tmp_path, mode):
    """Reproduction 5: the PR changes only the training data; the training's own accuracy is computed on
    another holdout, and with evaluate: the same-rows eval.accuracy decides."""
    import pandas as pd

    repo = tmp_path / "repo"
    _data_project(repo)
    if mode == "decide":
        with (repo / "mlflow-ci.yml").open("a", encoding="utf-8") as handle:
            handle.write("  train_metrics_on_data_change: decide\n")
        git(repo, "commit", "-q", "-am", "decide")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, _, out = check(repo, MLFLOW_TRACKING_URI=uri)
    assert code == 0, out
    git(repo, "checkout", "-q", "-b", "more-data")
    data = pd.read_csv(repo / "data" / "train.csv")
    # rows appended at the end land in the training's own holdout: mislabelled, they sink the accuracy it logs,
    # while the model (fitted on the first 70 %, now a few more clean rows) scores as well on the same rows
    hard = data.iloc[:60].assign(target=lambda f: 1 - f["target"])
    pd.concat([data, hard]).to_csv(repo / "data" / "train.csv", index=False)
    git(repo, "commit", "-q", "-am", "more data")
    code, result, out = check(repo, MLFLOW_TRACKING_URI=uri)
    [own] = [c for c in result["checks"] if c["metric"] == "accuracy"]
    assert own["message"].startswith("not comparable: computed on different rows (the training's data changed: ")
    assert own["passed"] is False  # the number computed on its own, noisier holdout dropped
    [same_rows] = [c for c in result["checks"] if c["metric"] == "eval.accuracy"]
    assert same_rows["passed"] is True, same_rows
    if mode == "inform":
        assert not own["blocking"] and "informs only" in own["message"]
        assert code == 0 and result["verdict"] == "warn", out
    else:
        assert own["blocking"] and code == 1
    assert any(n.startswith("the training's data changed") for n in result["notes"])


def test_the_demo_store_is_left_as_the_demo_wrote_it(demo):
    """Every scenario above worked on copies: the demo's own store still has one champion, version 1."""
    tracker = MlflowTracker(f"sqlite:///{demo / 'mlflow.db'}")
    found = tracker.alias_version("demo-breast-cancer", "champion")
    assert found is not None and found.version == "1"
    shutil.rmtree(demo / "model-repo" / ".mlflow-ci", ignore_errors=True)

"""The base_trained baseline: with nothing in the store, a CI check trains the PR's base commit in the job."""

from __future__ import annotations

import io
import json

from conftest import git

from mlflow_ci.commands.check import do_check
from mlflow_ci.commands.session import Options, make_session
from mlflow_ci.config.loader import load_config
from mlflow_ci.tracking import MlflowTracker


def check(project, *, ci: bool = True, **opts):
    cfg = load_config(project.root / "mlflow-ci.yml")
    env = project.env(**({"GITHUB_ACTIONS": "true"} if ci else {}))
    stream = io.StringIO()
    outcome = do_check(make_session(cfg, env, project.root, stream), Options(out_dir=project.root / ".mlflow-ci", **opts))
    return outcome, stream.getvalue()


def pr_branch(project, **metrics) -> str:
    base = git(project.root, "rev-parse", "HEAD")
    project.branch("feature")
    project.write("params.json", json.dumps({"metrics": metrics}))
    project.commit("feature work")
    return base


def test_first_pr_with_an_empty_store_trains_its_base_commit(project):
    base = pr_branch(project, accuracy=0.95, rmse=4.0)
    outcome, log = check(project)
    baseline = outcome.result["baseline"]
    assert baseline["source"] == f"base_trained:{base}"
    assert baseline["description"].startswith(f"base commit {base[:12]} trained in this job (trained in ")
    assert baseline["metrics"] == {"accuracy": 0.9, "rmse": 5.0}
    assert outcome.verdict == "pass" and f"training base commit {base[:12]}" in log
    run = MlflowTracker(project.uri).get_run(baseline["run_id"])
    assert run.commit == base and run.branch == "main" and run.tags["mlflow_ci.role"] == "base"
    assert git(project.root, "worktree", "list").count("\n") == 0  # the worktree is gone

    # the next push to the PR: the base commit's run is now in the store and is found, not retrained
    project.set_metrics(accuracy=0.96, rmse=4.0)
    project.commit("more work")
    again, log = check(project)
    assert again.result["baseline"]["run_id"] == baseline["run_id"]
    assert again.result["baseline"]["source"] == f"base_commit:{base}" and "training base commit" not in log


def test_a_failing_base_is_noted_and_the_check_fails_closed(project):
    project.write("params.json", '{"fail": true}')
    project.commit("broken main")
    base = pr_branch(project, accuracy=0.95, rmse=4.0)
    outcome, _ = check(project)
    assert outcome.result["baseline"] is None
    assert any(n.startswith(f"training base commit {base[:12]} failed: training command exited with code 7")
               for n in outcome.result["notes"])
    [closed] = [c for c in outcome.result["checks"] if c["rule"] == "baseline_required"]
    assert outcome.verdict == "fail" and closed["passed"] is False and closed["blocking"]
    assert closed["message"].startswith(f"no usable baseline: training base commit {base[:12]} failed")
    assert "the drop rules (accuracy) cannot be evaluated" in closed["message"]
    offline = project.cli("gate", "--from", ".mlflow-ci/result.json")  # re-gating the result keeps it closed
    assert offline.returncode == 1 and "baseline_required" in offline.stdout, offline.stdout + offline.stderr


def test_a_base_that_fails_its_own_gate_is_not_a_baseline(project):
    project.set_metrics(accuracy=0.5, rmse=5.0)  # below accuracy min 0.8
    project.commit("weak main")
    base = pr_branch(project, accuracy=0.95, rmse=4.0)
    outcome, _ = check(project)
    assert outcome.result["baseline"] is None
    assert f"base commit {base[:12]} trained in this job is not a baseline: gate failed" in outcome.result["notes"]
    [run] = [r for r in MlflowTracker(project.uri).search_runs(outcome.result["candidate"]["experiment_id"], tags={"mlflow_ci.role": "base"})]
    assert run.tags["mlflow_ci.verdict"] == "fail" and run.tags["mlflow_ci.gate_rules"] == "2"
    assert outcome.verdict == "fail"  # a baseline should exist and none may serve: fail closed

    # unless the config says a check may pass without one
    project.write("mlflow-ci.yml", (project.root / "mlflow-ci.yml").read_text() + "baseline:\n  required: false\n")
    project.commit("baseline not required")
    relaxed, _ = check(project)
    assert relaxed.verdict == "pass" and not any(c["rule"] == "baseline_required" for c in relaxed.result["checks"])


def test_only_where_the_store_does_not_persist_unless_asked(project):
    pr_branch(project, accuracy=0.95, rmse=4.0)
    local, _ = check(project, ci=False)
    assert local.result["baseline"] is None and not any("base commit" in n and "train" in n for n in local.result["notes"])
    off, _ = check(project, train_base=False)
    assert off.result["baseline"] is None
    forced, _ = check(project, ci=False, train_base=True)
    assert forced.result["baseline"]["source"].startswith("base_trained:")


def test_no_training_on_the_base_branch_itself(project):
    on_main, log = check(project)
    assert on_main.result["baseline"] is None and "training base commit" not in log  # a push to main


def test_no_training_without_a_config_at_the_base(project):
    config = (project.root / "mlflow-ci.yml").read_text()
    git(project.root, "rm", "-q", "mlflow-ci.yml")
    git(project.root, "commit", "-q", "-m", "no config on main yet")
    base = git(project.root, "rev-parse", "HEAD")
    project.branch("feature")
    project.write("mlflow-ci.yml", config)
    project.write("params.json", json.dumps({"metrics": {"accuracy": 0.95, "rmse": 4.0}}))
    project.commit("add mlflow-ci")
    outcome, _ = check(project)
    assert outcome.result["baseline"] is None
    assert f"base commit {base[:12]} has no mlflow-ci.yml: nothing to train (a new project)" in outcome.result["notes"]
    assert outcome.verdict == "pass"  # a first model: nothing to compare with, the drop rule is not evaluated

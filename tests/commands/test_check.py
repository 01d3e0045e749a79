"""Every check leaves a true answer: a failure at any stage writes ``verdict: error`` outputs, and a
check never leaves an earlier check's report, result or model behind."""

from __future__ import annotations

import json

from conftest import clean_env
from fakegithub import EVENTS, TOKEN, FakeGitHub
from stack import free_port

from mlflow_ci.tracking import MlflowTracker


def stale(project) -> None:
    out = project.root / ".mlflow-ci"
    (out / "model").mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({"verdict": "pass"}))
    (out / "report.md").write_text("PASS from an earlier check\n")
    (out / "model" / "MLmodel").write_text("stale")


def test_a_configuration_error_replaces_the_earlier_pass(project):
    stale(project)
    project.write("mlflow-ci.yml", "experiment: churn\nmodel: churn-model\ntrain:\n  comand: python train.py\n")
    proc = project.cli("check")
    assert proc.returncode == 2
    result = project.result()
    assert result["verdict"] == "error" and result["experiment"] == "churn"
    assert result["error"]["stage"] == "config" and result["error"]["exit_code"] == 2
    assert "train.comand: unknown key; did you mean 'command'?" in result["error"]["reason"]
    report = (project.root / ".mlflow-ci" / "report.md").read_text()
    assert "the check could not decide" in report and "PASS from an earlier check" not in report
    assert not (project.root / ".mlflow-ci" / "model").exists()
    assert "verdict: ERROR (churn)" in proc.stdout and "error: " in proc.stderr


def test_a_training_failure_says_where_and_marks_the_run(project):
    stale(project)
    project.write("params.json", json.dumps({"fail": True, "metrics": {}}))
    proc = project.cli("check")
    assert proc.returncode == 3
    result = project.result()
    assert result["error"]["stage"] == "train" and result["error"]["exit_code"] == 3
    assert "train.log" in result["error"]["hint"]
    runs = MlflowTracker(project.uri).client.search_runs(
        [MlflowTracker(project.uri).experiment_id("churn", create=False)])
    assert runs and all(r.info.status == "FAILED" for r in runs)


def test_a_run_whose_check_failed_later_is_tagged_error_and_never_a_baseline(project):
    project.write("mlflow-ci.yml", (project.root / "mlflow-ci.yml").read_text() + "report:\n  template: missing.j2\n")
    proc = project.cli("check")
    assert proc.returncode == 2
    result = project.result()
    assert result["error"]["stage"] == "report" and result["candidate"]["run_id"]
    tracker = MlflowTracker(project.uri)
    assert tracker.get_run(result["candidate"]["run_id"]).tags["mlflow_ci.verdict"] == "error"


def test_an_unreachable_tracking_server_is_exit_4_with_its_outputs(project):
    proc = project.cli("check", env=clean_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}",
                                              MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="2"))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert project.result()["error"]["exit_code"] == 4


def test_in_actions_a_failure_is_published_as_a_failed_check_and_a_comment(project, tmp_path):
    project.write("params.json", json.dumps({"fail": True, "metrics": {}}))
    payload = json.loads((EVENTS / "pull_request.opened.json").read_text())
    event = tmp_path / "event.json"
    event.write_text(json.dumps(payload))
    with FakeGitHub(TOKEN) as gh:
        env = project.env(GITHUB_ACTIONS="true", GITHUB_EVENT_NAME="pull_request", GITHUB_EVENT_PATH=str(event),
                          GITHUB_REPOSITORY="Codertocat/Hello-World", GITHUB_API_URL=gh.url, GITHUB_TOKEN=TOKEN,
                          GITHUB_OUTPUT=str(tmp_path / "out"), GITHUB_STEP_SUMMARY=str(tmp_path / "summary"))
        proc = project.cli("check", env=env)
        assert proc.returncode == 3
        [run] = gh.check_runs
        assert run["conclusion"] == "failure" and run["output"]["title"].startswith("ERROR in train: training command exited")
        assert "external_id" not in run  # a failed check vouches for no model
        [comment] = gh.comments[2]
        assert "the check could not decide" in comment["body"] and "stage `train`" in comment["body"]

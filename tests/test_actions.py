"""The composite actions, executed step by step by the local harness (tests/actions_harness.py)."""

from __future__ import annotations

import json
import shutil

import pytest
from actions_harness import condition, evaluate, interpolate, parse_file_commands, run_action
from conftest import ROOT, based_on, git, runner_env
from fakegithub import EVENTS, TOKEN, FakeGitHub

EXAMPLE = ROOT / "examples" / "wine-quality"


# --- the harness itself ---------------------------------------------------------------------------


def test_expressions():
    ctx = {"inputs": {"a": "x", "flag": "false", "n": "3"}, "steps": {"s": {"outputs": {"v": "pass"}}},
           "github": {"event": {"pull_request": {"head": {"repo": {"full_name": "o/r"}}}}, "repository": "o/r"}}
    assert evaluate("inputs.a", ctx) == "x"
    assert evaluate("steps.s.outputs.v == 'PASS'", ctx) is True  # case-insensitive, as on GitHub
    assert evaluate("inputs.flag != 'false'", ctx) is False
    assert evaluate("github.event.pull_request.head.repo.full_name == github.repository && 'yes' || 'no'", ctx) == "yes"
    assert evaluate("inputs['a']", ctx) == "x"
    assert evaluate("format('{0}-{1}', inputs.a, 'y')", ctx) == "x-y"
    assert evaluate("fromJSON('[\"a\", \"b\"]')", ctx) == ["a", "b"]
    assert evaluate("contains(fromJSON('[\"a\"]'), 'A')", ctx) is True
    assert interpolate("v=${{ steps.s.outputs.v }}, missing=${{ steps.nope.outputs.x }}", ctx) == "v=pass, missing="
    assert condition(None, ctx, "failure") is False
    assert condition("always()", ctx, "failure") is True
    assert condition("${{ inputs.a == 'x' }}", ctx, "success") is True
    assert parse_file_commands("a=1\nb<<EOF\nx\ny\nEOF\nc=3=4\n") == {"a": "1", "b": "x\ny", "c": "3=4"}


# --- the actions, for real ------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "workspace"
    shutil.copytree(EXAMPLE, ws / "examples" / "wine-quality", ignore=shutil.ignore_patterns(".mlflow-ci", "metrics.json", "mlflow.db"))
    git(ws, "init", "-q", "-b", "main")
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "example")
    return ws


def test_setup_action_installs_this_checkout(runner_python, workspace):
    result = run_action(ROOT / "actions" / "setup", inputs={"working-directory": "examples/wine-quality"},
                        workspace=workspace, env=runner_env(runner_python))
    assert result.outcome == "success", result.log
    assert [s.kind for s in result.steps] == ["satisfied", "satisfied", "run"]
    from mlflow_ci import __version__

    assert result.outputs == {"version": __version__}
    assert (runner_python / "bin" / "mlflow-ci").exists()


def test_root_action_on_a_pull_request_against_fake_github(runner_python, workspace):
    payload = based_on(json.loads((EVENTS / "pull_request.opened.json").read_text()), workspace)
    with FakeGitHub(TOKEN) as gh:
        env = runner_env(runner_python, GITHUB_EVENT_NAME="pull_request", GITHUB_REPOSITORY="Codertocat/Hello-World",
                         GITHUB_API_URL=gh.url, GITHUB_SERVER_URL="https://github.test", GITHUB_RUN_ID="9",
                         GITHUB_TOKEN=TOKEN, MLFLOW_TRACKING_URI=f"sqlite:///{workspace / 'mlflow.db'}")
        result = run_action(ROOT, inputs={"working-directory": "examples/wine-quality"}, workspace=workspace,
                            env=env, event=payload)
        assert result.outcome == "success", result.log
        assert result.outputs["verdict"] == "pass"
        assert len(result.outputs["run-id"]) == 32
        assert result.outputs["report-path"] == ".mlflow-ci/report.md"
        assert result.outputs["comment-url"].startswith("https://github.test/c/")
        assert len(gh.comments[2]) == 1 and "mlflow-ci · wine-quality" in gh.comments[2][0]["body"]
        assert gh.check_runs[0]["head_sha"] == payload["pull_request"]["head"]["sha"]
        assert "mlflow-ci · wine-quality" in result.summary
        assert TOKEN not in result.log.replace(f"::add-mask::{TOKEN}", "")


def test_root_action_blocks_a_regressed_model(runner_python, workspace):
    store = f"sqlite:///{workspace / 'mlflow.db'}"
    env = runner_env(runner_python, MLFLOW_TRACKING_URI=store)
    inputs = {"working-directory": "examples/wine-quality", "publish": "false"}
    base = run_action(ROOT, inputs=inputs, workspace=workspace, env=env)
    assert base.outcome == "success", base.log
    params = workspace / "examples" / "wine-quality" / "params.yaml"
    params.write_text(params.read_text().replace("max_depth: 6", "max_depth: 1").replace("n_estimators: 100", "n_estimators: 2"))
    blocked = run_action(ROOT, inputs={**inputs, "baseline": base.outputs["run-id"]}, workspace=workspace, env=env)
    assert blocked.outcome == "failure"
    assert blocked.step("check").exit_code == 1
    assert blocked.outputs["verdict"] == "fail"
    assert "[FAIL] accuracy  min" in blocked.log
    report_only = run_action(ROOT, inputs={**inputs, "baseline": base.outputs["run-id"], "fail-on-gate": "false"},
                             workspace=workspace, env=env)
    assert report_only.outcome == "success" and report_only.outputs["verdict"] == "fail"
    assert "not failing the job because fail-on-gate is false" in report_only.log


def test_check_action_rejects_a_bad_publish_input(runner_python, workspace):
    run_action(ROOT / "actions" / "setup", inputs={}, workspace=workspace, env=runner_env(runner_python))
    result = run_action(ROOT / "actions" / "check", inputs={"working-directory": "examples/wine-quality", "publish": "maybe"},
                        workspace=workspace, env=runner_env(runner_python))
    assert result.outcome == "failure" and result.step("check").exit_code == 2
    assert "input 'publish' must be auto, true or false" in result.log


def test_publish_action_from_a_fork_artifact(runner_python, workspace, tmp_path):
    run = json.loads((EVENTS / "workflow_run.completed.with-pull-requests.json").read_text())
    artifact = tmp_path / "result.json"
    artifact.write_text(json.dumps({
        "schema": 1, "verdict": "pass", "experiment": "wine-quality", "pr": 2, "head_sha": run["workflow_run"]["head_sha"],
        "candidate": {"run_id": "a" * 32, "metrics": {"accuracy": 1.0}, "params": {}}, "baseline": None, "checks": [],
    }))
    run_action(ROOT / "actions" / "setup", inputs={}, workspace=workspace, env=runner_env(runner_python))
    with FakeGitHub(TOKEN) as gh:
        env = runner_env(runner_python, GITHUB_EVENT_NAME="workflow_run", GITHUB_REPOSITORY="octo-org/octo-repo",
                         GITHUB_API_URL=gh.url, GITHUB_TOKEN=TOKEN)
        empty = tmp_path / "privileged"
        empty.mkdir()
        result = run_action(ROOT / "actions" / "publish", inputs={"result-file": str(artifact)}, workspace=empty,
                            env=env, event=run)
        assert result.outcome == "success", result.log
        assert result.outputs["verdict"] == "pass"
        assert len(gh.comments[2]) == 1

"""A maintainer's one step for a fork PR (`publish --pr N --head-sha SHA` under workflow_dispatch)."""

from __future__ import annotations

import json

import pytest
from conftest import MODEL_SCRIPT
from fakegithub import RESULT_ARTIFACT, TOKEN, FakeGitHub, zip_artifact

from mlflow_ci.provenance import Record, model_digest

REPO = "Codertocat/Hello-World"
FORK = "forker/Hello-World"
CONFIG = "experiment: iris\nmodel: iris\ntrain:\n  command: python train.py\ngate:\n  accuracy: {min: 0.8}\n"


@pytest.fixture
def fork_pr(project, tmp_path):
    """A fork PR whose own (unprivileged) workflow run 900 checked its head and uploaded the result artifact."""
    project.write("train.py", MODEL_SCRIPT)
    project.write("params.json", json.dumps({"C": 0.7}))
    project.write("mlflow-ci.yml", CONFIG)
    head = project.commit("fork change")
    check = project.cli("check", "--no-publish", "--export-model", env=project.env())
    assert check.returncode == 0, check.stdout + check.stderr
    out = project.root / ".mlflow-ci"
    with FakeGitHub(TOKEN) as gh:
        gh.pulls.append({"number": 9, "state": "open", "head": {"sha": head, "repo": {"full_name": FORK}},
                         "base": {"repo": {"full_name": REPO}}})
        gh.workflow_runs.append({"id": 900, "head_sha": head, "event": "pull_request", "status": "completed",
                                 "head_repository": {"full_name": FORK}})
        gh.add_artifact(900, "mlflow-ci-result", zip_artifact(out, RESULT_ARTIFACT))
        yield gh, head, model_digest(out / "model")


def dispatch(project, gh, tmp_path, *args, event_name="workflow_dispatch"):
    event = tmp_path / "dispatch.json"
    event.write_text(json.dumps({"inputs": {"pr": "9"}, "ref": "refs/heads/main", "repository": {"full_name": REPO}}))
    env = project.env(GITHUB_ACTIONS="true", GITHUB_EVENT_NAME=event_name, GITHUB_EVENT_PATH=str(event), GITHUB_REPOSITORY=REPO,
                      GITHUB_API_URL=gh.url, GITHUB_SERVER_URL="https://github.test", GITHUB_RUN_ID="901", GITHUB_TOKEN=TOKEN,
                      GITHUB_ACTOR="maintainer", MLFLOW_CI_GITHUB_MAX_ATTEMPTS="1")
    return project.cli("publish", "--out", str(tmp_path / "reviewed"), *args, env=env)


def test_a_reviewed_fork_verdict_becomes_the_required_check_with_its_provenance(project, tmp_path, fork_pr):
    gh, head, digest = fork_pr
    done = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head)
    assert done.returncode == 0, done.stdout + done.stderr
    [check_run] = gh.check_runs
    assert check_run["name"] == "mlflow-ci / iris" and check_run["head_sha"] == head and check_run["conclusion"] == "success"
    record = Record.parse(check_run["external_id"])
    assert record.digest == digest and record.artifact == "900/mlflow-ci-result"
    body = gh.comments[9][0]["body"]
    assert "accepted by maintainer, who reviewed that commit" in body and "workflow run 900" in body


def test_a_moved_pr_another_repository_or_another_event_is_refused(project, tmp_path, fork_pr):
    gh, head, _ = fork_pr
    other = "f" * 40
    moved = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", other)
    assert moved.returncode == 2 and f"not the reviewed {other[:12]}" in moved.stderr
    short = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head[:12])
    assert short.returncode == 2 and "full 40-character commit" in short.stderr
    wrong_event = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head, event_name="pull_request_target")
    assert wrong_event.returncode == 2 and "runs from workflow_dispatch" in wrong_event.stderr
    # a run of the same commit from another repository (someone else's fork) is not the PR's run
    gh.workflow_runs[0]["head_repository"] = {"full_name": "someone/else"}
    elsewhere = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head)
    assert elsewhere.returncode == 1 and "no completed pull_request workflow run" in elsewhere.stderr
    gh.workflow_runs[0]["head_repository"] = {"full_name": FORK}
    project.write("mlflow-ci.yml", CONFIG.replace("experiment: iris", "experiment: other"))
    foreign = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head)
    assert foreign.returncode == 2 and "is for experiment 'iris'" in foreign.stderr
    gh.pulls[0]["state"] = "closed"
    closed = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head)
    assert closed.returncode == 2 and "PR #9 is closed" in closed.stderr
    assert gh.check_runs == [] and 9 not in gh.comments

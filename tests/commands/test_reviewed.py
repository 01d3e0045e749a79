"""A maintainer's one step for a fork PR (`publish --pr N --head-sha SHA` under workflow_dispatch)."""

from __future__ import annotations

import json

import pytest
from conftest import MODEL_SCRIPT
from fakegithub import RESULT_ARTIFACT, TOKEN, FakeGitHub, zip_artifact

from mlflow_ci.provenance import Record, model_digest

REPO = "Codertocat/Hello-World"
FORK = "forker/Hello-World"
CALLER = """\
on: pull_request
jobs:
  check:
    uses: mlflow-ci/mlflow-ci/.github/workflows/mlflow-ci-pr.yml@0123456789abcdef0123456789abcdef01234567 # v0.1.0
"""
CONFIG = "experiment: iris\nmodel: iris\ntrain:\n  command: python train.py\ngate:\n  accuracy: {min: 0.8}\n"


@pytest.fixture
def fork_pr(project, tmp_path):
    """A fork PR whose own (unprivileged) workflow run 900 checked its head and uploaded the result artifact."""
    project.write("train.py", MODEL_SCRIPT)
    project.write("params.json", json.dumps({"C": 0.7}))
    project.write("mlflow-ci.yml", CONFIG)
    project.write(".github/workflows/mlflow-ci.yml", CALLER)  # the repository's own caller workflow
    head = project.commit("fork change")
    check = project.cli("check", "--no-publish", "--export-model", env=project.env())
    assert check.returncode == 0, check.stdout + check.stderr
    out = project.root / ".mlflow-ci"
    with FakeGitHub(TOKEN) as gh:
        gh.pulls.append({"number": 9, "state": "open", "head": {"sha": head, "repo": {"full_name": FORK}},
                         "base": {"repo": {"full_name": REPO}}})
        gh.workflow_runs.append({"id": 900, "head_sha": head, "event": "pull_request", "status": "completed",
                                 "conclusion": "success", "path": ".github/workflows/mlflow-ci.yml",
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
    assert elsewhere.returncode == 1 and "no successful pull_request run" in elsewhere.stderr
    gh.workflow_runs[0]["head_repository"] = {"full_name": FORK}
    project.write("mlflow-ci.yml", CONFIG.replace("experiment: iris", "experiment: other"))
    foreign = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head)
    assert foreign.returncode == 2 and "is for experiment 'iris'" in foreign.stderr
    gh.pulls[0]["state"] = "closed"
    closed = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head)
    assert closed.returncode == 2 and "PR #9 is closed" in closed.stderr
    assert gh.check_runs == [] and 9 not in gh.comments


def test_only_a_successful_run_of_the_repositorys_own_caller_workflow_is_accepted(project, tmp_path, fork_pr):
    """A fork PR can add a workflow file of its own that uploads a forged 'mlflow-ci-result'; its run is newer
    than the real one. Only a run of a workflow the dispatched branch has, that calls mlflow-ci-pr.yml and
    succeeded, counts."""
    gh, head, digest = fork_pr
    forged = gh.add_artifact(950, "mlflow-ci-result", gh.artifacts[0]["data"])
    gh.workflow_runs.append({"id": 950, "head_sha": head, "event": "pull_request", "status": "completed", "conclusion": "success",
                             "path": ".github/workflows/forged.yml", "head_repository": {"full_name": FORK}})
    gh.workflow_runs.append({"id": 940, "head_sha": head, "event": "pull_request", "status": "completed", "conclusion": "cancelled",
                             "path": ".github/workflows/mlflow-ci.yml", "head_repository": {"full_name": FORK}})
    gh.add_artifact(940, "mlflow-ci-result", forged["data"])
    done = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head)
    assert done.returncode == 0, done.stdout + done.stderr
    assert Record.parse(gh.check_runs[0]["external_id"]).artifact == "900/mlflow-ci-result"  # not 950, not 940
    gh.workflow_runs[0]["conclusion"] = "failure"
    gh.check_runs.clear()
    refused = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head)
    assert refused.returncode == 1 and gh.check_runs == []
    assert "run 950 ran '.github/workflows/forged.yml', not .github/workflows/mlflow-ci.yml" in refused.stderr
    assert "run 940 concluded 'cancelled'" in refused.stderr and "run 900 concluded 'failure'" in refused.stderr
    # without a caller workflow on the branch, nothing can be trusted to have run mlflow-ci
    (project.root / ".github" / "workflows" / "mlflow-ci.yml").unlink()
    none = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head)
    assert none.returncode == 2 and "pass --pr-workflow" in none.stderr
    explicit = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head, "--pr-workflow", ".github/workflows/forged.yml")
    assert explicit.returncode == 0 and Record.parse(gh.check_runs[-1]["external_id"]).artifact == "950/mlflow-ci-result"


def test_a_reviewed_fork_is_judged_by_the_maintainers_run_or_fails_closed(project, tmp_path, fork_pr):
    """The fork's own run never holds the judge's key, so the judge's rules of the maintainer's configuration are
    decided in the reviewed run — and with no answers to judge (nor a key), they fail: never passed over."""
    gh, head, _ = fork_pr
    project.write("faq.jsonl", json.dumps({"inputs": {"q": "hours?"}}) + "\n")
    project.write("mlflow-ci.yml", CONFIG.replace("gate:\n", (
        "genai:\n  data: faq.jsonl\n  predict_fn: app:answer\n"
        "  scorers: [{judge: {name: polite, instructions: 'Is it polite?'}}]\n"
        "  judge: {model: judge-1, base_url: 'http://127.0.0.1:9/v1', max_calls: 4}\n"
        "gate:\n  genai.polite: {min: 0.9}\n")))
    done = dispatch(project, gh, tmp_path, "--pr", "9", "--head-sha", head)
    assert done.returncode == 0, done.stdout + done.stderr  # published: the verdict is the check run's
    [check_run] = gh.check_runs
    assert check_run["conclusion"] == "failure"
    result = json.loads((tmp_path / "reviewed" / "result.json").read_text())
    [polite] = [c for c in result["checks"] if c["metric"] == "genai.polite"]
    assert polite["passed"] is False and polite["message"].startswith("not judged: ") and "genai-answers.json" in polite["message"]

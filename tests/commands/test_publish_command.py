"""`check` inside GitHub Actions and `publish --from`, as subprocesses against the fake GitHub."""

from __future__ import annotations

import json

import pytest
from fakegithub import EVENTS, TOKEN, FakeGitHub, Fault
from conftest import based_on


@pytest.fixture
def gh():
    with FakeGitHub(TOKEN) as server:
        yield server


def actions_env(project, gh, tmp_path, event_name: str, payload: dict, **extra):
    event = tmp_path / "event.json"
    event.write_text(json.dumps(payload))
    values = dict(
        GITHUB_ACTIONS="true", GITHUB_EVENT_NAME=event_name, GITHUB_EVENT_PATH=str(event),
        GITHUB_REPOSITORY="Codertocat/Hello-World", GITHUB_API_URL=gh.url, GITHUB_SERVER_URL="https://github.test",
        GITHUB_RUN_ID="555", GITHUB_TOKEN=TOKEN, GITHUB_OUTPUT=str(tmp_path / "output"),
        GITHUB_STEP_SUMMARY=str(tmp_path / "summary"),
    )
    return project.env(**{**values, **extra})


def outputs(path) -> dict:
    lines, out = path.read_text().splitlines(), {}
    for i, line in enumerate(lines):
        if "<<ghadelimiter_" in line:
            out[line.split("<<")[0]] = lines[i + 1]
    return out


def test_check_in_a_pull_request_publishes_everything(project, gh, tmp_path):
    payload = based_on(json.loads((EVENTS / "pull_request.opened.json").read_text()), project.root)
    env = actions_env(project, gh, tmp_path, "pull_request", payload)
    proc = project.cli("check", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"::add-mask::{TOKEN}" in proc.stdout
    assert proc.stdout.count(TOKEN) == 1  # only inside the mask command
    assert gh.requests() == [
        "POST /repos/Codertocat/Hello-World/check-runs",  # the check first: it is what branch protection reads
        "GET /repos/Codertocat/Hello-World/issues/2/comments?per_page=100",
        "POST /repos/Codertocat/Hello-World/issues/2/comments",
        "GET /repos/Codertocat/Hello-World/issues/2/comments?per_page=100",
    ]
    assert gh.check_runs[0]["head_sha"] == payload["pull_request"]["head"]["sha"]
    assert gh.check_runs[0]["conclusion"] == "success"
    out = outputs(tmp_path / "output")
    assert out["verdict"] == "pass" and out["comment-url"].startswith("https://github.test/c/")
    assert out["report-path"] == ".mlflow-ci/report.md"
    assert "mlflow-ci · churn" in (tmp_path / "summary").read_text()
    result = project.result()
    assert result["pr"] == 2 and result["head_sha"] == payload["pull_request"]["head"]["sha"]
    assert result["ci_run_url"] == "https://github.test/Codertocat/Hello-World/actions/runs/555"
    # a second push updates the same comment
    assert project.cli("check", env=env).returncode == 0
    assert len(gh.comments[2]) == 1


def test_failed_publish_keeps_the_report_and_says_how_to_retry(project, gh, tmp_path):
    payload = json.loads((EVENTS / "pull_request.opened.json").read_text())
    env = actions_env(project, gh, tmp_path, "pull_request", payload, MLFLOW_CI_GITHUB_MAX_ATTEMPTS="2")
    gh.faults = [Fault("list_comments", 503) for _ in range(20)]
    proc = project.cli("check", env=env, timeout=600)
    assert proc.returncode == 4
    assert "Traceback" not in proc.stderr
    assert "retry only the publishing with: mlflow-ci publish --out .mlflow-ci" in proc.stderr
    assert (project.root / ".mlflow-ci" / "report.md").is_file()
    # retrying the publish alone works once GitHub is back
    gh.faults.clear()
    gh.log.clear()
    retry = project.cli("publish", env=env)
    assert retry.returncode == 0, retry.stderr
    assert "comment: created" in retry.stdout and len(gh.comments[2]) == 1


def test_publish_from_artifact_in_workflow_run(project, gh, tmp_path):
    # the untrusted side: a check without a token writes result.json (the artifact)
    assert project.cli("check").returncode == 0
    artifact = tmp_path / "artifact.json"
    data = project.result()
    run = json.loads((EVENTS / "workflow_run.completed.with-pull-requests.json").read_text())
    data["head_sha"] = run["workflow_run"]["head_sha"]
    data["pr"] = 2
    data["metrics"].append({"name": "<script>@team", "baseline": None, "candidate": 1.0, "delta": None,
                            "delta_pct": None, "direction": "higher", "status": "n/a"})
    artifact.write_text(json.dumps(data))
    privileged = tmp_path / "privileged"
    privileged.mkdir()
    env = actions_env(project, gh, tmp_path, "workflow_run", run, GITHUB_REPOSITORY="octo-org/octo-repo")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mlflow_ci", "publish", "--from", str(artifact)],
                          cwd=privileged, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert gh.requests()[2] == "POST /repos/octo-org/octo-repo/issues/2/comments"
    body = gh.comments[2][0]["body"]
    assert "<script>" not in body and "&lt;script&gt;@&#8203;team" in body
    assert gh.check_runs[0]["head_sha"] == run["workflow_run"]["head_sha"]
    # a mismatched artifact is refused with exit 2 and nothing is posted
    data["head_sha"] = "b" * 40
    artifact.write_text(json.dumps(data))
    gh.log.clear()
    proc = subprocess.run([sys.executable, "-m", "mlflow_ci", "publish", "--from", str(artifact)],
                          cwd=privileged, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not match the workflow_run event" in proc.stderr
    assert gh.log == []


def test_publish_without_a_token_is_a_usage_error(project):
    assert project.cli("check").returncode == 0
    proc = project.cli("publish")
    assert proc.returncode == 2
    assert "publish needs a GitHub token: set GITHUB_TOKEN" in proc.stderr

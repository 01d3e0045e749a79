"""check --all: several models in one repository (examples/monorepo); only the changed ones are checked,
one comment with a section per model, a check run per model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from conftest import clean_env, git
from fakegithub import EVENTS, FakeGitHub

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "monorepo"
TOKEN = "ghs_" + "m" * 36


def monorepo(tmp_path: Path) -> Path:
    repo = tmp_path / "mono"
    shutil.copytree(EXAMPLE, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "three models")
    return repo


def set_accuracy(repo: Path, model: str, value: float) -> None:
    (repo / "models" / model / "params.json").write_text(json.dumps({"metrics": {"accuracy": value}}))


def run(repo: Path, *args: str, **env: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "mlflow_ci", "check", "--all", "--no-publish", *args], cwd=repo,
                          env=clean_env(**env), capture_output=True, text=True, timeout=300)


def sections(report: str) -> list[tuple[str, str, str]]:
    """The model sections of the combined comment: (open?, model, verdict), in order."""
    return re.findall(r"^<details( open)?><summary>\S+ (\w+) \(models/\w+\): (\w+)</summary>", report, flags=re.M)


def index(repo: Path) -> dict:
    return {p["experiment"]: p for p in json.loads((repo / ".mlflow-ci" / "projects.json").read_text())["projects"]}


def test_only_changed_models_are_checked_and_the_comment_has_a_section_each(tmp_path):
    repo = monorepo(tmp_path)
    nothing = run(repo, "--base-branch", "main")
    assert nothing.returncode == 0 and "nothing to check" in nothing.stdout, nothing.stdout + nothing.stderr
    assert {p["verdict"] for p in index(repo).values()} == {"unchanged"}

    git(repo, "checkout", "-q", "-b", "pr/fraud")
    set_accuracy(repo, "fraud", 0.7)  # below its min: this model fails
    git(repo, "commit", "-q", "-am", "fraud regresses")
    out = run(repo, "--base-branch", "main")
    assert out.returncode == 1, out.stdout + out.stderr
    projects = index(repo)
    assert {k: p["verdict"] for k, p in projects.items()} == {"churn": "unchanged", "fraud": "fail", "ranking": "unchanged"}
    assert (repo / ".mlflow-ci" / "models_fraud" / "result.json").is_file()
    report = (repo / ".mlflow-ci" / "report.md").read_text()
    assert sections(report) == [(" open", "fraud", "fail"), ("", "churn", "unchanged"), ("", "ranking", "unchanged")]  # failing first, open
    assert report.count("nothing to check; its check passes") == 2
    assert report.count("<!-- mlflow-ci:report:") == 1  # one marker: one comment

    git(repo, "checkout", "-q", "-b", "pr/shared", "main")
    (repo / "shared" / "features.py").write_text('"""Shared."""\n\nSCALE = 1.01\n')
    git(repo, "commit", "-q", "-am", "shared features")
    out = run(repo, "--base-branch", "main")
    assert out.returncode == 0, out.stdout + out.stderr
    assert {k: p["changed"] for k, p in index(repo).items()} == {"churn": True, "fraud": True, "ranking": False}


def test_through_the_action_one_comment_and_a_check_run_per_model(tmp_path, runner_python):
    from actions_harness import run_action
    from conftest import runner_env

    workspace = monorepo(tmp_path)
    git(workspace, "checkout", "-q", "-b", "pr/ranking")
    set_accuracy(workspace, "ranking", 0.95)
    git(workspace, "commit", "-q", "-am", "ranking improves")
    payload = json.loads((EVENTS / "pull_request.opened.json").read_text())
    pr = payload["pull_request"]["number"]
    with FakeGitHub(TOKEN) as gh:
        env = runner_env(runner_python, GITHUB_EVENT_NAME="pull_request", GITHUB_REPOSITORY="Codertocat/Hello-World",
                         GITHUB_API_URL=gh.url, GITHUB_SERVER_URL="https://github.test", GITHUB_RUN_ID="9",
                         GITHUB_TOKEN=TOKEN, GITHUB_BASE_REF="main", GITHUB_HEAD_REF="pr/ranking",
                         MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
        result = run_action(ROOT, inputs={"all-projects": "true"}, workspace=workspace, env=env, event=payload)
        assert result.outcome == "success", result.log
        assert result.outputs["verdict"] == "pass" and result.outputs["comment-url"]
        comments = gh.comments[pr]
        assert len(comments) == 1
        body = comments[0]["body"]
        assert sections(body) == [("", "ranking", "pass"), ("", "churn", "unchanged"), ("", "fraud", "unchanged")]
        runs = {r["name"]: r for r in gh.check_runs}
        assert set(runs) == {"mlflow-ci / churn", "mlflow-ci / fraud", "mlflow-ci / ranking"}
        assert {r["conclusion"] for r in runs.values()} == {"success"}
        assert runs["mlflow-ci / churn"]["output"]["title"] == "unchanged: nothing to check"
        assert {r["head_sha"] for r in runs.values()} == {payload["pull_request"]["head"]["sha"]}

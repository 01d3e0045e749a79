"""check --all: several models in one repository (examples/monorepo); only the changed ones are checked,
one comment with a section per model, a check run per model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from conftest import based_on, clean_env, git
from fakegithub import EVENTS, FakeGitHub

from mlflow_ci.commands.projects import scope

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
    assert (repo / ".mlflow-ci" / scope("models/fraud") / "result.json").is_file()
    report = (repo / ".mlflow-ci" / "report.md").read_text()
    assert sections(report) == [(" open", "fraud", "fail"), ("", "churn", "unchanged"), ("", "ranking", "unchanged")]  # failing first, open
    assert report.count("nothing to check; its check passes") == 2
    assert report.count("<!-- mlflow-ci:report:") == 1  # one marker: one comment

    # without --base-branch (and outside a pull_request event) the base is main, as for a single check
    plain = run(repo)
    assert plain.returncode == 1, plain.stdout + plain.stderr
    assert {k: p["verdict"] for k, p in index(repo).items()} == {"churn": "unchanged", "fraud": "fail", "ranking": "unchanged"}

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
    payload = based_on(json.loads((EVENTS / "pull_request.opened.json").read_text()), workspace, "main")
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


def test_ten_models_of_fifty_gated_metrics_fit_one_comment(tmp_path):
    """The combined comment lists only what failed or warned per model: 10 × 50 metrics stay inside
    GitHub's 65,536 characters, with every table whole and no chart left broken."""
    from render_checks import mermaid_blocks, table_problems

    from mlflow_ci.commands.projects import Project, combined_markdown
    from mlflow_ci.commands.stages import CheckResult
    from mlflow_ci.config.loader import load_config
    from mlflow_ci.report import render_markdown
    from mlflow_ci.result import Result

    gate = "".join(f"  metric_{i:02d}: {{min: 0.5, max_drop: 0.01}}\n" for i in range(50))
    (tmp_path / "mlflow-ci.yml").write_text(f"experiment: m\ntrain: {{command: x}}\ngate:\n{gate}")
    cfg = load_config(tmp_path / "mlflow-ci.yml")
    projects = []
    for model in range(10):
        checks, metrics = [], []
        for i in range(50):
            name, failed = f"metric_{i:02d}", i < 5 and model % 2 == 0
            value = 0.8 if failed else 0.905
            checks += [{"metric": name, "rule": "max_drop", "limit": 0.01, "value": value, "baseline": 0.9, "passed": not failed,
                        "message": f"regressed by {0.9 - value:g}" if failed else "did not regress"},
                       {"metric": name, "rule": "min", "limit": 0.5, "value": value, "baseline": 0.9, "passed": True, "message": "ok"}]
            metrics.append({"name": name, "baseline": 0.9, "candidate": value, "delta": value - 0.9, "status": "worse" if failed else "better"})
        result = Result.build({"schema": 1, "verdict": "fail" if model % 2 == 0 else "pass", "experiment": f"model-{model}",
                               "candidate": {"run_id": "c" * 32, "metrics": {m["name"]: m["candidate"] for m in metrics}},
                               "baseline": {"run_id": "b" * 32, "metrics": {m["name"]: 0.9 for m in metrics}},
                               "checks": checks, "metrics": metrics,
                               "trend": {"branch": "main", "runs": [{"commit": f"{r:040x}", "metrics": {m["name"]: 0.9 for m in metrics}}
                                                                    for r in range(20)]}})
        folder = tmp_path / f"model-{model}"
        folder.mkdir()
        (folder / "report.md").write_text(render_markdown(result, cfg.report, cfg.root))
        projects.append(Project(f"models/model-{model}", folder / "mlflow-ci.yml", f"model-{model}", f"mlflow-ci / model-{model}",
                                True, CheckResult(result.verdict, result, folder / "report.md", folder / "result.json", None)))
    combined = combined_markdown(projects, "a" * 40)
    assert len(combined) < 65_536, len(combined)
    assert combined.count("| ❌&nbsp;metric\\_0") == 25 and "45 passing metrics not listed" in combined
    assert not table_problems(combined) and not mermaid_blocks(combined)
    single = (tmp_path / "model-0" / "report.md").read_text()
    assert len(single) < 65_536, len(single)  # one model's whole report fits its check run


def test_uncommitted_and_untracked_files_count_as_changes(tmp_path):
    from mlflow_ci.commands.projects import changed_paths

    repo = monorepo(tmp_path)
    base = git(repo, "rev-parse", "HEAD")
    set_accuracy(repo, "churn", 0.91)  # modified, not staged
    (repo / "models" / "fraud" / "notes.txt").write_text("new")  # untracked
    (repo / "models" / "ranking" / "train.py").unlink()  # deleted
    assert changed_paths(repo, base) == {"models/churn/params.json", "models/fraud/notes.txt", "models/ranking/train.py"}
    assert changed_paths(repo, None) is None


def test_artifact_names_of_folders_the_readable_part_confuses_differ_and_the_workflow_agrees(tmp_path):
    """#26: models/churn and models_churn (and the root) get distinct artifact names, and the PR workflow's
    "Which store" step, run by bash as the runner does, computes the name the publisher looks for."""
    import subprocess

    import yaml


    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "mlflow-ci-pr.yml").read_text())
    [step] = [s for s in workflow["jobs"]["check"]["steps"] if s.get("name") == "Which store"]
    folders = [".", "models/churn", "models_churn", "models/churn-", "a b/ü"]
    for folder in folders:
        out = tmp_path / "output"
        out.write_text("")
        env = {"PATH": "/usr/bin:/bin", "WORKING_DIRECTORY": folder, "BRANCH": "main", "GITHUB_OUTPUT": str(out),
               "GITHUB_WORKSPACE": str(tmp_path)}
        subprocess.run(["bash", "-e", "-c", step["run"]], env=env, check=True)
        outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
        assert outputs["scope"] == scope(folder), folder
    assert len({scope(f) for f in folders}) == len(folders)
    assert scope(".").startswith("root-") and scope("models/churn").startswith("models_churn-")

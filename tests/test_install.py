"""The install each path needs: against a tracking server the bare package (MLflow's client only) runs
the PR check; what needs more says which extra to install, in one line, exit 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, git

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Path:
    """A fresh virtualenv holding `pip install mlflow-ci` of this checkout: no extras."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(ROOT)], check=True, timeout=600)
    return venv


def run(venv: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = clean_env(**env)
    environ["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    return subprocess.run([str(venv / "bin" / "mlflow-ci"), *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)


def metrics_project(root: Path, extra: str = "") -> Path:
    root.mkdir()
    (root / "train.py").write_text('import json\njson.dump({"accuracy": 0.9}, open("metrics.json", "w"))\n')
    (root / "mlflow-ci.yml").write_text(f"experiment: bare-{root.name}\ntrain:\n  command: python train.py\n  metrics_file: metrics.json\n"
                                        f"gate:\n  accuracy: {{min: 0.8}}\n{extra}")
    (root / ".gitignore").write_text(".mlflow-ci/\nmetrics.json\nmlflow.db\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")
    return root


def test_the_bare_install_holds_no_server_sql_store_or_numpy(bare):
    probe = subprocess.run([str(bare / "bin" / "python"), "-c",
                            "import importlib.util as u; print([m for m in ('mlflow', 'sqlalchemy', 'alembic', 'flask', 'numpy', 'pandas') if u.find_spec(m)])"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "['mlflow']"  # mlflow-skinny's client, nothing else


def test_the_bare_install_checks_against_a_tracking_server(bare, tmp_path, mlflow_server):
    project = metrics_project(tmp_path / "served")
    out = run(bare, project, "check", "--no-publish", MLFLOW_TRACKING_URI=mlflow_server.uri)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[pass] accuracy" in out.stdout


def test_a_local_store_or_evaluate_says_which_extra_to_install(bare, tmp_path, mlflow_server):
    local = run(bare, metrics_project(tmp_path / "local"), "check", "--no-publish")
    assert local.returncode == 2 and "pip install 'mlflow-ci[local]'" in local.stderr, local.stdout + local.stderr
    assert "Traceback" not in local.stderr and len(local.stderr.strip().splitlines()) == 1
    evaluated = metrics_project(tmp_path / "evaluated", "evaluate: {data: eval.csv, target: y, task: classification}\n")
    (evaluated / "eval.csv").write_text("x,y\n1,0\n2,1\n")
    out = run(bare, evaluated, "check", "--no-publish", MLFLOW_TRACKING_URI=mlflow_server.uri)
    assert out.returncode == 2 and "pip install 'mlflow-ci[evaluate]'" in out.stderr, out.stdout + out.stderr


def test_the_bare_install_publishes_and_lists_projects(bare, tmp_path):
    """What the trusted jobs run (installed with MLFLOW_CI_STORE=none): publish an artifact, list projects."""
    import json

    from fakegithub import EVENTS, TOKEN, FakeGitHub

    payload = json.loads((EVENTS / "pull_request.opened.json").read_text())
    event = tmp_path / "event.json"
    event.write_text(json.dumps(payload))
    result = {"schema": 1, "verdict": "pass", "experiment": "bare-repo", "pr": payload["number"],
              "head_sha": payload["pull_request"]["head"]["sha"], "candidate": {"run_id": "c" * 32, "metrics": {"accuracy": 0.9}},
              "baseline": None, "checks": []}
    (tmp_path / "result.json").write_text(json.dumps(result))
    project = metrics_project(tmp_path / "repo")
    with FakeGitHub(TOKEN) as gh:
        out = run(bare, project, "publish", "--from", str(tmp_path / "result.json"), "--out", str(tmp_path / "out"),
                  GITHUB_ACTIONS="true", GITHUB_EVENT_NAME="pull_request", GITHUB_EVENT_PATH=str(event),
                  GITHUB_REPOSITORY=payload["repository"]["full_name"], GITHUB_API_URL=gh.url, GITHUB_TOKEN=TOKEN,
                  GITHUB_OUTPUT=str(tmp_path / "output"), GITHUB_STEP_SUMMARY=str(tmp_path / "summary"))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "mlflow-ci · bare-repo" in gh.comments[payload["number"]][0]["body"]
    listed = run(bare, project, "projects")
    assert listed.returncode == 0 and '"folder": "."' in listed.stdout, listed.stdout + listed.stderr


def test_an_installed_mlflow_ci_pins_the_workflows_it_writes_to_its_own_commit(bare, tmp_path):
    """Issue #27, item 3: the wheel records the commit it was built from (hatch_build.py), and init pins the
    reusable workflows there — what CI runs is the mlflow-ci the user ran, its calls declared by those very
    workflows — labelled with the tag, or as an untagged commit (never a tag that does not exist)."""
    head = git(ROOT, "rev-parse", "HEAD")
    site = next((bare / "lib").glob("python*/site-packages/mlflow_ci"))
    assert (site / "BUILD_COMMIT").is_file() and head in (site / "BUILD_COMMIT").read_text()
    repo = metrics_project(tmp_path / "model")
    done = run(bare, repo, "init", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [line.strip() for path in sorted((repo / ".github" / "workflows").iterdir())
             for line in path.read_text().splitlines() if "uses: mlflow-ci/mlflow-ci/" in line]
    tag = subprocess.run(["git", "describe", "--tags", "--exact-match", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert len(calls) == 3 and all(f"@{head} # {tag or 'mlflow-ci '}" in line for line in calls), calls

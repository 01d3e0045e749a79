"""`mlflow-ci init` in a real git repository."""

from __future__ import annotations

import pytest
from conftest import git

from mlflow_ci.commands.init import init
from mlflow_ci.config.loader import load_config
from mlflow_ci.errors import UsageError


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "Churn Model"
    root.mkdir()
    git(root, "init", "-q", "-b", "trunk")
    (root / "train.py").write_text("print('hi')\n")
    (root / "requirements.txt").write_text("scikit-learn\n")
    (root / "data").mkdir()
    return root


def test_init_infers_and_writes_a_valid_setup(repo):
    result = init(repo)
    assert result.experiment == "churn-model"
    assert result.default_branch == "trunk"
    assert result.training == "the command 'python train.py'"
    cfg = load_config(repo / "mlflow-ci.yml")
    assert cfg.train.auto_inputs and "inputs: auto" in (repo / "mlflow-ci.yml").read_text()
    pr = (repo / ".github/workflows/mlflow-ci.yml").read_text()
    assert "branches: [trunk]" in pr and "$default-branch" not in pr
    assert (repo / ".github/workflows/mlflow-ci-deploy.yml").is_file()
    assert (repo / ".github/workflows/mlflow-ci-comment.yml").is_file()
    assert {".mlflow-ci/", "__pycache__/"} <= set((repo / ".gitignore").read_text().splitlines())


def test_init_takes_the_mlproject_main_entry_point(repo):
    (repo / "MLproject").write_text(
        "name: churn\nentry_points:\n  main:\n    parameters:\n      alpha: {type: float, default: 0.5}\n"
        "      l1_ratio: 0.1\n    command: 'python train.py --alpha {alpha}\n      --l1-ratio {l1_ratio}'\n")
    result = init(repo)
    assert result.training == "the MLproject entry point 'main' (python train.py --alpha 0.5 --l1-ratio 0.1)"
    cfg = load_config(repo / "mlflow-ci.yml")
    assert (cfg.train.entry_point, cfg.train.command) == ("main", None)  # MLproject stays where it is said
    (repo / "MLproject").write_text("entry_points:\n  main:\n    parameters:\n      alpha: {type: float}\n"
                                    "    command: python train.py --alpha {alpha}\n")
    with pytest.raises(UsageError, match=r"MLproject: entry_points.main: no value for parameter alpha \(no default there\)"):
        init(repo, force=True)


TRAIN_ARGS = """
import argparse, json
parser = argparse.ArgumentParser()
parser.add_argument("--learning-rate", type=float)
parser.add_argument("--epochs", type=int)
parser.add_argument("--tag")
args = parser.parse_args()
json.dump({"accuracy": 0.9, "lr": args.learning_rate, "epochs": args.epochs}, open("metrics.json", "w"))
print("tag", args.tag)
"""
MLPROJECT = """name: torchscript
entry_points:
  main:
    parameters:
      learning_rate: {type: float, default: 0.1}
      epochs: {type: int, default: 50}
      tag: {type: string, default: "a b"}
    command: |
      python train.py \\
        --learning-rate {learning_rate} \\
        --epochs {epochs} \\
        --tag {tag}
"""


def test_an_mlproject_entry_point_runs_as_mlflow_run_does_and_is_read_at_every_check(repo):
    """Issue #27, items 1 and 2: MLflow's multi-line commands (``command: |`` with ``\\`` continuations) keep their
    meaning; a PR changing a default in MLproject trains with it; train.parameters overrides; validate resolves it."""
    import json
    import subprocess
    import sys

    from conftest import clean_env

    (repo / "train.py").write_text(TRAIN_ARGS)
    (repo / "MLproject").write_text(MLPROJECT)
    init(repo)
    config = (repo / "mlflow-ci.yml").read_text().replace("  timeout: 1h\n", "  timeout: 1h\n  metrics_file: metrics.json\n")
    (repo / "mlflow-ci.yml").write_text(config)
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + "metrics.json\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "mlflow-ci")
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{repo.parent / 'store.db'}")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mlflow_ci", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=300)

    valid = cli("validate")
    assert valid.returncode == 0 and "training: MLproject entry point 'main': python train.py" in valid.stdout, valid.stderr
    first = cli("check", "--no-publish")
    assert first.returncode == 0, first.stdout + first.stderr
    metrics = json.loads((repo / ".mlflow-ci" / "result.json").read_text())["candidate"]["metrics"]
    assert (metrics["lr"], metrics["epochs"]) == (0.1, 50) and "tag a b" in (repo / ".mlflow-ci" / "train.log").read_text()

    (repo / "MLproject").write_text(MLPROJECT.replace("default: 50", "default: 5"))  # a PR edits MLproject only
    git(repo, "commit", "-q", "-am", "fewer epochs")
    second = cli("check", "--no-publish")
    result = json.loads((repo / ".mlflow-ci" / "result.json").read_text())
    assert second.returncode == 0 and not result["candidate"]["cached"] and result["candidate"]["metrics"]["epochs"] == 5

    (repo / "mlflow-ci.yml").write_text(config.replace("  entry_point: main\n", "  entry_point: main\n  parameters: {learning_rate: 0.01}\n"))
    assert cli("check", "--no-publish").returncode == 0
    assert json.loads((repo / ".mlflow-ci" / "result.json").read_text())["candidate"]["metrics"]["lr"] == 0.01

    (repo / "mlflow-ci.yml").write_text(config.replace("  entry_point: main\n", "  entry_point: train\n"))
    wrong = cli("validate")
    assert wrong.returncode == 2 and "MLproject: entry_points.train: expected an entry point with a command (this file has: main)" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_init_uses_the_remote_name_and_never_overwrites(repo):
    git(repo, "remote", "add", "origin", "git@github.com:acme/fraud-detector.git")
    (repo / "mlflow-ci.yml").write_text("mine\n")
    with pytest.raises(UsageError, match="mlflow-ci.yml already exist; nothing was written"):
        init(repo)
    assert (repo / "mlflow-ci.yml").read_text() == "mine\n"
    assert not (repo / ".github").exists()
    result = init(repo, force=True)
    assert result.experiment == "fraud-detector"
    init(repo, force=True)
    assert (repo / ".gitignore").read_text().count(".mlflow-ci/") == 1


def test_init_needs_a_command_when_none_can_be_found(tmp_path):
    with pytest.raises(UsageError, match="no training script found"):
        init(tmp_path)
    result = init(tmp_path, command="python -m pkg.train", experiment="My Exp")
    assert result.experiment == "my-exp"
    assert load_config(tmp_path / "mlflow-ci.yml").train.command == "python -m pkg.train"


def test_init_cli(project):
    (project.root / "mlflow-ci.yml").unlink()
    proc = project.cli("init")
    assert proc.returncode == 0, proc.stderr
    assert "wrote .github/workflows/mlflow-ci.yml" in proc.stdout
    again = project.cli("init")
    assert again.returncode == 2 and "pass --force to overwrite them" in again.stderr
    assert project.cli("validate").returncode == 0


def test_a_genai_app_and_a_configured_project_get_only_what_they_lack(repo):
    """Issue #27, item 4: a GenAI app (nothing to train) gets a genai: configuration whose first check runs; a
    project with its own mlflow-ci.yml gets the workflows alone, named after its experiment."""
    import json
    import subprocess
    import sys

    from conftest import clean_env

    (repo / "train.py").unlink()
    (repo / "app.py").write_text("FAQ = {'hours': 'We are open 9 to 5.'}\n\ndef answer(topic):\n    return FAQ[topic]\n")
    result = init(repo, genai=True)
    assert result.training == 'a GenAI app, app:answer (nothing to train: train.command is "true")'
    cfg = load_config(repo / "mlflow-ci.yml")
    assert cfg.genai.predict_fn == "app:answer" and cfg.train.command == "true"
    (repo / "eval.jsonl").write_text(json.dumps({"inputs": {"topic": "hours"}, "expectations": {"expected_facts": ["9 to 5"]}}) + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a FAQ bot under mlflow-ci")
    checked = subprocess.run([sys.executable, "-m", "mlflow_ci", "check", "--no-publish"], cwd=repo, capture_output=True, text=True,
                             env=clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{repo.parent / 'store.db'}"), timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads((repo / ".mlflow-ci" / "result.json").read_text())["candidate"]["metrics"]["genai.contains"] == 1.0

    (repo / "mlflow-ci.yml").write_text((repo / "mlflow-ci.yml").read_text().replace("experiment: churn-model", "experiment: faq"))
    mine = (repo / "mlflow-ci.yml").read_text()
    for workflow in (repo / ".github" / "workflows").iterdir():
        workflow.unlink()
    only = init(repo, workflows_only=True)
    assert (repo / "mlflow-ci.yml").read_text() == mine and only.experiment == "faq"
    assert sorted(p.name for p in only.written) == ["mlflow-ci-comment.yml", "mlflow-ci-deploy.yml", "mlflow-ci.yml"]
    assert all(p.parent.name == "workflows" for p in only.written)

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
    assert result.command == "python train.py"
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
    assert init(repo).command == "python train.py --alpha 0.5 --l1-ratio 0.1"
    (repo / "MLproject").write_text("entry_points:\n  main:\n    parameters:\n      alpha: {type: float}\n"
                                    "    command: python train.py --alpha {alpha}\n")
    with pytest.raises(UsageError, match="MLproject: entry_points.main parameter 'alpha' has no default"):
        init(repo, force=True)


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

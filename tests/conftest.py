"""Shared fixtures: real git repositories in temp dirs and real SQLite MLflow stores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from processes import leftovers, start_registry
from enginekit import need
from stack import MlflowServer, RayHead

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}

def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controlling process (with xdist, the workers inherit it)
        config._mlflow_ci_processes = start_registry()


def pytest_sessionfinish(session, exitstatus):
    folder = getattr(session.config, "_mlflow_ci_processes", None)
    if folder is None:
        return
    found = leftovers(folder)
    if found:
        for pgid, what in found:
            sys.stderr.write(f"\nleft running by the suite, now stopped: process group {pgid} ({what})\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(folder, ignore_errors=True)


# A training script that does not use MLflow: it reads params.json and writes metrics.json.
METRICS_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    params = json.load(open("params.json"))
    if params.get("sleep"):
        time.sleep(params["sleep"])
    if params.get("fail"):
        print("training blew up", file=sys.stderr)
        sys.exit(7)
    print("training with", params)
    json.dump(params["metrics"], open("metrics.json", "w"))
    """
)


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without CI/MLflow variables that would change behaviour."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLFLOW_", "GIT_"))}
    env.update(GIT_ENV)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def based_on(payload: dict, repo: Path, ref: str = "HEAD") -> dict:
    """A GitHub ``pull_request`` payload whose base commit is ``ref`` of the test's repository: GitHub's
    sample names a base commit the repository does not have, which a check must treat as unknown (a base
    that was not fetched may hold a model: the check fails closed)."""
    payload["pull_request"]["base"]["sha"] = git(repo, "rev-parse", ref)
    return payload


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=repo, env=clean_env(), capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


@dataclass
class Project:
    """A model repository in a temp dir with its own SQLite MLflow store."""

    root: Path
    store: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.store}"

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(MLFLOW_TRACKING_URI=self.uri, **extra)

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def set_metrics(self, **metrics: float) -> None:
        params = json.loads((self.root / "params.json").read_text())
        params["metrics"] = metrics
        (self.root / "params.json").write_text(json.dumps(params))

    def commit(self, message: str = "change") -> str:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.root, "rev-parse", "HEAD")

    def branch(self, name: str, start: str = "main") -> None:
        git(self.root, "checkout", "-q", "-B", name, start)

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mlflow_ci", *args],
            cwd=self.root,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def result(self) -> dict:
        return json.loads((self.root / ".mlflow-ci" / "result.json").read_text())


DEFAULT_CONFIG = """\
experiment: churn
model: churn-model
train:
  command: python train.py
  metrics_file: metrics.json
  inputs: ["*.py", "params.json"]
gate:
  accuracy: {min: 0.8, max_drop: 0.02}
  rmse: {max: 10, direction: lower}
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "repo"
    root.mkdir()
    proj = Project(root=root, store=tmp_path / "mlflow.db")
    proj.write("train.py", METRICS_SCRIPT)
    proj.write("params.json", json.dumps({"metrics": {"accuracy": 0.9, "rmse": 5.0}}))
    proj.write("mlflow-ci.yml", DEFAULT_CONFIG)
    proj.write(".gitignore", ".mlflow-ci/\nmetrics.json\n")
    git(root, "init", "-q", "-b", "main")
    proj.commit("initial")
    return proj


# --------------------------------------------------------------------------------------------------
# A real MLflow tracking server on 127.0.0.1 (one per test session / xdist worker)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


# Trains a real scikit-learn model and logs it to the run mlflow-ci created.
MODEL_SCRIPT = """
import json, mlflow, mlflow.sklearn, sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
params = json.load(open("params.json"))
X, y = load_iris(return_X_y=True)
with mlflow.start_run():
    model = LogisticRegression(C=params["C"], max_iter=300).fit(X, y)
    mlflow.log_param("C", params["C"])
    mlflow.log_metric("accuracy", params.get("accuracy", model.score(X, y)))
    mlflow.sklearn.log_model(model, name="model", pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
"""


def server_config(name: str, extra: str = "") -> str:
    """mlflow-ci.yml of a model on a tracking server: experiment and model ``name``, gated on accuracy."""
    return textwrap.dedent(f"""\
        experiment: {name}
        model: {name}
        train:
          command: python train.py
          inputs: ["*.py", "params.json"]
        gate:
          accuracy: {{min: 0.8}}
        """) + extra


@pytest.fixture
def served(project, mlflow_server):
    """The project on the shared server, under a fresh experiment and model name."""
    name = f"iris-{uuid.uuid4().hex[:8]}"
    project.write("train.py", MODEL_SCRIPT)
    project.write("params.json", json.dumps({"C": 1.0}))
    project.write("deploy.sh", 'echo "deploying $MODEL_URI v$MODEL_VERSION ($MODEL_NAME)" >> deployed.txt\nexit "${DEPLOY_EXIT:-0}"\n')
    project.write("mlflow-ci.yml", server_config(name, "deploy:\n  command: sh deploy.sh\n"))
    project.write(".gitignore", ".mlflow-ci/\ndeployed.txt\n")
    project.commit("model project")
    project.server_env = clean_env(
        MLFLOW_TRACKING_URI=mlflow_server.uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10",
    )
    project.name = name
    return project


# --------------------------------------------------------------------------------------------------
# The runner's Python for the actions harness


@pytest.fixture(scope="session")
def runner_python(tmp_path_factory):
    """A fresh virtualenv standing in for the runner's Python (what actions/setup-python provides)."""
    venv = tmp_path_factory.mktemp("runner") / "venv"
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    return venv


def runner_env(venv: Path, **extra: str) -> dict[str, str]:
    env = clean_env(**extra)
    uv_dir = str(Path(shutil.which("uv") or sys.executable).parent)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), uv_dir, "/usr/bin", "/bin"])
    env["VIRTUAL_ENV"] = str(venv)
    return env


# --------------------------------------------------------------------------------------------------
# Real engines (tests/engines): a Ray head on 127.0.0.1 and PySpark in local[2] mode. Where one is missing
# the tests skip, except in CI, where MLFLOW_CI_TEST_REQUIRE=ray,spark makes them fail instead.


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    need("ray")
    head = RayHead(tmp_path_factory.mktemp("ray-head")).start()
    yield head
    head.stop()


@pytest.fixture(scope="session")
def spark_env():
    """The environment the Spark engine reads: local[2] on loopback."""
    need("spark")
    return {"MLFLOW_CI_SPARK_MASTER": "local[2]", "SPARK_LOCAL_IP": "127.0.0.1"}


@pytest.fixture
def loopback_ray(ray_head, monkeypatch):
    """This process as a Ray driver of the suite's head, on loopback (Ray reads the variable at import)."""
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray._private.ray_constants as constants

    monkeypatch.setattr(constants, "ENABLE_RAY_CLUSTER", False)
    return {"RAY_ADDRESS": ray_head.address, **ray_head.env()}

"""The workflows under a real GitHub Actions engine, nektos/act (#25), against the suite's fake GitHub.

Each scenario asserts on what the fake GitHub received and on the MLflow store, not on act's exit code alone
(a job that publishes nothing must fail the test). How act is made to run offline: tests/actengine.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest
from actengine import OUR_SHA, ActUnavailable, Engine
from conftest import ROOT, git
from fakegithub import EVENTS, FakeGitHub

pytestmark = pytest.mark.slow

TOKEN = "ghs_act_token_value"
REPO = "octo/models"


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    try:
        return Engine.prepare(tmp_path_factory.mktemp("act"))
    except ActUnavailable as exc:
        if "act" in os.environ.get("MLFLOW_CI_TEST_REQUIRE", "").split(","):
            pytest.fail(f"MLFLOW_CI_TEST_REQUIRE=act: {exc}")
        pytest.skip(str(exc))


ROOT_ACTION_WORKFLOW = f"""\
name: mlflow-ci
on: pull_request
permissions:
  contents: read
jobs:
  check:
    runs-on: ubuntu-latest
    permissions:
      contents: read
      pull-requests: write
      checks: write
    steps:
      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1
        with:
          fetch-depth: 0
          persist-credentials: false
      - uses: mlflow-ci/mlflow-ci@{OUR_SHA} # this checkout
        with:
          python-version: "{{python}}"
"""


def model_repository(root, engine: Engine, workflow: str):
    """The wine-quality example as a model repository with ``workflow``, uv pinned, on main, published."""
    shutil.copytree(ROOT / "examples" / "wine-quality", root, ignore=shutil.ignore_patterns(".mlflow-ci", "mlflow.db", "metrics.json"))
    (root / "uv.toml").write_text(f'required-version = "=={engine.uv}"\n')  # else setup-uv asks for "latest"
    (root / ".gitignore").write_text(".mlflow-ci/\nmlflow.db\nmlartifacts/\n")
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "mlflow-ci.yml").write_text(workflow.replace("{python}", engine.python))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "model")
    git(root, "remote", "add", "origin", f"https://github.com/{REPO}")  # act reads github.repository from it
    engine.publish(root, REPO)
    return git(root, "rev-parse", "HEAD")


def pull_request_event(path, head: str, base: str, number: int = 2):
    payload = json.loads((EVENTS / "pull_request.opened.json").read_text())
    pr = payload["pull_request"]
    pr["number"], payload["number"] = number, number
    pr["head"].update(sha=head, ref="main")
    pr["base"].update(sha=base, ref="main")
    for where in (payload["repository"], pr["head"]["repo"], pr["base"]["repo"]):
        where["full_name"] = REPO
    path.write_text(json.dumps(payload))
    return path


def test_root_action_on_a_pull_request(engine, tmp_path):
    """Scenario 1: the root composite action trains, comments and puts a check run on the PR head."""
    repo = tmp_path / "models"
    head = model_repository(repo, engine, ROOT_ACTION_WORKFLOW)
    event = pull_request_event(tmp_path / "event.json", head, head)
    store = tmp_path / "store" / "mlflow.db"  # outside act's workspace, which act removes with the job
    store.parent.mkdir()
    with FakeGitHub(TOKEN) as gh:
        proc = engine.run(repo, "pull_request", event, ".github/workflows/mlflow-ci.yml",
                          env={"GITHUB_API_URL": gh.url, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"},
                          secrets={"GITHUB_TOKEN": TOKEN})
        log = proc.stdout
        assert proc.returncode == 0, log[-6000:]
        assert "verdict: " in log and "PASS" in log, log[-6000:]
        [comment] = gh.comments[2]
        assert "mlflow-ci · wine-quality" in comment["body"]
        [check] = gh.check_runs
        assert (check["name"], check["head_sha"], check["conclusion"]) == ("mlflow-ci / wine-quality", head, "success")
    assert TOKEN not in log.replace("***", "")
    with sqlite3.connect(store) as db:
        tagged = db.execute("SELECT value FROM tags WHERE key = 'mlflow.source.git.commit'").fetchall()
    assert (head,) in tagged  # the candidate run of the PR head, in the job's store


def test_a_pin_the_bundle_lacks_is_named(tmp_path):
    """When a workflow pins an action at a SHA the bundle does not hold, the test says which, before act runs."""
    from actengine import unpack_bundle

    with pytest.raises(AssertionError, match=r"pin actions/checkout@f{40}, which \.\./shared/act/actions\.tgz does not hold"):
        try:
            unpack_bundle(tmp_path, {("actions/checkout", "f" * 40)})
        except ActUnavailable as exc:
            if "act" in os.environ.get("MLFLOW_CI_TEST_REQUIRE", "").split(","):
                raise
            pytest.skip(str(exc))

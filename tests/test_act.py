"""The workflows under a real GitHub Actions engine, nektos/act (#25), against the suite's fake GitHub.

Each scenario asserts on what the fake GitHub received and on the MLflow store, not on act's exit code alone
(a job that publishes nothing must fail the test). How act is made to run offline: tests/actengine.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from actengine import ActUnavailable, Engine, refused_call
from conftest import MODEL_SCRIPT, ROOT, git
from fakegithub import EVENTS, FakeGitHub
from scenarios import IRIS_CONFIG, MONOREPO_PR, fraud_regresses, monorepo_outcome

from mlflow_ci.commands.projects import scope

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


ROOT_ACTION_WORKFLOW = """\
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
      - uses: mlflow-ci/mlflow-ci@{sha} # this checkout
        with:
          python-version: "{python}"
"""


def model_repository(root, engine: Engine, workflow: str):
    """The wine-quality example as a model repository with ``workflow``, uv pinned, on main, published."""
    shutil.copytree(ROOT / "examples" / "wine-quality", root, ignore=shutil.ignore_patterns(".mlflow-ci", "mlflow.db", "metrics.json"))
    (root / "uv.toml").write_text(f'required-version = "=={engine.uv}"\n')  # else setup-uv asks for "latest"
    (root / ".gitignore").write_text(".mlflow-ci/\nmlflow.db\nmlartifacts/\n")
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "mlflow-ci.yml").write_text(workflow.replace("{python}", engine.python).replace("{sha}", engine.sha))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "model")
    git(root, "remote", "add", "origin", f"https://github.com/{REPO}")  # act reads github.repository from it
    engine.publish(root, REPO)
    return git(root, "rev-parse", "HEAD")


def pull_request_event(path: Path, head: str, base: str, number: int = 2) -> Path:
    path.write_text(json.dumps(pull_request_payload(head, base, number)))
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
        assert 2 in gh.comments, "nothing was published to PR #2"
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


def caller(template: str, engine: Engine, inputs: dict[str, str] | None = None) -> str:
    """An org template as a model repository adds it, pinned at the tested commit of mlflow-ci.

    act sets neither ``job.workflow_repository`` nor ``job.workflow_sha`` (../shared/act/README.md; as on
    GitHub Enterprise Server), so the reusable workflows' ``mlflow-ci-repository`` / ``mlflow-ci-ref`` inputs
    stand in; the runner's Python version is the one in act's tool cache."""
    text = (ROOT / "workflow-templates" / template).read_text()
    text, pinned = re.subn(r"(uses: mlflow-ci/mlflow-ci/\.github/workflows/[\w.-]+\.yml)@[0-9a-f]{40}[^\n]*",
                           rf"\1@{engine.sha} # the tested commit", text)
    assert pinned == 1, f"{template} pins no reusable workflow of mlflow-ci"
    stand_ins = (f"    with:\n      mlflow-ci-repository: mlflow-ci/mlflow-ci\n      mlflow-ci-ref: {engine.sha}\n"
                 f"      python-version: \"{engine.python}\"\n" + "".join(f"      {k}: {v}\n" for k, v in (inputs or {}).items()))
    text = text.replace("$default-branch", "main").replace("    with:\n", stand_ins, 1)
    refused = refused_call(text, template, (ROOT / ".github" / "workflows" / template).read_text())
    assert not refused, f"GitHub would refuse workflow-templates/{template}: " + "; ".join(refused)
    return text




def iris_project(root: Path) -> None:
    """A model that logs an sklearn model (the artifact promote registers) and has a deploy hook; the hook
    appends to the file MLFLOW_CI_TEST_DEPLOYED names, outside act's workspace (act removes it)."""
    root.mkdir(parents=True)
    (root / "train.py").write_text(MODEL_SCRIPT)
    (root / "params.json").write_text(json.dumps({"C": 1.0}))
    (root / "requirements.txt").write_text("scikit-learn\n")
    (root / "deploy.sh").write_text('echo "$MODEL_NAME v$MODEL_VERSION $MODEL_URI" >> "$MLFLOW_CI_TEST_DEPLOYED"\n')
    (root / "mlflow-ci.yml").write_text(IRIS_CONFIG + "deploy:\n  command: sh deploy.sh\n")


class Models:
    """A model repository whose workflows are the org templates, on the suite's fake GitHub, run by act."""

    def __init__(self, root: Path, engine: Engine, gh: FakeGitHub, example: Path | None = None,
                 inputs: dict[str, str] | None = None) -> None:
        self.root, self.engine, self.gh = root, engine, gh
        if example:
            shutil.copytree(example, root, ignore=shutil.ignore_patterns(".mlflow-ci", "mlflow.db", "metrics.json", "mlruns"))
        else:
            iris_project(root)
        (root / "uv.toml").write_text(f'required-version = "=={engine.uv}"\n')  # else setup-uv asks for "latest"
        (root / ".gitignore").write_text(".mlflow-ci/\nmlflow.db\nmlartifacts/\nmlruns/\n")
        workflows = root / ".github" / "workflows"
        workflows.mkdir(parents=True)
        for name in ("mlflow-ci-pr.yml", "mlflow-ci-deploy.yml", "mlflow-ci-comment.yml"):
            (workflows / name).write_text(caller(name, engine, inputs if name == "mlflow-ci-pr.yml" else None))
        git(root, "init", "-q", "-b", "main")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "model")
        git(root, "remote", "add", "origin", f"https://github.com/{REPO}")  # act reads github.repository from it
        engine.publish(root, REPO)
        self.deployed = root.parent / "deployed.txt"
        self.pushed: str | None = None  # main's head at the last push event

    def branch(self, name: str, change) -> str:
        """A branch off main with ``change(root)`` committed; its head SHA."""
        git(self.root, "checkout", "-q", "-B", name, "main")
        change(self.root)
        git(self.root, "commit", "-q", "-am", f"change on {name}")
        self.engine.publish(self.root, REPO)
        return git(self.root, "rev-parse", "HEAD")

    def act(self, event: str, payload: dict, workflow: str) -> subprocess.CompletedProcess:
        path = self.engine.work / f"event-{self.engine.run_id + 1}.json"
        path.write_text(json.dumps(payload))
        proc = self.engine.run(self.root, event, path, f".github/workflows/{workflow}",
                               env={"GITHUB_API_URL": self.gh.url, "MLFLOW_CI_TEST_DEPLOYED": str(self.deployed)},
                               secrets={"GITHUB_TOKEN": TOKEN})
        assert TOKEN not in proc.stdout.replace("***", ""), "act printed the token"
        return proc

    def pull_request(self, branch: str, number: int, *, fork: str | None = None) -> subprocess.CompletedProcess:
        """The ``pull_request`` event of ``branch`` into main (from the fork ``fork`` when given), checked out at its head."""
        git(self.root, "checkout", "-q", branch)
        payload = pull_request_payload(git(self.root, "rev-parse", "HEAD"), git(self.root, "rev-parse", "main"), number)
        payload["pull_request"]["head"]["ref"] = branch
        if fork:
            payload["pull_request"]["head"]["repo"]["full_name"] = fork
        return self.act("pull_request", payload, "mlflow-ci-pr.yml")


    def push_main(self) -> subprocess.CompletedProcess:
        """The ``push`` of main's head (the deploy workflow), from main's working copy."""
        git(self.root, "checkout", "-q", "main")
        self.engine.publish(self.root, REPO)
        payload = json.loads((EVENTS / "push.json").read_text())
        before = self.pushed or "0" * 40
        self.pushed = git(self.root, "rev-parse", "HEAD")
        payload.update(ref="refs/heads/main", before=before, after=self.pushed, base_ref=None, created=before == "0" * 40,
                       deleted=False, forced=False)
        payload["repository"].update(full_name=REPO, default_branch="main")
        return self.act("push", payload, "mlflow-ci-deploy.yml")

    def merge(self, branch: str, number: int) -> str:
        """Merge ``branch`` into main as PR ``number`` (the fake GitHub knows the PR); the merge commit."""
        head = git(self.root, "rev-parse", branch)
        git(self.root, "checkout", "-q", "main")
        git(self.root, "merge", "-q", "--no-ff", branch, "-m", f"Merge #{number}")
        merged = git(self.root, "rev-parse", "HEAD")
        self.gh.pulls.append({"number": number, "state": "closed", "merged_at": "2026-12-04T09:00:00Z",
                              "merge_commit_sha": merged, "head": {"sha": head, "ref": branch}})
        return merged

    def describe_run(self, run_id: int, head: str, number: int) -> None:
        """Workflow run ``run_id`` as GitHub's Actions API describes it (act serves no such API): a
        pull_request run of PR ``number`` at ``head``, of the caller workflow, calling mlflow-ci's PR workflow
        at the commit the caller pins. Promote takes a record only from such a run."""
        pinned = re.search(r"uses: (\S+/mlflow-ci-pr\.yml@[0-9a-f]{40})", (self.root / ".github/workflows/mlflow-ci-pr.yml").read_text())[1]
        self.gh.add_pr_run(run_id, head, number, path=".github/workflows/mlflow-ci-pr.yml", calls=pinned)

    def share_artifact(self, run_id: int, name: str = "mlflow-ci-result") -> None:
        """Artifact ``name`` of run ``run_id`` as GitHub's REST API serves it. act's artifact server does not
        serve that API (/repos/{repo}/actions/runs/{id}/artifacts), which download-artifact with ``run-id`` and
        promote use; on GitHub both are one store, so the fake GitHub serves the zip act's server holds."""
        self.gh.add_artifact(run_id, name, self.engine.artifact_zip(run_id, name).read_bytes())


def pull_request_payload(head: str, base: str, number: int) -> dict:
    payload = json.loads((EVENTS / "pull_request.opened.json").read_text())
    pr = payload["pull_request"]
    pr["number"], payload["number"] = number, number
    pr["head"].update(sha=head, ref="main")
    pr["base"].update(sha=base, ref="main")
    for where in (payload["repository"], pr["head"]["repo"], pr["base"]["repo"]):
        where["full_name"] = REPO
    return payload


def retune(C: float):
    """A change of the model's inputs: the regularisation of the iris model."""
    return lambda root: (root / "params.json").write_text(json.dumps({"C": C}))


def test_the_pr_workflow_checks_untrusted_and_publishes_trusted(engine, tmp_path):
    """Scenario 2: mlflow-ci-pr.yml's check job (no token) uploads the result through act's artifact server;
    the publish job downloads it and posts the comment and the check run with the provenance record of the
    model it digested."""
    from mlflow_ci.provenance import Record, model_digest

    with FakeGitHub(TOKEN) as gh:
        models = Models(tmp_path / "models", engine, gh)
        head = models.branch("feature", retune(0.5))
        proc = models.pull_request("feature", 3)
        run_id = engine.run_id
        log = proc.stdout
        assert proc.returncode == 0, log[-8000:]
        assert 3 in gh.comments, "nothing was published to PR #3"
        [comment] = gh.comments[3]
        assert "mlflow-ci · iris" in comment["body"]
        [check] = gh.check_runs
        assert (check["name"], check["head_sha"], check["conclusion"]) == ("mlflow-ci / iris", head, "success")
        record = Record.parse(check["external_id"])
        uploaded = engine.uploaded(run_id, "mlflow-ci-result", tmp_path / "uploaded")
        assert sorted(p.name for p in uploaded.iterdir()) == ["model", "report.md", "result.json"]
        result = json.loads((uploaded / "result.json").read_text())
        assert result["verdict"] == "pass" and (result["head_sha"], result["candidate"]["commit"], result["pr"]) == (head, head, 3)
        # the publish job digested the model the check job uploaded, and named that artifact of this run
        assert record.artifact == f"{run_id}/mlflow-ci-result"
        assert (record.digest, record.run_id) == (model_digest(uploaded / "model"), result["candidate"]["run_id"])
        assert "### Provenance" in json.dumps(check["output"]) and record.digest in json.dumps(check["output"])


def test_a_fork_pr_is_checked_without_a_token_and_published_on_workflow_run(engine, tmp_path):
    """Scenario 3: a fork's pull_request run has only the check job (publish is for same-repository PRs); the
    privileged mlflow-ci-comment.yml, on the workflow_run that run completes, downloads its artifact through
    GitHub's REST API and publishes to the PR and head commit of the event."""
    with FakeGitHub(TOKEN) as gh:
        models = Models(tmp_path / "models", engine, gh)
        head = models.branch("fork-change", retune(0.5))
        proc = models.pull_request("fork-change", 12, fork="forker/models")
        fork_run = engine.run_id
        assert gh.comments == {} and gh.check_runs == [], "the fork's own run published"
        assert "mlflow-ci publish" not in proc.stdout.replace("mlflow-ci publish    ] 🚧  Skipping", ""), proc.stdout[-4000:]
        models.share_artifact(fork_run)
        gh.pulls.append({"number": 12, "state": "open", "head": {"sha": head, "ref": "fork-change", "label": "forker:fork-change",
                                                                 "repo": {"full_name": "forker/models"}},
                         "base": {"ref": "main", "repo": {"full_name": REPO}}})
        payload = json.loads((EVENTS / "workflow_run.completed.json").read_text())
        payload["repository"]["full_name"] = REPO
        payload["workflow_run"].update(id=fork_run, event="pull_request", head_sha=head, head_branch="fork-change",
                                       name="mlflow-ci", pull_requests=[])  # GitHub lists no PR for a fork's run
        payload["workflow_run"]["head_repository"]["full_name"] = "forker/models"
        git(models.root, "checkout", "-q", "main")  # workflow_run runs the default branch's workflow
        published = models.act("workflow_run", payload, "mlflow-ci-comment.yml")
        assert published.returncode == 0, published.stdout[-8000:]
        assert 12 in gh.comments, "nothing was published to PR #12"
        [comment] = gh.comments[12]
        assert "mlflow-ci · iris" in comment["body"]
        [check] = gh.check_runs
        # a fork's own verdict is informative; the required name comes from a maintainer's reviewed dispatch
        assert (check["name"], check["head_sha"], check["conclusion"]) == ("mlflow-ci / iris (fork, unverified)", head, "success")
        assert "external_id" not in check  # a fork's model is never recorded: promote cannot take it from this check
        assert f"GET /repos/{REPO}/actions/runs/{fork_run}/artifacts" in gh.requests()


def test_a_merge_promotes_the_published_model_and_the_next_pr_compares_with_it(engine, tmp_path):
    """Scenario 4: mlflow-ci-deploy.yml on push to main restores the store from act's cache server, gates the
    merged commit, promotes exactly the model the PR's publish job recorded, runs the deploy hook and saves
    the store; a second PR restores that store and is compared with the new champion."""
    from mlflow_ci.provenance import Record

    with FakeGitHub(TOKEN) as gh:
        models = Models(tmp_path / "models", engine, gh)
        first = models.push_main()
        assert first.returncode == 0, first.stdout[-8000:]
        assert "iris version 1 @champion: promoted" in first.stdout, first.stdout[-6000:]
        assert models.deployed.read_text().startswith("iris v1 models:/")

        head = models.branch("feature", retune(0.5))
        pr = models.pull_request("feature", 7)
        pr_run = engine.run_id
        assert pr.returncode == 0, pr.stdout[-8000:]
        assert "restored the store of main@" in pr.stdout, pr.stdout[-6000:]
        [check] = gh.check_runs
        record = Record.parse(check["external_id"])
        models.share_artifact(pr_run)
        models.describe_run(pr_run, head, 7)

        models.merge("feature", 7)
        deploy = models.push_main()
        assert deploy.returncode == 0, deploy.stdout[-8000:]
        assert "iris version 2 @champion: promoted" in deploy.stdout and "model imported from the PR's artifact" in deploy.stdout
        assert f"GET /repos/{REPO}/commits/{head}/check-runs?per_page=100" in gh.requests()
        assert models.deployed.read_text().splitlines()[-1].startswith("iris v2 models:/")

        second = models.branch("second", retune(2.0))
        again = models.pull_request("second", 8)
        assert again.returncode == 0, again.stdout[-8000:]
        result = json.loads((engine.uploaded(engine.run_id, "mlflow-ci-result", tmp_path / "second") / "result.json").read_text())
    assert result["head_sha"] == second
    # compared with the champion the deploy job registered from the PR's artifact, found in the restored store
    champion = re.search(r"iris version 2 @champion: promoted \(run ([0-9a-f]{32})", deploy.stdout)[1]
    assert (result["baseline"]["source"], result["baseline"]["run_id"]) == ("alias:champion", champion), result["baseline"]
    assert result["baseline"]["origin"].startswith("the restored store of main@"), result["baseline"]
    assert f"as recorded by the check run on {head[:12]}" in deploy.stdout and record.artifact == f"{pr_run}/mlflow-ci-result"


def test_a_monorepo_pr_checks_each_changed_model_and_comments_once(engine, tmp_path):
    """Scenario 5: ``all-projects: true`` — the projects job lists the changed models (reading the PR as data),
    the check job runs once per changed model in a matrix, and the publish job posts a check run per model
    (the unchanged ones pass) and one comment."""
    with FakeGitHub(TOKEN) as gh:
        models = Models(tmp_path / "mono", engine, gh, example=ROOT / "examples" / "monorepo", inputs={"all-projects": "true"})
        head = models.branch("pr/fraud", fraud_regresses)
        proc = models.pull_request("pr/fraud", 9)
        run_id = engine.run_id
        assert "Job 'mlflow-ci check' failed" in proc.stdout, proc.stdout[-8000:]  # fraud fails its gate
        assert monorepo_outcome(gh, 9, head) == MONOREPO_PR  # as the harness (tests/test_workflow_jobs.py)
        uploaded = engine.uploaded(run_id, f"mlflow-ci-result-{scope('models/fraud')}", tmp_path / "fraud")
        assert json.loads((uploaded / "result.json").read_text())["verdict"] == "fail"
        held = sorted(p.parent.name for p in (engine.artifacts / str(run_id)).glob("*/*.zip"))
        assert held == ["mlflow-ci-projects", f"mlflow-ci-result-{scope('models/fraud')}"]  # the matrix ran for the changed model only
        changed = engine.uploaded(run_id, "mlflow-ci-projects", tmp_path / "projects") / "changed.json"
        assert json.loads(changed.read_text()) == ["models/fraud"]


def test_a_template_passing_what_the_workflow_does_not_declare_is_refused_as_github_would(tmp_path):
    """act runs a call with an undeclared input or secret; GitHub refuses it, so the scenarios refuse it first."""
    called = ("mlflow-ci-pr.yml", (ROOT / ".github" / "workflows" / "mlflow-ci-pr.yml").read_text())
    template = (ROOT / "workflow-templates" / "mlflow-ci-pr.yml").read_text()
    template = re.sub(r"@[0-9a-f]{40}", "@" + "1" * 40, template)  # the pinned commit's declarations are another test's
    assert refused_call(template, *called) == []
    broken = template.replace("    with:\n", "    with:\n      environment: production\n", 1)
    broken = broken.replace("    secrets:\n", "    secrets:\n      judge-key: ${{ secrets.JUDGE }}\n", 1)
    assert refused_call(broken, *called) == [
        "job check passes input 'environment', which mlflow-ci-pr.yml does not declare",
        "job check passes secret 'judge-key', which mlflow-ci-pr.yml does not declare"]

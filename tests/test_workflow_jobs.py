"""The reusable workflows' jobs, run step by step by the harness, with no tracking server: mlflow-ci is
installed from the commit the workflow was called at, and the store lives in the (emulated) Actions
cache across runs: push → promote → save; PR → restore → diff; eviction → base trained in the job;
a PR's save invisible to main; a corrupt store → warning and fallback."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from actions_harness import ActionsCache, run_job
from conftest import MODEL_SCRIPT, ROOT, git, runner_env
from fakegithub import EVENTS, TOKEN, FakeGitHub, zip_artifact
from scenarios import IRIS_CONFIG, MONOREPO_PR, fraud_regresses, monorepo_outcome

from mlflow_ci.commands.projects import scope

PR_WORKFLOW = ROOT / ".github" / "workflows" / "mlflow-ci-pr.yml"
DEPLOY_WORKFLOW = ROOT / ".github" / "workflows" / "mlflow-ci-deploy.yml"
REPOSITORY = "octo/models"
CONFIG = IRIS_CONFIG

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def called(tmp_path_factory) -> tuple[Path, str]:
    """A local repository standing for mlflow-ci/mlflow-ci, holding this working tree at one commit."""
    repo = tmp_path_factory.mktemp("mlflow-ci-repo") / "mlflow-ci"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("mlflow_ci", "actions"):
        shutil.copytree(ROOT / name, repo / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "hatch_build.py"):  # the build hook: a root file, as in a checkout
        shutil.copy2(ROOT / name, repo / name)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "mlflow-ci at the called commit")
    return repo, git(repo, "rev-parse", "HEAD")


@pytest.fixture
def models(tmp_path) -> Path:
    """The model repository (the caller's), with main at a first model."""
    repo = tmp_path / "models"
    repo.mkdir()
    (repo / "train.py").write_text(MODEL_SCRIPT)
    (repo / "params.json").write_text(json.dumps({"C": 1.0}))
    (repo / "mlflow-ci.yml").write_text(CONFIG)
    (repo / ".gitignore").write_text(".mlflow-ci/\nmlflow.db\nmlartifacts/\nmlflow-ci-store.json\nmlruns/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first model")
    return repo


def workspace(models: Path, tmp_path: Path, ref: str) -> Path:
    """A fresh runner's workspace: actions/checkout of the caller's repository with full history."""
    ws = tmp_path / f"ws-{len(list(tmp_path.glob('ws-*')))}"
    subprocess.run(["git", "clone", "-q", str(models), str(ws)], check=True, capture_output=True)
    git(ws, "checkout", "-q", ref)
    return ws


class Actions:
    """One repository's workflow runs on one (emulated) GitHub."""

    def __init__(self, models: Path, tmp_path: Path, called, venv: Path, cache: ActionsCache) -> None:
        self.models, self.tmp_path, self.venv, self.cache = models, tmp_path, venv, cache
        self.called_repo, self.called_sha = called
        self.run_id = 100

    def run(self, workflow: Path, job: str, *, ref: str, github: dict, env: dict | None = None, same_run: bool = False, **kwargs):
        """One job on a fresh runner; ``same_run`` keeps the workflow run (its id and artifacts)."""
        if not same_run:
            self.run_id += 1
            self.artifacts = self.tmp_path / f"artifacts-{self.run_id}"
        ws = workspace(self.models, self.tmp_path, ref)
        sha = git(ws, "rev-parse", "HEAD")
        context = {"repository": REPOSITORY, "sha": sha, "run_id": str(self.run_id), "token": "", **github}
        job_context = kwargs.pop("job_context", {"workflow_repository": "mlflow-ci/mlflow-ci", "workflow_sha": self.called_sha})
        result = run_job(workflow, job, workspace=ws, env=runner_env(self.venv, **(env or {})), github=context,
                         job_context=job_context, cache=self.cache, artifacts=self.artifacts,
                         repositories={"mlflow-ci/mlflow-ci": self.called_repo, REPOSITORY: self.models}, **kwargs)
        return result, ws

    def push_to_main(self):
        sha = git(self.models, "rev-parse", "main")
        return self.run(DEPLOY_WORKFLOW, "promote", ref="main", github={
            "event_name": "push", "ref": "refs/heads/main", "event": {"ref": "refs/heads/main", "after": sha}})

    def pr_context(self, branch: str, gh: FakeGitHub, number: int = 7) -> tuple[dict, dict]:
        """The github context and environment of a pull_request event for ``branch`` into main."""
        payload = copy.deepcopy(json.loads((EVENTS / "pull_request.opened.json").read_text()))
        pr = payload["pull_request"]
        pr["number"] = payload["number"] = number
        pr["head"].update(ref=branch, sha=git(self.models, "rev-parse", branch))
        pr["head"]["repo"]["full_name"] = pr["base"]["repo"]["full_name"] = REPOSITORY
        pr["base"].update(ref="main", sha=git(self.models, "rev-parse", "main"))
        payload["repository"]["full_name"] = REPOSITORY
        github = {"event_name": "pull_request", "ref": f"refs/pull/{number}/merge", "base_ref": "main", "head_ref": branch,
                  "event": payload, "token": TOKEN}
        return github, {"GITHUB_API_URL": gh.url, "GITHUB_SERVER_URL": "https://github.test"}

    def pull_request(self, branch: str, gh: FakeGitHub, number: int = 7):
        github, env = self.pr_context(branch, gh, number)
        check, ws = self.run(PR_WORKFLOW, "check", ref=branch, matrix={"candidate": "", "project": "."}, github=github, env=env)
        publish, _ = self.run(PR_WORKFLOW, "publish", ref=branch, github=github, env=env, same_run=True)
        return check, publish, ws


def branch(models: Path, name: str, C: float) -> None:
    git(models, "checkout", "-q", "-B", name, "main")
    (models / "params.json").write_text(json.dumps({"C": C}))
    git(models, "commit", "-q", "-am", f"C={C}")
    git(models, "checkout", "-q", "main")


def result_of(ws: Path) -> dict:
    return json.loads((ws / ".mlflow-ci" / "result.json").read_text())


def test_the_store_lives_in_the_cache_across_runs(models, tmp_path, called, runner_python):
    cache = ActionsCache(tmp_path / "cache")
    actions = Actions(models, tmp_path, called, runner_python, cache)

    # push to main: mlflow-ci is installed from the called commit; the merged commit is gated and promoted; the store is saved
    deploy, _ = actions.push_to_main()
    assert deploy.outcome == "success", deploy.log
    assert deploy.step("source").outputs == {"repository": "mlflow-ci/mlflow-ci", "ref": actions.called_sha}
    assert "installed mlflow-ci, version " in deploy.log
    assert "iris version 1 @champion: promoted" in deploy.step("promote").stdout
    prefix = f"mlflow-ci-store-{hashlib.sha256(b'.' + bytes(1) + b'main').hexdigest()[:16]}"  # folder . on main
    assert [(e.scope, e.key.rsplit("-", 2)[0]) for e in cache.entries] == [("refs/heads/main", prefix)]

    # a PR restores main's store and is compared with the champion in it
    branch(models, "feature", C=0.5)
    with FakeGitHub(TOKEN) as gh:
        pr, publish, ws = actions.pull_request("feature", gh)
        assert pr.outcome == "success", pr.log
        assert publish.outcome == "success", publish.log
        # the untrusted half ran the PR's code without a token; the trusted half published for the event's PR
        assert "GITHUB_TOKEN" not in {k for s in pr.steps for k in (s.outputs or {})} and TOKEN not in pr.log
        assert [c["name"] for c in gh.check_runs] == ["mlflow-ci / iris"]
        assert gh.check_runs[0]["head_sha"] == git(models, "rev-parse", "feature")
        assert "mlflow-ci · iris" in gh.comments[7][0]["body"]
    result = result_of(ws)
    assert result["baseline"]["source"] == "alias:champion"
    assert result["baseline"]["origin"].startswith("the restored store of main@")
    assert "restored the store of main@" in pr.log
    assert len(cache.entries) == 1  # the pull request saved nothing

    # the cache is evicted (7 days unused): the next PR trains its base commit in the job
    cache.evict()
    branch(models, "other", C=2.0)
    with FakeGitHub(TOKEN) as gh:
        pr, publish, ws = actions.pull_request("other", gh, number=8)
        assert pr.outcome == "success" and publish.outcome == "success", pr.log + publish.log
        assert result_of(ws)["baseline"]["source"] == f"base_trained:{git(models, 'rev-parse', 'main')}"
        assert "base commit" in gh.comments[8][0]["body"] and "trained in this job" in gh.comments[8][0]["body"]


def test_a_corrupt_store_warns_and_falls_back(models, tmp_path, called, runner_python):
    cache = ActionsCache(tmp_path / "cache")
    actions = Actions(models, tmp_path, called, runner_python, cache)
    deploy, _ = actions.push_to_main()
    assert deploy.outcome == "success", deploy.log
    database = next(cache.entries[0].folder.rglob("mlflow.db"))
    database.write_bytes(database.read_bytes()[:4096])
    branch(models, "feature", C=0.5)
    with FakeGitHub(TOKEN) as gh:
        pr, _, ws = actions.pull_request("feature", gh)
    assert pr.outcome == "success", pr.log
    restore = next(s for s in pr.steps if s.name == "Put the store in place")
    assert "::warning title=mlflow-ci store::the restored store was not used: " in restore.stdout, restore.stdout + restore.stderr
    assert result_of(ws)["baseline"]["source"].startswith("base_trained:")


def test_a_pull_requests_cache_is_invisible_to_main(tmp_path):
    cache = ActionsCache(tmp_path)
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "mlflow.db").write_text("poison")
    ws = tmp_path
    assert cache.save("refs/pull/7/merge", ["store"], "mlflow-ci-store-.-main-999", ws)
    assert cache.find("refs/heads/main", None, ["store"], "mlflow-ci-store-.-main-1000", ["mlflow-ci-store-.-main-"]) is None
    assert cache.find("refs/pull/7/merge", "main", ["store"], "x", ["mlflow-ci-store-.-main-"]) is not None  # its own
    assert cache.find("refs/pull/8/merge", "main", ["store"], "x", ["mlflow-ci-store-.-main-"]) is None  # another PR
    assert cache.save("refs/heads/main", ["store"], "k", ws) and not cache.save("refs/heads/main", ["store"], "k", ws)
    assert cache.find("refs/pull/8/merge", "main", ["store"], "k", []) is not None  # a PR reads its base's
    assert cache.find("refs/heads/main", None, ["store", "other"], "k", []) is None  # other paths: other version
    # the version is the path as written: the same folder named absolutely (a runner.temp path) is another entry
    assert cache.find("refs/pull/8/merge", "main", [str(folder)], "k", []) is None


def test_without_the_job_context_and_inputs_the_workflow_says_what_to_set(models, tmp_path, called, runner_python):
    actions = Actions(models, tmp_path, called, runner_python, ActionsCache(tmp_path / "cache"))
    deploy, _ = actions.run(DEPLOY_WORKFLOW, "promote", ref="main", job_context={"workflow_repository": "", "workflow_sha": ""},
                            github={"event_name": "push", "ref": "refs/heads/main"})
    assert deploy.outcome == "failure"
    assert "::error title=mlflow-ci::cannot tell which mlflow-ci this workflow was called at" in deploy.step("source").stdout
    assert all(s.outcome == "skipped" for s in deploy.steps[deploy.steps.index(deploy.step("source")) + 1:])
    enterprise, _ = actions.run(DEPLOY_WORKFLOW, "promote", ref="main", job_context={"workflow_repository": "", "workflow_sha": ""},
                                inputs={"mlflow-ci-repository": "mlflow-ci/mlflow-ci", "mlflow-ci-ref": actions.called_sha},
                                github={"event_name": "push", "ref": "refs/heads/main"})
    assert enterprise.outcome == "success", enterprise.log


def test_the_installed_mlflow_ci_is_the_called_commit_not_an_index_package(models, tmp_path, called, runner_python):
    actions = Actions(models, tmp_path, called, runner_python, ActionsCache(tmp_path / "cache"))
    repo = called[0]
    git(repo, "checkout", "-q", "-b", f"other-{tmp_path.name}")
    init = repo / "mlflow_ci" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "0.0.0+called-'))
    git(repo, "commit", "-q", "-am", "another version at another commit")
    other = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    deploy, _ = actions.run(DEPLOY_WORKFLOW, "promote", ref="main", job_context={"workflow_repository": "mlflow-ci/mlflow-ci", "workflow_sha": other},
                            github={"event_name": "push", "ref": "refs/heads/main"})
    assert "installed mlflow-ci, version 0.0.0+called-" in deploy.log, deploy.log


COMMENT_WORKFLOW = ROOT / ".github" / "workflows" / "mlflow-ci-comment.yml"


def test_a_maintainer_turns_a_reviewed_fork_verdict_into_the_required_check(models, tmp_path, called, runner_python):
    """The fork's own run computes the verdict with no token; a dispatch of the comment workflow, with the
    PR number and the reviewed commit, publishes it under the required name, with its provenance."""
    from mlflow_ci.provenance import Record

    (models / ".github" / "workflows").mkdir(parents=True)
    shutil.copy2(ROOT / "workflow-templates" / "mlflow-ci-pr.yml", models / ".github" / "workflows" / "mlflow-ci.yml")
    git(models, "add", "-A")
    git(models, "commit", "-q", "-m", "the caller workflow")  # only a run of it is accepted
    actions = Actions(models, tmp_path, called, runner_python, ActionsCache(tmp_path / "cache"))
    branch(models, "fork-change", C=0.5)
    head = git(models, "rev-parse", "fork-change")
    payload = copy.deepcopy(json.loads((EVENTS / "pull_request.opened.json").read_text()))
    pr = payload["pull_request"]
    pr["number"] = payload["number"] = 12
    pr["head"].update(ref="fork-change", sha=head)
    pr["head"]["repo"]["full_name"] = "forker/models"
    pr["base"]["repo"]["full_name"] = payload["repository"]["full_name"] = REPOSITORY
    pr["base"].update(ref="main", sha=git(models, "rev-parse", "main"))
    with FakeGitHub(TOKEN) as gh:
        env = {"GITHUB_API_URL": gh.url, "GITHUB_SERVER_URL": "https://github.test"}
        check, _ = actions.run(PR_WORKFLOW, "check", ref="fork-change", matrix={"candidate": "", "project": "."}, env=env, github={
            "event_name": "pull_request", "ref": "refs/pull/12/merge", "base_ref": "main", "head_ref": "fork-change",
            "event": payload, "token": ""})
        assert check.outcome == "success", check.log
        fork_run = actions.run_id
        gh.add_artifact(fork_run, "mlflow-ci-result", zip_artifact(actions.artifacts / "mlflow-ci-result"))
        gh.workflow_runs.append({"id": fork_run, "head_sha": head, "event": "pull_request", "status": "completed",
                                 "conclusion": "success", "path": ".github/workflows/mlflow-ci.yml",
                                 "head_repository": {"full_name": "forker/models"}})
        gh.pulls.append({"number": 12, "state": "open", "head": {"sha": head, "repo": {"full_name": "forker/models"}},
                         "base": {"repo": {"full_name": REPOSITORY}}})

        dispatched, _ = actions.run(COMMENT_WORKFLOW, "reviewed", ref="main", env={**env, "GITHUB_ACTOR": "maintainer"},
                                    inputs={"pr": 12, "head-sha": head}, github={
                                        "event_name": "workflow_dispatch", "ref": "refs/heads/main", "token": TOKEN,
                                        "event": {"inputs": {"pr": "12", "head-sha": head}}})
        assert dispatched.outcome == "success", dispatched.log
        [published] = gh.check_runs
        assert published["name"] == "mlflow-ci / iris" and published["head_sha"] == head
        assert Record.parse(published["external_id"]).artifact == f"{fork_run}/mlflow-ci-result"
        assert "accepted by maintainer" in gh.comments[12][0]["body"]


def test_a_monorepo_pr_checks_the_changed_models_in_a_matrix_and_publishes_once(tmp_path, called, runner_python):
    """all-projects: the projects job lists the changed models (reading the PR as data), the check job runs
    once per changed model, and the trusted publisher, from the base commit's configurations, posts a
    check run per model (unchanged ones pass) and one comment."""
    models = tmp_path / "mono"
    shutil.copytree(ROOT / "examples" / "monorepo", models)
    git(models, "init", "-q", "-b", "main")
    git(models, "add", "-A")
    git(models, "commit", "-q", "-m", "three models")
    git(models, "checkout", "-q", "-b", "pr/fraud")
    fraud_regresses(models)
    git(models, "commit", "-q", "-am", "fraud regresses")
    git(models, "checkout", "-q", "main")
    actions = Actions(models, tmp_path, called, runner_python, ActionsCache(tmp_path / "cache"))
    inputs = {"all-projects": True}
    with FakeGitHub(TOKEN) as gh:
        github, env = actions.pr_context("pr/fraud", gh, number=9)
        listed, _ = actions.run(PR_WORKFLOW, "projects", ref="pr/fraud", github=github, env=env, inputs=inputs)
        assert listed.outcome == "success", listed.log
        assert listed.job_outputs == {"changed": '["models/fraud"]', "any": "true"}
        for folder in json.loads(listed.job_outputs["changed"]):
            check, ws = actions.run(PR_WORKFLOW, "check", ref="pr/fraud", github=github, env=env, inputs=inputs, same_run=True,
                                    matrix={"candidate": "", "project": folder})
            assert check.outcome == "failure" and check.step("check").exit_code == 1, check.log  # fraud fails its gate
            assert json.loads((ws / folder / ".mlflow-ci" / "result.json").read_text())["verdict"] == "fail"
        assert (actions.artifacts / f"mlflow-ci-result-{scope('models/fraud')}" / "result.json").is_file()
        publish, _ = actions.run(PR_WORKFLOW, "publish", ref="pr/fraud", github=github, env=env, inputs=inputs, same_run=True,
                                 needs={"projects": {"outputs": listed.job_outputs, "result": "success"}})
        assert publish.outcome == "success", publish.log
        # the same outcome as under act (tests/test_act.py, scenario 5)
        assert monorepo_outcome(gh, 9, git(models, "rev-parse", "pr/fraud")) == MONOREPO_PR


GENAI_APP = """
import os
from pathlib import Path

def answer(topic, n):
    Path({seen!r}).write_text(repr(os.environ.get("MLFLOW_CI_JUDGE_API_KEY")))
    return {{"hours": "We are open 9 to 5.", "refund": "Refunds take 14 days."}}[topic]
"""
GENAI_TRAIN = """
import json, os
from pathlib import Path
Path({seen!r}).write_text(repr(os.environ.get("MLFLOW_CI_JUDGE_API_KEY")))
json.dump({{"ok": 1.0}}, open("metrics.json", "w"))
"""


def test_the_judge_key_secret_reaches_the_judge_and_never_the_prs_code(tmp_path, called, runner_python):
    from fakellm import FakeLLM

    repo = tmp_path / "bot"
    repo.mkdir()
    seen_by_app, seen_by_training = tmp_path / "seen-by-app.txt", tmp_path / "seen-by-training.txt"
    (repo / "faq_app.py").write_text(GENAI_APP.format(seen=str(seen_by_app)))
    (repo / "train.py").write_text(GENAI_TRAIN.format(seen=str(seen_by_training)))
    rows = [{"inputs": {"topic": t, "n": n}, "expectations": {"expected_facts": [f]}}
            for n, (t, f) in enumerate([("hours", "9 to 5"), ("refund", "14 days")] * 2)]
    (repo / "faq.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (repo / ".gitignore").write_text(".mlflow-ci/\nmlflow.db\nmlartifacts/\nmlruns/\nmetrics.json\n")
    with FakeLLM() as llm, FakeGitHub(TOKEN) as gh:
        (repo / "mlflow-ci.yml").write_text(
            "experiment: bot\ntrain:\n  command: python train.py\n  metrics_file: metrics.json\n"
            "genai:\n  data: faq.jsonl\n  predict_fn: faq_app:answer\n"
            "  scorers: [contains, {judge: {name: polite, instructions: 'Is it polite?'}}]\n"
            f"  judge: {{model: judge-1, base_url: '{llm.url}', max_calls: 8}}\n"
            "gate:\n  genai.contains: {min: 0.9}\n")
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "a FAQ bot")
        git(repo, "checkout", "-q", "-b", "polite")
        (repo / "faq_app.py").write_text((repo / "faq_app.py").read_text().replace('"We are', '"Hello! We are'))
        git(repo, "commit", "-q", "-am", "say hello")
        git(repo, "checkout", "-q", "main")
        actions = Actions(repo, tmp_path, called, runner_python, ActionsCache(tmp_path / "cache"))
        github, env = actions.pr_context("polite", gh)
        secrets = {"judge-api-key": "sk-secret-judge"}
        check, ws = actions.run(PR_WORKFLOW, "check", ref="polite", matrix={"candidate": "", "project": "."}, github=github,
                                env=env, secrets=secrets)
        assert check.outcome == "success", check.log
        assert llm.requests == []  # the check job holds no key: its apps answered, the judge's rules are pending
        assert result_of(ws)["genai"]["pending"] == ["genai.polite"]
        assert "sk-secret-judge" not in check.log
        publish, _ = actions.run(PR_WORKFLOW, "publish", ref="polite", github=github, env=env, secrets=secrets, same_run=True)
        assert publish.outcome == "success", publish.log
    assert len(llm.requests) == 8 and {r["auth"] for r in llm.requests} == {"Bearer sk-secret-judge"}  # 4 rows x 2 apps
    assert seen_by_app.read_text() == seen_by_training.read_text() == "None"  # the PR's code never had it
    assert "sk-secret-judge" not in publish.log
    run = gh.check_runs[-1]
    assert run["conclusion"] == "success" and "recomputed by the trusted job" in run["output"]["summary"]

"""Who wrote a provenance record: each way another workflow run could pass for mlflow-ci's publish job,
against the fake GitHub's description of workflow runs and PR files (GitHub's OpenAPI shapes)."""

from __future__ import annotations

import pytest
from chainkit import CALLER, CALLER_YAML, PINNED
from fakegithub import TOKEN, FakeGitHub

from mlflow_ci.commands.vouch import changed_workflows, vouch
from mlflow_ci.errors import NotValidatedError
from mlflow_ci.github.client import GitHubClient, RetryPolicy
from mlflow_ci.provenance import Record

HEAD = "c" * 40
TWO_JOB = Record("d" * 32, "sha256:" + "e" * 64, artifact="777/mlflow-ci-result")
SINGLE_JOB = Record("d" * 32, "sha256:" + "e" * 64, workflow="777")


@pytest.fixture
def gh():
    with FakeGitHub(TOKEN) as server:
        yield server


@pytest.fixture
def client(gh):
    return GitHubClient(token=TOKEN, repository="o/r", api_url=gh.url, policy=RetryPolicy(max_attempts=1))


@pytest.fixture
def checkout(tmp_path):
    """The default branch's checkout promote runs in: the reviewed caller pins mlflow-ci's PR workflow."""
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / CALLER).write_text(CALLER_YAML)
    (tmp_path / ".github" / "workflows" / "lint.yml").write_text("on: push\njobs: {}\n")
    return tmp_path


def test_the_publish_job_of_the_reviewed_caller_vouches(gh, client, checkout):
    gh.add_pr_run(777, HEAD, 7, path=CALLER, calls=PINNED)
    vouched = vouch(client, TWO_JOB, HEAD, 7, checkout)
    assert vouched.describe() == f"pull_request workflow run 777 of {CALLER} → {PINNED}"
    gh.add_pr_run(777, HEAD, None, path=CALLER, calls=PINNED)  # a fork's run lists no PR
    assert vouch(client, TWO_JOB, HEAD, 7, checkout).run_id == 777
    gh.add_pr_run(777, HEAD, 7, path=CALLER + "@refs/pull/7/merge", calls=PINNED)  # path as some runs spell it
    assert vouch(client, TWO_JOB, HEAD, 7, checkout).caller == CALLER
    gh.add_pr_run(777, HEAD, 7, path=CALLER)  # a single-job check (the root action) records its own run
    assert vouch(client, SINGLE_JOB, HEAD, 7, checkout).called is None


@pytest.mark.parametrize("run, record, says", [
    (dict(event="push", path=".github/workflows/evil.yml"), TWO_JOB, "ran on push, not on the PR's pull_request event"),
    (dict(event="workflow_dispatch"), TWO_JOB, "ran on workflow_dispatch"),
    (dict(head_sha="f" * 40), TWO_JOB, "ran at ffffffffffff, not at the PR head cccccccccccc"),
    (dict(pr=8), TWO_JOB, "is a run of PR #8, not of PR #7"),
    (dict(path=".github/workflows/evil.yml"), TWO_JOB, "which this checkout of the default branch does not hold"),
    (dict(path="../../etc/passwd"), TWO_JOB, "not a workflow file of this repository"),
    (dict(path=".github/workflows/lint.yml"), TWO_JOB, "did not call mlflow-ci's PR workflow as .github/workflows/lint.yml pins it (it pins none)"),
    (dict(calls=PINNED.replace("a" * 40, "b" * 40)), TWO_JOB, "did not call mlflow-ci's PR workflow as"),
    (dict(calls="evil/fork/.github/workflows/mlflow-ci-pr.yml@" + "a" * 40), TWO_JOB, "did not call mlflow-ci's PR workflow"),
    (dict(status="in_progress"), TWO_JOB, "has not completed"),
    (dict(conclusion="failure"), SINGLE_JOB, "concluded failure, and a single-job check fails its run when the gate fails"),
])
def test_any_other_run_is_refused_saying_why(gh, client, checkout, run, record, says):
    fields = dict(path=CALLER, calls=PINNED, pr=7) | run
    gh.add_pr_run(777, fields.pop("head_sha", HEAD), fields.pop("pr"), **fields)
    with pytest.raises(NotValidatedError) as refused:
        vouch(client, record, HEAD, 7, checkout)
    assert says in refused.value.message and "refusing to promote" in refused.value.message


def test_a_record_without_a_run_or_a_run_github_does_not_know_is_refused(gh, client, checkout):
    with pytest.raises(NotValidatedError, match="names no workflow run"):
        vouch(client, Record("d" * 32, "sha256:" + "e" * 64), HEAD, 7, checkout)
    with pytest.raises(NotValidatedError, match=r"workflow run 777, named by the check run's record, cannot be read \(.*404"):
        vouch(client, TWO_JOB, HEAD, 7, checkout)


def test_workflow_and_local_action_changes_are_listed_across_pages(gh, client):
    gh.pull_files[7] = [{"filename": f"src/f{i}.py"} for i in range(150)] + [
        {"filename": ".github/workflows/mlflow-ci.yml"},
        {"filename": "docs/x.md", "previous_filename": ".github/actions/setup/action.yml", "status": "renamed"},
        {"filename": ".github/CODEOWNERS"}]
    assert changed_workflows(client, 7) == [".github/actions/setup/action.yml", ".github/workflows/mlflow-ci.yml"]
    gh.pull_files[8] = [{"filename": "model/train.py"}]
    assert changed_workflows(client, 8) == []
    gh.pull_files[9] = [{"filename": f"f{i}"} for i in range(3000)]  # GitHub lists no more than 3,000
    with pytest.raises(NotValidatedError, match="3,000 files or more"):
        changed_workflows(client, 9)
    gh.forbidden.add("pull_files")
    with pytest.raises(NotValidatedError, match="cannot list the files of PR #8.*refusing to promote"):
        changed_workflows(client, 8)

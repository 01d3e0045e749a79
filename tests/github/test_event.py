"""Event context from the real webhook payloads in shared/fixtures and variants derived from them."""

from __future__ import annotations

import copy
import json

import pytest
from fakegithub import EVENTS

from mlflow_ci.errors import UsageError
from mlflow_ci.github.event import from_env, parse


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


ENV = {"GITHUB_REPOSITORY": "Codertocat/Hello-World", "GITHUB_RUN_ID": "77", "GITHUB_SHA": "f" * 40,
       "GITHUB_API_URL": "https://ghe.example.com/api/v3/", "GITHUB_SERVER_URL": "https://ghe.example.com"}


@pytest.mark.parametrize("name", ["pull_request.opened.json", "pull_request.synchronize.json", "pull_request.reopened.json",
                                  "pull_request.opened.with-null-body.json"])
def test_pull_request_payloads(name):
    ev = parse("pull_request", load(name), ENV)
    assert ev.pr_number == 2
    assert ev.head_sha == "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    assert ev.base_sha == "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
    assert (ev.head_ref, ev.base_ref) == ("changes", "master")
    assert ev.is_fork is False
    assert ev.api_url == "https://ghe.example.com/api/v3"
    assert ev.run_url == "https://ghe.example.com/Codertocat/Hello-World/actions/runs/77"
    assert ev.sha == "f" * 40  # the merge commit stays GITHUB_SHA


def test_fork_and_deleted_fork_variants():
    payload = load("pull_request.opened.json")
    fork = copy.deepcopy(payload)
    fork["pull_request"]["head"]["repo"]["full_name"] = "forker/Hello-World"
    assert parse("pull_request_target", fork, ENV).is_fork is True
    deleted = copy.deepcopy(payload)
    deleted["pull_request"]["head"]["repo"] = None
    assert parse("pull_request", deleted, ENV).is_fork is True  # unknown head: never trusted


def test_closed_and_merged():
    closed = parse("pull_request", load("pull_request.closed.json"), ENV)
    assert closed.action == "closed" and closed.merged is False
    merged = load("pull_request.closed.json")
    merged["pull_request"]["merged"] = True
    assert parse("pull_request", merged, ENV).merged is True


@pytest.mark.parametrize("name", ["push.json", "push.with-new-branch.json"])
def test_push(name):
    payload = load(name)
    ev = parse("push", payload, ENV)
    assert ev.pr_number is None
    # a push that deleted its ref has no commit (GitHub sends the all-zero SHA as "after")
    assert ev.head_sha == (None if payload["deleted"] else payload["after"]) and ev.deleted == payload["deleted"]
    ref = payload["ref"]
    # a tag push has no branch
    assert ev.head_ref == (ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None)


def test_workflow_run_with_and_without_pull_requests():
    ev = parse("workflow_run", load("workflow_run.completed.with-pull-requests.json"), {})
    assert ev.pr_number == 2 and ev.head_sha == "3484a3fb816e0859fd6e1cea078d76385ff50625"
    assert ev.base_ref == "master" and ev.workflow_run_conclusion == "success"
    assert ev.repository == "octo-org/octo-repo" and ev.is_fork is False
    bare = parse("workflow_run", load("workflow_run.completed.json"), {})
    assert bare.pr_number is None and bare.workflow_run_id == 289782451


def test_workflow_dispatch_uses_the_checked_out_commit():
    ev = parse("workflow_dispatch", {"inputs": {}}, {**ENV, "GITHUB_REF_NAME": "main"})
    assert (ev.head_sha, ev.head_ref, ev.pr_number) == ("f" * 40, "main", None)


def test_hostile_types_never_crash():
    weird = {"pull_request": {"number": "2", "head": {"sha": 5, "ref": ["x"], "repo": "str"}, "base": None}}
    ev = parse("pull_request", weird, {})
    assert (ev.pr_number, ev.head_sha, ev.head_ref, ev.base_ref) == (None, None, None, None)
    assert ev.is_fork is True


def test_from_env(tmp_path):
    assert from_env({}).in_actions is False
    path = tmp_path / "event.json"
    path.write_text(json.dumps(load("pull_request.opened.json")))
    ev = from_env({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(path)})
    assert ev.pr_number == 2 and ev.repository == "Codertocat/Hello-World"
    path.write_text("[1]")
    with pytest.raises(UsageError, match="expected a JSON object"):
        from_env({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(path)})


def test_a_push_that_deletes_its_ref_has_no_commit():
    payload = json.loads((EVENTS / "push.json").read_text())
    payload.update(deleted=True, after="0" * 40)
    ev = parse("push", payload, {})
    assert ev.deleted and ev.head_sha is None


def test_merge_group_reads_its_base_from_the_payload():
    payload = {"merge_group": {"head_sha": "a" * 40, "head_ref": "refs/heads/gh-readonly-queue/main/pr-7-abc",
                               "base_sha": "b" * 40, "base_ref": "refs/heads/main"}}
    ev = parse("merge_group", payload, {"GITHUB_SHA": "a" * 40})
    assert (ev.head_sha, ev.base_sha, ev.base_ref) == ("a" * 40, "b" * 40, "main")
    assert ev.head_ref == "gh-readonly-queue/main/pr-7-abc"

"""The fake GitHub keeps to GitHub's OpenAPI description (tests/fixtures/github-openapi), both ways."""

from __future__ import annotations

import pytest
import requests
from fakegithub import TOKEN, FakeGitHub

HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/vnd.github+json"}
SHA = "a" * 40


def test_answers_are_complete_github_objects():
    with FakeGitHub(TOKEN) as gh:
        comment = requests.post(f"{gh.url}/repos/o/r/issues/1/comments", json={"body": "hi"}, headers=HEADERS, timeout=5).json()
        assert comment["user"]["login"] == "github-actions[bot]" and comment["user"]["type"] == "Bot"
        assert {"node_id", "created_at", "author_association", "url"} <= set(comment)
        run = requests.post(f"{gh.url}/repos/o/r/check-runs", headers=HEADERS, timeout=5, json={
            "name": "n", "head_sha": SHA, "status": "completed", "conclusion": "success", "external_id": "x",
            "output": {"title": "t", "summary": "s", "annotations": [
                {"path": "a", "start_line": 1, "end_line": 1, "annotation_level": "warning", "message": "m"}]}}).json()
        assert run["app"]["slug"] == "github-actions" and run["external_id"] == "x" and run["output"]["annotations_count"] == 1
        assert "check_suite" in run and run["url"] == f"{gh.url}/repos/o/r/check-runs/{run['id']}"
        status = requests.post(f"{gh.url}/repos/o/r/statuses/{SHA}", json={"state": "success", "context": "c"},
                               headers=HEADERS, timeout=5).json()
        assert status["url"] == f"{gh.url}/repos/o/r/statuses/{SHA}" and status["creator"]["login"] == "github-actions[bot]"
        missing = requests.get(f"{gh.url}/repos/o/r/pulls/404", headers=HEADERS, timeout=5)
        assert missing.status_code == 404 and missing.json()["documentation_url"].startswith("https://docs.github.com/")


@pytest.mark.parametrize(("method", "path", "body", "problem"), [
    ("post", "/repos/o/r/check-runs", {"name": "n", "head_sha": SHA, "output": {"title": "t", "summary": "x" * 65_536}},
     "output/summary"),
    ("post", "/repos/o/r/check-runs", {"name": "n", "head_sha": SHA, "output": {"title": "t", "summary": "s", "annotations": [
        {"path": "a", "start_line": 1, "end_line": 1, "annotation_level": "warning", "message": "m"}] * 51}}, "output/annotations"),
    ("post", "/repos/o/r/check-runs", {"name": "n", "head_sha": SHA, "conclusion": "great"}, "conclusion"),
    ("post", "/repos/o/r/statuses/" + SHA, {"state": "fine"}, "state"),
])
def test_a_request_github_would_refuse_is_refused_and_fails_the_test(method, path, body, problem):
    with pytest.raises(AssertionError, match=f"request {method.upper()} .*{problem}"):
        with FakeGitHub(TOKEN) as gh:
            answer = requests.request(method, f"{gh.url}{path}", json=body, headers=HEADERS, timeout=5)
            assert answer.status_code == 422 and answer.json()["message"] == "Validation Failed"


def test_an_undocumented_operation_fails_the_test():
    with pytest.raises(AssertionError, match="not an operation GitHub documents"):
        with FakeGitHub(TOKEN) as gh:
            assert requests.get(f"{gh.url}/repos/o/r/nonsense", headers=HEADERS, timeout=5).status_code == 404

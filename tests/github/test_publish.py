"""Publishing against the fake GitHub server: exact request sequences under every fault."""

from __future__ import annotations

import io
import json
import re
import threading

import pytest
from fakegithub import EVENTS, TOKEN, FakeClock, FakeGitHub, Fault

from mlflow_ci.errors import UsageError
from mlflow_ci.github.actions import ActionsIO
from mlflow_ci.github.client import GitHubClient, GitHubError, RetryPolicy
from mlflow_ci.github.event import parse
from mlflow_ci.github.publish import Publisher, Target, fit_comment, fork_target
from mlflow_ci.report import sticky_marker
from mlflow_ci.result import load_untrusted as load_artifact
from mlflow_ci.result import validate_untrusted as sanitize_result

SHA = "a" * 40
REPO = "/repos/octo/models"


def result(verdict="fail", n_failed=1, experiment="churn", **extra) -> dict:
    checks = [
        {"metric": "accuracy", "rule": "min", "limit": 0.8, "value": 0.85, "baseline": None, "bound": 0.8,
         "passed": True, "blocking": True, "direction": "higher", "message": "0.85 ≥ min 0.8", "line": 8}
    ]
    for i in range(n_failed):
        checks.append({"metric": f"m{i}", "rule": "max_drop", "limit": 0.01, "value": 0.5, "baseline": 0.6,
                       "bound": 0.59, "passed": False, "blocking": verdict == "fail", "direction": "higher",
                       "message": "regressed by 0.1 vs baseline 0.6 (allowed 0.01)", "line": 9 + i})
    return {
        "schema": 1, "verdict": verdict, "experiment": experiment, "model": experiment, "pr": 7,
        "candidate": {"run_id": "c" * 32, "commit": SHA, "metrics": {"accuracy": 0.85}, "params": {}, "cached": False},
        "baseline": None, "checks": checks, "metrics": [], "params_diff": [], "notes": [],
        "config_path": "mlflow-ci.yml", "head_sha": SHA, "tool": {"name": "mlflow-ci", "version": "0.1.0"}, **extra,
    }


def markdown(r: dict, size: int = 0) -> str:
    return f"{sticky_marker(r['experiment'])}\n## report {r['verdict']}\n" + ("x" * 99 + "\n") * (size // 100)


@pytest.fixture
def gh():
    with FakeGitHub(TOKEN) as server:
        yield server


def publisher(gh, tmp_path, *, mode="always", clock=None, stream=None, token=TOKEN, **policy):
    clock = clock or FakeClock()
    env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(tmp_path / "out.txt"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    stream = stream or io.StringIO()
    client = GitHubClient(token=token, repository="octo/models", api_url=gh.url, clock=clock.time,
                          sleep=clock.sleep, rng=lambda: 0.5, policy=RetryPolicy(**policy))
    return Publisher(client, ActionsIO(env, stream), lambda m: stream.write(m + "\n"), mode), stream


TARGET = Target("octo/models", 7, SHA, "https://github.test/octo/models/actions/runs/1")


def outputs(tmp_path) -> dict:
    text = (tmp_path / "out.txt").read_text()
    out, lines = {}, iter(text.splitlines())
    for line in lines:
        name, delim = line.split("<<")
        value = next(lines)
        assert next(lines) == delim
        out[name] = value
    return out


def test_first_run_creates_comment_and_check_run(gh, tmp_path):
    r = result()
    pub, stream = publisher(gh, tmp_path)
    out = pub.publish(TARGET, r, markdown(r), report_path=".mlflow-ci/report.md")
    assert gh.requests() == [
        f"POST {REPO}/check-runs",
        f"GET {REPO}/issues/7/comments?per_page=100",
        f"POST {REPO}/issues/7/comments",
        f"GET {REPO}/issues/7/comments?per_page=100",  # converge: no duplicate from a race or retry
    ]
    assert out.comment_action == "created" and out.check_kind == "check_run"
    run = gh.check_runs[0]
    assert (run["name"], run["head_sha"], run["conclusion"]) == ("mlflow-ci / churn", SHA, "failure")
    assert run["details_url"] == TARGET.run_url
    assert run["output"]["title"] == "FAIL: 1/2 rules passed (failed: m0)"
    assert run["annotations"] == [{"path": "mlflow-ci.yml", "start_line": 9, "end_line": 9, "annotation_level": "failure",
                                   "title": "m0 max_drop", "message": "regressed by 0.1 vs baseline 0.6 (allowed 0.01)"}]
    assert outputs(tmp_path) == {"verdict": "fail", "run-id": "c" * 32, "report-path": ".mlflow-ci/report.md",
                                 "comment-url": out.comment_url}
    log = stream.getvalue()
    assert "::error file=mlflow-ci.yml,line=9,title=mlflow-ci gate%3A m0::m0 max_drop: regressed by 0.1" in log
    assert "## report fail" in (tmp_path / "summary.md").read_text()


def test_second_run_updates_in_place(gh, tmp_path):
    r = result()
    publisher(gh, tmp_path)[0].publish(TARGET, r, markdown(r), report_path="r.md")
    gh.log.clear()
    r2 = result(verdict="pass", n_failed=0)
    out = publisher(gh, tmp_path)[0].publish(TARGET, r2, markdown(r2), report_path="r.md")
    assert gh.requests() == [
        f"POST {REPO}/check-runs",
        f"GET {REPO}/issues/7/comments?per_page=100",
        f"PATCH {REPO}/issues/comments/{gh.comments[7][0]['id']}",
    ]
    assert out.comment_action == "updated"
    assert len(gh.comments[7]) == 1 and "report pass" in gh.comments[7][0]["body"]
    assert gh.check_runs[-1]["conclusion"] == "success"


def test_marker_is_found_among_250_comments(gh, tmp_path):
    r = result()
    gh.add_comments(7, [f"chatter {i}" for i in range(180)])
    ours = gh.add_comments(7, [markdown(r) + "old"], user="github-actions[bot]")[0]
    gh.add_comments(7, [f"chatter {i}" for i in range(69)])
    out = publisher(gh, tmp_path)[0].publish(TARGET, r, markdown(r), report_path="r.md")
    assert gh.requests() == [
        f"POST {REPO}/check-runs",
        f"GET {REPO}/issues/7/comments?per_page=100",
        f"GET {REPO}/issues/7/comments?page=2&per_page=100",
        f"GET {REPO}/issues/7/comments?page=3&per_page=100",
        f"PATCH {REPO}/issues/comments/{ours['id']}",
    ]
    assert out.comment_action == "updated" and len(gh.comments[7]) == 250


def test_one_comment_per_experiment(gh, tmp_path):
    a, b = result(experiment="a"), result(experiment="b")
    for r in (a, b, a):
        publisher(gh, tmp_path)[0].publish(TARGET, r, markdown(r), report_path="r.md")
    assert len(gh.comments[7]) == 2


def test_rate_limited_run_waits_and_posts_once(gh, tmp_path):
    clock = FakeClock()
    reset = int(clock.now) + 30
    gh.faults = [
        Fault("list_comments", 403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}, {"message": "API rate limit exceeded"}),
        Fault("create_comment", 429, {"retry-after": "5"}, {"message": "secondary rate limit"}),
    ]
    r = result()
    out = publisher(gh, tmp_path, clock=clock)[0].publish(TARGET, r, markdown(r), report_path="r.md")
    assert clock.sleeps == [31.0, 5.0]
    assert gh.requests() == [
        f"POST {REPO}/check-runs",
        f"GET {REPO}/issues/7/comments?per_page=100",
        f"GET {REPO}/issues/7/comments?per_page=100",
        f"POST {REPO}/issues/7/comments",
        f"POST {REPO}/issues/7/comments",
        f"GET {REPO}/issues/7/comments?per_page=100",
    ]
    assert out.comment_action == "created" and len(gh.comments[7]) == 1


def test_lost_response_to_a_create_never_leaves_two_comments(gh, tmp_path):
    """The POST took effect but its response was lost; the retry creates a second one; converge."""
    gh.faults = [Fault("create_comment", drop=True, after=True)]
    r = result()
    out = publisher(gh, tmp_path)[0].publish(TARGET, r, markdown(r), report_path="r.md")
    kept = gh.comments[7][0]["id"]  # the first POST's comment: the oldest is kept
    assert gh.requests() == [
        f"POST {REPO}/check-runs",
        f"GET {REPO}/issues/7/comments?per_page=100",
        f"POST {REPO}/issues/7/comments",  # took effect, response lost
        f"POST {REPO}/issues/7/comments",  # the retry creates a second comment
        f"GET {REPO}/issues/7/comments?per_page=100",
        f"DELETE {REPO}/issues/comments/{kept + 1}",
        f"PATCH {REPO}/issues/comments/{kept}",
    ]
    assert len(gh.comments[7]) == 1
    assert out.comment_action == "created"


def test_two_runs_racing_converge_to_one_comment(gh, tmp_path):
    r = result()
    barrier = threading.Barrier(2)
    original = GitHubClient.create_comment

    def slow_create(self, pr, body):
        barrier.wait(timeout=10)  # both have listed and found nothing before either creates
        return original(self, pr, body)

    outcomes = []

    def run():
        pub, _ = publisher(gh, tmp_path)
        pub.client.create_comment = slow_create.__get__(pub.client)
        outcomes.append(pub.publish(TARGET, r, markdown(r), report_path="r.md"))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(outcomes) == 2
    assert len(gh.comments[7]) == 1


def test_forbidden_check_run_falls_back_to_commit_status(gh, tmp_path):
    gh.forbidden.add("create_check_run")
    r = result(verdict="warn")
    out = publisher(gh, tmp_path)[0].publish(TARGET, r, markdown(r), report_path="r.md")
    assert gh.requests()[:2] == [f"POST {REPO}/check-runs", f"POST {REPO}/statuses/{SHA}"]
    assert out.check_kind == "status"
    status = gh.statuses[0]
    assert status == {**status, "state": "success", "context": "mlflow-ci / churn", "target_url": TARGET.run_url}
    assert status["description"] == "WARN: 1/2 rules passed (failed: m0)"


def test_nothing_writable_warns_instead_of_failing(gh, tmp_path):
    gh.forbidden |= {"create_comment", "create_check_run", "create_status"}
    r = result()
    pub, stream = publisher(gh, tmp_path)
    out = pub.publish(TARGET, r, markdown(r), report_path="r.md")
    assert (out.comment_action, out.check_kind) == ("skipped", "none")
    assert len(out.warnings) == 2
    assert "could not write a check run or a commit status" in out.warnings[0]  # the check is written first
    assert "could not write the PR comment" in out.warnings[1]
    summary = (tmp_path / "summary.md").read_text()
    assert "⚠️ could not write a check run or a commit status" in summary
    assert "::warning title=mlflow-ci publish::could not write the PR comment" in stream.getvalue()


def test_more_than_50_annotations_are_batched(gh, tmp_path):
    r = result(n_failed=120)
    publisher(gh, tmp_path)[0].publish(TARGET, r, markdown(r), report_path="r.md")
    assert gh.requests()[:3] == [f"POST {REPO}/check-runs", f"PATCH {REPO}/check-runs/{gh.check_runs[0]['id']}",
                                  f"PATCH {REPO}/check-runs/{gh.check_runs[0]['id']}"]
    assert len(gh.check_runs[0]["annotations"]) == 120


def test_oversized_body_is_shortened_not_rejected(gh, tmp_path):
    r = result()
    big = markdown(r, size=200_000)
    out = publisher(gh, tmp_path)[0].publish(TARGET, r, big, report_path="r.md")
    body = gh.comments[7][0]["body"]
    assert out.comment_action == "created"
    assert len(body) <= 65_536 and body.startswith(sticky_marker("churn"))
    assert "shortened to fit GitHub's comment limit of 65,536 characters" in body
    assert f"[job summary]({TARGET.run_url})" in body
    assert fit_comment("small", None) == "small"


@pytest.mark.parametrize("mode, verdict, existing, action, writes", [
    ("never", "fail", False, "skipped", 0),
    ("on-failure", "pass", False, "skipped", 0),
    ("on-failure", "fail", False, "created", 1),
    ("on-failure", "pass", True, "updated", 1),  # a fixed PR's comment turns green
    ("on-change", "fail", True, "unchanged", 0),
    ("always", "fail", True, "updated", 1),
])
def test_comment_modes(gh, tmp_path, mode, verdict, existing, action, writes):
    r = result(verdict=verdict, n_failed=0 if verdict == "pass" else 1)
    if existing:
        gh.add_comments(7, [fit_comment(markdown(r), TARGET.run_url)], user="github-actions[bot]")
    out = publisher(gh, tmp_path, mode=mode)[0].publish(TARGET, r, markdown(r), report_path="r.md")
    assert out.comment_action == action
    comment_writes = [x for x in gh.requests() if "comments" in x and not x.startswith("GET")]
    assert len(comment_writes) == writes


def test_server_failure_after_retries_is_exit_4(gh, tmp_path):
    gh.faults = [Fault("list_comments", 502) for _ in range(10)]
    r = result()
    with pytest.raises(GitHubError) as info:
        publisher(gh, tmp_path, max_attempts=3)[0].publish(TARGET, r, markdown(r), report_path="r.md")
    assert info.value.exit_code == 4


# --- the fork-safe path ---------------------------------------------------------------------------


def workflow_run_event(**override) -> dict:
    payload = json.loads((EVENTS / "workflow_run.completed.with-pull-requests.json").read_text())
    payload["workflow_run"].update(override)
    return payload


def test_fork_target_comes_from_the_event_not_the_artifact():
    payload = workflow_run_event()
    event = parse("workflow_run", payload, {"GITHUB_REPOSITORY": "octo-org/octo-repo"})
    head = payload["workflow_run"]["head_sha"]
    target = fork_target(event, result(pr=2, head_sha=head), None)
    assert (target.repository, target.pr_number, target.head_sha) == ("octo-org/octo-repo", 2, head)
    with pytest.raises(UsageError, match="does not match the workflow_run event: head_sha"):
        fork_target(event, result(pr=2, head_sha="b" * 40), None)
    with pytest.raises(UsageError, match=r"does not match the workflow_run event: PR #9 != #2"):
        fork_target(event, result(pr=9, head_sha=head), None)
    pr_event = parse("pull_request", json.loads((EVENTS / "pull_request.opened.json").read_text()), {})
    with pytest.raises(UsageError, match="publish --from is for the privileged workflow_run workflow"):
        fork_target(pr_event, result(), None)


def test_fork_pr_found_through_the_api_when_the_event_lists_none(gh):
    payload = workflow_run_event(pull_requests=[], head_repository={"full_name": "forker/octo-repo"}, head_branch="patch-1")
    head = payload["workflow_run"]["head_sha"]
    gh.pulls = [{"number": 11, "state": "open", "head": {"label": "forker:patch-1", "sha": head}}]
    event = parse("workflow_run", payload, {"GITHUB_REPOSITORY": "octo-org/octo-repo"})
    assert event.is_fork
    c = GitHubClient(token=TOKEN, repository="octo-org/octo-repo", api_url=gh.url)
    assert fork_target(event, result(pr=11, head_sha=head), c).pr_number == 11
    assert gh.requests() == ["GET /repos/octo-org/octo-repo/pulls?head=forker:patch-1&per_page=100&state=open"]


def test_sanitize_rejects_and_escapes(tmp_path):
    good = sanitize_result(result())
    assert good["verdict"] == "fail" and good["checks"][1]["line"] == 9
    bad_cases = [
        ({"verdict": "pwned"}, "verdict: expected pass, warn, fail or error"),
        ({"schema": 2}, "schema: expected 1"),
        ({"head_sha": "../../etc"}, "head_sha: unexpected format"),
        ({"config_path": "../secret"}, "config_path: unexpected format"),
        ({"ci_run_url": "javascript:alert(1)"}, "ci_run_url: unexpected format"),
        ({"checks": [{"rule": "rm -rf", "passed": True}]}, "checks[0].rule: unknown rule"),
        ({"checks": "many"}, "checks: expected a list"),
        ({"pr": True}, "pr: expected a positive integer"),
    ]
    for override, message in bad_cases:
        with pytest.raises(UsageError, match=re.escape(message)):
            sanitize_result({**result(), **override})
    big = tmp_path / "result.json"
    big.write_text(" " * (3 * 1024 * 1024))
    with pytest.raises(UsageError, match="byte limit"):
        load_artifact(big)
    big.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        load_artifact(big)




def test_only_our_own_comment_is_sticky(gh, tmp_path):
    """A comment planted by someone else with our marker was edited (on GitHub: a 403, or someone
    else's comment rewritten). Now it is left alone and reported; ours is created beside it."""
    r = result()
    planted = gh.add_comments(7, [markdown(r) + "planted"], user="mallory")[0]
    pub, stream = publisher(gh, tmp_path)
    out = pub.publish(TARGET, r, markdown(r), report_path="r.md")
    assert out.comment_action == "created"
    assert planted in gh.comments[7] and planted["body"].endswith("planted")
    assert [c["user"]["login"] for c in gh.comments[7]] == ["mallory", "github-actions[bot]"]
    assert f"comment {planted['id']} by mallory carries mlflow-ci's marker but was not written by github-actions[bot]" in stream.getvalue()
    again = publisher(gh, tmp_path)[0].publish(TARGET, r, markdown(r) + "v2", report_path="r.md")
    assert again.comment_action == "updated" and planted["body"].endswith("planted") and len(gh.comments[7]) == 2


def test_an_app_token_is_recognised_by_its_check_run(tmp_path):
    with FakeGitHub(TOKEN, identity="model-bot[bot]") as gh:
        r = result()
        gh.add_comments(7, [markdown(r) + "by github-actions"], user="github-actions[bot]")
        pub, _ = publisher(gh, tmp_path)
        assert pub.publish(TARGET, r, markdown(r), report_path="r.md").comment_action == "created"
        assert pub.identity == "model-bot[bot]" and gh.comments[7][-1]["user"]["login"] == "model-bot[bot]"


@pytest.mark.parametrize("status", [404, 410, 422])
def test_a_comment_that_cannot_be_written_still_leaves_the_check(gh, tmp_path, status):
    gh.faults = [Fault("create_comment", status, body={"message": "Gone"})]
    r = result()
    out = publisher(gh, tmp_path, max_attempts=1)[0].publish(TARGET, r, markdown(r), report_path="r.md")
    assert out.check_kind == "check_run" and gh.check_runs and out.comment_action == "skipped"
    assert any("could not write the PR comment" in w for w in out.warnings)

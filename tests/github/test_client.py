"""The REST client against the fake GitHub server: pagination, retries, rate limits, errors."""

from __future__ import annotations

import pytest
from fakegithub import TOKEN, FakeClock, FakeGitHub, Fault

from mlflow_ci.github.client import GitHubClient, GitHubError, GitHubPermissionError, RetryPolicy


@pytest.fixture
def gh():
    with FakeGitHub(TOKEN) as server:
        yield server


def client(gh, clock=None, **policy) -> GitHubClient:
    clock = clock or FakeClock()
    return GitHubClient(
        token=TOKEN, repository="octo/models", api_url=gh.url, clock=clock.time, sleep=clock.sleep,
        rng=lambda: 0.5, policy=RetryPolicy(**policy),
    )


def test_pagination_follows_link_headers_with_100_per_page(gh):
    gh.add_comments(7, [f"c{i}" for i in range(250)])
    bodies = [c["body"] for c in client(gh).list_comments(7)]
    assert bodies == [f"c{i}" for i in range(250)]
    assert gh.requests() == [
        "GET /repos/octo/models/issues/7/comments?per_page=100",
        "GET /repos/octo/models/issues/7/comments?page=2&per_page=100",
        "GET /repos/octo/models/issues/7/comments?page=3&per_page=100",
    ]


def test_enterprise_api_prefix_is_respected():
    with FakeGitHub(TOKEN, prefix="/api/v3") as gh:
        gh.add_comments(1, ["x"] * 101)
        assert len(list(client(gh).list_comments(1))) == 101
        assert all(path.startswith("/api/v3/repos/") for _, path, _ in gh.log)


def test_5xx_and_dropped_connections_are_retried_with_backoff(gh):
    clock = FakeClock()
    gh.faults = [Fault("create_comment", 502), Fault("create_comment", drop=True), Fault("create_comment", 503)]
    made = client(gh, clock).create_comment(3, "hello")
    assert made["body"] == "hello"
    assert [b for b in (c["body"] for c in gh.comments[3])] == ["hello"]
    assert len(gh.log) == 4
    # equal jitter with rng=0.5: 0.75 x the exponential ceiling 1, 2, 4
    assert clock.sleeps == [0.75, 1.5, 3.0]


def test_5xx_gives_up_after_max_attempts(gh):
    gh.faults = [Fault("list_comments", 500) for _ in range(10)]
    with pytest.raises(GitHubError) as info:
        list(client(gh, max_attempts=3).list_comments(1))
    assert info.value.exit_code == 4
    assert "GitHub API answered 500 while trying to list the comments of PR #1" in info.value.message
    assert len(gh.log) == 3


def test_primary_rate_limit_waits_until_reset(gh):
    clock = FakeClock()
    reset = int(clock.now) + 42
    gh.faults = [Fault("list_comments", 403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
                       {"message": "API rate limit exceeded for installation ID 1."})]
    assert list(client(gh, clock).list_comments(1)) == []
    assert clock.sleeps == [43.0]  # until reset, plus a second


def test_secondary_rate_limit_honours_retry_after(gh):
    clock = FakeClock()
    gh.faults = [Fault("create_comment", 429, {"retry-after": "7"}, {"message": "secondary rate limit"})]
    client(gh, clock).create_comment(1, "x")
    assert clock.sleeps == [7.0]
    gh.faults = [Fault("create_comment", 403, {}, {"message": "You have exceeded a secondary rate limit."})]
    client(gh, clock).create_comment(1, "y")
    assert clock.sleeps[-1] == 60.0  # no header: at least a minute, as GitHub documents


def test_total_wait_is_bounded_then_exit_4_with_advice(gh):
    clock = FakeClock()
    reset = int(clock.now) + 3600
    gh.faults = [Fault("list_comments", 403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
                       {"message": "API rate limit exceeded"})]
    with pytest.raises(GitHubError) as info:
        list(client(gh, clock, max_total_wait=300).list_comments(1))
    err = info.value
    assert err.exit_code == 4 and clock.sleeps == []
    assert "gave up after waiting 0s of the 300s allowed; the rate limit resets at epoch" in err.message
    assert "re-run the job later" in err.hint


@pytest.mark.parametrize(
    "status, fragment",
    [
        (401, "GitHub rejected the token while trying to comment on PR #1 (401 Bad credentials)"),
        (403, "the token is not allowed to comment on PR #1 (403 Resource not accessible by integration)"),
        (404, "not found while trying to comment on PR #1 (404): wrong repository (octo/models)"),
    ],
)
def test_permission_errors_are_explained(gh, status, fragment):
    if status == 401:
        c = client(gh)
        c.token = "wrong"
    else:
        c = client(gh)
        if status == 403:
            gh.forbidden.add("create_comment")
        else:
            gh.faults = [Fault("create_comment", 404, {}, {"message": "Not Found"})]
    with pytest.raises(GitHubPermissionError) as info:
        c.create_comment(1, "x")
    assert fragment in info.value.message
    assert info.value.status == status
    assert len(gh.log) == 1  # never retried


def test_token_never_appears_in_errors_or_repr(gh):
    gh.faults = [Fault("create_comment", 500, {}, {"message": f"echo {TOKEN}"}) for _ in range(6)]
    c = client(gh, max_attempts=2)
    with pytest.raises(GitHubError) as info:
        c.create_comment(1, "x")
    text = info.value.message + str(info.value.hint) + repr(c)
    assert TOKEN not in text and "***" in text


def test_pagination_never_leaves_the_api_host(gh):
    class Response:
        status_code = 200
        headers: dict = {}
        links = {"next": {"url": "https://evil.example/steal"}}

        def json(self):
            return []

    class Session:
        def request(self, *args, **kwargs):
            return Response()

    c = GitHubClient(token=TOKEN, repository="o/r", api_url="https://api.github.com", session=Session())
    with pytest.raises(GitHubError, match="refusing to send the token there"):
        list(c.list_comments(1))

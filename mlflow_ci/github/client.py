"""A small GitHub REST client that behaves well when GitHub does not.

- One ``requests`` session (injected), timeouts on every call, ``GITHUB_API_URL`` for Enterprise.
- Retries with exponential backoff and jitter on connection errors and 5xx.
- Primary rate limit (``x-ratelimit-remaining: 0``): waits until ``x-ratelimit-reset``; secondary
  rate limit (403/429 with ``retry-after``, or without headers: at least a minute), as GitHub documents.
- Every wait is bounded in total; past the bound: :class:`GitHubError` (exit 4) saying what to do.
- 401/403/404 are explained in words. The token never appears in a message, log or exception.
- The clock, sleep and randomness are injected so tests run instantly.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from mlflow_ci.errors import ServiceError

API_VERSION = "2022-11-28"
RETRY_STATUSES = (500, 502, 503, 504)


class GitHubError(ServiceError):
    """The GitHub API failed (after retries, or with an answer retrying cannot change)."""
    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class GitHubPermissionError(GitHubError):
    """401, 403 (not a rate limit) or 404: the token cannot do this."""


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    max_total_wait: float = 300.0  # seconds spent waiting, in all, before giving up
    base_delay: float = 1.0
    max_delay: float = 60.0
    secondary_default_wait: float = 60.0


@dataclass
class GitHubClient:
    token: str
    repository: str  # owner/name
    api_url: str = "https://api.github.com"
    session: Any = None  # a requests.Session (or compatible); created when not given
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: tuple[float, float] = (10.0, 30.0)
    log: Callable[[str], None] = lambda message: None

    def __post_init__(self) -> None:
        self.api_url = self.api_url.rstrip("/")
        if self.session is None:
            import requests

            self.session = requests.Session()
        self.waited = 0.0

    def __repr__(self) -> str:  # never show the token
        return f"GitHubClient(repository={self.repository!r}, api_url={self.api_url!r})"

    # -- transport ---------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "mlflow-ci",
        }

    def request(self, method: str, path: str, *, what: str, params: dict | None = None, body: dict | None = None,
                redirect: bool = True):
        """Send one logical request, retrying as documented; return the final response."""
        import requests

        url = path if path.startswith(self.api_url + "/") else f"{self.api_url}{path}"
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.session.request(
                    method, url, params=params, json=body, headers=self._headers(), timeout=self.timeout,
                    allow_redirects=redirect,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt >= self.policy.max_attempts:
                    raise GitHubError(
                        f"GitHub API unreachable while trying to {what}: {self._redact(type(exc).__name__)} after {attempt} attempts",
                        hint="check GITHUB_API_URL and the runner's network, then re-run the job",
                    ) from None
                self._wait(self._backoff(attempt), what, reason="connection failed")
                continue
            if response.status_code < 400:
                return response
            delay = self._retry_delay(response, attempt)
            if delay is None:
                raise self._error(response, what)
            self._wait(delay, what, reason=f"HTTP {response.status_code}", response=response)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.policy.base_delay * (2 ** (attempt - 1)), self.policy.max_delay)
        return ceiling / 2 + self.rng() * ceiling / 2  # "equal jitter"

    def _retry_delay(self, response, attempt: int) -> float | None:
        status = response.status_code
        headers = response.headers
        if status in (403, 429):
            retry_after = headers.get("retry-after")
            if retry_after is not None:
                try:
                    return max(float(retry_after), 0.0)
                except ValueError:
                    return self.policy.secondary_default_wait
            if headers.get("x-ratelimit-remaining") == "0":
                try:
                    reset = float(headers.get("x-ratelimit-reset", "0"))
                except ValueError:
                    reset = 0.0
                return max(reset - self.clock(), 0.0) + 1.0
            if status == 429 or "secondary rate limit" in _message(response).lower():
                return max(self.policy.secondary_default_wait, self._backoff(attempt))
            return None
        if status in RETRY_STATUSES and attempt < self.policy.max_attempts:
            return self._backoff(attempt)
        return None

    def _wait(self, delay: float, what: str, *, reason: str, response=None) -> None:
        if self.waited + delay > self.policy.max_total_wait:
            resume = ""
            if response is not None and response.headers.get("x-ratelimit-reset"):
                resume = f"; the rate limit resets at epoch {response.headers['x-ratelimit-reset']}"
            raise GitHubError(
                f"GitHub API still failing ({reason}) while trying to {what}; gave up after waiting {self.waited:.0f}s of the {self.policy.max_total_wait:.0f}s allowed{resume}",
                status=response.status_code if response is not None else None,
                hint="re-run the job later; report.md and result.json are kept, and 'mlflow-ci publish' retries only the publishing",
            )
        self.log(f"GitHub API: {reason} while trying to {what}; retrying in {delay:.1f}s")
        self.waited += delay
        self.sleep(delay)

    def _error(self, response, what: str) -> GitHubError:
        status = response.status_code
        message = self._redact(_message(response))
        if status == 401:
            return GitHubPermissionError(
                f"GitHub rejected the token while trying to {what} (401 {message})", status=status,
                hint="check that GITHUB_TOKEN is set to a valid, unexpired token",
            )
        if status == 403:
            return GitHubPermissionError(
                f"the token is not allowed to {what} (403 {message})", status=status,
                hint="grant the job 'pull-requests: write' (comments), 'checks: write' (check runs) and "
                "'statuses: write' (commit statuses); fork PRs never get a write token: publish from "
                "the workflow_run workflow instead",
            )
        if status == 404:
            return GitHubPermissionError(
                f"not found while trying to {what} (404): wrong repository ({self.repository}) or number, "
                "or a token without access to this repository", status=status,
                hint="check GITHUB_REPOSITORY and the token's repository access",
            )
        return GitHubError(f"GitHub API answered {status} while trying to {what}: {message}", status=status)

    def _redact(self, text: str) -> str:
        return text.replace(self.token, "***") if self.token else text

    # -- pagination --------------------------------------------------------------------------------
    def paginate(self, path: str, *, what: str, params: dict | None = None, key: str | None = None) -> Iterator[dict]:
        """Every item of a list endpoint, 100 per page, following ``Link: rel="next"``; ``key`` names
        the list in endpoints that wrap it in an object (``{"total_count": …, "check_runs": [...]}``)."""
        query = {**(params or {}), "per_page": 100}
        response = self.request("GET", path, what=what, params=query)
        while True:
            items = response.json()
            if key is not None:
                items = items.get(key) if isinstance(items, dict) else None
            if not isinstance(items, list):
                raise GitHubError(f"GitHub API returned an unexpected body while trying to {what}")
            yield from (item for item in items if isinstance(item, dict))
            next_url = response.links.get("next", {}).get("url")
            if not next_url:
                return
            if not next_url.startswith(self.api_url + "/"):
                raise GitHubError(f"GitHub API pagination pointed outside {self.api_url}; refusing to send the token there")
            response = self.request("GET", next_url, what=what)

    # -- endpoints ---------------------------------------------------------------------------------
    def _repo(self, suffix: str) -> str:
        return f"/repos/{self.repository}{suffix}"

    def list_comments(self, pr: int) -> Iterator[dict]:
        return self.paginate(self._repo(f"/issues/{pr}/comments"), what=f"list the comments of PR #{pr}")

    def create_comment(self, pr: int, body: str) -> dict:
        return self.request("POST", self._repo(f"/issues/{pr}/comments"), what=f"comment on PR #{pr}", body={"body": body}).json()

    def update_comment(self, comment_id: int, body: str) -> dict:
        return self.request("PATCH", self._repo(f"/issues/comments/{comment_id}"), what="update the report comment", body={"body": body}).json()

    def delete_comment(self, comment_id: int) -> None:
        try:
            self.request("DELETE", self._repo(f"/issues/comments/{comment_id}"), what="delete a duplicate report comment")
        except GitHubPermissionError as exc:
            if exc.status != 404:  # already gone: another run removed it
                raise

    def create_check_run(self, payload: dict) -> dict:
        return self.request("POST", self._repo("/check-runs"), what="create a check run", body=payload).json()

    def update_check_run(self, check_id: int, payload: dict) -> dict:
        return self.request("PATCH", self._repo(f"/check-runs/{check_id}"), what="add annotations to the check run", body=payload).json()

    def create_status(self, sha: str, payload: dict) -> dict:
        return self.request("POST", self._repo(f"/statuses/{sha}"), what="set a commit status", body=payload).json()

    def pulls_for_commit(self, sha: str) -> list[dict]:
        """The pull requests associated with a commit (how promote finds the merged PR of a push)."""
        return list(self.paginate(self._repo(f"/commits/{sha}/pulls"), what=f"find the PR merged as {sha[:12]}"))

    def find_open_pulls(self, head: str) -> list[dict]:
        """Open PRs whose head is ``owner:branch`` (how a fork PR is found from a workflow_run)."""
        return list(self.paginate(self._repo("/pulls"), what=f"find the PR for {head}", params={"state": "open", "head": head}))

    def get_pull(self, number: int) -> dict:
        return self.request("GET", self._repo(f"/pulls/{number}"), what=f"read PR #{number}").json()

    def workflow_runs(self, head_sha: str, event: str) -> list[dict]:
        """The completed workflow runs of a commit for one event, newest first."""
        runs = self.paginate(self._repo("/actions/runs"), what=f"list the workflow runs of {head_sha[:12]}",
                             params={"head_sha": head_sha, "event": event, "status": "completed"}, key="workflow_runs")
        return sorted(runs, key=lambda run: run.get("id") if isinstance(run.get("id"), int) else 0, reverse=True)

    def workflow_run(self, run_id: int) -> dict:
        """One workflow run: its event, head commit, workflow file (``path``), PRs and reused workflows."""
        answer = self.request("GET", self._repo(f"/actions/runs/{run_id}"), what=f"read workflow run {run_id}").json()
        return answer if isinstance(answer, dict) else {}

    def pull_files(self, number: int) -> list[dict]:
        """The files a PR changes (GitHub lists at most 3,000)."""
        return list(self.paginate(self._repo(f"/pulls/{number}/files"), what=f"list the files PR #{number} changes"))

    def run_approvals(self, run_id: int) -> list[dict]:
        """The deployment reviews of a workflow run (who approved or rejected which environment)."""
        answer = self.request("GET", self._repo(f"/actions/runs/{run_id}/approvals"), what=f"read the approvals of workflow run {run_id}").json()
        return [a for a in answer if isinstance(a, dict)] if isinstance(answer, list) else []

    def check_runs(self, ref: str, name: str) -> list[dict]:
        """Every check run named ``name`` on a commit, by any app, newest first."""
        runs = self.paginate(self._repo(f"/commits/{ref}/check-runs"), what=f"read the check runs of {ref[:12]}",
                             params={"check_name": name, "filter": "all"}, key="check_runs")
        return sorted(runs, key=lambda run: run.get("id") if isinstance(run.get("id"), int) else 0, reverse=True)

    def run_artifacts(self, run_id: int, name: str) -> list[dict]:
        """The artifacts named ``name`` of a workflow run."""
        return list(self.paginate(self._repo(f"/actions/runs/{run_id}/artifacts"), what=f"list the artifacts of workflow run {run_id}",
                                  params={"name": name}, key="artifacts"))

    def download_artifact(self, artifact_id: int, dst: Path, *, max_bytes: int) -> Path:
        """Save an artifact's zip archive to ``dst``. GitHub answers with a redirect to short-lived
        storage; the archive is fetched from there without our token, and at most ``max_bytes``."""
        what = f"download artifact {artifact_id}"
        response = self.request("GET", self._repo(f"/actions/artifacts/{artifact_id}/zip"), what=what, redirect=False)
        location = response.headers.get("Location") if response.status_code in (301, 302, 303, 307, 308) else None
        if response.status_code != 200 and not location:
            raise GitHubError(f"GitHub API answered {response.status_code} without a download location while trying to {what}")
        source = self.session.get(location, stream=True, timeout=self.timeout) if location else response
        with source:
            if source.status_code != 200:
                raise GitHubError(f"artifact storage answered {source.status_code} while trying to {what}")
            written = 0
            with dst.open("wb") as out:
                for chunk in source.iter_content(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:
                        raise GitHubError(f"artifact {artifact_id} is larger than {max_bytes:,} bytes; refusing to download it")
                    out.write(chunk)
        return dst


def _message(response) -> str:
    try:
        data = response.json()
    except ValueError:
        return (response.text or "")[:200]
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"][:300]
    return ""

"""What the GitHub Actions run is about: read from the environment and the event payload.

Supports ``pull_request``, ``pull_request_target``, ``push``, ``workflow_run`` and
``workflow_dispatch``. The payload is parsed defensively: any field may be missing or null (a PR body
is null, a deleted fork has no ``head.repo``), and nothing here trusts a string to be a string.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mlflow_ci.errors import UsageError

PR_EVENTS = ("pull_request", "pull_request_target")
_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class EventContext:
    event_name: str | None = None
    action: str | None = None
    repository: str | None = None  # owner/name of the repository the workflow runs in
    api_url: str = "https://api.github.com"
    server_url: str = "https://github.com"
    run_id: str | None = None
    sha: str | None = None  # GITHUB_SHA: for pull_request, the merge commit
    pr_number: int | None = None
    head_sha: str | None = None  # the PR's head commit (or the pushed commit)
    base_sha: str | None = None
    head_ref: str | None = None
    base_ref: str | None = None
    head_repository: str | None = None
    is_fork: bool = False
    merged: bool | None = None
    workflow_run_id: int | None = None
    workflow_run_conclusion: str | None = None
    deleted: bool = False  # a push that deleted its ref: nothing to check or promote

    @property
    def in_actions(self) -> bool:
        return self.event_name is not None

    @property
    def run_url(self) -> str | None:
        if self.repository and self.run_id:
            return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"
        return None


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _sha(value: Any) -> str | None:
    """A commit SHA, or None (also for the all-zero SHA GitHub sends for a created or deleted ref)."""
    return value if isinstance(value, str) and _SHA.match(value) and value.strip("0") else None


def _branch(ref: Any) -> str | None:
    text = _str(ref) or ""
    return text[len("refs/heads/"):] if text.startswith("refs/heads/") else None


def load_payload(path: str | None) -> dict:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"GITHUB_EVENT_PATH {path}: file not found") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"GITHUB_EVENT_PATH {path}: not a JSON event payload ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"GITHUB_EVENT_PATH {path}: expected a JSON object")
    return data


def from_env(env: Mapping[str, str]) -> EventContext:
    """The event context of this run; an empty context outside GitHub Actions."""
    if env.get("GITHUB_ACTIONS") != "true" and not env.get("GITHUB_EVENT_PATH"):
        return EventContext(api_url=env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/"))
    return parse(env.get("GITHUB_EVENT_NAME"), load_payload(env.get("GITHUB_EVENT_PATH")), env)


def parse(event_name: str | None, payload: dict, env: Mapping[str, str]) -> EventContext:
    base = dict(
        event_name=event_name,
        action=_str(payload.get("action")),
        repository=env.get("GITHUB_REPOSITORY") or _str(_get(payload, "repository", "full_name")),
        api_url=env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/"),
        server_url=env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/"),
        run_id=env.get("GITHUB_RUN_ID"),
        sha=_sha(env.get("GITHUB_SHA")),
    )
    if event_name in PR_EVENTS:
        return EventContext(**base, **_pull_request(payload.get("pull_request")))
    if event_name == "push":
        deleted = payload.get("deleted") is True
        return EventContext(
            **base,
            head_sha=None if deleted else _sha(payload.get("after")) or base["sha"],
            base_sha=_sha(payload.get("before")),
            base_ref=_branch(payload.get("ref")),
            head_ref=_branch(payload.get("ref")),
            deleted=deleted,
        )
    if event_name == "merge_group":  # the merge queue: its temporary branch, and the branch it merges into
        group = payload.get("merge_group")
        return EventContext(
            **base,
            head_sha=_sha(_get(group, "head_sha")) or base["sha"],
            base_sha=_sha(_get(group, "base_sha")),
            head_ref=_branch(_get(group, "head_ref")),
            base_ref=_branch(_get(group, "base_ref")),
        )
    if event_name == "workflow_run":
        return EventContext(**base, **_workflow_run(payload.get("workflow_run"), base["repository"]))
    # workflow_dispatch and anything else: the checked-out commit and ref
    ref_name = env.get("GITHUB_REF_NAME")
    return EventContext(**base, head_sha=base["sha"], head_ref=ref_name, base_ref=None)


def _pull_request(pr: Any) -> dict:
    head_repo = _str(_get(pr, "head", "repo", "full_name"))
    base_repo = _str(_get(pr, "base", "repo", "full_name"))
    return dict(
        pr_number=_int(_get(pr, "number")),
        head_sha=_sha(_get(pr, "head", "sha")),
        base_sha=_sha(_get(pr, "base", "sha")),
        head_ref=_str(_get(pr, "head", "ref")),
        base_ref=_str(_get(pr, "base", "ref")),
        head_repository=head_repo,
        # A deleted fork has head.repo = null: treat it as a fork, never as trusted.
        is_fork=head_repo is None or head_repo != base_repo,
        merged=_get(pr, "merged") if isinstance(_get(pr, "merged"), bool) else None,
    )


def _workflow_run(run: Any, repository: str | None) -> dict:
    head_repo = _str(_get(run, "head_repository", "full_name"))
    run_repo = _str(_get(run, "repository", "full_name")) or repository
    prs = _get(run, "pull_requests")
    first = prs[0] if isinstance(prs, list) and prs and isinstance(prs[0], dict) else None
    return dict(
        pr_number=_int(_get(first, "number")),
        head_sha=_sha(_get(run, "head_sha")),
        base_sha=_sha(_get(first, "base", "sha")),
        head_ref=_str(_get(run, "head_branch")),
        base_ref=_str(_get(first, "base", "ref")),
        head_repository=head_repo,
        is_fork=head_repo is None or head_repo != run_repo,
        workflow_run_id=_int(_get(run, "id")),
        workflow_run_conclusion=_str(_get(run, "conclusion")),
    )

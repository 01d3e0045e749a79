"""`mlflow-ci publish`: put the result where reviewers and branch protection see it.

- One sticky PR comment per experiment, found by a hidden marker across all pages of comments,
  updated in place, de-duplicated when two runs race or a create was retried.
- A check run (success / failure / neutral) with annotations on the config lines of failed rules,
  batched 50 per request; a commit status when the token cannot write checks; a warning (not a
  failure) when it cannot write either.
- The job summary, ``::error``/``::warning`` annotations and the step outputs.

``--from result.json`` is the fork-safe path: the file is an untrusted artifact, so it is size-limited,
rebuilt field by field with strict types (:func:`sanitize_result`), and must agree with the
``workflow_run`` event, which alone decides the PR number and head commit.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mlflow_ci.actions_io import ActionsIO, Annotation, truncate_chars
from mlflow_ci.config import LIMIT_RULES
from mlflow_ci.errors import UsageError
from mlflow_ci.ghevent import EventContext
from mlflow_ci.github import GitHubClient, GitHubPermissionError
from mlflow_ci.report import sticky_marker

COMMENT_LIMIT = 65_536
COMMENT_BUDGET = 65_000  # a margin under GitHub's limit for the note we may append
CHECK_SUMMARY_LIMIT = 65_535
ANNOTATIONS_PER_REQUEST = 50
ARTIFACT_LIMIT = 2 * 1024 * 1024
CONCLUSION = {"pass": "success", "warn": "neutral", "fail": "failure"}
STATUS_STATE = {"pass": "success", "warn": "success", "fail": "failure"}


@dataclass(frozen=True)
class Target:
    """Where to publish: decided by the event (never by an artifact)."""

    repository: str
    pr_number: int | None
    head_sha: str | None
    run_url: str | None = None


@dataclass(frozen=True)
class PublishResult:
    comment_action: str  # created | updated | unchanged | skipped
    comment_url: str | None
    check_kind: str  # check_run | status | none
    check_url: str | None
    warnings: tuple[str, ...] = ()


@dataclass
class Publisher:
    client: GitHubClient | None
    io: ActionsIO
    log: Callable[[str], None]
    comment_mode: str = "always"
    check_name: str | None = None
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.log(f"warning: {message}")
        self.io.annotate(Annotation("warning", message, title="mlflow-ci publish"))

    # -- the whole publish -------------------------------------------------------------------------
    def publish(self, target: Target, result: dict, markdown: str, *, report_path: str) -> PublishResult:
        self.io.add_summary(markdown, full_report_hint=f"The full report is {report_path} in the job's artifacts.")
        self._annotate_log(result)
        comment_action, comment_url = "skipped", None
        check_kind, check_url = "none", None
        if self.client is None:
            self.warn("no GitHub token (GITHUB_TOKEN): no PR comment, check run or status was written")
        else:
            if target.pr_number:
                comment_action, comment_url = self.sticky_comment(target, result, markdown)
            if target.head_sha:
                check_kind, check_url = self.check(target, result, markdown)
        outcome = PublishResult(comment_action, comment_url, check_kind, check_url, tuple(self.warnings))
        if self.warnings:
            self.io.add_summary("\n".join(f"> ⚠️ {w}" for w in self.warnings))
        self.io.set_outputs(step_outputs(result, report_path, comment_url))
        return outcome

    def _annotate_log(self, result: dict) -> None:
        for check in result["checks"]:
            if check["passed"] is False:
                self.io.annotate(Annotation(
                    "error" if check["blocking"] else "warning",
                    f"{check['metric']} {check['rule']}: {check['message']}",
                    title=f"mlflow-ci gate: {check['metric']}",
                    file=result.get("config_path"),
                    line=check.get("line"),
                ))

    # -- sticky comment ----------------------------------------------------------------------------
    def sticky_comment(self, target: Target, result: dict, markdown: str) -> tuple[str, str | None]:
        assert self.client is not None and target.pr_number
        mode = self.comment_mode
        if mode == "never":
            return "skipped", None
        marker = sticky_marker(result["experiment"])
        body = fit_comment(markdown, target.run_url)
        try:
            existing = self._ours(target.pr_number, marker)
            if not existing:
                if mode == "on-failure" and result["verdict"] == "pass":
                    return "skipped", None
                created = self.client.create_comment(target.pr_number, body)
                return "created", self._dedupe(target.pr_number, marker, created, body)
            keep, *duplicates = existing
            for dup in duplicates:
                self.client.delete_comment(dup["id"])
            if mode == "on-change" and keep.get("body") == body:
                return "unchanged", keep.get("html_url")
            updated = self.client.update_comment(keep["id"], body)
            return "updated", updated.get("html_url") or keep.get("html_url")
        except GitHubPermissionError as exc:
            if exc.status != 403:
                raise
            self.warn(f"could not write the PR comment: {exc.message} (needs 'pull-requests: write'; fork PRs: use the workflow_run path)")
            return "skipped", None

    def _ours(self, pr: int, marker: str) -> list[dict]:
        """Our comments on the PR (all pages), oldest first."""
        assert self.client is not None
        found = [c for c in self.client.list_comments(pr) if marker in str(c.get("body") or "")]
        return sorted(found, key=lambda c: c.get("id", 0))

    def _dedupe(self, pr: int, marker: str, created: dict, body: str) -> str | None:
        """After a create, converge to one comment: keep the oldest, delete the rest.

        Two runs racing (or a retried POST that had in fact succeeded) may both have created one.
        """
        assert self.client is not None
        ours = self._ours(pr, marker)
        if len(ours) <= 1:
            return created.get("html_url")
        keep, *extra = ours
        for dup in extra:
            self.client.delete_comment(dup["id"])
        if keep.get("id") != created.get("id"):
            keep = self.client.update_comment(keep["id"], body)
        return keep.get("html_url")

    # -- check run, or commit status ---------------------------------------------------------------
    def check(self, target: Target, result: dict, markdown: str) -> tuple[str, str | None]:
        assert self.client is not None and target.head_sha
        name = self.check_name or f"mlflow-ci / {result['experiment']}"
        verdict = result["verdict"]
        try:
            return "check_run", self._check_run(target, name, result, markdown)
        except GitHubPermissionError as exc:
            if exc.status != 403:
                raise
            self.log(f"cannot write a check run ({exc.message}); falling back to a commit status")
        try:
            status = self.client.create_status(target.head_sha, {
                "state": STATUS_STATE[verdict],
                "context": name[:100],
                "description": status_description(result),
                **({"target_url": target.run_url} if target.run_url else {}),
            })
            return "status", status.get("url")
        except GitHubPermissionError as exc:
            if exc.status != 403:
                raise
            self.warn(
                "could not write a check run or a commit status (the token lacks 'checks: write' and "
                "'statuses: write', as on fork PRs); the job's exit code carries the verdict"
            )
            return "none", None

    def _check_run(self, target: Target, name: str, result: dict, markdown: str) -> str | None:
        assert self.client is not None
        title = status_description(result)
        summary = truncate_chars(markdown, CHECK_SUMMARY_LIMIT, note="\n\n_Shortened to fit the check run summary limit._\n")
        annotations = check_annotations(result)
        first, rest = annotations[:ANNOTATIONS_PER_REQUEST], annotations[ANNOTATIONS_PER_REQUEST:]
        payload = {
            "name": name,
            "head_sha": target.head_sha,
            "status": "completed",
            "conclusion": CONCLUSION[result["verdict"]],
            "output": {"title": title, "summary": summary, "annotations": first},
            **({"details_url": target.run_url} if target.run_url else {}),
        }
        run = self.client.create_check_run(payload)
        for start in range(0, len(rest), ANNOTATIONS_PER_REQUEST):
            batch = rest[start : start + ANNOTATIONS_PER_REQUEST]
            self.client.update_check_run(run["id"], {"output": {"title": title, "summary": summary, "annotations": batch}})
        return run.get("html_url")


def step_outputs(result: dict, report_path: str, comment_url: str | None = None) -> dict[str, str]:
    """The action's step outputs (``$GITHUB_OUTPUT``), with or without publishing."""
    return {
        "verdict": result["verdict"],
        "run-id": result["candidate"]["run_id"] or "",
        "report-path": report_path,
        "comment-url": comment_url or "",
    }


def status_description(result: dict) -> str:
    checks = [c for c in result["checks"] if c["passed"] is not None]
    failed = [c for c in checks if c["passed"] is False]
    verdict = result["verdict"].upper()
    text = f"{verdict}: {len(checks) - len(failed)}/{len(checks)} rules passed"
    if failed:
        text += " (failed: " + ", ".join(sorted({str(c["metric"]) for c in failed})) + ")"
    return text if len(text) <= 140 else text[:139] + "…"


def check_annotations(result: dict) -> list[dict]:
    path = result.get("config_path") or "mlflow-ci.yml"
    out = []
    for check in result["checks"]:
        if check["passed"] is not False:
            continue
        line = check.get("line") or 1
        out.append({
            "path": path,
            "start_line": line,
            "end_line": line,
            "annotation_level": "failure" if check["blocking"] else "warning",
            "title": f"{check['metric']} {check['rule']}"[:255],
            "message": str(check["message"])[:64_000],
        })
    return out


def fit_comment(markdown: str, run_url: str | None) -> str:
    """The comment body, shortened with a clear note if GitHub would reject it (65,536 chars)."""
    where = f"the [job summary]({run_url})" if run_url else "the job summary"
    note = (
        f"\n\n---\n⚠️ This report was shortened to fit GitHub's comment limit of {COMMENT_LIMIT:,} "
        f"characters. The full report is in {where} and in the job's `report.md` artifact.\n"
    )
    return truncate_chars(markdown, COMMENT_BUDGET, note=note)


# --------------------------------------------------------------------------------------------------
# The untrusted artifact of the fork-safe path


_RUN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_URL = re.compile(r"^https?://[^\s()<>\[\]\"'`]{1,500}$")
_SAFE_PATH = re.compile(r"^(?!/)(?!.*\.\.)[A-Za-z0-9_./-]{1,200}$")
RULES = (*LIMIT_RULES, "significance", "data_columns", "data_psi", "data_missing")
STATUSES = ("better", "worse", "same", "new", "removed", "invalid", "n/a")


class _Bad(Exception):
    pass


def _need(cond: bool, where: str) -> None:
    if not cond:
        raise _Bad(where)


def _text(value: Any, where: str, limit: int = 500, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    _need(isinstance(value, str), f"{where}: expected a string")
    return value[:limit]


def _num(value: Any, where: str) -> float | str | None:
    if value is None:
        return None
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return value
    _need(isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: expected a number")
    return float(value) if math.isfinite(value) else str(float(value))


def _metrics(value: Any, where: str, limit: int = 2000) -> dict:
    _need(isinstance(value, dict), f"{where}: expected an object")
    _need(len(value) <= limit, f"{where}: more than {limit} entries")
    return {str(k)[:250]: _num(v, f"{where}.{str(k)[:40]}") for k, v in value.items()}


def _match(value: Any, pattern: re.Pattern, where: str) -> str | None:
    if value is None:
        return None
    _need(isinstance(value, str) and bool(pattern.match(value)), f"{where}: unexpected format")
    return value


def sanitize_result(data: Any) -> dict:
    """Rebuild an untrusted result.json with strict types; raise UsageError naming the bad field."""
    try:
        return _sanitize(data)
    except _Bad as exc:
        raise UsageError(f"result.json artifact rejected: {exc}") from None


def _sanitize(d: Any) -> dict:
    _need(isinstance(d, dict), "top level: expected an object")
    _need(d.get("schema") == 1, "schema: expected 1")
    _need(d.get("verdict") in CONCLUSION, "verdict: expected pass, warn or fail")
    cand = d.get("candidate")
    _need(isinstance(cand, dict), "candidate: expected an object")
    base = d.get("baseline")
    _need(base is None or isinstance(base, dict), "baseline: expected an object or null")
    checks = d.get("checks")
    _need(isinstance(checks, list) and len(checks) <= 1000, "checks: expected a list of at most 1000")
    pr = d.get("pr")
    _need(pr is None or (isinstance(pr, int) and not isinstance(pr, bool) and pr > 0), "pr: expected a positive integer")
    out = {
        "schema": 1,
        "verdict": d["verdict"],
        "experiment": _text(d.get("experiment"), "experiment", 250, optional=False),
        "model": _text(d.get("model"), "model", 250),
        "pr": pr,
        "head_sha": _match(d.get("head_sha"), _SHA, "head_sha"),
        "config_path": _match(d.get("config_path"), _SAFE_PATH, "config_path"),
        "ci_run_url": _match(d.get("ci_run_url"), _URL, "ci_run_url"),
        "candidate": {
            "run_id": _match(cand.get("run_id"), _RUN_ID, "candidate.run_id"),
            "experiment_id": _match(cand.get("experiment_id"), _RUN_ID, "candidate.experiment_id"),
            "commit": _match(cand.get("commit"), _SHA, "candidate.commit"),
            "branch": _text(cand.get("branch"), "candidate.branch", 250),
            "metrics": _metrics(cand.get("metrics", {}), "candidate.metrics"),
            "params": {str(k)[:250]: str(v)[:500] for k, v in _dict(cand.get("params", {}), "candidate.params").items()},
            "cached": bool(cand.get("cached")),
            "fingerprint": _text(cand.get("fingerprint"), "candidate.fingerprint", 100),
            "url": _match(cand.get("url"), _URL, "candidate.url"),
        },
        "baseline": None,
        "checks": [_check(c, i) for i, c in enumerate(checks)],
        "metrics": [_metric(m, i) for i, m in enumerate(_list(d.get("metrics", []), "metrics"))],
        "params_diff": [_param(p, i) for i, p in enumerate(_list(d.get("params_diff", []), "params_diff"))],
        "notes": [str(n)[:300] for n in _list(d.get("notes", []), "notes")[:20]],
        "tool": {"name": "mlflow-ci", "version": _text(_dict(d.get("tool", {}), "tool").get("version"), "tool.version", 40) or "?"},
    }
    if base is not None:
        out["baseline"] = {
            "run_id": _match(base.get("run_id"), _RUN_ID, "baseline.run_id"),
            "source": _text(base.get("source"), "baseline.source", 300) or "unknown",
            "description": _text(base.get("description"), "baseline.description", 300) or "baseline",
            "commit": _match(base.get("commit"), _SHA, "baseline.commit"),
            "branch": _text(base.get("branch"), "baseline.branch", 250),
            "metrics": _metrics(base.get("metrics", {}), "baseline.metrics"),
            "url": _match(base.get("url"), _URL, "baseline.url"),
        }
    return out


def _dict(value: Any, where: str) -> dict:
    _need(isinstance(value, dict), f"{where}: expected an object")
    return value


def _list(value: Any, where: str, limit: int = 5000) -> list:
    _need(isinstance(value, list) and len(value) <= limit, f"{where}: expected a list of at most {limit}")
    return value


def _check(c: Any, i: int) -> dict:
    where = f"checks[{i}]"
    c = _dict(c, where)
    _need(c.get("rule") in RULES, f"{where}.rule: unknown rule")
    _need(c.get("passed") in (True, False, None), f"{where}.passed: expected true, false or null")
    _need(c.get("direction", "higher") in ("higher", "lower"), f"{where}.direction: expected higher or lower")
    line = c.get("line")
    _need(line is None or (isinstance(line, int) and not isinstance(line, bool) and 0 < line < 100_000), f"{where}.line: expected a line number")
    return {
        "metric": _text(c.get("metric"), f"{where}.metric", 250, optional=False),
        "rule": c["rule"],
        "limit": _num(c.get("limit"), f"{where}.limit"),
        "value": _num(c.get("value"), f"{where}.value"),
        "baseline": _num(c.get("baseline"), f"{where}.baseline"),
        "bound": _num(c.get("bound"), f"{where}.bound"),
        "passed": c["passed"],
        "blocking": bool(c.get("blocking", True)),
        "direction": c.get("direction", "higher"),
        "message": _text(c.get("message"), f"{where}.message", 500) or "",
        "line": line,
    }


def _metric(m: Any, i: int) -> dict:
    where = f"metrics[{i}]"
    m = _dict(m, where)
    _need(m.get("status") in STATUSES, f"{where}.status: unknown status")
    _need(m.get("direction", "higher") in ("higher", "lower"), f"{where}.direction: expected higher or lower")
    name = _text(m.get("name"), f"{where}.name", 250, optional=False)
    # intervals (and so the report's charts) only for our own evaluate: metric names
    charted = bool(re.fullmatch(r"eval\.[a-z0-9_]{1,40}", name or ""))
    return {
        "name": name,
        **{k: _num(m.get(k), f"{where}.{k}") for k in ("baseline", "candidate", "delta", "delta_pct")},
        "direction": m.get("direction", "higher"),
        "status": m["status"],
        "ci_low": _num(m.get("ci_low"), f"{where}.ci_low") if charted else None,
        "ci_high": _num(m.get("ci_high"), f"{where}.ci_high") if charted else None,
    }


def _param(p: Any, i: int) -> dict:
    where = f"params_diff[{i}]"
    p = _dict(p, where)
    _need(p.get("status") in ("changed", "added", "removed"), f"{where}.status: unknown status")
    return {
        "name": str(p.get("name"))[:250],
        "baseline": None if p.get("baseline") is None else str(p["baseline"])[:500],
        "candidate": None if p.get("candidate") is None else str(p["candidate"])[:500],
        "status": p["status"],
    }


def load_artifact(path: Path) -> dict:
    """Read and sanitize an untrusted result.json (size-limited)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UsageError(f"--from {path}: cannot read it ({exc.strerror})") from None
    if size > ARTIFACT_LIMIT:
        raise UsageError(f"--from {path}: {size} bytes is over the {ARTIFACT_LIMIT} byte limit for a result.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"--from {path}: not valid JSON ({exc})") from None
    return sanitize_result(data)


def fork_target(event: EventContext, result: dict, client: GitHubClient | None) -> Target:
    """The PR and commit to publish to, from the workflow_run event; refuse a mismatched artifact."""
    if event.event_name != "workflow_run":
        raise UsageError(
            f"publish --from is for the privileged workflow_run workflow (this event is {event.event_name or 'not GitHub Actions'})"
        )
    if not event.repository or not event.head_sha:
        raise UsageError("the workflow_run event has no repository or head_sha")
    pr = event.pr_number
    if pr is None and client is not None and event.head_repository and event.head_ref:
        owner = event.head_repository.split("/", 1)[0]
        for pull in client.find_open_pulls(f"{owner}:{event.head_ref}"):
            if pull.get("head", {}).get("sha") == event.head_sha and isinstance(pull.get("number"), int):
                pr = pull["number"]
                break
    if result.get("head_sha") and result["head_sha"] != event.head_sha:
        raise UsageError(
            f"result.json artifact does not match the workflow_run event: head_sha {result['head_sha'][:12]} != {event.head_sha[:12]}"
        )
    if result.get("pr") is not None and pr is not None and result["pr"] != pr:
        raise UsageError(f"result.json artifact does not match the workflow_run event: PR #{result['pr']} != #{pr}")
    return Target(event.repository, pr, event.head_sha, event.run_url)

"""`mlflow-ci publish`: put the result where reviewers and branch protection see it.

- One sticky PR comment per experiment, found by a hidden marker across all pages of comments,
  updated in place, de-duplicated when two runs race or a create was retried.
- A check run (success / failure / neutral) with annotations on the config lines of failed rules,
  batched 50 per request; a commit status when the token cannot write checks; a warning (not a
  failure) when it cannot write either.
- The job summary, ``::error``/``::warning`` annotations and the step outputs.

``--from result.json`` is the fork-safe path: the file is an untrusted artifact, validated as data
(:func:`mlflow_ci.result.load_untrusted`), and it must agree with the ``workflow_run`` event, which
alone decides the PR number and head commit (:func:`fork_target`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mlflow_ci.errors import UsageError
from mlflow_ci.github.actions import ActionsIO, Annotation, truncate_chars
from mlflow_ci.github.client import GitHubClient, GitHubError, GitHubPermissionError
from mlflow_ci.github.event import PR_EVENTS, EventContext
from mlflow_ci.provenance import Record
from mlflow_ci.report import sticky_marker
from mlflow_ci.result import Result

ACTIONS_BOT = "github-actions[bot]"  # the author of everything written with GITHUB_TOKEN
COMMENT_LIMIT = 65_536
COMMENT_BUDGET = 65_000  # a margin under GitHub's limit for the note we may append
CHECK_SUMMARY_LIMIT = 65_535
ANNOTATIONS_PER_REQUEST = 50
CONCLUSION = {"pass": "success", "warn": "neutral", "fail": "failure", "error": "failure"}
STATUS_STATE = {"pass": "success", "warn": "success", "fail": "failure", "error": "error"}


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
    # Who our comments are written by: the app of the check run we created, else the creator of our
    # commit status, else GITHUB_TOKEN's bot.
    identity: str = ACTIONS_BOT

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.log(f"warning: {message}")
        self.io.annotate(Annotation("warning", message, title="mlflow-ci publish"))

    # -- the whole publish -------------------------------------------------------------------------
    def publish(self, target: Target, result: Result | dict, markdown: str, *, report_path: str,
                provenance: Record | None = None) -> PublishResult:
        result = Result.coerce(result)
        self.io.add_summary(markdown, full_report_hint=f"The full report is {report_path} in the job's artifacts.")
        self._annotate_log(result)
        comment_action, comment_url = "skipped", None
        check_kind, check_url = "none", None
        if self.client is None:
            self.warn("no GitHub token (GITHUB_TOKEN): no PR comment, check run or status was written")
        else:  # the check first: branch protection gets its verdict even when the comment cannot be written
            if target.head_sha:
                check_kind, check_url = self.check(target, result, markdown, provenance)
            if target.pr_number:
                comment_action, comment_url = self.sticky_comment(target, sticky_marker(result.experiment), result.verdict, markdown)
        outcome = PublishResult(comment_action, comment_url, check_kind, check_url, tuple(self.warnings))
        if self.warnings:
            self.io.add_summary("\n".join(f"> ⚠️ {w}" for w in self.warnings))
        self.io.set_outputs(step_outputs(result, report_path, comment_url))
        return outcome

    def _annotate_log(self, result: Result) -> None:
        for check in result.failed:
            self.io.annotate(Annotation(
                "error" if check.blocking else "warning",
                f"{check.metric} {check.rule}: {check.message}",
                title=f"mlflow-ci gate: {check.metric}",
                file=result.config_path,
                line=check.line,
            ))

    # -- sticky comment ----------------------------------------------------------------------------
    def sticky_comment(self, target: Target, marker: str, verdict: str, markdown: str) -> tuple[str, str | None]:
        """Create or update our one comment that carries ``marker`` (as ``comment_mode`` says)."""
        assert self.client is not None and target.pr_number
        mode = self.comment_mode
        if mode == "never":
            return "skipped", None
        body = fit_comment(markdown, target.run_url)
        try:
            existing = self._ours(target.pr_number, marker)
            if not existing:
                if mode == "on-failure" and verdict == "pass":
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
        except GitHubError as exc:
            if exc.status == 403:
                self.warn(f"could not write the PR comment: {exc.message} (needs 'pull-requests: write'; fork PRs: use the workflow_run path)")
            elif exc.status in (404, 410, 422):  # the PR or issue is gone, locked, or refuses the body
                self.warn(f"could not write the PR comment: {exc.message}; the check carries the verdict")
            else:
                raise
            return "skipped", None

    def _ours(self, pr: int, marker: str) -> list[dict]:
        """Our comments on the PR (all pages), oldest first: the marker *and* our identity as author.

        A comment by anyone else is never edited or deleted; one that carries our marker is reported.
        """
        assert self.client is not None
        ours, spoofed = [], []
        for comment in self.client.list_comments(pr):
            if marker not in str(comment.get("body") or ""):
                continue
            (ours if author(comment) == self.identity else spoofed).append(comment)
        for comment in spoofed:
            self.log(f"warning: comment {comment.get('id')} by {author(comment) or 'an unknown user'} carries mlflow-ci's "
                     f"marker but was not written by {self.identity}; left alone")
        return sorted(ours, key=lambda c: c.get("id", 0))

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
    def check(self, target: Target, result: Result, markdown: str, provenance: Record | None = None) -> tuple[str, str | None]:
        assert self.client is not None and target.head_sha
        name = self.check_name or f"mlflow-ci / {result.experiment}"
        verdict = result.verdict
        try:
            return "check_run", self._check_run(target, name, result, markdown, provenance)
        except GitHubPermissionError as exc:
            if exc.status != 403:
                raise
            self.log(f"cannot write a check run ({exc.message}); falling back to a commit status")
            if provenance:
                self.warn("a commit status carries no provenance record: promote will not find this model's digest (grant 'checks: write')")
        try:
            status = self.client.create_status(target.head_sha, {
                "state": STATUS_STATE[verdict],
                "context": name[:100],
                "description": status_description(result),
                **({"target_url": target.run_url} if target.run_url else {}),
            })
            self.identity = (status.get("creator") or {}).get("login") or self.identity
            return "status", status.get("url")
        except GitHubPermissionError as exc:
            if exc.status != 403:
                raise
            self.warn(
                "could not write a check run or a commit status (the token lacks 'checks: write' and "
                "'statuses: write', as on fork PRs); the job's exit code carries the verdict"
            )
            return "none", None

    def plain_check(self, target: Target, name: str, title: str, summary: str) -> str | None:
        """A successful check run that carries no result (a model no file of the PR touched)."""
        assert self.client is not None and target.head_sha
        run = self.client.create_check_run({
            "name": name, "head_sha": target.head_sha, "status": "completed", "conclusion": "success",
            "output": {"title": title, "summary": summary}, **({"details_url": target.run_url} if target.run_url else {}),
        })
        return run.get("html_url")

    def _check_run(self, target: Target, name: str, result: Result, markdown: str, provenance: Record | None) -> str | None:
        """The check run; with a provenance record in ``external_id`` (what promote reads back) and at
        the top of the summary (what people read), never cut by the shortening of the report."""
        assert self.client is not None
        title = status_description(result)
        head = (provenance.markdown() + "\n" if provenance else "") + computed_where(result)
        summary = head + truncate_chars(markdown, CHECK_SUMMARY_LIMIT - len(head),
                                        note="\n\n_Shortened to fit the check run summary limit._\n")
        annotations = check_annotations(result)
        first, rest = annotations[:ANNOTATIONS_PER_REQUEST], annotations[ANNOTATIONS_PER_REQUEST:]
        payload = {
            "name": name,
            "head_sha": target.head_sha,
            "status": "completed",
            "conclusion": CONCLUSION[result.verdict],
            "output": {"title": title, "summary": summary, "annotations": first},
            **({"details_url": target.run_url} if target.run_url else {}),
            **({"external_id": provenance.external_id()} if provenance else {}),
        }
        run = self.client.create_check_run(payload)
        slug = (run.get("app") or {}).get("slug")
        self.identity = f"{slug}[bot]" if slug else self.identity
        for start in range(0, len(rest), ANNOTATIONS_PER_REQUEST):
            batch = rest[start : start + ANNOTATIONS_PER_REQUEST]
            self.client.update_check_run(run["id"], {"output": {"title": title, "summary": summary, "annotations": batch}})
        return run.get("html_url")


def author(comment: dict) -> str | None:
    return (comment.get("user") or {}).get("login")


def step_outputs(result: Result, report_path: str, comment_url: str | None = None) -> dict[str, str]:
    """The action's step outputs (``$GITHUB_OUTPUT``), with or without publishing."""
    return {
        "verdict": result.verdict,
        "run-id": result.candidate.run_id or "",
        "report-path": report_path,
        "comment-url": comment_url or "",
    }


def status_description(result: Result) -> str:
    if result.error is not None:
        text = f"ERROR in {result.error.stage}: {result.error.reason}"
        return text if len(text) <= 140 else text[:139] + "…"
    checks = [c for c in result.checks if c.passed is not None]
    failed = result.failed
    text = f"{result.verdict.upper()}: {len(checks) - len(failed)}/{len(checks)} rules passed"
    if failed:
        text += " (failed: " + ", ".join(sorted({c.metric for c in failed})) + ")"
    return text if len(text) <= 140 else text[:139] + "…"


def check_annotations(result: Result) -> list[dict]:
    path = result.config_path or "mlflow-ci.yml"
    out = []
    for check in result.failed:
        line = check.line or 1
        out.append({
            "path": path,
            "start_line": line,
            "end_line": line,
            "annotation_level": "failure" if check.blocking else "warning",
            "title": f"{check.metric} {check.rule}"[:255],
            "message": check.message[:64_000],
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


def event_target(event: EventContext, result: Result, client: GitHubClient | None) -> Target:
    """Where an artifact is published: the PR and commit of the event, never of the file.

    ``workflow_run``: the fork publisher (:func:`fork_target`). ``pull_request``: the trusted half of a
    same-repository PR check, publishing what its untrusted half produced in the same workflow run.
    """
    if event.event_name == "workflow_run":
        return fork_target(event, result, client)
    if event.event_name not in PR_EVENTS or not event.repository or not event.head_sha:
        raise UsageError(f"publish --from needs a pull_request or workflow_run event (this is {event.event_name or 'not GitHub Actions'})")
    agrees(result, event.head_sha, event.pr_number, "pull_request")
    return Target(event.repository, event.pr_number, event.head_sha, event.run_url)


def agrees(result: Result, head_sha: str, pr: int | None, event_name: str) -> None:
    if result.head_sha and result.head_sha != head_sha:
        raise UsageError(
            f"result.json artifact does not match the {event_name} event: head_sha {result.head_sha[:12]} != {head_sha[:12]}"
        )
    if result.pr is not None and pr is not None and result.pr != pr:
        raise UsageError(f"result.json artifact does not match the {event_name} event: PR #{result.pr} != #{pr}")


def fork_target(event: EventContext, result: Result | dict, client: GitHubClient | None) -> Target:
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
    agrees(Result.coerce(result), event.head_sha, pr, "workflow_run")
    return Target(event.repository, pr, event.head_sha, event.run_url)


def computed_where(result: Result) -> str:
    """Who computed the verdict, said at the top of every check run: the job that ran the PR's code (so the
    verdict is as trustworthy as the review of that code), with the parts a trusted job recomputed."""
    judged = result.genai is not None and result.genai.judged_by == "publisher"
    parts = [f"{', '.join(result.recomputed[:6])} recomputed by the trusted job from the model's files"] if result.recomputed else []
    parts += ["the GenAI judge's verdicts recomputed by the trusted job, from the PR's answers"] if judged else []
    if not parts:
        return "_Verdict computed in the PR's job: as trustworthy as the PR's code review._\n\n"
    return f"_Verdict recomputed by the trusted job where it is safe: {'; '.join(parts)}; the rest computed in the PR's job._\n\n"

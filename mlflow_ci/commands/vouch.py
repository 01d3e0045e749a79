"""Who wrote a provenance record: the workflow run it names, as the Actions API describes that run.

Every workflow's ``GITHUB_TOKEN`` writes check runs as the same ``github-actions`` app, so a check run's
author proves nothing: a workflow pushed to another branch, a dispatch, or a PR's own workflow can post
a passing check run on the PR head with a record of its choosing. What no workflow can forge is how
GitHub describes a workflow run. Promote therefore accepts a record only when the run it names
(:attr:`~mlflow_ci.provenance.Record.workflow_run`):

1. is a completed ``pull_request`` run of the PR's head commit; when GitHub lists the run's pull
   requests (it lists none for a fork's), this PR is among them;
2. ran a workflow file (``path``) that promote's own checkout of the default branch holds — the
   repository's reviewed caller workflow — and the PR did not change the repository's workflows or local
   actions (:func:`changed_workflows`), so the file that ran is the reviewed one;
3. when the record names an artifact (the two-job PR workflow): called mlflow-ci's ``mlflow-ci-pr.yml``
   exactly as that caller pins it (``referenced_workflows``, ``owner/repo/path@ref`` as written), so the
   publish job is mlflow-ci's at a known commit; the artifact is then fetched from that run only, and its
   ``result.json`` must say the recorded run passed (:mod:`.chain`), so a forged passing conclusion
   cannot promote a candidate the gate failed;
4. when it names no artifact (a single-job check, the root action, the fan-out leaderboard): succeeded —
   the job exits 1 on a failing gate.

A PR that changes ``.github/workflows/`` or ``.github/actions/`` ran its own workflow: nothing it
recorded can be told from what an attacker would record, so promote refuses it unless a maintainer
passes ``--allow-unverified`` (the version is then tagged ``provenance: unverified (the PR changed
workflows …)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mlflow_ci.errors import NotValidatedError, printable
from mlflow_ci.github.client import GitHubError
from mlflow_ci.provenance import Record

OWN_CODE = (".github/workflows/", ".github/actions/")  # what decides which code a PR's workflow run executes
FILES_LISTED = 3000  # GitHub lists at most this many files of a PR
CALLER = re.compile(r"\.github/workflows/[A-Za-z0-9._-]+\.ya?ml")
PINS_PR_WORKFLOW = re.compile(
    r"^\s*(?:-\s+)?uses:\s*['\"]?(?P<ref>[\w.-]+/[\w.-]+/\.github/workflows/mlflow-ci-pr\.yml@[\w./-]+)", re.MULTILINE)
ALLOW_HINT = ("review the PR's workflow change, then promote with --allow-unverified (the version is tagged unverified), "
              "or promote a run you checked with --run RUN_ID")


@dataclass(frozen=True)
class Vouched:
    """The workflow run that made a record, as GitHub describes it."""
    run_id: int
    caller: str  # the caller workflow's path in this repository
    called: str | None  # mlflow-ci's PR workflow as the caller pins it, for a two-job check

    def describe(self) -> str:
        via = f" → {self.called}" if self.called else ""
        return f"pull_request workflow run {self.run_id} of {self.caller}{via}"


def changed_workflows(client, pr: int) -> list[str]:
    """The workflow and local-action files PR ``pr`` adds, changes, renames or removes."""
    try:
        files = client.pull_files(pr)
    except GitHubError as exc:
        raise NotValidatedError(f"cannot list the files of PR #{pr} ({exc.message}), so whether it changed the "
                                "repository's workflows cannot be told; refusing to promote",
                                hint="grant the deploy job 'pull-requests: read'") from None
    if len(files) >= FILES_LISTED:
        raise NotValidatedError(f"PR #{pr} changes {FILES_LISTED:,} files or more; GitHub lists no more, so whether it "
                                "changed the repository's workflows cannot be told; refusing to promote", hint=ALLOW_HINT)
    touched = set()
    for item in files:
        for key in ("filename", "previous_filename"):
            name = item.get(key)
            if isinstance(name, str) and name.startswith(OWN_CODE):
                touched.add(name)
    return sorted(touched)


def workflows_changed_refusal(pr: int, touched: list[str]) -> NotValidatedError:
    shown = ", ".join(printable(name)[:120] for name in touched[:5]) + (f" and {len(touched) - 5} more" if len(touched) > 5 else "")
    return NotValidatedError(
        f"provenance: unverified (the PR changed workflows: {shown}): PR #{pr} ran its own workflow, which could have "
        "written the check run's record; refusing to promote", hint=ALLOW_HINT)


def vouch(client, record: Record, head_sha: str, pr: int | None, checkout: Path) -> Vouched:
    """The run that made ``record``, checked as the module says; refuses (exit 1) saying which rule failed."""
    run_id = record.workflow_run
    if run_id is None:
        raise NotValidatedError("the check run's record names no workflow run (an older mlflow-ci wrote it), so nothing "
                                "shows mlflow-ci's publish job made it; refusing to promote",
                                hint="re-run the PR's mlflow-ci workflow, or promote a run you checked with --run RUN_ID")
    try:
        run = client.workflow_run(run_id)
    except GitHubError as exc:
        raise NotValidatedError(f"workflow run {run_id}, named by the check run's record, cannot be read ({exc.message}); "
                                "refusing to promote", hint="grant the deploy job 'actions: read'") from None
    where = f"workflow run {run_id}, named by the check run's record,"
    event = run.get("event")
    if event != "pull_request":
        raise NotValidatedError(f"{where} ran on {printable(str(event))}, not on the PR's pull_request event: another "
                                "workflow wrote the record; refusing to promote")
    if run.get("head_sha") != head_sha:
        raise NotValidatedError(f"{where} ran at {printable(str(run.get('head_sha')))[:12]}, not at the PR head {head_sha[:12]}; "
                                "refusing to promote")
    if run.get("status") != "completed":
        raise NotValidatedError(f"{where} has not completed; refusing to promote")
    listed = [p.get("number") for p in run.get("pull_requests") or () if isinstance(p, dict)]
    if listed and pr is not None and pr not in listed:
        raise NotValidatedError(f"{where} is a run of PR {', '.join(f'#{n}' for n in listed)}, not of PR #{pr}; refusing to promote")
    caller = str(run.get("path") or "").split("@", 1)[0]
    text = _caller_text(checkout, caller, where)
    called = None
    if record.artifact:
        pinned = set(m.group("ref") for m in PINS_PR_WORKFLOW.finditer(text))
        referenced = {w.get("path") for w in run.get("referenced_workflows") or () if isinstance(w, dict)}
        both = sorted(pinned & referenced)
        if not both:
            raise NotValidatedError(
                f"{where} did not call mlflow-ci's PR workflow as {caller} pins it "
                f"({', '.join(sorted(pinned)) or 'it pins none'}); refusing to promote")
        called = both[0]
    elif run.get("conclusion") != "success":
        raise NotValidatedError(f"{where} concluded {printable(str(run.get('conclusion')))}, and a single-job check "
                                "fails its run when the gate fails; refusing to promote")
    return Vouched(run_id, caller, called)


def _caller_text(checkout: Path, caller: str, where: str) -> str:
    """The caller workflow as the default branch holds it (the file that ran, since the PR did not change it)."""
    if not CALLER.fullmatch(caller):
        raise NotValidatedError(f"{where} ran {printable(caller)[:120]!r}, not a workflow file of this repository; "
                                "refusing to promote")
    try:
        return (checkout / caller).read_text(encoding="utf-8", errors="replace")
    except OSError:
        raise NotValidatedError(f"{where} ran {caller}, which this checkout of the default branch does not hold: the "
                                "workflow came from another branch; refusing to promote") from None

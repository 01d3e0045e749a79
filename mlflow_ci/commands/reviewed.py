"""A maintainer's one step for a fork PR: ``mlflow-ci publish --pr N --head-sha SHA`` under
``workflow_dispatch``.

A fork's verdict is computed by the fork's code, so it is posted as ``… (fork, unverified)`` and never
satisfies branch protection. Once a maintainer has reviewed the PR at one commit, dispatching this
accepts the verdict that the PR's own workflow run computed at exactly that commit: nothing is
retrained and no PR code runs here (a dispatched job runs in the default branch's cache scope, where
PR code must never run). Only someone with write access can dispatch a workflow.

The checks, each refusing with exit 2: the event is ``workflow_dispatch``; the PR is open, targets
this repository, and its head is still the reviewed commit; the result comes from the newest
``pull_request`` workflow run of that commit from the PR's head repository that *succeeded* and ran one of
the repository's own caller workflows — a file of the dispatched branch's ``.github/workflows/`` that calls
mlflow-ci's ``mlflow-ci-pr.yml`` (or ``--pr-workflow``), never a workflow file the PR added — validated as
untrusted data and for this configuration's experiment. Then the result is published under the required
check name, with the model's provenance record.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci import report
from mlflow_ci.commands.chain import fetch_artifact, record_from_dir
from mlflow_ci.commands.judging import judge_deferred
from mlflow_ci.commands.publish import say, github_client, publish_result
from mlflow_ci.commands.recompute import recompute
from mlflow_ci.config.loader import load_config
from mlflow_ci.errors import NotValidatedError, UsageError
from mlflow_ci.github import event as ghevent
from mlflow_ci.github import publish as pub
from mlflow_ci.provenance import MODEL_DIR
from mlflow_ci.report import md
from mlflow_ci.result import load_untrusted

ARTIFACT = "mlflow-ci-result"
SHA = re.compile(r"[0-9a-f]{40}")
CALLS_PR_WORKFLOW = re.compile(r"^\s*(?:-\s+)?uses:\s*['\"]?[\w.-]+/[\w.-]+/\.github/workflows/mlflow-ci-pr\.yml@", re.MULTILINE)


def caller_workflows(workspace: Path) -> list[str]:
    """The workflow files of the dispatched branch that call mlflow-ci's PR workflow, as a run's ``path``."""
    folder = workspace / ".github" / "workflows"
    found = []
    for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
        try:
            if CALLS_PR_WORKFLOW.search(path.read_text(encoding="utf-8", errors="replace")):
                found.append(f".github/workflows/{path.name}")
        except OSError:
            continue
    return found


def publish_reviewed(env: Mapping[str, str], stream: TextIO, out_dir: Path, config_path: Path, *, pr: int, head_sha: str,
                     comment_mode: str | None, pr_workflow: str | None = None):
    event = ghevent.from_env(env)
    if event.event_name != "workflow_dispatch":
        raise UsageError(f"publish --pr/--head-sha is the maintainers' step for fork PRs and runs from workflow_dispatch "
                         f"(this event is {event.event_name or 'not GitHub Actions'})")
    if not SHA.fullmatch(head_sha):
        raise UsageError("--head-sha must be the full 40-character commit you reviewed")
    cfg = load_config(config_path)
    client = github_client(env, event, stream)
    if client is None:
        raise UsageError("publish needs a GitHub token: set GITHUB_TOKEN (in a workflow: env: GITHUB_TOKEN: ${{ github.token }})")
    callers = [pr_workflow] if pr_workflow else caller_workflows(Path(env.get("GITHUB_WORKSPACE") or "."))
    if not callers:
        raise UsageError("no workflow of this branch's .github/workflows/ calls mlflow-ci-pr.yml, so no PR run can be "
                         "trusted to have run mlflow-ci: pass --pr-workflow .github/workflows/<the PR workflow>.yml")
    head_repo = _reviewed_pull(client, event, pr, head_sha)
    run_id = _pr_run(client, head_sha, head_repo, callers)
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-reviewed-") as tmp:
        unpacked = fetch_artifact(client, run_id, ARTIFACT, Path(tmp))
        result = load_untrusted(unpacked / "result.json")
        if result.error is not None:  # the PR's check failed: published as such, vouching for no model
            result = result.model_copy(update={"experiment": cfg.experiment})
        if result.experiment != cfg.experiment:
            raise UsageError(f"the PR run's result is for experiment {result.experiment!r}, the configuration's is {cfg.experiment!r}")
        target = pub.Target(event.repository or "", pr, head_sha, event.run_url)
        pub.agrees(result, head_sha, pr, "reviewed")
        # the fork's run judged nothing (no key there) and its verdict is its own: judged and recomputed here
        result = recompute(cfg, env, stream, judge_deferred(cfg, env, stream, result, unpacked, out_dir), unpacked / MODEL_DIR)
        record = (record_from_dir(result, unpacked / MODEL_DIR, f"{run_id}/{ARTIFACT}", lambda m: say(stream, m))
                  if result.error is None else None)
    actor = env.get("GITHUB_ACTOR") or "a maintainer"
    markdown = report.render_markdown(result, cfg.report, cfg.root) + (
        f"\n> ✅ Computed by workflow run {run_id} of this fork PR at {head_sha[:12]}; accepted by {md(actor)}, "
        f"who reviewed that commit.\n"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path, _ = report.write_outputs(out_dir, markdown, result)
    return publish_result(
        env, stream, event, target, result, markdown, report_path=report_path,
        comment_mode=comment_mode or cfg.publish.comment,
        check_name=cfg.publish.check_name or f"mlflow-ci / {cfg.experiment}", client=client, provenance=record,
    )


def _reviewed_pull(client, event, pr: int, head_sha: str) -> str:
    """The PR's head repository, once the PR is open, ours, and still at the reviewed commit."""
    pull = client.get_pull(pr)
    head, base = pull.get("head") or {}, pull.get("base") or {}
    if pull.get("state") != "open":
        raise UsageError(f"PR #{pr} is {pull.get('state')}: only an open PR gets a reviewed verdict")
    if (base.get("repo") or {}).get("full_name") != event.repository:
        raise UsageError(f"PR #{pr} does not target {event.repository}")
    if head.get("sha") != head_sha:
        raise UsageError(f"PR #{pr} is now at {str(head.get('sha'))[:12]}, not the reviewed {head_sha[:12]}: review the new commits, then dispatch again")
    repo = (head.get("repo") or {}).get("full_name")
    if not isinstance(repo, str):
        raise UsageError(f"PR #{pr}'s head repository is gone (deleted fork)")
    return repo


def _pr_run(client, head_sha: str, head_repo: str, callers: list[str]) -> int:
    """The newest successful pull_request run of the reviewed commit, from the PR's head repository, of one
    of the repository's caller workflows (a workflow file the PR added is never one)."""
    passed_over = []
    for run in client.workflow_runs(head_sha, "pull_request"):
        if run.get("head_sha") != head_sha or (run.get("head_repository") or {}).get("full_name") != head_repo \
                or not isinstance(run.get("id"), int):
            continue
        if run.get("path") not in callers:
            passed_over.append(f"run {run['id']} ran {str(run.get('path'))[:80]!r}, not {' or '.join(callers)}")
        elif run.get("conclusion") != "success":
            passed_over.append(f"run {run['id']} concluded {str(run.get('conclusion'))[:20]!r}")
        elif client.run_artifacts(run["id"], ARTIFACT):
            return run["id"]
        else:
            passed_over.append(f"run {run['id']} left no {ARTIFACT!r} artifact")
    why = f" ({'; '.join(passed_over[:5])})" if passed_over else ""
    raise NotValidatedError(f"no successful pull_request run of {' or '.join(callers)} at {head_sha[:12]} left a "
                            f"{ARTIFACT!r} artifact{why}",
                            hint="wait for the PR's mlflow-ci run to finish (or re-run it), then dispatch again")

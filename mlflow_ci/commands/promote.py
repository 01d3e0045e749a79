"""`mlflow-ci promote` and `mlflow-ci rollback`: the model that reaches production is the exact run
that was gated on the pull request, not a retrain nobody checked.

Promote, in an order a re-run can always finish:
1. find the run that passed the gate for the merged PR's head commit (event, merge parents, API);
2. unless a version stands for that run already (idempotency key): copy its model, digested as it is copied,
   into the release experiment (which PR credentials cannot write) and register it from there, tagged
   (PR, commit, verdict, metrics, digest, and the gated run it stands for);
3. keep the current champion under ``previous``, move ``champion`` to the version;
4. run the deploy hook (on a verified local copy); on failure put both aliases back and exit 3;
5. tag the version ``mlflow_ci.deployed`` so a re-run knows the hook already succeeded.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlflow_ci.commands.check import do_check
from mlflow_ci.commands.deploy import deploy_or_restore, restore_aliases, run_deploy, stamp, who
from mlflow_ci.commands.prompts import PromptMove, TAG_PROMPT, promote_prompts, restore_prompts, validated_templates
from mlflow_ci.commands.publish import github_client
from mlflow_ci.commands.session import Options, Session
from mlflow_ci.commands.validated import Found, find_validated_run
from mlflow_ci.errors import NotValidatedError, UsageError
from mlflow_ci.github.actions import ActionsIO
from mlflow_ci.github.client import GitHubError
from mlflow_ci.provenance import TAG_DIGEST, model_digest
from mlflow_ci.report import md, model_version_url, number
from mlflow_ci.train import artifact_location
from mlflow_ci.tracking import (
    TAG_CANDIDATE,
    TAG_HEAD_SHA,
    TAG_PR,
    TAG_RELEASE_OF,
    TAG_ROLLED_BACK,
    TAG_VERDICT,
    RunSnapshot,
    VersionInfo,
)


@dataclass(frozen=True)
class PromoteOptions:
    out_dir: Path
    commit: str | None = None
    pr_number: int | None = None
    run_id: str | None = None
    deploy: bool = True
    force: str | None = None  # why a rolled-back run is promoted again
    allow_unverified: bool = False  # promote the record of a PR that changed workflows (tagged unverified)


@dataclass(frozen=True)
class PromoteResult:
    action: str  # promoted | unchanged | redeployed | skipped (the run was rolled back: nothing moved)
    model: str
    alias: str
    version: str
    run: RunSnapshot
    previous: VersionInfo | None
    previous_run: RunSnapshot | None
    deployed: bool
    found_by: str
    summary_path: Path
    provenance: str = "unverified"
    approvals: tuple[str, ...] = ()
    model_url: str | None = None
    prompts: tuple[PromptMove, ...] = ()
    skipped: str | None = None  # why nothing was done (action skipped)

    @property
    def model_uri(self) -> str:
        """``models:/<model>@<alias>``; empty when only prompts were promoted (no model was logged)."""
        return f"models:/{self.model}@{self.alias}" if self.version else ""


# --------------------------------------------------------------------------------------------------
# Promote


def do_promote(s: Session, out_dir: Path, *, commit=None, pr_number=None, run_id=None, deploy=True, force=None,
               allow_unverified=False) -> "PromoteResult | None":
    """``promote`` with the GitHub API (when a token is there), job summary and step outputs; None for a
    push that deleted its ref (nothing was merged)."""
    if s.event.deleted and not (commit or run_id):
        return None
    client = github_client(s.env, s.event, s.stream) if s.event.repository else None
    opts = PromoteOptions(out_dir=out_dir, commit=commit, pr_number=pr_number, run_id=run_id, deploy=deploy, force=force,
                          allow_unverified=allow_unverified)
    result = promote(s, opts, client=client)
    io = ActionsIO(s.env, s.stream)
    io.add_summary(result.summary_path.read_text(encoding="utf-8"))
    io.set_outputs({"version": result.version, "model-uri": result.model_uri, "model-url": result.model_url or ""})
    return result


def approvals(client, run_id: str | None, stream) -> tuple[str, ...]:
    """Who approved this workflow run's deployment, per environment, as GitHub records it; nothing
    when the run needed no approval or GitHub cannot say (the token lacks 'actions: read')."""
    if client is None or not run_id or not run_id.isdigit():
        return ()
    try:
        reviews = client.run_approvals(int(run_id))
    except GitHubError as exc:
        stream.write(f"mlflow-ci: could not read the deployment approvals ({exc.status}); the summary will not name them\n")
        return ()
    out = []
    for review in reviews:
        if review.get("state") != "approved":
            continue
        login = (review.get("user") or {}).get("login") or "someone"
        where = ", ".join(str(e.get("name")) for e in review.get("environments") or [] if isinstance(e, dict) and e.get("name"))
        out.append(f"{login} approved {where or 'the deployment'}" + (f": {review['comment']}" if review.get("comment") else ""))
    return tuple(out)


def promote(s, opts: PromoteOptions, *, client=None, clock: Callable[[], float] = time.time) -> PromoteResult:
    cfg = s.cfg
    tracker = s.registry()
    alias, prev_alias = cfg.champion_alias, cfg.promote.previous_alias
    experiment_id = tracker.experiment_id(cfg.experiment, create=False)
    found = find_validated_run(s, tracker, experiment_id, opts, client)
    if found is None:
        found = _missing(s, opts)
    run = found.run
    if run.tags.get(TAG_ROLLED_BACK):
        if not opts.force:
            return _rolled_back(s, opts, tracker, found, client)
        tracker.set_tags(run.run_id, {TAG_ROLLED_BACK: ""})
    templates = validated_templates(cfg, run)  # before any write: a prompt nobody validated stops promote here
    tags = version_tags(found, s.env, clock)
    forced = {"mlflow_ci.forced_by": who(s.env), "mlflow_ci.forced_reason": opts.force[:5000]} if opts.force else {}
    if not tracker.has_model(run.run_id, cfg.promote.model_path):
        if not templates:
            raise UsageError(f"run {run.run_id} logged no model named {cfg.promote.model_path!r} (promote.model_path): "
                             "nothing to register", hint="log the model in the training command, or set promote.model_path")
        return _promote_prompts_only(s, opts, tracker, found, templates, tags, client, clock)
    version = tracker.version_for_run(cfg.model, run.run_id) or _release(s, tracker, found, tags)
    if forced:  # the version may exist already (the one rolled back): said on it, whoever registered it
        tracker.set_version_tags(cfg.model, version.version, forced)
        version = tracker.version(cfg.model, version.version) or version
    current = tracker.alias_version(cfg.model, alias)
    earlier = tracker.alias_version(cfg.model, prev_alias)
    if current is not None and current.version == version.version:
        action = "unchanged"
        previous = earlier
    else:
        if current is not None:
            tracker.set_alias(cfg.model, prev_alias, current.version)
        tracker.set_alias(cfg.model, alias, version.version)
        action, previous = "promoted", current
    moves = promote_prompts(cfg, tracker, run, templates, tags)
    if moves:
        tracker.set_version_tags(cfg.model, version.version, {TAG_PROMPT + m.name: m.version for m in moves})
        if action == "unchanged" and any(m.action == "promoted" for m in moves):
            action = "promoted"
    deployed = version.tags.get("mlflow_ci.deployed") == "true"
    if cfg.deploy.command and opts.deploy and (action == "promoted" or not deployed):
        def restore() -> None:
            restore_aliases(tracker, cfg.model, alias, prev_alias, current, earlier)
            restore_prompts(cfg, tracker, moves)

        deploy_or_restore(s, tracker, version, opts.out_dir, restore=restore if action == "promoted" else None, clock=clock,
                           prompts=moves)
        deployed = True
        if action == "unchanged":
            action = "redeployed"
    previous_run = tracker.get_run(previous.run_id) if previous and previous.run_id else None
    result = PromoteResult(action, cfg.model, alias, version.version, run, previous, previous_run, deployed, found.how,
                           opts.out_dir / "promote.md", found.provenance, approvals(client, s.event.run_id, s.stream),
                           model_version_url(cfg, s.tracking_uri, cfg.model, version.version), tuple(moves))
    write_summary(result, s.cfg.gate)
    return result


def _release(s, tracker, found: Found, tags: dict[str, str]) -> VersionInfo:
    """A new version for the gated run, registered from a release copy of its model: a run of the release
    experiment holding the files exactly as they were digested here (equal to the recorded digest when a
    check run vouched for them), so what was verified is what is registered, and PR credentials, which
    may write the gated run's experiment, cannot change a champion's files afterwards."""
    cfg, run = s.cfg, found.run
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-release-") as tmp:
        local = tracker.download_model(run.run_id, cfg.promote.model_path, Path(tmp))
        digest = model_digest(local)
        if found.chain is not None and digest != found.chain.record.digest:
            raise NotValidatedError(f"the model of run {run.run_id} now has digest {digest}, the check run recorded "
                                    f"{found.chain.record.digest}: it changed after it was verified; refusing to promote")
        experiment_id = tracker.experiment_id(cfg.release_experiment, create=True,
                                              artifact_location=artifact_location(cfg, tracker.tracking_uri))
        release = tracker.import_model(experiment_id, local, cfg.promote.model_path, run_name=f"release-{run.run_id[:8]}",
                                       tags={TAG_RELEASE_OF: run.run_id, TAG_DIGEST: digest})
    return tracker.register_once(run.run_id, cfg.model, artifact_path=cfg.promote.model_path,
                                 tags={**tags, TAG_DIGEST: digest}, source_run=release)


def _rolled_back(s, opts: PromoteOptions, tracker, found: Found, client) -> PromoteResult:
    """A rolled-back run is never promoted again by accident. Named with ``--run``: refused (exit 1). Found
    for the merged commit (the deploy job run again after a rollback): nothing moves, nothing deploys,
    and the summary says why; only ``--force REASON`` promotes it again."""
    cfg, run = s.cfg, found.run
    why = f"run {run.run_id} was rolled back ({run.tags[TAG_ROLLED_BACK]})"
    how = f"mlflow-ci promote --run {run.run_id} --force 'why it is safe again'"
    if opts.run_id:
        raise NotValidatedError(f"{why}; refusing to promote it again", hint=f"to promote it anyway: {how}")
    s.stream.write(f"mlflow-ci: {why}: not promoted again (to promote it anyway: {how})\n")
    current = tracker.alias_version(cfg.model, cfg.champion_alias)
    result = PromoteResult("skipped", cfg.model, cfg.champion_alias, current.version if current else "", run, None, None, False,
                           found.how, opts.out_dir / "promote.md", found.provenance, approvals(client, s.event.run_id, s.stream),
                           None, (), skipped=f"{why}: not promoted again; to promote it anyway: {how}")
    write_summary(result, cfg.gate)
    return result


def _promote_prompts_only(s, opts: PromoteOptions, tracker, found: Found, templates, tags, client, clock) -> PromoteResult:
    """A GenAI app without a logged model: its validated prompts are what is promoted (and deployed)."""
    cfg = s.cfg
    moves = promote_prompts(cfg, tracker, found.run, templates, tags)
    action = "promoted" if any(m.action == "promoted" for m in moves) else "unchanged"
    deployed = False
    if cfg.deploy.command and opts.deploy and action == "promoted":
        run_deploy(s, opts.out_dir, {"MODEL_NAME": "", "MODEL_VERSION": "", "MODEL_URI": ""}, moves,
                    on_failure=lambda: restore_prompts(cfg, tracker, moves), what="the prompts' aliases were moved back")
        deployed = True
    result = PromoteResult(action, cfg.model, cfg.champion_alias, "", found.run, None, None, deployed, found.how,
                           opts.out_dir / "promote.md", found.provenance, approvals(client, s.event.run_id, s.stream),
                           None, tuple(moves))
    write_summary(result, cfg.gate)
    return result


def _missing(s, opts: PromoteOptions) -> Found:
    if s.cfg.promote.on_missing != "retrain":
        raise NotValidatedError(
            "no run passed the gate for the merged commit: the PR skipped the check, or was merged with a failing gate; refusing to promote",
            hint="re-run the PR check on that commit, promote a validated run with --run RUN_ID, or set promote.on_missing: retrain",
        )
    outcome = do_check(s, Options(out_dir=opts.out_dir, use_cache=True))
    if outcome.verdict == "fail":
        raise NotValidatedError("retrained on the merged commit, and the model failed its gate; refusing to promote")
    run = outcome.train.run if outcome.train else None
    assert run is not None
    fresh = s.registry().get_run(run.run_id)
    return Found(fresh or run, "retrained and gated on the merged commit (promote.on_missing: retrain)",
                 unverified="retrained by promote on the merged commit, in this trusted job")


def version_tags(found: Found, env, clock) -> dict[str, str]:
    run = found.run
    tags = {
        "mlflow_ci.run_id": run.run_id,
        "mlflow_ci.commit": run.tags.get(TAG_HEAD_SHA) or run.commit or "",
        "mlflow_ci.verdict": run.tags.get(TAG_VERDICT, ""),
        "mlflow_ci.promoted_by": who(env),
        "mlflow_ci.promoted_at": stamp(clock),
        "mlflow_ci.provenance": found.provenance[:5000],
    }
    if found.chain is not None:
        tags[TAG_DIGEST] = found.chain.record.digest
        if found.chain.check_url:
            tags["mlflow_ci.check_run"] = found.chain.check_url
    if run.tags.get(TAG_PR):
        tags["mlflow_ci.pr"] = run.tags[TAG_PR]
    if run.tags.get(TAG_CANDIDATE):
        tags["mlflow_ci.candidate"] = run.tags[TAG_CANDIDATE]
    for name, value in sorted(run.metrics.items())[:50]:
        tags[f"mlflow_ci.metric.{name}"] = repr(value)
    return tags


# --------------------------------------------------------------------------------------------------
# Summary


def write_summary(result: PromoteResult, rules) -> None:
    if result.skipped:
        return _write_summary_file(result, [f"## ⏸️ mlflow-ci promote: nothing promoted", "", md(result.skipped) + ".", ""])
    what = (f"{md(result.model)} version {result.version}" if result.version
            else ", ".join(f"prompt {md(m.name)} version {m.version}" for m in result.prompts))
    lines = [
        f"## 🚀 mlflow-ci promote: {what} is @{md(result.alias)}",
        "",
        {"promoted": "Promoted", "unchanged": "Already the champion; nothing moved", "redeployed": "Already the champion; the deploy hook ran again"}[result.action]
        + f": run `{result.run.run_id}`, found as the {md(result.found_by)}."
        + (" Deployed." if result.deployed else ""),
        "",
        ("🔒 Provenance " if result.provenance.startswith("verified") else "⚠️ Provenance ") + md(result.provenance) + ".",
        "",
    ]
    if result.approvals:
        lines += ["Approved: " + "; ".join(md(a, 300) for a in result.approvals) + ".", ""]
    if result.model_url:
        lines += [f"[{md(result.model)} version {result.version} in MLflow]({result.model_url})", ""]
    for move in result.prompts:
        was = f" (was version {move.before.version}, now @{md(result.alias)}'s previous)" if move.before and move.action == "promoted" else ""
        lines += [f"Prompt {md(move.name)}: version {move.version} is @{md(result.alias)}"
                  + (was if move.action == "promoted" else ", unchanged") + ".", ""]
    names = [r.metric for r in rules] or sorted(result.run.metrics)
    if result.previous_run is not None or result.run.metrics:
        prev = result.previous_run.metrics if result.previous_run else {}
        head = f"previous (v{result.previous.version})" if result.previous else "previous"
        promoted = f"promoted (v{result.version})" if result.version else "promoted"
        lines += [f"| Metric | {head} | {promoted} |", "|---|---:|---:|"]
        for name in names:
            lines.append(f"| {md(name)} | {number(prev.get(name))} | {number(result.run.metrics.get(name))} |")
    _write_summary_file(result, lines)


def _write_summary_file(result: PromoteResult, lines: list[str]) -> None:
    result.summary_path.parent.mkdir(parents=True, exist_ok=True)
    result.summary_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (result.summary_path.parent / "promote.json").write_text(json.dumps({
        "action": result.action, "model": result.model, "alias": result.alias, "version": result.version,
        "run_id": result.run.run_id, "previous_version": result.previous.version if result.previous else None,
        "deployed": result.deployed, "found_by": result.found_by, "model_uri": result.model_uri, "skipped": result.skipped,
        "provenance": result.provenance, "approvals": list(result.approvals), "model_url": result.model_url,
        "prompts": [{"name": m.name, "version": m.version, "action": m.action,
                     "previous_version": m.before.version if m.before else None} for m in result.prompts],
    }, indent=2) + "\n", encoding="utf-8")

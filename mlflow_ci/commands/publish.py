"""``mlflow-ci publish``, and publishing for ``check`` and the leaderboard: the GitHub client built
from the environment, and the glue between a result and :class:`~mlflow_ci.github.publish.Publisher`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci import report
from mlflow_ci.commands.chain import record_from_dir, record_from_store
from mlflow_ci.commands.judging import judge_deferred, not_judged
from mlflow_ci.commands.recompute import recompute
from mlflow_ci.commands.projects import (
    MARKER,
    Project,
    combined_markdown,
    overall,
    projects_at,
)
from mlflow_ci.commands.session import Options, Session
from mlflow_ci.commands.stages import CheckResult
from mlflow_ci.config.loader import load_config
from mlflow_ci.config.models import ReportConfig
from mlflow_ci.errors import ServiceError, UsageError, printable
from mlflow_ci.github import event as ghevent
from mlflow_ci.github import publish as pub
from mlflow_ci.github.actions import ActionsIO
from mlflow_ci.github.client import GitHubClient, RetryPolicy
from mlflow_ci.provenance import Record
from mlflow_ci.result import Result, load_untrusted, validate_untrusted
from mlflow_ci.tracking import MlflowTracker, resolve_tracking_uri


def github_client(env: Mapping[str, str], event: ghevent.EventContext, stream: TextIO):
    """A client for the run's repository, or None without a token. Masks the token in Actions."""
    token = (env.get("GITHUB_TOKEN") or env.get("GH_TOKEN") or "").strip()
    if not token:
        return None
    ActionsIO(env, stream).mask(token)
    if any(c.isspace() or not c.isprintable() for c in token):
        raise UsageError("GITHUB_TOKEN holds spaces or control characters besides the token; set it to the token alone")
    if not event.repository:
        raise UsageError("GITHUB_REPOSITORY is not set: cannot tell which repository to publish to")
    return GitHubClient(
        token=token, repository=event.repository, api_url=event.api_url,
        log=lambda m: say(stream, m), policy=retry_policy(env),
    )


def retry_policy(env: Mapping[str, str]):
    """GitHub retry bounds; MLFLOW_CI_GITHUB_MAX_ATTEMPTS and MLFLOW_CI_GITHUB_MAX_WAIT override them."""
    policy = RetryPolicy()
    try:
        if env.get("MLFLOW_CI_GITHUB_MAX_ATTEMPTS"):
            policy.max_attempts = max(int(env["MLFLOW_CI_GITHUB_MAX_ATTEMPTS"]), 1)
        if env.get("MLFLOW_CI_GITHUB_MAX_WAIT"):
            policy.max_total_wait = max(float(env["MLFLOW_CI_GITHUB_MAX_WAIT"]), 0.0)
    except ValueError:
        raise UsageError("MLFLOW_CI_GITHUB_MAX_ATTEMPTS must be a whole number and MLFLOW_CI_GITHUB_MAX_WAIT a number of seconds") from None
    return policy


def say(stream: TextIO, message: str) -> None:
    stream.write(printable(message) + "\n")  # messages may quote GitHub's answers and others' logins
    stream.flush()


def publish_result(
    env: Mapping[str, str],
    stream: TextIO,
    event: ghevent.EventContext,
    target,
    result: Result,
    markdown: str,
    *,
    report_path: Path,
    comment_mode: str,
    check_name: str | None,
    client=None,
    provenance: Record | None = None,
):
    client = client if client is not None else github_client(env, event, stream)
    publisher = pub.Publisher(client, ActionsIO(env, stream), lambda m: say(stream, m), comment_mode, check_name)
    try:
        return publisher.publish(target, result, markdown, report_path=str(report_path), provenance=provenance)
    except ServiceError as exc:
        exc.hint = (
            f"{exc.hint + '; ' if exc.hint else ''}the report is kept in {report_path} and "
            f"{report_path.parent / 'result.json'}; retry only the publishing with: mlflow-ci publish --out {report_path.parent}"
        )
        raise


def publish_check(s: Session, opts: Options, outcome: CheckResult, *, comment_mode: str | None = None):
    """Publish the result of ``check``/``report`` for this run's PR and commit."""
    ctx = s.context(opts)
    ev = s.event
    name = outcome.result.candidate.name
    check_name = s.cfg.publish.check_name or f"mlflow-ci / {s.cfg.experiment}"
    if name:  # a fan-out candidate: its own check run; the PR comment is the leaderboard's
        comment_mode, check_name = "never", f"{check_name} / {name}"
    target = pub.Target(
        repository=ev.repository or "",
        pr_number=ctx.pr_number,
        head_sha=ctx.head_sha or ev.sha or ctx.commit,
        run_url=ev.run_url,
    )
    client = github_client(s.env, ev, s.stream)
    run_id = outcome.result.candidate.run_id
    record = (record_from_store(s.registry(), run_id, s.cfg.promote.model_path, lambda m: say(s.stream, m), s.env.get("GITHUB_RUN_ID"))
              if client is not None and run_id and target.head_sha and outcome.result.error is None else None)
    return publish_result(
        s.env, s.stream, ev, target, outcome.result, outcome.report_path.read_text(encoding="utf-8"),
        report_path=outcome.report_path, comment_mode=comment_mode or s.cfg.publish.comment,
        check_name=check_name, client=client, provenance=record,
    )


def fork_check_name(experiment: str) -> str:
    """What a verdict computed by a fork's code is posted as: never the required check's name."""
    return f"mlflow-ci / {experiment} (fork, unverified)"


def publish_saved(env: Mapping[str, str], stream: TextIO, out_dir: Path, config_path: Path, *, comment_mode: str | None,
                  from_file: Path | None, model_dir: Path | None = None, model_artifact: str | None = None):
    """``mlflow-ci publish``: from the out dir of an earlier check, or from an untrusted artifact.

    With ``--from`` (an artifact) or under ``workflow_run`` the result is untrusted data whose PR and
    commit come from the event (:func:`~mlflow_ci.github.publish.event_target`). Under ``workflow_run``
    (the publisher of fork PRs) nothing is read from the workspace — no config, no template: the
    artifact may have been unpacked there — and the check is posted under the fork name
    (:func:`fork_check_name`). Under ``pull_request`` (the trusted half of a same-repository check) the
    config comes from ``config_path``, which the workflow checks out at the base commit.

    ``model_dir`` is the candidate's model as the check exported it (``check --export-model``): the
    trusted side digests it and records the digest in the check run (:mod:`.chain`), with
    ``model_artifact``, the name of the workflow artifact that carries it, so that promote can find it
    in the zero-server mode. A fork's model is never recorded: its check is not the required one.
    """
    event = ghevent.from_env(env)
    if not (env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")):
        raise UsageError("publish needs a GitHub token: set GITHUB_TOKEN (in a workflow: env: GITHUB_TOKEN: ${{ github.token }})")
    fork = event.event_name == "workflow_run"
    untrusted = from_file is not None or fork
    cfg = None if fork or not config_path.is_file() else load_config(config_path)
    if from_file is None:
        path = out_dir / "result.json"
        try:
            result = validate_untrusted(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, RecursionError) as exc:
            raise UsageError(f"{path}: cannot read it ({type(exc).__name__}); run 'mlflow-ci check' first") from None
    else:
        result = load_untrusted(from_file)
    client = github_client(env, event, stream)
    if cfg is not None and result.error is not None:  # a check that failed early may not know its experiment
        result = result.model_copy(update={"experiment": cfg.experiment})
    if cfg is not None and untrusted and result.experiment != cfg.experiment:
        raise UsageError(f"result.json artifact is for experiment {result.experiment!r}, the configuration's is {cfg.experiment!r}")
    if fork:
        target, check_name = pub.fork_target(event, result, client), fork_check_name(result.experiment)
    elif untrusted:
        target, check_name = pub.event_target(event, result, client), cfg.publish.check_name if cfg else None
    else:
        target = pub.Target(event.repository or "", event.pr_number or result.pr,
                            event.head_sha or result.head_sha or event.sha, event.run_url)
        check_name = cfg.publish.check_name if cfg else None
    # the judge runs here (check --defer-judging), with the key, once the result is known to be this event's; an
    # untrusted result's judge verdicts are never taken as they come
    if fork:
        result = not_judged(result, "a fork's answers are never judged with the repository's key; a maintainer's reviewed run judges them")
    elif untrusted or (result.genai is not None and result.genai.pending):
        result = judge_deferred(cfg, env, stream, result, (from_file or out_dir / "result.json").parent, out_dir)
    if untrusted and not fork:  # eval.* of a model whose format runs no code: recomputed here, from its exported files
        result = recompute(cfg, env, stream, result, model_dir)
    record = None
    if model_dir is not None and not fork and result.error is None:
        artifact = f"{env.get('GITHUB_RUN_ID')}/{model_artifact}" if model_artifact and env.get("GITHUB_RUN_ID") else None
        record = record_from_dir(result, model_dir, artifact, lambda m: say(stream, m))
    markdown = report.render_markdown(result, cfg.report if cfg else ReportConfig(), cfg.root if cfg else Path.cwd())
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path, _ = report.write_outputs(out_dir, markdown, result)
    return publish_result(
        env, stream, event, target, result, markdown, report_path=report_path,
        comment_mode=comment_mode or (cfg.publish.comment if cfg else "always"), check_name=check_name, client=client,
        provenance=record,
    )



def publish_projects(env: Mapping[str, str], stream: TextIO, projects, combined: str, *, comment_mode: str, head_sha: str | None):
    """``check --all``: a check run per project (an unchanged one succeeds, so each can be required;
    a checked one carries its model's provenance record, as a single check's does), then the one PR
    comment with a section per model."""
    event = ghevent.from_env(env)
    client = github_client(env, event, stream)
    target = pub.Target(event.repository or "", event.pr_number, event.head_sha or head_sha or event.sha, event.run_url)
    io, log = ActionsIO(env, stream), (lambda m: say(stream, m))
    if client is None:
        pub.Publisher(None, io, log).warn("no GitHub token (GITHUB_TOKEN): no PR comment or check runs were written")
        return None
    for project in projects:
        if project.outcome is None:
            _unchanged(client, io, log, target, project)
            continue
        outcome = project.outcome
        record = None
        if outcome.result.error is None and outcome.result.candidate.run_id and target.head_sha:
            cfg = load_config(project.config)
            registry = MlflowTracker(resolve_tracking_uri(cfg.tracking_uri, env, cfg.root))
            record = record_from_store(registry, outcome.result.candidate.run_id, cfg.promote.model_path, log, env.get("GITHUB_RUN_ID"))
        pub.Publisher(client, io, log, "never", project.check_name).publish(
            target, outcome.result, outcome.report_path.read_text(encoding="utf-8"), report_path=str(outcome.report_path),
            provenance=record)
    return _one_comment(client, io, log, target, comment_mode, overall(projects), combined)


def _unchanged(client, io, log, target: pub.Target, project: Project) -> None:
    """The passing check run of a model no file of the PR touched."""
    if target.head_sha:
        pub.Publisher(client, io, log).plain_check(
            target, project.check_name, "unchanged: nothing to check",
            f"No file of {project.folder} changed since the base commit, so {project.experiment} was not checked.")


def _one_comment(client, io, log, target: pub.Target, comment_mode: str, verdict: str, combined: str):
    """The one sticky comment of a repository of several models."""
    comment = (pub.Publisher(client, io, log, comment_mode).sticky_comment(target, MARKER, verdict, combined)
               if target.pr_number else ("skipped", None))
    io.set_outputs({"verdict": verdict, "comment-url": comment[1] or ""})
    return comment


RESULT_ARTIFACT = "mlflow-ci-result"  # the PR workflow's artifact; per model of a monorepo: mlflow-ci-result-<folder slug>


def publish_gathered(env: Mapping[str, str], stream: TextIO, results: Path, changed: list[str], out_dir: Path, *,
                     comment_mode: str | None):
    """The trusted publisher of a monorepo's PR: the projects are the base commit's (the working
    directory is its checkout: check names and report settings come from there), ``changed`` the
    folders the matrix checked; each checked model's result is read from ``results`` as untrusted data
    (``<artifact>-<slug>/result.json``, its model next to it) and published under its check name with
    its provenance record; an unchanged model gets a passing check run; then the one comment."""
    event = ghevent.from_env(env)
    if not (env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")):
        raise UsageError("publish needs a GitHub token: set GITHUB_TOKEN (in a workflow: env: GITHUB_TOKEN: ${{ github.token }})")
    if event.event_name not in ghevent.PR_EVENTS or not event.head_sha:
        raise UsageError(f"publish --projects needs a pull_request event (this is {event.event_name or 'not GitHub Actions'})")
    client = github_client(env, event, stream)
    io, log = ActionsIO(env, stream), (lambda m: say(stream, m))
    target = pub.Target(event.repository or "", event.pr_number, event.head_sha, event.run_url)
    base = projects_at(Path.cwd())
    gathered = []
    for project in base:
        if project.folder not in changed:
            _unchanged(client, io, log, target, project)
            gathered.append(replace(project, changed=False))
            continue
        gathered.append(_publish_one(env, stream, event, client, project, results, out_dir))
    combined = combined_markdown(gathered, event.base_sha)
    added = sorted(set(changed) - {p.folder for p in base})
    if added:  # their configuration is the PR's own: nothing trusted names their check, so none is posted
        combined += (f"\nNew model folders in this PR, not on the base branch: {', '.join(report.md(f) for f in added)}. "
                     "They were checked in their jobs (see the workflow run); their check runs start once they are merged.\n")
    return _one_comment(client, io, log, target, comment_mode or "always", overall(gathered), combined)


def _publish_one(env, stream, event, client, project: Project, results: Path, out_dir: Path) -> Project:
    """One changed model of a monorepo: its untrusted result validated, rendered with the base's settings, published."""
    cfg = load_config(project.config)
    folder = results / f"{RESULT_ARTIFACT}-{project.slug}"
    try:
        result = load_untrusted(folder / "result.json", flag=f"{project.folder}:")
        if result.experiment != cfg.experiment:
            raise UsageError(f"the result is for experiment {result.experiment!r}, the configuration's is {cfg.experiment!r}")
    except UsageError as exc:  # no result, or one refused: the model's check fails and says why
        result = Result.build({"schema": 1, "verdict": "error", "experiment": cfg.experiment, "candidate": {}, "checks": [],
                               "error": {"stage": "report", "exit_code": 2, "reason": f"{project.folder}: {exc.message}"[:1000],
                                         "hint": "the check job's log says why it wrote no usable result"}})
    result = recompute(cfg, env, stream, judge_deferred(cfg, env, stream, result, folder, out_dir / project.slug), folder / "model")
    target = pub.event_target(event, result, client)
    record = None
    if result.error is None:
        artifact = f"{env.get('GITHUB_RUN_ID')}/{folder.name}" if env.get("GITHUB_RUN_ID") else None
        record = record_from_dir(result, folder / "model", artifact, lambda m: say(stream, m))
    markdown = report.render_markdown(result, cfg.report, cfg.root)
    report_path, result_path = report.write_outputs(out_dir / project.slug, markdown, result)
    pub.Publisher(client, ActionsIO(env, stream), lambda m: say(stream, m), "never", project.check_name).publish(
        target, result, markdown, report_path=str(report_path), provenance=record)
    return replace(project, changed=True, outcome=CheckResult(result.verdict, result, report_path, result_path, None))

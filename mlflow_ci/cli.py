"""The command line: a thin click layer over the plain functions in :mod:`mlflow_ci.commands`.

Exit codes (PRODUCT.md): 0 passed, 1 gate failed, 2 bad usage or configuration, 3 training failed,
4 a service failed. They are decided in one place, :func:`main`.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import click

from mlflow_ci import __version__
from mlflow_ci.config import COMMENT_MODES
from mlflow_ci.errors import (
    EXIT_GATE_FAILED,
    EXIT_OK,
    EXIT_SERVICE,
    EXIT_USAGE,
    MlflowCiError,
    UsageError,
    printable,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _config_option(f):
    return click.option(
        "--config", "config_path", default="mlflow-ci.yml", show_default=True,
        type=click.Path(dir_okay=False), help="Path to the configuration file.",
    )(f)


def _out_option(f):
    return click.option(
        "--out", "out_dir", default=".mlflow-ci", show_default=True,
        type=click.Path(file_okay=False), help="Folder for report.md, result.json and train state.",
    )(f)


def _baseline_options(f):
    f = click.option("--baseline", help="Baseline to compare against: a run id, models:/NAME@ALIAS or models:/NAME/VERSION.")(f)
    f = click.option("--base-branch", help="Base branch of the PR (default: GITHUB_BASE_REF, baseline.branch, then main).")(f)
    f = click.option("--pr", "pr_number", type=click.IntRange(min=1), help="Pull request number, recorded on the run.")(f)
    return f


def _train_base_option(f):
    return click.option(
        "--train-base/--no-train-base", "train_base", default=None,
        help="When no baseline is found, train the base commit in this job (default: only in GitHub Actions with a local store).",
    )(f)


def echo(text: str = "", err: bool = False) -> None:
    """Print one line: text from a pull request (metric names, messages) cannot break it or start a
    workflow command (:func:`mlflow_ci.errors.printable`)."""
    click.echo(printable(text), err=err)


def _stage_options(f):
    """The options of the stages that work on an existing candidate run: compare, gate, report."""
    f = click.option("--run", "run_id", help="Candidate run id (default: the run from the last 'train').")(f)
    return _config_option(_out_option(_baseline_options(f)))


def _session(config_path: str):
    from mlflow_ci.commands.session import make_session
    from mlflow_ci.config.loader import load_config

    cfg = load_config(config_path)
    return make_session(cfg, dict(os.environ), Path.cwd(), sys.stdout)


def _options(out_dir: str, **values):
    from mlflow_ci.commands.session import Options

    return Options(out_dir=Path(out_dir), **values)


def _verdict_exit(verdict: str) -> int:
    return EXIT_GATE_FAILED if verdict == "fail" else EXIT_OK


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="mlflow-ci")
@click.option("--debug", is_flag=True, help="Show a traceback for failures (also MLFLOW_CI_DEBUG=1).")
def cli(debug: bool) -> None:
    """Train, compare, gate and promote MLflow models on every pull request.

    Exit codes: 0 passed, 1 gate failed, 2 bad usage or configuration,
    3 training failed or timed out, 4 a service (MLflow, GitHub) failed after retries.
    """


@cli.command(context_settings=CONTEXT)
@_config_option
@_out_option
@_baseline_options
@click.option("--no-cache", is_flag=True, help="Always train, even if a finished run has the same input fingerprint.")
@click.option("--publish/--no-publish", "publish", default=None,
              help="Publish to GitHub (comment, check run, summary, outputs). Default: only inside GitHub Actions.")
@click.option("--comment", "comment_mode", type=click.Choice(COMMENT_MODES), help="PR comment mode (default: publish.comment, then always).")
@click.option("--candidate", help="Fan-out: name this candidate (matrix job); 'report --pr N' aggregates them.")
@_train_base_option
@click.option("--all", "all_projects", is_flag=True,
              help="Every mlflow-ci.yml of the repository: check the models whose files changed since the base, one comment, a check run each.")
@click.option("--export-model", is_flag=True,
              help="Copy the candidate's model to OUT/model, for a trusted publisher to digest (publish --model-dir).")
@click.option("--defer-judging", is_flag=True,
              help="genai: score no judge here (no key is read); write OUT/genai-answers.json for the trusted "
                   "publisher, which judges the answers (publish --from). Their rules are pending until then.")
def check(config_path, out_dir, baseline, base_branch, pr_number, no_cache, publish, comment_mode, candidate, train_base,
          export_model, all_projects, defer_judging):
    """The PR check: train, compare with the baseline, gate, write the report, publish.

    Writes OUT/report.md and OUT/result.json; exits 1 when a blocking rule fails.
    """
    from mlflow_ci.commands.check import (
        Progress,
        check_failed,
        clear_outputs,
        do_check,
        export_candidate_model,
    )

    opts = _options(out_dir, baseline=baseline, base_branch=base_branch, pr_number=pr_number,
                    use_cache=not no_cache, candidate=candidate, train_base=train_base, defer_judging=defer_judging)
    if defer_judging and (publish or all_projects):
        raise UsageError("--defer-judging leaves the judge to a trusted publisher: run the check with --no-publish, "
                         "then 'mlflow-ci publish --from OUT/result.json' where the judge's key is")
    if all_projects:
        return _check_all(opts, publish, comment_mode)
    clear_outputs(opts.out_dir)  # never a stale report, result or model from an earlier check
    progress, s = Progress(), None
    try:
        s = _session(config_path)
        outcome = do_check(s, opts, progress)
    except Exception as exc:  # noqa: BLE001 - every failure leaves outputs that say so, then exits as before
        failed = check_failed(s, opts, progress, exc, Path(config_path))
        _echo_outcome(failed)
        if s is not None and _publishing(publish):
            _publish_failure(s, opts, failed, comment_mode)
        raise
    _echo_outcome(outcome)
    if export_model and (exported := export_candidate_model(s, opts, outcome)):
        echo(f"model: {exported}")
    if _publishing(publish):
        from mlflow_ci.commands.publish import publish_check

        _echo_published(publish_check(s, opts, outcome, comment_mode=comment_mode))
    else:
        from mlflow_ci.github.actions import ActionsIO
        from mlflow_ci.github.publish import step_outputs

        ActionsIO(s.env, sys.stdout).set_outputs(step_outputs(outcome.result, str(outcome.report_path)))
    return _verdict_exit(outcome.verdict)


def _check_all(opts, publish, comment_mode) -> int:
    """``check --all``: the changed projects of the repository, one comment, a check run per project."""
    from mlflow_ci.commands.projects import check_all, overall

    projects = check_all(Path.cwd(), os.environ, sys.stdout, opts)
    echo("")
    for project in projects:
        echo(f"{project.folder:<30} {project.experiment:<30} {project.verdict}")
    if not any(p.outcome for p in projects):
        echo("nothing to check: no model's files changed since the base commit")
    echo(f"report: {opts.out_dir / 'report.md'}")
    if _publishing(publish):
        from mlflow_ci.commands.publish import publish_projects

        head = next((p.outcome.result.head_sha for p in projects if p.outcome), None)
        publish_projects(os.environ, sys.stdout, projects, (opts.out_dir / "report.md").read_text(encoding="utf-8"),
                         comment_mode=comment_mode or "always", head_sha=head)
    from mlflow_ci.github.actions import ActionsIO

    ActionsIO(os.environ, sys.stdout).set_outputs({"verdict": overall(projects), "report-path": str(opts.out_dir / "report.md")})
    errors = [p.outcome.result.error.exit_code for p in projects if p.outcome and p.outcome.result.error]
    return max(errors) if errors else _verdict_exit(overall(projects))


def _json_names(text: str, flag: str, what: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{flag}: expected a JSON list of {what}, got {text[:80]!r}")
    return value


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(_json_names(text, "--expect", "candidate names"))


@cli.command("projects", context_settings=CONTEXT)
@click.option("--base-branch", help="Base branch of the PR (default: GITHUB_BASE_REF); without one, every project counts as changed.")
def projects(base_branch):
    """List the model projects of the repository (every mlflow-ci.yml git tracks) and which changed since the base.

    Prints {"base_commit": ..., "projects": [{folder, experiment, check_name, changed}]}; in GitHub Actions it also
    sets the step outputs changed (JSON list of the changed folders: the reusable PR workflow's matrix), all and any.
    """
    from mlflow_ci.commands.projects import list_projects
    from mlflow_ci.github.actions import ActionsIO

    listed, base = list_projects(Path.cwd(), os.environ, base_branch)
    echo(json.dumps({"base_commit": base, "projects": [
        {"folder": p.folder, "experiment": p.experiment, "check_name": p.check_name, "changed": p.changed} for p in listed]}, indent=2))
    changed = [p.folder for p in listed if p.changed]
    ActionsIO(os.environ, sys.stdout).set_outputs({"changed": json.dumps(changed), "all": json.dumps([p.folder for p in listed]),
                                                    "any": "true" if changed else "false"})
    return EXIT_OK


def _publishing(publish: bool | None) -> bool:
    return publish if publish is not None else os.environ.get("GITHUB_ACTIONS") == "true"


def _echo_outcome(outcome) -> None:
    from mlflow_ci.terminal import color_wanted, render

    echo("")
    for line in render(outcome.result, color=color_wanted(os.environ, sys.stdout)):
        echo(line)
    echo(f"report: {outcome.report_path}")
    echo(f"result: {outcome.result_path}")


def _publish_failure(s, opts, failed, comment_mode) -> None:
    """A failed check is published too (a failed check run, and a comment that says why); when that
    fails as well, the original error still decides the exit code."""
    from mlflow_ci.commands.publish import publish_check

    try:
        _echo_published(publish_check(s, opts, failed, comment_mode=comment_mode))
    except MlflowCiError as exc:
        echo(f"warning: the failure could not be published: {exc.message}", err=True)


def _echo_published(result) -> None:
    echo(f"comment: {result.comment_action}" + (f" {result.comment_url}" if result.comment_url else ""))
    echo(f"check: {result.check_kind}" + (f" {result.check_url}" if result.check_url else ""))


@cli.command(context_settings=CONTEXT)
@click.option("--config", "config_path", default="mlflow-ci.yml", show_default=True, type=click.Path(dir_okay=False),
              help="Configuration file (optional here: report and publish settings are read from it when it exists).")
@_out_option
@click.option("--from", "from_file", type=click.Path(dir_okay=False, exists=True),
              help="Publish an untrusted result.json artifact (fork-safe workflow_run path).")
@click.option("--comment", "comment_mode", type=click.Choice(COMMENT_MODES), help="PR comment mode (default: publish.comment, then always).")
@click.option("--model-dir", type=click.Path(file_okay=False),
              help="The candidate's model as 'check --export-model' wrote it: its digest is recorded in the check run for promote.")
@click.option("--model-artifact", metavar="NAME",
              help="The workflow artifact that carries --model-dir, recorded so that promote can fetch the model (zero-server mode).")
@click.option("--pr", "pr_number", type=int, help="With --head-sha, under workflow_dispatch: accept a reviewed fork PR's verdict (maintainers).")
@click.option("--head-sha", metavar="SHA", help="The fork PR commit the maintainer reviewed (full SHA); see --pr.")
@click.option("--pr-workflow", metavar="PATH",
              help="With --pr: the caller workflow whose run is accepted (default: the workflow of .github/workflows/ that calls mlflow-ci-pr.yml).")
@click.option("--projects", "projects_dir", type=click.Path(file_okay=False),
              help="Monorepo: the folder of the downloaded per-model result artifacts; run in the base commit's checkout.")
@click.option("--changed", "changed_json", metavar="JSON", help="With --projects: the JSON list of the folders the matrix checked.")
def publish(config_path, out_dir, from_file, comment_mode, model_dir, model_artifact, pr_number, head_sha, pr_workflow, projects_dir,
            changed_json):
    """Publish a result: sticky PR comment, check run (or commit status), job summary, annotations, outputs.

    Without --from it publishes OUT/result.json of an earlier check (to retry a failed publish).
    With --from the file is untrusted data: the PR and commit come from the event, never from the file,
    and a file that disagrees with the event is refused (exit 2). Under pull_request (the trusted half of
    the PR workflow) the config is read from --config (the base commit's). Under workflow_run (forks)
    nothing is read from the workspace (no config, no template) and the check is named
    '... (fork, unverified)', never the required check.
    With --pr N --head-sha SHA under workflow_dispatch (a maintainer, after reviewing a fork PR at SHA):
    the result of the PR's own workflow run at SHA is published under the required check name.
    With --model-dir (never on the fork path) the model's digest, run id and model id go into the check
    run's external_id and summary; promote verifies them on merge.
    Needs GITHUB_TOKEN; GITHUB_API_URL is respected (GitHub Enterprise).
    """
    from mlflow_ci.commands.publish import publish_saved

    if projects_dir is not None or changed_json is not None:
        from mlflow_ci.commands.publish import publish_gathered

        changed = _json_names(changed_json, "--changed", "folders") if projects_dir and changed_json is not None else None
        if changed is None or from_file or model_dir or pr_number is not None:
            raise UsageError("publish: --projects and --changed go together, without --from, --model-dir or --pr")
        publish_gathered(dict(os.environ), sys.stdout, Path(projects_dir), changed, Path(out_dir), comment_mode=comment_mode)
        return EXIT_OK
    if pr_workflow is not None and pr_number is None:
        raise UsageError("publish: --pr-workflow goes with --pr and --head-sha")
    if pr_number is not None or head_sha is not None:
        if pr_number is None or head_sha is None or from_file or model_dir:
            raise UsageError("publish: --pr and --head-sha go together, without --from or --model-dir")
        from mlflow_ci.commands.reviewed import publish_reviewed

        _echo_published(publish_reviewed(dict(os.environ), sys.stdout, Path(out_dir), Path(config_path), pr=pr_number,
                                         head_sha=head_sha, comment_mode=comment_mode, pr_workflow=pr_workflow))
        return EXIT_OK
    result = publish_saved(dict(os.environ), sys.stdout, Path(out_dir), Path(config_path), comment_mode=comment_mode,
                           from_file=Path(from_file) if from_file else None,
                           model_dir=Path(model_dir) if model_dir else None, model_artifact=model_artifact)
    _echo_published(result)
    return EXIT_OK


@cli.command(context_settings=CONTEXT)
@_config_option
@_out_option
@click.option("--pr", "pr_number", type=click.IntRange(min=1), help="Pull request number, recorded on the run.")
@click.option("--no-cache", is_flag=True, help="Always train, even if a finished run has the same input fingerprint.")
def train(config_path, out_dir, pr_number, no_cache):
    """Run the training command inside an MLflow run created by mlflow-ci.

    Reuses a finished run with the same input fingerprint (train.inputs) unless --no-cache.
    Writes OUT/train.json with the run id for the later stages.
    """
    from mlflow_ci.commands.stages import do_train

    s = _session(config_path)
    result = do_train(s, _options(out_dir, pr_number=pr_number, use_cache=not no_cache))
    how = "reused (same fingerprint)" if result.cached else f"trained in {result.seconds:.1f}s"
    echo(f"run {result.run.run_id}: {how}")
    return EXIT_OK


@cli.command(context_settings=CONTEXT)
@_stage_options
@_train_base_option
def compare(config_path, out_dir, baseline, base_branch, pr_number, run_id, train_base):
    """Resolve the baseline and show the metric and parameter diff."""
    from mlflow_ci.commands.stages import do_compare
    from mlflow_ci.report import number, signed

    s = _session(config_path)
    result = do_compare(s, _options(out_dir, baseline=baseline, base_branch=base_branch, pr_number=pr_number, run_id=run_id,
                                    train_base=train_base))
    echo(f"candidate: run {result.candidate.run_id}")
    echo(f"baseline: {result.baseline.description if result.baseline else 'none'}")
    for note in result.notes:
        echo(f"  note: {note}")
    for m in result.metrics:
        echo(f"  {m.name}: {number(m.baseline)} -> {number(m.candidate)} {signed(m.delta)} [{m.status}]")
    for p in result.params:
        echo(f"  param {p.name}: {p.baseline} -> {p.candidate} [{p.status}]")
    return EXIT_OK


@cli.command(context_settings=CONTEXT)
@_stage_options
@click.option("--from", "from_file", type=click.Path(dir_okay=False, exists=True), help="Gate the metrics in a result.json instead of querying MLflow.")
def gate(config_path, out_dir, baseline, base_branch, pr_number, run_id, from_file):
    """Evaluate the gate rules; exit 1 when a blocking rule fails."""
    from mlflow_ci.commands.stages import do_compare, do_gate, gate_from_result

    s = _session(config_path)
    if from_file:
        result = gate_from_result(s, Path(from_file))
    else:
        opts = _options(out_dir, baseline=baseline, base_branch=base_branch, pr_number=pr_number, run_id=run_id, train_base=False)
        result = do_gate(s, do_compare(s, opts))
    for c in result.checks:
        mark = {True: "pass", False: "FAIL", None: "skip"}[c.passed]
        echo(f"[{mark}] {c.metric} {c.rule}: {c.message}" + ("" if c.blocking else " (warn only)"))
    echo(f"verdict: {result.verdict.upper()}")
    return _verdict_exit(result.verdict)


@cli.command(context_settings=CONTEXT)
@_stage_options
@click.option("--publish/--no-publish", "publish", default=None,
              help="Publish to GitHub. Default: only inside GitHub Actions, and only for --pr leaderboards.")
@click.option("--candidates", "candidates", type=click.Path(path_type=Path),
              help="With --pr: the candidates' uploaded results (a folder of mlflow-ci-candidate-<name>/ artifacts, read as "
                   "untrusted data) instead of the store's runs tagged with the PR; only these are recorded for promote.")
@click.option("--expect", "expected", metavar="JSON",
              help="With --candidates: the candidate names the workflow fans out to, as a JSON list (its candidates: "
                   "input); an upload named otherwise is left off.")
def report(config_path, out_dir, baseline, base_branch, pr_number, run_id, publish, candidates, expected):
    """Render OUT/report.md and OUT/result.json for a run (exit 0 whatever the verdict).

    With --pr N and no --run: the fan-in leaderboard of every candidate of PR N (check --candidate),
    gated against the baseline, as one report (and one comment when published).
    """
    from mlflow_ci.commands.leaderboard import do_leaderboard
    from mlflow_ci.commands.stages import do_compare, do_gate, do_report

    s = _session(config_path)
    opts = _options(out_dir, baseline=baseline, base_branch=base_branch, pr_number=pr_number, run_id=run_id, train_base=False)
    if pr_number and not run_id:
        auto = os.environ.get("GITHUB_ACTIONS") == "true"
        outcome, published = do_leaderboard(s, opts, pr_number, publish=publish if publish is not None else auto,
                                            candidates=candidates, expected=_names(expected))
        entries = outcome.result.leaderboard or []
        echo(f"{len(entries)} candidates for PR #{pr_number}; verdict: {outcome.verdict.upper()}")
        for entry in entries:
            echo(f"  {'*' if entry.selected else ' '} {entry.candidate or 'default'}: {entry.verdict} (run {entry.run_id})")
        if published:
            _echo_published(published)
    else:
        comparison = do_compare(s, opts)
        fp = comparison.candidate.tags.get("mlflow_ci.fingerprint")
        outcome = do_report(s, opts, comparison, do_gate(s, comparison), cached=False, fingerprint=fp)
        echo(f"verdict: {outcome.verdict.upper()}")
    echo(f"report: {outcome.report_path}")
    echo(f"result: {outcome.result_path}")
    return EXIT_OK


@cli.command(context_settings=CONTEXT)
@_config_option
def validate(config_path):
    """Check the configuration file and exit (0 valid, 2 with every problem listed)."""
    from mlflow_ci.config.loader import load_config

    cfg = load_config(config_path)
    from mlflow_ci.config import LIMIT_RULES
    from mlflow_ci.config.loader import missing_paths

    if missing_paths(cfg):
        from mlflow_ci.errors import ConfigError

        raise ConfigError(missing_paths(cfg), path=str(config_path))
    command = cfg.training_command()  # an MLproject entry point must resolve (its file, its parameters)
    if cfg.train.engine == "ray":  # the job must reach the store this check would use
        from mlflow_ci.engines.ray_jobs import store_problem
        from mlflow_ci.errors import ConfigError
        from mlflow_ci.tracking.base import resolve_tracking_uri

        found = store_problem(resolve_tracking_uri(cfg.tracking_uri, os.environ, cfg.root))
        if found:
            raise ConfigError([cfg.located(found)], path=str(config_path))

    if cfg.evaluate is not None:  # what can be told without loading a model
        from mlflow_ci.errors import ConfigError
        from mlflow_ci.evaluate.metrics import static_problems

        found = static_problems(cfg.evaluate, cfg.root)
        if found:
            raise ConfigError([cfg.located(p) for p in found], path=str(config_path))
    if cfg.genai is not None:
        from mlflow_ci.errors import ConfigError
        from mlflow_ci.genai.static import static_problems as genai_problems

        found = genai_problems(cfg.genai, cfg.root)
        if found:
            raise ConfigError([cfg.located(p) for p in found], path=str(config_path))

    rules = sum(1 for r in cfg.gate for k in LIMIT_RULES if getattr(r, k) is not None)
    echo(f"{config_path}: valid (experiment {cfg.experiment!r}, {len(cfg.gate)} gated metrics, {rules} rules)")
    if cfg.train.entry_point:
        echo(f"training: MLproject entry point {cfg.train.entry_point!r}: {command}")
    return EXIT_OK


@cli.group(context_settings=CONTEXT)
def store():
    """Keep the local store across CI runs: save it to a folder, restore it from one.

    The reusable workflows move that folder with GitHub's Actions cache when no tracking server is
    configured: default-branch runs save, pull requests restore their base branch's store.
    """


@store.command("save", context_settings=CONTEXT)
@_config_option
@click.option("--to", "dest", required=True, type=click.Path(file_okay=False), help="Folder to write the store to (replaced).")
@click.option("--keep", type=click.IntRange(min=0), default=20, show_default=True,
              help="Finished runs kept per branch (besides every run a model version uses); 0 keeps everything.")
def store_save(config_path, dest, keep):
    """Prune the local store and copy it (database, artifacts, where it came from) to a folder."""
    from mlflow_ci.commands.store import save_store

    echo(save_store(_session(config_path), Path(dest), keep=keep).message)
    return EXIT_OK


@store.command("restore", context_settings=CONTEXT)
@_config_option
@click.option("--from", "src", required=True, type=click.Path(file_okay=False), help="Folder a 'store save' wrote.")
@click.option("--via", help="How that folder got here, as the reports say it (default: a saved folder).")
def store_restore(config_path, src, via):
    """Put a saved store in place of the project's, if it is sound (else warn; the check trains the base commit)."""
    from mlflow_ci.commands.store import restore_store

    echo(restore_store(_session(config_path), Path(src), via).message)
    return EXIT_OK


@store.command("reset", context_settings=CONTEXT)
@_config_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed where nobody can answer).")
def store_reset(config_path, yes):
    """Start over after exploring: every run of the experiment stops being a baseline and a cached run.

    Runs are tagged mlflow_ci.forgotten (who and when), not deleted; the runs the champion and previous
    aliases stand for are kept. The next check compares with the champion, or trains the base commit.
    """
    from mlflow_ci.commands.deploy import who
    from mlflow_ci.commands.store import forgettable, reset_store

    s = _session(config_path)
    runs = forgettable(s)
    if not runs:
        echo(f"nothing to forget: {s.cfg.experiment} has no run that could be a baseline or a cached run")
        return EXIT_OK
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"store reset would forget {len(runs)} runs of {s.cfg.experiment}: pass --yes to do it here")
        if not click.confirm(f"forget {len(runs)} runs of {s.cfg.experiment} (no longer baselines, nor reused; "
                             "nothing is deleted)?", default=False):
            echo("nothing forgotten")
            return EXIT_OK
    echo(reset_store(s, runs, who=who(s.env)).message)
    return EXIT_OK


@cli.command(context_settings=CONTEXT)
def schema():
    """Print the JSON Schema of mlflow-ci.yml (draft 2020-12).

    Editors use it for completion and inline errors: 'mlflow-ci init' writes the
    '# yaml-language-server: $schema=...' line that points VS Code and JetBrains IDEs at it.
    """
    from mlflow_ci.config.loader import json_schema_text

    click.echo(json_schema_text(), nl=False)  # our own JSON, many lines
    return EXIT_OK


@cli.command(context_settings=CONTEXT)
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Where to build the demo (default: a new temp folder).")
@click.option("--genai", is_flag=True, help="The GenAI story: a FAQ answerer whose PRs change its prompt template and retrieval.")
def demo(directory, genai):
    """The whole story offline: a baseline on main, a PR that regresses and one that improves."""
    if genai:
        from mlflow_ci.commands.demo_genai import run_genai_demo as run
    else:
        from mlflow_ci.commands.demo import run_demo as run

    outcome = run(Path(directory) if directory else None, env=dict(os.environ), stream=sys.stdout)
    return EXIT_OK if outcome.as_designed else EXIT_GATE_FAILED


@cli.command(context_settings=CONTEXT)
@_config_option
@_out_option
@click.option("--commit", help="The merged commit (default: the push event's, then HEAD).")
@click.option("--pr", "pr_number", type=click.IntRange(min=1), help="The merged PR number, when the event and API cannot tell.")
@click.option("--run", "run_id", help="Promote this run (it must have passed its gate).")
@click.option("--no-deploy", is_flag=True, help="Move the alias but do not run deploy.command.")
@click.option("--force", "force", metavar="REASON", help="Promote a run that was rolled back; the reason is recorded.")
@click.option("--allow-unverified", is_flag=True,
              help="Promote the recorded model of a PR that changed .github/workflows/ or .github/actions/ (its own workflow "
                   "could have written the record); the version is tagged unverified.")
def promote(config_path, out_dir, commit, pr_number, run_id, no_deploy, force, allow_unverified):
    """On merge: register the run that passed the PR gate, move the champion alias, deploy.

    Idempotent: a re-run registers no second version and moves nothing. Exits 1 when no run passed
    the gate for the merged commit (unless promote.on_missing: retrain) or --run names a run that was
    rolled back (--force REASON promotes it anyway), 3 when the deploy hook fails (the aliases are moved
    back). A merged commit whose run was rolled back (the deploy job run again) is a no-op.
    """
    from mlflow_ci.commands.promote import do_promote

    result = do_promote(_session(config_path), Path(out_dir), commit=commit, pr_number=pr_number, run_id=run_id,
                        deploy=not no_deploy, force=force, allow_unverified=allow_unverified)
    if result is None:
        echo("the push deleted its branch: nothing was merged, nothing to promote")
        return EXIT_OK
    if result.skipped:
        echo(f"nothing promoted: {result.skipped}")
        echo(f"summary: {result.summary_path}")
        return EXIT_OK
    verb = {"promoted": "promoted", "unchanged": "already champion", "redeployed": "already champion, redeployed"}[result.action]
    if result.version:
        echo(f"{result.model} version {result.version} @{result.alias}: {verb} (run {result.run.run_id}, {result.found_by})")
    else:  # a GenAI app without a model: its prompts are what is promoted (a champion text may come from an older run)
        echo(f"prompts @{result.alias}: {'promoted' if result.action == 'promoted' else 'already champion: the same texts'} "
             f"(validated by run {result.run.run_id}, {result.found_by})")
    for move in result.prompts:
        echo(f"prompt {move.name} version {move.version} @{result.alias}" + ("" if move.action == "promoted" else ", unchanged"))
    if result.action != "promoted":
        echo(f"{result.alias} already is run {result.run.run_id}: nothing new to promote" if result.version
             else f"the validated prompts already are @{result.alias}: nothing new to promote")
    if result.previous:
        echo(f"previous champion: version {result.previous.version}")
    echo(f"summary: {result.summary_path}")
    return EXIT_OK


@cli.command(context_settings=CONTEXT)
@_config_option
@_out_option
@click.option("--to", "to_version", help="Version to make champion (default: the 'previous' alias).")
@click.option("--reason", help="Why; recorded in the version tags.")
@click.option("--no-deploy", is_flag=True, help="Move the alias but do not run deploy.command.")
def rollback(config_path, out_dir, to_version, reason, no_deploy):
    """Move the champion alias back to the previous version (or --to VERSION), with who and why."""
    from mlflow_ci.commands.rollback import rollback as run_rollback

    result = run_rollback(_session(config_path), to=to_version, reason=reason, out_dir=Path(out_dir), deploy=not no_deploy)
    if result.from_version:
        echo(f"{result.model}@{result.alias}: version {result.from_version} -> {result.to_version}" + (" (deployed)" if result.deployed else ""))
    elif result.deployed:
        echo("prompts rolled back (deployed)")
    for move in result.prompts:
        was = move.before.version if move.before else "none"
        echo(f"prompt {move.name}@{result.alias}: version {was} -> {move.version}" if move.action == "promoted"
             else f"prompt {move.name}@{result.alias}: version {was}, unchanged")
    return EXIT_OK


@cli.command(context_settings=CONTEXT)
@_config_option
@click.argument("model_uri")
def verify(config_path, model_uri):
    """Check that a registered model's files are the bytes promote verified: models:/NAME@ALIAS or models:/NAME/VERSION.

    Prints the digest; exit 1 when the files changed since promotion or promote recorded no digest for the
    version. Serving and deploy scripts call it before loading the champion.
    """
    from mlflow_ci.commands.verify import verify_model

    found = verify_model(_session(config_path), model_uri)
    echo(f"{found.model} version {found.version}: {found.digest} (as promote verified)")
    return EXIT_OK


@cli.command(context_settings=CONTEXT)
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False, exists=True),
              help="The model repository.")
@click.option("--command", "command", help="Training command (default: python train.py, when it exists).")
@click.option("--experiment", help="Experiment and registered model name (default: the repository name).")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@click.option("--workflows-only", is_flag=True, help="Write the workflows alone (mlflow-ci.yml exists already).")
@click.option("--genai", is_flag=True, help="A GenAI app with nothing to train: a genai: configuration (docs/genai.md).")
def init(directory, command, experiment, force, workflows_only, genai):
    """Write mlflow-ci.yml and the GitHub workflows (PR check, fork-safe comment, deploy).

    Infers the experiment name, default branch and how the model trains (an MLproject's main entry point
    first, as train.entry_point, else a training script); the run cache's inputs are 'auto'. Never
    overwrites an existing file without --force.
    """
    from mlflow_ci.commands.init import init as run_init

    if workflows_only and (genai or command):
        raise UsageError("init: --workflows-only writes no mlflow-ci.yml, so --genai and --command do not apply")
    result = run_init(Path(directory), command=command, experiment=experiment, force=force,
                      workflows_only=workflows_only, genai=genai)
    root = Path(directory).resolve()
    for path in result.written:
        echo(f"wrote {path.relative_to(root)}")
    echo(f"experiment {result.experiment!r}, default branch {result.default_branch!r}; training: {result.training}")
    echo("next: write a few rows of your own to eval.jsonl, run 'mlflow-ci check', commit, and require the" if genai
         else "next: commit, and require the" if workflows_only
         else "next: add gate rules to mlflow-ci.yml, run 'mlflow-ci check', commit, and require the")
    echo(f"check 'mlflow-ci / {result.experiment}' in branch protection (README, \"GitHub setup\")")
    return EXIT_OK


@cli.command(context_settings=CONTEXT)
@_config_option
@_out_option
@click.option("--runs", type=click.IntRange(3, 500), default=10, show_default=True,
              help="Trainings, with MLFLOW_CI_SEED=1..RUNS (1/RUNS is about the false-alarm rate the margins allow).")
@click.option("--level", type=click.FloatRange(0.001, 0.5), default=0.05, show_default=True,
              help="The false-alarm rate the margins aim for, for rules without significance.")
@click.option("--write", is_flag=True, help="Raise max_drop (or max_drop_pct) in mlflow-ci.yml where it is below the proposed margin.")
def calibrate(config_path, out_dir, runs, level, write):
    """Measure the seed-to-seed noise of the gated metrics and propose max_drop margins.

    Retrains RUNS times with MLFLOW_CI_SEED set (seed your libraries from it, e.g.
    random_state=int(os.environ.get("MLFLOW_CI_SEED", 0))); prints each rule's spread and the margin
    that keeps retrains that change nothing from failing; --write puts them into mlflow-ci.yml. Later
    checks warn when a rule allows less than the calibrated noise.
    """
    from mlflow_ci.commands.calibrate import do_calibrate

    s = _session(config_path)
    result = do_calibrate(s, _options(out_dir), runs=runs, level=level, write=write)
    echo("")
    echo(f"calibrated on {len(result.runs)} trainings of the same code, MLFLOW_CI_SEED=1..{len(result.runs)} "
         f"(level {level:g}): what differs between them is noise, which a margin must allow")
    for n in result.noise:
        spread = f"{min(n.values):.6g} .. {max(n.values):.6g}" if n.values else "n/a"
        what = "change against seed 1 (Δ)" if n.method == "bootstrap bound" else "value per seed"
        current = "not set" if n.current is None else f"{n.current:g}"
        echo(f"  {n.metric} ({n.direction} is better): {what} {spread}; {n.rule_key} now {current}, proposed {n.proposed:g}")
        echo(f"    {n.explained(level)}")
        if n.saturated:
            echo(f"    saturated: every seed scored {n.values[0]:g}, the best {n.metric} can be: these rows cannot tell "
                 "models apart (evaluate on harder or more rows); this says nothing about the seed")
    if result.deterministic:
        echo("every seed gave the same values: the training is deterministic, or it does not read MLFLOW_CI_SEED "
             "(seed your libraries from it to measure the noise)")
    echo(f"{'written to' if result.written else 'not written to'} {s.cfg.path.name}"
         + ("" if result.written else " (pass --write)") + f"; summary run {result.summary_run}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map every outcome to the documented exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("MLFLOW_CI_DEBUG") == "1"
    try:
        code = cli.main(args=args, prog_name="mlflow-ci", standalone_mode=False)
    except click.exceptions.Abort:
        echo("aborted", err=True)
        code = EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except MlflowCiError as exc:
        if debug:
            traceback.print_exc()
        for line in exc.lines():
            echo(line, err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        code = 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback unless asked
        if debug:
            traceback.print_exc()
        echo(f"error: unexpected failure: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", err=True)
        echo("hint: re-run with --debug for a traceback, and report it if it is a bug", err=True)
        code = EXIT_SERVICE
    sys.exit(code if isinstance(code, int) else EXIT_OK)

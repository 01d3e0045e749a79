"""``mlflow-ci check``: the PR check, train → compare → (evaluate) → gate → report."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow_ci import __version__, report, yamlnodes
from mlflow_ci.commands import evaluation
from mlflow_ci.commands.calibrate import calibrated_noise, margin_notes
from mlflow_ci.commands.session import Options, Session
from mlflow_ci.commands.stages import (
    CheckResult,
    do_compare,
    do_gate,
    do_report,
    do_train,
)
from mlflow_ci.config.models import ReportConfig
from mlflow_ci.errors import (
    EXIT_SERVICE,
    ConfigError,
    MlflowCiError,
    NotValidatedError,
    UsageError,
    first_line,
    printable,
)
from mlflow_ci.gate import GateResult
from mlflow_ci.genai.answers import ANSWERS_FILE
from mlflow_ci.provenance import MODEL_DIR, export_model
from mlflow_ci.result import Result
from mlflow_ci.tracking import (
    TAG_BASELINE,
    TAG_GATE_RULES,
    TAG_HEAD_SHA,
    TAG_PR,
    TAG_VERDICT,
    TAG_VERDICT_AT,
    RunSnapshot,
)
from mlflow_ci.train import TrainResult


@dataclass
class Progress:
    """Where a check is: what its error result says when a stage fails."""
    stage: str = "config"
    run: RunSnapshot | None = None
    cached: bool = False


def do_check(s: Session, opts: Options, progress: Progress | None = None, *, trained: TrainResult | None = None) -> CheckResult:
    """train → compare → gate → report; tags the candidate run with the verdict and baseline.

    ``trained``: the run was already trained for this commit (the demo trains its commits side by side,
    as CI runs independent jobs); the check then starts at compare."""
    progress = progress if progress is not None else Progress()
    progress.stage = "train"
    trained = trained or do_train(s, opts, require_gated=True)
    progress.run, progress.cached = trained.run, trained.cached
    tracker = s.tracker()
    progress.stage = "compare"
    comparison = do_compare(s, opts, tracker, trained.run)
    progress.stage = "evaluate"
    own = _own_run(trained, s.context(opts))
    evaluated = (_passing_over_unverified(lambda c: evaluation.evaluate(s, tracker, c, keep=own), comparison)
                 if s.cfg.evaluate is not None else None)
    intervals, extra_rules, data_checks = {}, (), ()
    if evaluated is not None:
        comparison, intervals = evaluated.comparison, evaluated.intervals
        extra_rules, data_checks = evaluated.rules, evaluated.data_checks
    genai = (_passing_over_unverified(lambda c: _genai(s, opts, c, intervals), comparison)
             if s.cfg.genai is not None else None)
    if genai is not None:
        comparison, intervals = genai.comparison, genai.intervals
    progress.stage = "gate"
    gate = do_gate(s, comparison, intervals or None, extra_rules)
    gate = GateResult(gate.checks + data_checks)
    if genai is not None and genai.summary["pending"]:
        gate = gate.pending(set(genai.summary["pending"]), PENDING_JUDGE)
    noise = calibrated_noise(tracker, trained.experiment_id)  # warnings about the noise, for the report
    comparison = replace(comparison, notes=(*comparison.notes, *trained.notes, *margin_notes(
        s.cfg, noise, dict(comparison.baseline.run.metrics) if comparison.baseline else None)))
    progress.stage = "report"
    outcome = do_report(s, opts, comparison, gate, cached=trained.cached, fingerprint=trained.fingerprint,
                        evaluation=evaluated.summary if evaluated else None, genai=genai.summary if genai else None)
    tags = {TAG_VERDICT: gate.verdict, TAG_GATE_RULES: str(len(s.cfg.gate))} if own else {}
    if own and comparison.baseline and comparison.baseline.run.run_id:
        tags[TAG_BASELINE] = comparison.baseline.run.run_id
    head = outcome.result.head_sha
    if trained.cached and head and head not in (trained.run.commit, trained.run.tags.get(TAG_HEAD_SHA)):
        tags[TAG_VERDICT_AT + head] = gate.verdict  # this head was verdicted by the reused run: promote finds it
    if tags:
        tracker.set_tags(trained.run.run_id, tags)
    return CheckResult(outcome.verdict, outcome.result, outcome.report_path, outcome.result_path, trained)


def _refused(comparison, exc: NotValidatedError):
    """The comparison without a baseline whose model is not the bytes promote verified: the check then fails
    closed (``baseline_required``) saying why, as when no baseline may serve."""
    why = f"the baseline was passed over: {exc.message}"
    return replace(comparison, baseline=None, expected=(*comparison.expected, why), notes=(*comparison.notes, f"warning: {why}"))


def _passing_over_unverified(step, comparison):
    """``step(comparison)`` (a stage that loads the baseline's model); again without the baseline when its
    model is not the bytes promote verified."""
    try:
        return step(comparison)
    except NotValidatedError as exc:
        return step(_refused(comparison, exc))


def _own_run(trained: TrainResult, ctx) -> bool:
    """Whether this check may write to the candidate's run: it was trained for this check (now, or by an
    earlier check of the same commit or pull request). A run reused from another commit or PR — the
    champion's, for a PR that changed only its README — is read and never written: its verdict, metrics
    and history stay those of the check that trained it (only ``verdict_at.<head>`` records this one)."""
    run = trained.run
    if not trained.cached or (ctx.head_sha or ctx.commit) in (run.commit, run.tags.get(TAG_HEAD_SHA)):
        return True
    return ctx.pr_number is not None and run.tags.get(TAG_PR) == str(ctx.pr_number)


def _genai(s: Session, opts: Options, comparison, intervals: dict):
    """``genai:``: imported only when configured (the intervals need NumPy)."""
    try:
        from mlflow_ci.commands.genai import run_genai
    except ModuleNotFoundError as exc:
        raise UsageError(f"genai: needs {exc.name}, which is not installed: pip install 'mlflow-ci[evaluate]'") from None
    return run_genai(s, opts, comparison, intervals)


PENDING_JUDGE = "the judge scores it in the trusted publish job (check --defer-judging)"
OUTPUTS = ("report.md", "result.json", MODEL_DIR, ANSWERS_FILE)


def clear_outputs(out_dir: Path) -> None:
    """A check starts from nothing: no report or result of an earlier check survives a failure of this one."""
    for name in OUTPUTS:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def check_failed(s: Session | None, opts: Options, progress: Progress, exc: BaseException, config_path: Path) -> CheckResult:
    """The outputs of a check that could not decide: result.json with ``verdict: error`` (the stage, the
    exit code, the reason, what to do) and a report.md that says it. The candidate run, if there is
    one, is tagged ``error`` so it never becomes a baseline."""
    known = isinstance(exc, MlflowCiError)
    reason = exc.message if known else f"unexpected failure: {type(exc).__name__}: {first_line(exc)}"
    if isinstance(exc, ConfigError) and exc.problems:
        reason = f"{reason}: {exc.problems[0]}" + (f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else "")
    cfg = s.cfg if s is not None else None
    ctx = _context_or_none(s, opts)
    run = progress.run
    result = Result.build({
        "schema": 1,
        "verdict": "error",
        "experiment": cfg.experiment if cfg else _experiment_of(config_path),
        "model": cfg.model if cfg else None,
        "pr": ctx.pr_number if ctx else None,
        "candidate": {"run_id": run.run_id if run else None, "experiment_id": run.experiment_id if run else None,
                      "commit": run.commit if run else None, "metrics": dict(run.metrics) if run else {},
                      "cached": progress.cached},
        "checks": [],
        "config_path": s.config_path() if s is not None else config_path.name,
        "head_sha": (ctx.head_sha or ctx.commit) if ctx else None,
        "ci_run_url": s.event.run_url if s is not None else None,
        "tool": {"name": "mlflow-ci", "version": __version__},
        "error": {"stage": progress.stage, "exit_code": exc.exit_code if known else EXIT_SERVICE,
                  "reason": printable(reason)[:1000], "hint": printable(exc.hint)[:500] if known and exc.hint else None},
    })
    markdown = report.error_markdown(result, cfg.report if cfg else ReportConfig())
    report_path, result_path = report.write_outputs(opts.out_dir, markdown, result)
    if run is not None and s is not None:
        try:
            s.tracker().set_tags(run.run_id, {TAG_VERDICT: "error"})
        except MlflowCiError:
            pass  # the store may be what failed; the outputs still say so
    return CheckResult("error", result, report_path, result_path, None)


def _context_or_none(s: Session | None, opts: Options):
    if s is None:
        return None
    try:
        return s.context(opts)
    except MlflowCiError:
        return None


def _experiment_of(config_path: Path) -> str:
    """The experiment a configuration that failed to load names, when it can be read at all (with the
    same bounded YAML reader as the configuration: aliases and nesting capped)."""
    try:
        data = yamlnodes.load(config_path.read_text(encoding="utf-8")).data
    except (OSError, ValueError, yamlnodes.YamlSyntaxError):
        return "unknown"
    name = data.get("experiment") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name.strip() and len(name) <= 250 else "unknown"


def export_candidate_model(s: Session, opts: Options, outcome: CheckResult) -> Path | None:
    """Copy the candidate's model to ``OUT/model`` for the trusted publisher to digest (and, in the
    zero-server mode, for promote to register). None, said on the stream, when the run has no model.
    (``check`` cleared ``OUT/model`` when it started: :func:`clear_outputs`.)"""
    dst = opts.out_dir / MODEL_DIR
    run_id = outcome.result.candidate.run_id
    if not run_id:
        return None
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-export-") as tmp:
        try:
            local = s.registry().download_model(run_id, s.cfg.promote.model_path, Path(tmp))
            return export_model(local, dst)
        except MlflowCiError as exc:
            s.stream.write(f"mlflow-ci: no model exported (promote.model_path {s.cfg.promote.model_path!r}): {exc.message}\n")
            return None

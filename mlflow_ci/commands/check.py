"""``mlflow-ci check``: the PR check, train → compare → (evaluate) → gate → report."""

from __future__ import annotations

from mlflow_ci.commands.session import Options, Session
from mlflow_ci.commands.stages import CheckResult, do_compare, do_gate, do_report, do_train
from mlflow_ci.evaluate.same_rows import evaluate_same_rows
from mlflow_ci.gate import GateResult
from mlflow_ci.tracking import TAG_BASELINE, TAG_VERDICT


def do_check(s: Session, opts: Options) -> CheckResult:
    """train → compare → gate → report; tags the candidate run with the verdict and baseline."""
    trained = do_train(s, opts, require_gated=True)
    tracker = s.tracker()
    comparison = do_compare(s, opts, tracker, trained.run)
    evaluated = evaluate_same_rows(s.cfg, tracker, s.registry(), comparison) if s.cfg.evaluate is not None else None
    if evaluated is None:
        gate = do_gate(s, comparison)
    else:
        comparison = evaluated.comparison
        gate = do_gate(s, comparison, evaluated.intervals, evaluated.rules)
        gate = GateResult(gate.checks + evaluated.data_checks)
    outcome = do_report(s, opts, comparison, gate, cached=trained.cached, fingerprint=trained.fingerprint,
                        evaluation=evaluated.summary if evaluated else None)
    tags = {TAG_VERDICT: gate.verdict}
    if comparison.baseline:
        tags[TAG_BASELINE] = comparison.baseline.run.run_id
    tracker.set_tags(trained.run.run_id, tags)
    return CheckResult(outcome.verdict, outcome.result, outcome.report_path, outcome.result_path, trained)

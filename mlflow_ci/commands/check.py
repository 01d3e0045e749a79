"""``mlflow-ci check``: the PR check, train → compare → (evaluate) → gate → report."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mlflow_ci.commands.session import Options, Session
from mlflow_ci.commands.stages import (
    CheckResult,
    do_compare,
    do_gate,
    do_report,
    do_train,
)
from mlflow_ci.errors import MlflowCiError
from mlflow_ci.evaluate.same_rows import evaluate_same_rows
from mlflow_ci.gate import GateResult
from mlflow_ci.provenance import MODEL_DIR, export_model
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


def clear_exported_model(opts: Options) -> None:
    shutil.rmtree(opts.out_dir / MODEL_DIR, ignore_errors=True)


def export_candidate_model(s: Session, opts: Options, outcome: CheckResult) -> Path | None:
    """Copy the candidate's model to ``OUT/model`` for the trusted publisher to digest (and, in the
    zero-server mode, for promote to register). None, said on the stream, when the run has no model."""
    clear_exported_model(opts)
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

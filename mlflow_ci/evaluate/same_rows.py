"""``evaluate:``: load the candidate and the baseline model, score both on the same rows, and turn
the scores into ``eval.<metric>`` values with paired bootstrap intervals, per-slice metrics, data
checks and confusion matrices. The arithmetic is in :mod:`.metrics` and :mod:`.datachecks`; this
module only orchestrates it around the two runs."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow_ci import compare as cmp
from mlflow_ci.config.models import Config, EvaluateConfig
from mlflow_ci.errors import UsageError
from mlflow_ci.evaluate import datachecks
from mlflow_ci.evaluate import metrics as ev
from mlflow_ci.evaluate import predict

SLICE_LIMIT = 20  # most frequent values per column
SLICE_MIN_ROWS = 30


@dataclass(frozen=True)
class Evaluated:
    """What ``evaluate:`` adds to a check."""
    comparison: cmp.Comparison  # with eval.<metric> values merged in
    intervals: dict  # metric name -> paired bootstrap interval
    summary: dict  # result.json's "evaluation"
    rules: tuple  # the slice_gate rules, one per slice
    data_checks: tuple  # gate checks from the data checks


def slice_metric(metric: str, column: str, value: str) -> str:
    """``eval.accuracy/region:north``: MLflow metric names allow only [A-Za-z0-9_-. :/]."""
    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_\-. ]", "_", text)[:80]

    return f"eval.{metric}/{clean(column)}:{clean(value)}"


def evaluate_same_rows(cfg: Config, tracker, registry, comparison: cmp.Comparison) -> Evaluated:
    """Score candidate and baseline models on the same rows; paired bootstrap intervals.

    ``tracker`` logs the ``eval.<metric>`` values to both runs; ``registry`` (MLflow's client) loads
    the models.
    """
    import numpy as np

    ecfg = cfg.evaluate
    assert ecfg is not None
    X, y = ev.load_dataset(ecfg.data, ecfg.target, cfg.root)
    y = np.asarray(y)
    ev.register_user_metrics(ecfg.metrics, cfg.root)
    cand, base = comparison.candidate, comparison.baseline
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-eval-") as tmp:
        cand_out, classes = _outputs(cfg, registry, "candidate", cand.run_id, X, y, None, Path(tmp))
        base_out = _outputs(cfg, registry, "baseline", base.run.run_id, X, y, classes, Path(tmp))[0] if base else None
    try:
        cand_eval, base_eval, intervals = _scores(ecfg, y, cand_out, base_out, classes)
    except ValueError as exc:
        raise UsageError(f"evaluate: {exc}") from None
    short = ev.metric_label  # module:function -> function
    intervals = {f"eval.{short(k)}": v for k, v in intervals.items()}
    cand_metrics = {f"eval.{short(k)}": v for k, v in cand_eval.items()}
    base_metrics = {f"eval.{short(k)}": v for k, v in base_eval.items()}
    slice_rules = _add_slices(ecfg, X, y, cand_out, base_out, classes, cand_metrics, base_metrics, intervals)
    tracker.log_metrics(cand.run_id, cand_metrics)
    if base is not None and base_metrics:
        tracker.log_metrics(base.run.run_id, base_metrics)
    cand = replace(cand, metrics={**cand.metrics, **cand_metrics})
    if base is not None:
        base = replace(base, run=replace(base.run, metrics={**base.run.metrics, **base_metrics}))
    # A metric a significance rule decides is shown with the interval whose end is that rule's bound.
    decided = {rule.metric: rule.significance for rule in cfg.gate if rule.significance}
    shown = {name: iv.for_decision(decided[name]) if name in decided else iv for name, iv in intervals.items()}
    rows = []
    for row in cmp.diff_metrics(cfg, dict(cand.metrics), dict(base.run.metrics) if base else None):
        interval = shown.get(row.name)
        rows.append(replace(row, ci_low=interval.low, ci_high=interval.high) if interval is not None else row)
    data_report = _data_checks(tracker, registry, X, cand, base)
    paired = base_out is not None
    note = (f"evaluated {'both models' if paired else 'the candidate'} on the same {len(y):,} rows of "
            f"{ecfg.data}" + (f"; {ecfg.resamples:,} paired bootstrap resamples (seed {ecfg.seed}), "
                              f"{ecfg.confidence:.0%} intervals" if paired else ""))
    level_notes = tuple(f"{name}: the {(1 - 2 * a) * 100:g} % interval shown ends at the one-sided {(1 - a) * 100:g} % bounds the gate uses"
                        for name, a in sorted(decided.items()) if paired and name in intervals)
    summary = {"data": ecfg.data, "rows": int(len(y)), "task": ecfg.task, "metrics": list(ecfg.metrics),
               "resamples": ecfg.resamples if paired else 0, "seed": ecfg.seed, "confidence": ecfg.confidence,
               "decision_confidence": {name: 1 - 2 * a for name, a in decided.items() if name in intervals},
               "data_checks": data_report.as_dict(), "confusion": _confusion(ecfg.task, y, cand_out, base_out, classes)}
    checks = ecfg.data_checks
    data_gate = datachecks.checks(data_report, max_psi=checks.max_psi, max_missing=checks.max_missing,
                                  fail_on_removed_columns=checks.fail_on_removed_columns)
    updated = cmp.Comparison(cand, base, tuple(rows), comparison.params, (*comparison.notes, note, *level_notes))
    return Evaluated(updated, intervals, summary, tuple(slice_rules), tuple(data_gate))


def _outputs(cfg: Config, registry, role: str, run_id: str, X, y, classes, work: Path):
    """One model's predictions (regression) or class probabilities aligned to ``classes`` (the
    candidate's, when given), and the classes; loaded and scored while its files exist."""
    ecfg = cfg.evaluate
    try:
        model = registry.load_for_scoring(run_id, cfg.promote.model_path, work / role)
    except UsageError as exc:
        raise UsageError(f"evaluate: the {role} model: {exc.message}", hint=exc.hint) from None
    who = predict.Who(role, run_id, model.flavor_label)
    if ecfg.task == "regression":
        return predict.regression(model, X, who), None
    proba, own = predict.probabilities(model, X, y, who, output=ecfg.output, classes=ecfg.classes)
    return (proba, own) if classes is None else (predict.align(proba, own, classes), classes)


def _scores(ecfg: EvaluateConfig, y, cand_out, base_out, classes) -> tuple[dict, dict, dict]:
    """Candidate metrics, baseline metrics and paired intervals (the last two empty without a baseline)."""
    if base_out is None:
        return {k: float(ev.build_metric(k, ecfg.task, y, cand_out, classes).value(None)) for k in ecfg.metrics}, {}, {}
    paired = ev.paired_bootstrap(ecfg.metrics, ecfg.task, y, cand_out, base_out, classes=classes,
                                 resamples=ecfg.resamples, seed=ecfg.seed, confidence=ecfg.confidence)
    return paired.candidate, paired.baseline, paired.intervals


def _add_slices(ecfg: EvaluateConfig, X, y, cand_out, base_out, classes, cand_metrics, base_metrics, intervals) -> list:
    """Per-slice metrics merged into the three dicts; returns the slice_gate rules, one per slice."""
    short = ev.metric_label
    rules = []
    for column in ecfg.slices:
        for label, (c_vals, b_vals, ivs) in _slices(ecfg, X, y, column, cand_out, base_out, classes).items():
            for metric, value in c_vals.items():
                name = slice_metric(short(metric), column, label)
                cand_metrics[name] = value
                if metric in b_vals:
                    base_metrics[name] = b_vals[metric]
                if metric in ivs:
                    intervals[name] = ivs[metric]
            rules += [rule.model_copy(update={"metric": slice_metric(short(rule.metric), column, label)})
                      for rule in ecfg.slice_gate]
    return rules


def _slices(ecfg: EvaluateConfig, X, y, column: str, cand_out, base_out, classes) -> dict:
    """Per value of ``column``: candidate metrics, baseline metrics, intervals (paired, same rows)."""
    import numpy as np

    if not hasattr(X, "columns") or column not in X.columns:
        raise UsageError(f"evaluate.slices: column {column!r} is not in the evaluation data")
    values = X[column].astype(str).to_numpy()
    labels, counts = np.unique(values, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:SLICE_LIMIT]
    out = {}
    for i in order:
        if counts[i] < SLICE_MIN_ROWS:
            continue
        mask = values == labels[i]
        try:
            out[str(labels[i])] = _scores(ecfg, y[mask], cand_out[mask],
                                          base_out[mask] if base_out is not None else None, classes)
        except ValueError:
            continue  # e.g. ROC AUC on a slice with one class only
    return out


def _data_checks(tracker, registry, X, cand, base) -> datachecks.DataReport:
    """Profile the evaluation data, keep it with the candidate run, compare with the baseline's."""
    current = datachecks.profile(X, None)
    before = None
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-profile-") as tmp:
        if base is not None:
            text = registry.read_artifact_text(base.run.run_id, datachecks.PROFILE_ARTIFACT, Path(tmp))
            before = json.loads(text) if text else None
        path = Path(tmp) / "data_profile.json"
        path.write_text(json.dumps(current), encoding="utf-8")
        tracker.log_artifact(cand.run_id, path, "mlflow_ci")
    return datachecks.compare_profiles(before, current, X)


def _confusion(task: str, y, cand_out, base_out, classes) -> dict | None:
    """Confusion matrices (rows: true class, columns: predicted) for both models."""
    import numpy as np

    if task != "classification" or classes is None or len(classes) > 10:
        return None
    idx = np.searchsorted(classes, y)

    def matrix(out):
        pred = out.argmax(axis=1)
        counts = np.zeros((len(classes), len(classes)), dtype=int)
        np.add.at(counts, (idx, pred), 1)
        return counts.tolist()

    return {"classes": [str(c) for c in classes], "candidate": matrix(cand_out),
            "baseline": matrix(base_out) if base_out is not None else None}

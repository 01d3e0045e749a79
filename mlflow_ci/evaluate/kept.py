"""What ``evaluate:`` decided for one pair of runs on one set of rows, kept with the candidate's run
(``mlflow_ci/evaluations/<key>.json``) so that the same check again — a re-run, a cached candidate
against the same baseline on the same file — reads the result instead of loading the rows, the models'
outputs and resampling. The key holds every input of the result: both runs, the rows' digest, the
``evaluate:`` settings, the significance levels the gate asks for and the code of the repository's own
metrics. This module imports neither NumPy nor pandas (a cached check with ``evaluate:`` should cost little
more than one without); kept intervals carry the one-sided bounds the gate reads."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlflow_ci import compare as cmp
from mlflow_ci.config.loader import module_file
from mlflow_ci.config.models import Config
from mlflow_ci.gate import Check
from mlflow_ci.provenance import file_sha256

FOLDER = "mlflow_ci/evaluations"
VERSION = 2  # 2: intervals from counter-based resample weights, reduced partition by partition


@dataclass(frozen=True)
class Evaluated:
    """What ``evaluate:`` adds to a check."""
    comparison: cmp.Comparison  # with eval.<metric> values merged in
    intervals: dict  # metric name -> paired bootstrap interval
    summary: dict  # result.json's "evaluation"
    rules: tuple  # the slice_gate rules, one per slice
    data_checks: tuple  # gate checks from the data checks
    reused: bool = False  # read back from the candidate's run, not computed


@dataclass(frozen=True)
class KeptInterval:
    """A paired interval as kept: the delta, the shown ends, and the one-sided bounds at each level the gate uses."""
    delta: float
    low: float
    high: float
    confidence: float
    bounds: dict  # significance level -> (one-sided lower, one-sided upper)

    def one_sided_lower(self, alpha: float) -> float:
        return self.bounds[_level(alpha)][0]

    def one_sided_upper(self, alpha: float) -> float:
        return self.bounds[_level(alpha)][1]

    def for_decision(self, alpha: float) -> "KeptInterval":
        lower, upper = self.bounds[_level(alpha)]
        return KeptInterval(self.delta, lower, upper, 1 - 2 * alpha, self.bounds)


def _level(alpha: float) -> str:
    return repr(float(alpha))


def levels(cfg: Config) -> list[float]:
    """The significance levels the gate's rules (and the slice rules) decide at."""
    rules = [*cfg.gate, *(cfg.evaluate.slice_gate if cfg.evaluate else ())]
    return sorted({float(rule.significance) for rule in rules if rule.significance})


def key(cfg: Config, candidate: str, baseline: str | None, data_digest: str) -> str:
    """The record's name: a hash of everything its numbers depend on."""
    ecfg = cfg.evaluate
    assert ecfg is not None
    own = {spec: _module_digest(cfg.root, spec) for spec in ecfg.metrics if ":" in spec}
    spec = {"v": VERSION, "candidate": candidate, "baseline": baseline, "data": data_digest,
            "evaluate": ecfg.model_dump(mode="json"), "levels": levels(cfg), "own_metrics": own,
            "model_path": cfg.promote.model_path}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _module_digest(root: Path, spec: str) -> str | None:
    """sha256 of the file a ``module:function`` metric is imported from (its code decides its values)."""
    path = module_file(root, spec.partition(":")[0])
    return file_sha256(path) if path is not None else None


def file_digest(cfg: Config) -> str | None:
    """The digest of an evaluation file (the only rows known without loading them); None for module:function."""
    path = cfg.root / cfg.evaluate.data
    return file_sha256(path) if path.is_file() else None


def lookup(cfg: Config, tracker, comparison: cmp.Comparison) -> Evaluated | None:
    """The kept result for this candidate, baseline and file, or None (then it is computed)."""
    ecfg = cfg.evaluate
    digest = file_digest(cfg) if ecfg is not None and ecfg.perf is None else None  # perf.* is measured every time
    if digest is None:
        return None
    base = comparison.baseline
    name = key(cfg, comparison.candidate.run_id, base.run.run_id if base else None, digest)
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-kept-") as tmp:
        text = tracker.read_artifact_text(comparison.candidate.run_id, f"{FOLDER}/{name}.json", Path(tmp))
    if not text:
        return None
    try:
        return _restore(cfg, comparison, json.loads(text))
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: computed again (and rewritten)


def keep(cfg: Config, tracker, result: Evaluated, *, data_digest: str | None, candidate: dict, baseline: dict | None,
         notes: tuple[str, ...]) -> None:
    """Write a computed result to the candidate's run: the ``eval.*`` values of both sides (``candidate``,
    ``baseline``), the intervals, the summary, the slice rules and data checks, the notes it added. Only for
    rows from a file and without ``perf:`` (timings are measured every time). ``data_digest``: the digest of
    the rows the computation used (a file's sha256, as :func:`lookup` computes it; ``frame:…`` rows are not kept)."""
    digest = data_digest
    if digest is None or digest.startswith("frame:") or cfg.evaluate.perf is not None:
        return
    cand, base = result.comparison.candidate, result.comparison.baseline
    alphas = levels(cfg)
    payload = {
        "v": VERSION,
        "candidate": candidate,
        "baseline": baseline if base is not None else None,
        "intervals": {name: _interval_json(iv, alphas) for name, iv in result.intervals.items()},
        "summary": result.summary,
        "rules": [rule.metric for rule in result.rules],
        "data_checks": [_check_json(check) for check in result.data_checks],
        "notes": list(notes),
    }
    name = key(cfg, cand.run_id, base.run.run_id if base else None, digest)
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-kept-") as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(json.dumps(payload, default=_number), encoding="utf-8")
        tracker.log_artifact(cand.run_id, path, FOLDER)


def _restore(cfg: Config, comparison: cmp.Comparison, payload: dict) -> Evaluated:
    if payload.get("v") != VERSION:
        raise ValueError("another version")
    cand_metrics = {k: _float(v) for k, v in payload["candidate"].items()}
    cand = replace(comparison.candidate, metrics={**comparison.candidate.metrics, **cand_metrics})
    base = comparison.baseline
    if base is not None:
        if payload["baseline"] is None:
            raise ValueError("kept without a baseline")
        base_metrics = {k: _float(v) for k, v in payload["baseline"].items()}
        base = replace(base, run=replace(base.run, metrics={**base.run.metrics, **base_metrics}))
    intervals = {name: KeptInterval(_float(iv["delta"]), _float(iv["low"]), _float(iv["high"]), iv["confidence"],
                                    {level: tuple(map(_float, pair)) for level, pair in iv["bounds"].items()})
                 for name, iv in payload["intervals"].items()}
    rows = cmp.diff_with_intervals(cfg, dict(cand.metrics), dict(base.run.metrics) if base else None, intervals)
    updated = replace(comparison, candidate=cand, baseline=base, metrics=rows,
                      notes=(*comparison.notes, *payload["notes"]))
    rules = _slice_rules(cfg, payload["rules"])
    checks = tuple(Check(**{**c, "value": _float(c["value"]), "baseline": _float(c["baseline"])}) for c in payload["data_checks"])
    return Evaluated(updated, intervals, payload["summary"], rules, checks, reused=True)


def _slice_rules(cfg: Config, metrics: list[str]) -> tuple:
    """The slice_gate rules, one per slice metric, in the order the computation made them (for each slice,
    every rule of ``evaluate.slice_gate`` in turn)."""
    rules = cfg.evaluate.slice_gate
    if metrics and not rules:
        raise ValueError("slice rules kept, none configured")
    return tuple(rules[i % len(rules)].model_copy(update={"metric": name}) for i, name in enumerate(metrics))


def _interval_json(interval, alphas: list[float]) -> dict:
    return {"delta": interval.delta, "low": interval.low, "high": interval.high, "confidence": interval.confidence,
            "bounds": {_level(a): [interval.one_sided_lower(a), interval.one_sided_upper(a)] for a in alphas}}


def _check_json(check: Check) -> dict:
    return {"metric": check.metric, "rule": check.rule, "limit": check.limit, "value": check.value,
            "baseline": check.baseline, "bound": check.bound, "passed": check.passed, "blocking": check.blocking,
            "direction": check.direction, "message": check.message}


def _number(value: Any):
    """JSON for what json cannot write itself (NumPy scalars and arrays in the summary)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _float(value) -> float | None:
    """A kept number (NaN and infinities as JSON writes them, or as text); None stays None."""
    return None if value is None else float(value)

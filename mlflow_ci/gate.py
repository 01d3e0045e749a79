"""The gate: turn the configured rules and a comparison into checks and a verdict.

Comparisons are exact at the boundary. Metric values are IEEE doubles, but what a user means by
0.8 + 0.05 is 0.85, not 0.8500000000000001; every comparison is therefore done on the shortest decimal
representation of each double (``repr``) with :mod:`decimal`, which adds and multiplies those exactly.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, replace
from decimal import Context, Decimal, localcontext
from typing import Mapping

from mlflow_ci.config import LIMIT_RULES, RULE_BASELINE
from mlflow_ci.config.models import Rule

# Names that usually mean "lower is better" when a rule does not say (documented in docs/gate.md).
_LOWER_IS_BETTER = re.compile(
    r"(^|[_./-])(loss|error|err|rmse|mse|mae|mape|smape|msle|rmsle|logloss|log_loss|"
    r"brier|perplexity|latency|duration|time|seconds|wer|cer|fpr|fnr)([_./-]|$)",
    re.IGNORECASE,
)
BASELINE_RULES = (*RULE_BASELINE, "min_absolute_change", "min_relative_change")  # the rules that compare
# MLflow's fallback when the baseline is exactly 0 for min_relative_change.
_MLFLOW_ZERO_BASELINE_EPS = Decimal("1e-10")


def infer_direction(metric: str) -> str:
    """'lower' for error-like names (rmse, log_loss, val_error...) and costs (perf.*), else 'higher'."""
    return "lower" if metric.startswith("perf.") or _LOWER_IS_BETTER.search(metric) else "higher"


def rule_direction(rule: Rule | None, metric: str) -> str:
    """The direction a rule states (direction or greater_is_better), else the inferred one."""
    if rule is not None:
        if rule.direction:
            return rule.direction
        if rule.greater_is_better is not None:
            return "higher" if rule.greater_is_better else "lower"
    return infer_direction(metric)


@dataclass(frozen=True)
class Check:
    metric: str
    rule: str
    limit: float | None
    value: float | None
    baseline: float | None
    bound: float | None
    passed: bool | None
    blocking: bool
    direction: str
    message: str

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "rule": self.rule,
            "limit": self.limit,
            "value": _json_number(self.value),
            "baseline": _json_number(self.baseline),
            "bound": self.bound,
            "passed": self.passed,
            "blocking": self.blocking,
            "direction": self.direction,
            "message": self.message,
        }


@dataclass(frozen=True)
class GateResult:
    checks: tuple[Check, ...]

    @property
    def verdict(self) -> str:
        """'fail' if a blocking rule failed, 'warn' if only warn-mode rules failed, else 'pass'."""
        if any(c.passed is False and c.blocking for c in self.checks):
            return "fail"
        if any(c.passed is False for c in self.checks):
            return "warn"
        return "pass"

    def not_comparable(self, why: str, *, inform: bool) -> "GateResult":
        """Rules comparing a training-logged metric with the baseline when the two were computed on different
        rows (``why``): marked so, and with ``inform`` they no longer block (same-rows ``eval.*`` decide)."""
        def mark(check: Check) -> Check:
            if not _training_logged(check.metric) or check.rule not in (*BASELINE_RULES, "significance") or check.passed is None:
                return check
            return replace(check, blocking=check.blocking and not inform,
                           message=f"not comparable: computed on different rows ({why}); {check.message}"
                                   + ("; informs only (gate.train_metrics_on_data_change: inform)" if inform and check.blocking else ""))
        return GateResult(tuple(mark(c) for c in self.checks))

    def pending(self, metrics: frozenset[str] | set[str], why: str) -> "GateResult":
        """Rules on ``metrics`` left for another job to decide (``why``): not evaluated here (``passed`` null),
        so they neither pass nor fail this result; the job that scores them decides them."""
        return GateResult(tuple(replace(c, passed=None, value=None, bound=None, message=f"pending: {why}")
                                if c.metric in metrics and c.rule != "baseline_required" else c for c in self.checks))

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.passed is False)


SCORED_PREFIXES = ("eval.", "perf.", "genai.", "data:")  # computed by mlflow-ci on the same rows for both sides


def _training_logged(metric: str) -> bool:
    return not metric.startswith(SCORED_PREFIXES) and metric != "baseline"


def _json_number(value: float | None) -> float | str | None:
    """JSON has no NaN/inf: keep them visible as strings instead of producing invalid JSON."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def fmt(value: float | Decimal | None, digits: int = 6) -> str:
    """A number as a human reads it: ``digits`` significant digits, integers without a point."""
    if value is None:
        return "n/a"
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}"


def digits_for(*values: float | Decimal | None) -> int:
    """The fewest significant digits (at least 6) that keep distinct numbers distinct on screen.

    So a failing boundary case never reads "0.85 < min 0.85".
    """
    finite = sorted({float(v) for v in values if v is not None and math.isfinite(float(v))})
    for digits in range(6, 18):
        shown = {f"{v:.{digits}g}" for v in finite}
        if len(shown) == len(finite):
            return digits
    return 17


_fmt = fmt


def _problem(value: float | None, what: str) -> str | None:
    if value is None:
        return f"{what} is missing"
    if math.isnan(value):
        return f"{what} is NaN"
    if math.isinf(value):
        return f"{what} is infinite"
    if abs(value) == sys.float_info.max:  # how MLflow's SQL stores keep an infinite value a script logged
        return f"{what} is infinite (stored as the largest double)"
    return None


def evaluate(
    rules: tuple[Rule, ...],
    candidate: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    intervals: Mapping[str, object] | None = None,
) -> GateResult:
    """Evaluate every rule of every metric; ``baseline`` is None when there is no baseline run.

    ``intervals`` (from the paired bootstrap) turn a rule with ``significance: a`` into "fail only when
    the regression is statistically significant at level a".
    """
    checks: list[Check] = []
    for rule in rules:
        interval = (intervals or {}).get(rule.metric) if rule.significance else None
        for name in LIMIT_RULES:
            limit = getattr(rule, name)
            if limit is not None:
                check = _check(rule, name, limit, candidate, baseline)
                if interval is not None and name in RULE_BASELINE and check.passed is not None:
                    check = _significant(check, rule, interval)
                checks.append(check)
        if rule.significance and rule.max_drop is None and rule.max_drop_pct is None:
            plain = _check(rule, "max_drop", 0.0, candidate, baseline)
            if interval is not None and plain.passed is not None:
                plain = _significant(plain, rule, interval)
            elif plain.passed is not None:
                plain = replace(plain, passed=None, message=f"no bootstrap interval for {rule.metric} (is it an evaluate: metric?); not evaluated")
            checks.append(replace(plain, rule="significance", limit=rule.significance))
    return GateResult(tuple(checks))


def _significant(check: Check, rule: Rule, interval) -> Check:
    """Re-decide a drop rule on the one-sided bootstrap bound of the paired difference.

    At level a, "higher is better" regresses significantly when even the one-sided (1 - a) *upper*
    bound of Δ is below -allowed; "lower is better" when the one-sided (1 - a) *lower* bound is above
    +allowed. The message shows that bound (also kept in ``bound``), not a two-sided interval.
    """
    alpha = rule.significance
    base = check.baseline
    allowed = check.limit if check.rule in ("max_drop", "significance") else abs(base) * check.limit / 100
    if check.direction == "higher":
        bound, side, threshold = interval.one_sided_upper(alpha), "upper", -allowed
        significant = bound < threshold
        relation = "<" if significant else "≥"
    else:
        bound, side, threshold = interval.one_sided_lower(alpha), "lower", allowed
        significant = bound > threshold
        relation = ">" if significant else "≤"
    d = digits_for(interval.delta, bound, allowed)
    level = f"{(1 - alpha) * 100:g} %"
    shown = f"Δ {_fmt(interval.delta, d)}, one-sided {level} {side} bound {_fmt(bound, d)} {relation} {_fmt(threshold, d)}"
    if significant:
        return replace(check, passed=False, bound=bound, message=f"{shown} → significant regression (level {alpha:g})")
    verdict = "no significant regression" if check.passed is False or interval.delta != 0 else "no change"
    return replace(check, passed=True, bound=bound, message=f"{shown} → {verdict} (level {alpha:g})")


def _check(
    rule: Rule,
    name: str,
    limit: float,
    candidate: Mapping[str, float],
    baseline: Mapping[str, float] | None,
) -> Check:
    metric = rule.metric
    direction = rule_direction(rule, metric)
    value = candidate.get(metric)
    base = baseline.get(metric) if baseline is not None else None
    blocking = rule.mode != "warn"

    def out(passed: bool | None, message: str, bound: Decimal | None = None) -> Check:
        return Check(
            metric=metric,
            rule=name,
            limit=limit,
            value=value,
            baseline=base,
            bound=float(bound) if bound is not None else None,
            passed=passed,
            blocking=blocking,
            direction=direction,
            message=message,
        )

    missing = _problem(value, f"{metric} of the candidate")
    if missing:
        if rule.required:
            return out(False, f"{missing}: the rule fails closed (set required: false to skip it)")
        return out(None, f"{missing}; skipped because required: false")

    compared = name in BASELINE_RULES
    if compared:
        if baseline is None:
            return out(None, "no baseline to compare against; not evaluated")
        base_missing = _problem(base, f"{metric} of the baseline")
        if base_missing:
            return out(None, f"{base_missing}; not evaluated")

    with localcontext(Context(prec=60)):
        return _decide(name, _dec(limit), _dec(value), _dec(base) if compared else None, direction, out)


def _decide(name, lim: Decimal, v: Decimal, b: Decimal | None, direction: str, out) -> Check:
    higher = direction == "higher"
    bounds = [lim] if b is None else [b + lim, b - lim, b * (1 + lim), b * (1 - lim)]
    d = digits_for(v, lim, b, *bounds)

    def fmt(x):  # noqa: F811 - the module fmt, with the digits this check needs
        return _fmt(x, d)

    if name == "min":
        return out(v >= lim, f"{fmt(v)} {'≥' if v >= lim else '<'} min {fmt(lim)}", lim)
    if name == "max":
        return out(v <= lim, f"{fmt(v)} {'≤' if v <= lim else '>'} max {fmt(lim)}", lim)
    if name == "threshold":
        ok = v >= lim if higher else v <= lim
        sign = ("≥" if ok else "<") if higher else ("≤" if ok else ">")
        return out(ok, f"{fmt(v)} {sign} threshold {fmt(lim)} ({direction} is better)", lim)
    assert b is not None
    if name in ("max_drop", "max_drop_pct"):
        return _drop(name, lim, v, b, higher, out)
    if name == "min_absolute_change":
        bound = b + lim if higher else b - lim
        ok = v >= bound if higher else v <= bound
        need = f"≥ {fmt(b)} + {fmt(lim)}" if higher else f"≤ {fmt(b)} − {fmt(lim)}"
        return out(ok, f"{fmt(v)} {'meets' if ok else 'misses'} {need} = {fmt(bound)} (baseline {fmt(b)})", bound)
    # min_relative_change, with MLflow's fallback for a zero baseline
    if b == 0:
        bound = b + _MLFLOW_ZERO_BASELINE_EPS if higher else b - _MLFLOW_ZERO_BASELINE_EPS
        need = "> 0 (baseline is 0, so any improvement)"
    else:
        bound = b * (1 + lim) if higher else b * (1 - lim)
        need = f"{fmt(b)} × (1 {'+' if higher else '−'} {fmt(lim)}) = {fmt(bound)}"
    ok = v >= bound if higher else v <= bound
    rel = "≥" if higher else "≤"
    return out(ok, f"{fmt(v)} {'meets' if ok else 'misses'} {rel} {need}", bound)


def _drop(name, lim: Decimal, v: Decimal, b: Decimal, higher: bool, out) -> Check:
    regression = b - v if higher else v - b
    pct_of = regression * 100 / abs(b) if b else regression
    d = digits_for(regression, lim, pct_of)

    def fmt(x):  # noqa: F811 - the module fmt, with the digits this check needs
        return _fmt(x, d)

    if name == "max_drop":
        bound = b - lim if higher else b + lim
        ok = regression <= lim
        what = f"regressed by {fmt(regression)}" if regression > 0 else "did not regress"
        return out(ok, f"{what} vs baseline {fmt(b)} (allowed {fmt(lim)})", bound)
    if b == 0:
        ok = regression <= 0
        text = "did not regress" if ok else "regressed from a baseline of 0 (an unbounded relative drop)"
        return out(ok, f"{text} (allowed {fmt(lim)}%)", b)
    bound = b - abs(b) * lim / 100 if higher else b + abs(b) * lim / 100
    ok = regression * 100 <= lim * abs(b)
    pct = regression * 100 / abs(b)
    what = f"regressed by {fmt(pct)}%" if regression > 0 else "did not regress"
    return out(ok, f"{what} vs baseline {fmt(b)} (allowed {fmt(lim)}%)", bound)


def needs_baseline(rule: Rule) -> bool:
    """Whether the rule compares with a baseline (a drop, an MLflow change rule, a significance test)."""
    return bool(rule.significance) or any(getattr(rule, name) is not None for name in BASELINE_RULES)


def no_baseline(rules: tuple[Rule, ...], why: tuple[str, ...]) -> Check | None:
    """The blocking check of a gate that has rules needing a baseline and none that may serve although one
    should exist (``why``: the evidence): the check fails closed rather than pass on what it cannot
    compare. None when no rule needs a baseline."""
    names = sorted({rule.metric for rule in rules if needs_baseline(rule)})
    if not names:
        return None
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return Check(metric="baseline", rule="baseline_required", limit=None, value=None, baseline=None, bound=None,
                 passed=False, blocking=True, direction="higher",
                 message=f"no usable baseline: {'; '.join(why)}; the drop rules ({shown}) cannot be evaluated "
                         "(baseline.required: false passes without one)")

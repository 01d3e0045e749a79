from __future__ import annotations

import math
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlflow_ci.config.models import Rule
from mlflow_ci.gate import digits_for, evaluate, infer_direction, rule_direction


def one(rule: Rule, value, baseline=None, *, has_baseline=True):
    cand = {} if value is None else {rule.metric: value}
    base = None if not has_baseline else ({} if baseline is None else {rule.metric: baseline})
    result = evaluate((rule,), cand, base)
    assert len(result.checks) == 1
    return result.checks[0]


# --- MLflow's MetricThreshold vocabulary, with MLflow's meaning ------------------------------------


def test_min_absolute_change_is_exact_at_the_boundary():
    # MLflow itself computes 0.85 - 0.80 = 0.04999999999999993 and wrongly fails this.
    rule = Rule("acc", min_absolute_change=0.05, greater_is_better=True)
    check = one(rule, 0.85, 0.80)
    assert check.passed is True
    assert check.bound == 0.85
    assert one(rule, 0.8499999, 0.80).passed is False


def test_min_absolute_change_lower_is_better():
    rule = Rule("loss", min_absolute_change=0.1, greater_is_better=False)
    assert one(rule, 0.2, 0.3).passed is True  # 0.2 <= 0.3 - 0.1 exactly
    assert one(rule, 0.21, 0.3).passed is False


def test_min_relative_change():
    rule = Rule("acc", min_relative_change=0.1, greater_is_better=True)
    assert one(rule, 0.55, 0.5).passed is True  # 0.5 * 1.1 = 0.55 exactly
    assert one(rule, 0.5499, 0.5).passed is False
    low = Rule("rmse", min_relative_change=0.1, greater_is_better=False)
    assert one(low, 0.9, 1.0).passed is True
    assert one(low, 0.91, 1.0).passed is False


def test_min_relative_change_zero_baseline_uses_mlflow_fallback():
    rule = Rule("gain", min_relative_change=0.5, greater_is_better=True)
    assert one(rule, 1e-10, 0.0).passed is True
    assert one(rule, 0.0, 0.0).passed is False
    low = Rule("loss", min_relative_change=0.5, greater_is_better=False)
    assert one(low, -1e-10, 0.0).passed is True
    assert one(low, 0.0, 0.0).passed is False


def test_threshold_follows_greater_is_better():
    assert one(Rule("acc", threshold=0.9, greater_is_better=True), 0.9).passed is True
    assert one(Rule("acc", threshold=0.9, greater_is_better=True), 0.89).passed is False
    assert one(Rule("mae", threshold=60, greater_is_better=False), 60).passed is True
    assert one(Rule("mae", threshold=60, greater_is_better=False), 60.5).passed is False


# --- our own rules ----------------------------------------------------------------------------------


def test_min_and_max_are_inclusive():
    assert one(Rule("r2", min=0.3), 0.3).passed is True
    assert one(Rule("r2", min=0.3), 0.29999).passed is False
    assert one(Rule("rmse", max=65), 65).passed is True
    assert one(Rule("rmse", max=65), 65.0001).passed is False


def test_max_drop_in_units_by_direction():
    higher = Rule("acc", max_drop=0.02)
    assert one(higher, 0.88, 0.90).passed is True  # dropped exactly 0.02
    assert one(higher, 0.879, 0.90).passed is False
    assert one(higher, 0.95, 0.90).passed is True
    lower = Rule("rmse", max_drop=1, direction="lower")
    assert one(lower, 11, 10).passed is True
    assert one(lower, 11.01, 10).passed is False


def test_max_drop_pct():
    rule = Rule("rmse", max_drop_pct=5, direction="lower")
    assert one(rule, 63, 60).passed is True  # +5% exactly
    assert one(rule, 63.01, 60).passed is False
    acc = Rule("acc", max_drop_pct=1)
    assert one(acc, 0.99, 1.0).passed is True
    neg = Rule("score", max_drop_pct=10)  # negative baselines: relative to |baseline|
    assert one(neg, -1.1, -1.0).passed is True
    assert one(neg, -1.2, -1.0).passed is False


def test_max_drop_pct_with_zero_baseline():
    rule = Rule("acc", max_drop_pct=5)
    assert one(rule, 0.0, 0.0).passed is True
    assert one(rule, 0.1, 0.0).passed is True
    check = one(rule, -0.1, 0.0)
    assert check.passed is False and "baseline of 0" in check.message


# --- fail closed -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, math.nan, math.inf, -math.inf])
def test_missing_nan_and_inf_fail_closed(value):
    check = one(Rule("acc", min=0.5), value)
    assert check.passed is False
    assert "fails closed" in check.message


@pytest.mark.parametrize("value", [None, math.nan])
def test_required_false_skips(value):
    check = one(Rule("acc", min=0.5, required=False), value)
    assert check.passed is None
    assert "required: false" in check.message


def test_rules_needing_a_baseline_are_not_evaluated_without_one():
    check = one(Rule("acc", max_drop=0.1), 0.5, has_baseline=False)
    assert check.passed is None and "no baseline" in check.message
    check = one(Rule("acc", max_drop=0.1), 0.5, None)  # baseline run lacks the metric
    assert check.passed is None and "baseline is missing" in check.message
    check = one(Rule("acc", max_drop=0.1), 0.5, math.nan)
    assert check.passed is None and "baseline is NaN" in check.message


# --- verdicts --------------------------------------------------------------------------------------


def test_verdicts_and_warn_mode():
    rules = (Rule("acc", min=0.9), Rule("f1", min=0.9, mode="warn"))
    assert evaluate(rules, {"acc": 0.95, "f1": 0.95}, None).verdict == "pass"
    warn = evaluate(rules, {"acc": 0.95, "f1": 0.5}, None)
    assert warn.verdict == "warn" and not warn.checks[1].blocking
    assert evaluate(rules, {"acc": 0.5, "f1": 0.95}, None).verdict == "fail"
    assert evaluate((), {"acc": 0.5}, None).verdict == "pass"


def test_one_check_per_configured_rule_in_order():
    rule = Rule("rmse", min=1, max=65, max_drop=3, max_drop_pct=5, direction="lower")
    checks = evaluate((rule,), {"rmse": 50}, {"rmse": 49}).checks
    assert [c.rule for c in checks] == ["min", "max", "max_drop", "max_drop_pct"]
    assert all(c.passed for c in checks)
    assert checks[2].as_dict()["baseline"] == 49


def test_direction_inference_and_precedence():
    assert infer_direction("val_rmse") == "lower"
    assert infer_direction("log_loss") == "lower"
    assert infer_direction("training_time") == "lower"
    assert infer_direction("accuracy") == "higher"
    assert infer_direction("mean_error") == "lower"
    assert infer_direction("r2") == "higher"
    assert infer_direction("lossless_ratio") == "higher"  # whole words only
    assert rule_direction(Rule("accuracy", min=1, direction="lower"), "accuracy") == "lower"
    assert rule_direction(Rule("rmse", min=1, greater_is_better=True), "rmse") == "higher"


def test_messages_show_enough_digits_to_tell_numbers_apart():
    check = one(Rule("acc", min=0.85), 0.8499999)
    assert check.message == "0.8499999 < min 0.85"
    assert digits_for(0.5, 0.25) == 6


# --- properties ------------------------------------------------------------------------------------

decimals = st.decimals(min_value=-1000, max_value=1000, places=4, allow_nan=False, allow_infinity=False)


@given(base=decimals, delta=st.decimals(min_value=0, max_value=100, places=4))
def test_property_exact_change_equal_to_min_absolute_change_passes(base, delta):
    """Typed numbers: candidate = baseline + change passes, whatever float rounding does."""
    b, c = float(base), float(delta)
    cand = float(base + delta)
    rule = Rule("m", min_absolute_change=c, greater_is_better=True)
    assert one(rule, cand, b).passed is True
    low = Rule("m", min_absolute_change=c, greater_is_better=False)
    assert one(low, float(base - delta), b).passed is True


@given(base=decimals, drop=st.decimals(min_value=0, max_value=100, places=4))
def test_property_drop_equal_to_max_drop_passes_and_more_fails(base, drop):
    rule = Rule("m", max_drop=float(drop))
    assert one(rule, float(base - drop), float(base)).passed is True
    assert one(rule, float(base - drop) - 0.001, float(base)).passed is False


# The largest double is how MLflow's SQL stores keep an infinity: the gate reads it as one (fails closed).
STORED = st.floats(allow_nan=False, allow_infinity=False, width=64).filter(lambda v: abs(v) != sys.float_info.max)


@given(value=STORED, limit=st.floats(allow_nan=False, allow_infinity=False))
def test_property_min_agrees_with_float_comparison(value, limit):
    """Bounds without arithmetic decide exactly as plain comparison does."""
    assert one(Rule("m", min=limit), value).passed is (value >= limit)
    assert one(Rule("m", max=limit), value).passed is (value <= limit)

"""Evaluation metrics equal scikit-learn's; paired bootstrap intervals; the significance gate."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from mlflow_ci.config.models import Rule
from mlflow_ci.errors import UsageError
from mlflow_ci.evaluate.metrics import Interval, build_metric, load_dataset, paired_bootstrap
from mlflow_ci.gate import evaluate, fmt

rng = np.random.default_rng(42)
N = 2000
Y_BIN = rng.integers(0, 2, N)
P_BIN = np.clip(Y_BIN * 0.35 + rng.random(N) * 0.65, 0, 1)
P_BIN[:50] = 0.5  # ties for ROC AUC
PROBA_BIN = np.column_stack([1 - P_BIN, P_BIN])
Y_MULTI = rng.integers(0, 3, N)
RAW = rng.random((N, 3)) + np.eye(3)[Y_MULTI] * 0.8
PROBA_MULTI = RAW / RAW.sum(axis=1, keepdims=True)
Y_REG = rng.normal(10, 3, N)
PRED_REG = Y_REG + rng.normal(0, 1, N)


def point(name, task, y, out, classes=None):
    return build_metric(name, task, y, out, classes).value(None)


@pytest.mark.parametrize("name, reference", [
    ("accuracy", lambda: sk.accuracy_score(Y_BIN, PROBA_BIN.argmax(1))),
    ("balanced_accuracy", lambda: sk.balanced_accuracy_score(Y_BIN, PROBA_BIN.argmax(1))),
    ("precision", lambda: sk.precision_score(Y_BIN, PROBA_BIN.argmax(1))),
    ("recall", lambda: sk.recall_score(Y_BIN, PROBA_BIN.argmax(1))),
    ("f1", lambda: sk.f1_score(Y_BIN, PROBA_BIN.argmax(1))),
    ("f1_macro", lambda: sk.f1_score(Y_BIN, PROBA_BIN.argmax(1), average="macro")),
    ("f1_weighted", lambda: sk.f1_score(Y_BIN, PROBA_BIN.argmax(1), average="weighted")),
    ("log_loss", lambda: sk.log_loss(Y_BIN, PROBA_BIN)),
    ("brier", lambda: sk.brier_score_loss(Y_BIN, P_BIN)),
])
def test_binary_metrics_equal_sklearn(name, reference):
    assert point(name, "classification", Y_BIN, PROBA_BIN, np.array([0, 1])) == pytest.approx(reference(), abs=1e-9)


def test_roc_auc_equals_sklearn_within_the_bound_it_reports():
    """ROC AUC comes from 65,536 logit-scale bins: a positive and a negative in one bin count as a tie.
    The bound reported is what those shared bins may change; scores apart by more than a bin: exact."""
    result = paired_bootstrap(["roc_auc"], "classification", Y_BIN, PROBA_BIN, PROBA_BIN, classes=np.array([0, 1]), resamples=0)
    exact = sk.roc_auc_score(Y_BIN, P_BIN)
    assert 0 < abs(result.candidate["roc_auc"] - exact) <= result.auc_error["roc_auc"] < 1e-3  # the 50 real ties count too
    apart = np.round(P_BIN, 2)  # 101 distinct scores, far apart on the logit scale: ties are real ties
    tied = paired_bootstrap(["roc_auc"], "classification", Y_BIN, np.column_stack([1 - apart, apart]), PROBA_BIN,
                            classes=np.array([0, 1]), resamples=0)
    assert tied.candidate["roc_auc"] == pytest.approx(sk.roc_auc_score(Y_BIN, apart), abs=1e-12)


@pytest.mark.parametrize("name, reference", [
    ("accuracy", lambda p: sk.accuracy_score(Y_MULTI, p.argmax(1))),
    ("balanced_accuracy", lambda p: sk.balanced_accuracy_score(Y_MULTI, p.argmax(1))),
    ("f1_macro", lambda p: sk.f1_score(Y_MULTI, p.argmax(1), average="macro")),
    ("f1_weighted", lambda p: sk.f1_score(Y_MULTI, p.argmax(1), average="weighted")),
    ("precision_macro", lambda p: sk.precision_score(Y_MULTI, p.argmax(1), average="macro")),
    ("recall_macro", lambda p: sk.recall_score(Y_MULTI, p.argmax(1), average="macro")),
    ("log_loss", lambda p: sk.log_loss(Y_MULTI, p)),
])
def test_multiclass_metrics_equal_sklearn(name, reference):
    got = point(name, "classification", Y_MULTI, PROBA_MULTI, np.array([0, 1, 2]))
    assert got == pytest.approx(reference(PROBA_MULTI), abs=1e-9)


@pytest.mark.parametrize("name, reference", [
    ("mae", lambda: sk.mean_absolute_error(Y_REG, PRED_REG)),
    ("mse", lambda: sk.mean_squared_error(Y_REG, PRED_REG)),
    ("rmse", lambda: np.sqrt(sk.mean_squared_error(Y_REG, PRED_REG))),
    ("r2", lambda: sk.r2_score(Y_REG, PRED_REG)),
    ("mape", lambda: sk.mean_absolute_percentage_error(Y_REG, PRED_REG)),
])
def test_regression_metrics_equal_sklearn(name, reference):
    assert point(name, "regression", Y_REG, PRED_REG) == pytest.approx(reference(), abs=1e-9)


def test_binary_only_metrics_refuse_multiclass_and_unknown_labels():
    with pytest.raises(ValueError, match="needs a binary target"):
        point("roc_auc", "classification", Y_MULTI, PROBA_MULTI, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="labels the model was not trained on"):
        point("accuracy", "classification", Y_MULTI + 5, PROBA_MULTI, np.array([0, 1, 2]))


def test_paired_bootstrap_is_reproducible_and_brackets_the_difference():
    worse = np.clip(P_BIN * 0.7 + 0.15, 0, 1)
    proba_worse = np.column_stack([1 - worse, worse])
    a = paired_bootstrap(["accuracy", "roc_auc", "log_loss"], "classification", Y_BIN, proba_worse, PROBA_BIN,
                         classes=np.array([0, 1]), resamples=300, seed=7)
    b = paired_bootstrap(["accuracy", "roc_auc", "log_loss"], "classification", Y_BIN, proba_worse, PROBA_BIN,
                         classes=np.array([0, 1]), resamples=300, seed=7)
    for name in ("accuracy", "roc_auc", "log_loss"):
        assert a.intervals[name].low == b.intervals[name].low  # same seed, same interval
        iv = a.intervals[name]
        assert iv.low <= iv.delta <= iv.high
        assert iv.delta == pytest.approx(a.candidate[name] - a.baseline[name])
    assert a.intervals["log_loss"].low > 0  # flattening the probabilities really hurts log loss
    same = paired_bootstrap(["accuracy"], "classification", Y_BIN, PROBA_BIN, PROBA_BIN, classes=np.array([0, 1]), resamples=200)
    assert (same.intervals["accuracy"].low, same.intervals["accuracy"].high) == (0.0, 0.0)


def test_significance_gate():
    rng2 = np.random.default_rng(3)
    noisy = np.clip(P_BIN + rng2.normal(0, 0.02, N), 0, 1)
    tiny = paired_bootstrap(["roc_auc"], "classification", Y_BIN, np.column_stack([1 - noisy, noisy]), PROBA_BIN,
                            classes=np.array([0, 1]), resamples=500)
    bad = np.clip(P_BIN * 0.3 + rng2.random(N) * 0.7, 0, 1)
    big = paired_bootstrap(["roc_auc"], "classification", Y_BIN, np.column_stack([1 - bad, bad]), PROBA_BIN,
                           classes=np.array([0, 1]), resamples=500)
    rule = Rule("eval.roc_auc", max_drop=0.0, significance=0.05)
    plain = Rule("eval.roc_auc", max_drop=0.0)
    for result, expect_fail in ((tiny, False), (big, True)):
        cand, base = {"eval.roc_auc": result.candidate["roc_auc"]}, {"eval.roc_auc": result.baseline["roc_auc"]}
        intervals = {"eval.roc_auc": result.intervals["roc_auc"]}
        check = evaluate((rule,), cand, base, intervals).checks[0]
        assert check.passed is (not expect_fail), check.message
        bound = result.intervals["roc_auc"].one_sided_upper(0.05)
        assert check.bound == bound  # the bound that decided, not the baseline
        assert check.message.startswith(f"Δ {fmt(result.intervals['roc_auc'].delta, 6)}, one-sided 95 % upper bound ")
        assert check.message.endswith("→ significant regression (level 0.05)" if expect_fail else "→ no significant regression (level 0.05)")
        assert (" < 0 →" in check.message) is expect_fail and (" ≥ 0 →" in check.message) is not expect_fail
    # without significance the same tiny noise would have failed a max_drop: 0 rule
    cand, base = {"eval.roc_auc": tiny.candidate["roc_auc"]}, {"eval.roc_auc": tiny.baseline["roc_auc"]}
    assert tiny.candidate["roc_auc"] < tiny.baseline["roc_auc"]
    assert evaluate((plain,), cand, base).checks[0].passed is False
    alone = Rule("eval.roc_auc", significance=0.05)
    check = evaluate((alone,), cand, base, {"eval.roc_auc": tiny.intervals["roc_auc"]}).checks[0]
    assert (check.rule, check.passed) == ("significance", True)
    check = evaluate((alone,), cand, base, {}).checks[0]
    assert check.passed is None and "no bootstrap interval" in check.message


def test_significance_wording_for_lower_is_better_and_the_interval_shown():
    samples = np.sort(np.random.default_rng(5).normal(4.17, 2.5, 2000))
    iv = Interval(4.17, float(np.quantile(samples, 0.025)), float(np.quantile(samples, 0.975)), 0.95, samples)
    check = evaluate((Rule("eval.rmse", max_drop=0.0, significance=0.05, direction="lower"),),
                     {"eval.rmse": 60.0}, {"eval.rmse": 55.83}, {"eval.rmse": iv}).checks[0]
    lower = iv.one_sided_lower(0.05)
    assert iv.low < 0 < lower  # the two-sided 95 % interval contains 0; the one-sided 95 % bound does not
    assert check.passed is False and check.bound == lower
    assert check.message == f"Δ 4.17, one-sided 95 % lower bound {fmt(lower, 6)} > 0 → significant regression (level 0.05)"
    shown = iv.for_decision(0.05)
    assert (shown.low, shown.confidence) == (lower, pytest.approx(0.9))  # what the table shows is what decided


def test_load_dataset(tmp_path):
    (tmp_path / "eval.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    X, y = load_dataset("eval.csv", "label", tmp_path)
    assert list(X.columns) == ["a", "b"] and list(y) == [0, 1]
    (tmp_path / "evalmod.py").write_text("import pandas as pd\ndef get():\n    return pd.DataFrame({'x': [1], 'label': [1]})\n")
    X, y = load_dataset("evalmod:get", "label", tmp_path)
    assert list(X.columns) == ["x"]
    with pytest.raises(UsageError, match="column 'nope' is not in the evaluation data"):
        load_dataset("eval.csv", "nope", tmp_path)
    with pytest.raises(UsageError, match="file not found"):
        load_dataset("missing.csv", "label", tmp_path)
    with pytest.raises(UsageError, match="cannot import it"):
        load_dataset("nomodule:func", "label", tmp_path)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_metric_the_config_accepts_is_implemented(task):
    from mlflow_ci.config import CLASSIFICATION, DEFAULT_METRICS, REGRESSION

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    if task == "classification":
        names, classes = CLASSIFICATION, np.array([0, 1])
        p = rng.uniform(0.05, 0.95, 200)
        output = np.column_stack([1 - p, p])
    else:
        names, classes = REGRESSION, None
        y = rng.normal(5, 1, 200)
        output = y + rng.normal(0, 0.1, 200)
    assert set(DEFAULT_METRICS[task]) <= set(names)
    for name in names:
        assert np.isfinite(build_metric(name, task, y, output, classes).value(None)), name


@pytest.mark.slow
def test_the_batched_poisson_bootstrap_agrees_with_a_plain_multinomial_one():
    """The intervals of the fast path (Poisson weights in batches, presorted AUC, float32 sums) against
    the textbook bootstrap (resample rows with replacement, compute each metric again): the ends agree
    within Monte-Carlo error. At 2,000 resamples a 2.5% quantile wanders by about 1.5% of the interval's
    width, the difference of two independent ones by about 2%; 12% is six of those (seen: at most 6.5%)."""
    from sklearn.metrics import roc_auc_score

    def f1(t, p):
        predicted = p > 0.5
        return 2 * (predicted & (t == 1)).sum() / (predicted.sum() + (t == 1).sum())

    rng = np.random.default_rng(7)
    n = 3000
    y = rng.integers(0, 2, n)
    cand = np.clip(0.55 * y + rng.normal(0.22, 0.2, n), 0.01, 0.99).round(2)  # rounded: many tied scores
    base = np.clip(0.5 * y + rng.normal(0.25, 0.2, n), 0.01, 0.99).round(2)
    scorers = {"accuracy": lambda t, p: ((p > 0.5) == t).mean(), "f1": f1,
               "log_loss": lambda t, p: -np.log(np.where(t == 1, p, 1 - p)).mean(), "roc_auc": roc_auc_score}
    fast = paired_bootstrap(list(scorers), "classification", y, np.column_stack([1 - cand, cand]),
                            np.column_stack([1 - base, base]), classes=np.array([0, 1]), resamples=2000, seed=3)
    textbook = {name: [] for name in scorers}
    for _ in range(2000):
        rows = rng.integers(0, n, n)
        for name, score in scorers.items():
            textbook[name].append(score(y[rows], cand[rows]) - score(y[rows], base[rows]))
    for name in scorers:
        low, high = np.quantile(textbook[name], [0.025, 0.975])
        width = high - low
        got = fast.intervals[name]
        assert abs(got.low - low) < 0.12 * width and abs(got.high - high) < 0.12 * width, (name, got.low, got.high, low, high)
        assert got.delta == pytest.approx(scorers[name](y, cand) - scorers[name](y, base), abs=1e-9)

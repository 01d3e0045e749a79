"""Calibration of the significance gate: how often does it cry wolf, and how often does it catch a
real regression?

    python benchmarks/calibration.py          # 40 calibration + 100 null + 100 regressed retrains

The paired bootstrap measures the noise of the evaluation rows. A stochastic learner adds another:
two seeds of the same configuration are two different models, and on enough rows the test will
(correctly) see that one is slightly worse. So the gate needs a margin: "significantly worse than the
champion by more than m". This script measures it:

1. calibrate: retrain with 40 seeds; for each metric, m = the largest distance by which the one-sided
   bootstrap bound falls on the wrong side of zero (a fresh seed exceeds the largest of n with
   probability 1/(n+1)); a/2 per rule, as two rules share the level a;
2. null: 100 fresh seeds, same configuration, gated with `{max_drop: m, significance: a/2}`: every
   failure is a false alarm, and the rate should stay at or below a;
3. regression: 100 seeds of the model without its most informative feature: the catch rate.
It also reports the false-alarm rate with m = 0, to show why the margin is needed.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from mlflow_ci.commands.calibrate import bootstrap_margin
from mlflow_ci.config.models import Rule
from mlflow_ci.evaluate.metrics import paired_bootstrap
from mlflow_ci.gate import evaluate

METRICS = ("roc_auc", "log_loss")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--calibration", type=int, default=40)
    parser.add_argument("--level", type=float, default=0.05)
    parser.add_argument("--eval-rows", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()

    X, y = make_classification(n_samples=4000 + args.eval_rows, n_features=12, n_informative=6,
                               shuffle=False, random_state=1)
    train, test = slice(0, 4000), slice(4000, None)
    key = 0  # with shuffle=False the informative features come first; drop one for the regression
    classes = np.array([0, 1])

    def fit(seed: int, drop: bool):
        columns = [c for c in range(X.shape[1]) if not (drop and c == key)]
        model = RandomForestClassifier(n_estimators=200, min_samples_leaf=10, random_state=seed, n_jobs=2)
        model.fit(X[train][:, columns], y[train])
        return model.predict_proba(X[test][:, columns])

    champion = fit(0, drop=False)
    half = args.level / 2

    def gate(candidate, seed: int, margins: dict[str, float]) -> bool:
        paired = paired_bootstrap(METRICS, "classification", y[test], candidate, champion, classes=classes,
                                  resamples=args.resamples, seed=seed)
        rules = (Rule("eval.roc_auc", max_drop=margins["roc_auc"], significance=half),
                 Rule("eval.log_loss", max_drop=margins["log_loss"], direction="lower", significance=half))
        cand = {f"eval.{k}": v for k, v in paired.candidate.items()}
        base = {f"eval.{k}": v for k, v in paired.baseline.items()}
        intervals = {f"eval.{k}": v for k, v in paired.intervals.items()}
        return evaluate(rules, cand, base, intervals).verdict == "fail", paired

    # 1. calibrate the margin on seeds that are not used again, as `mlflow-ci calibrate` does
    intervals = {"roc_auc": [], "log_loss": []}
    for seed in range(1, args.calibration + 1):
        _, paired = gate(fit(seed, drop=False), seed, {"roc_auc": 0.0, "log_loss": 0.0})
        for name in intervals:
            intervals[name].append(paired.intervals[name])
    margins = {"roc_auc": bootstrap_margin(intervals["roc_auc"], half, "higher"),
               "log_loss": bootstrap_margin(intervals["log_loss"], half, "lower")}

    # 2. and 3.
    counts = {"null (m = 0)": 0, "null": 0, "regressed": 0}
    first = args.calibration + 1
    for seed in range(first, first + args.trials):
        candidate = fit(seed, drop=False)
        counts["null (m = 0)"] += gate(candidate, seed, {"roc_auc": 0.0, "log_loss": 0.0})[0]
        counts["null"] += gate(candidate, seed, margins)[0]
        counts["regressed"] += gate(fit(seed, drop=True), seed, margins)[0]
    n = args.trials
    print(f"margins from {args.calibration} calibration seeds: eval.roc_auc max_drop {margins['roc_auc']:.4f}, "
          f"eval.log_loss max_drop {margins['log_loss']:.4f} (significance {half:g} each)")
    print(f"| gate on {args.eval_rows:,} held-out rows, {args.resamples:,} paired resamples, level {args.level:g} | rate | 95% interval |")
    print("|---|---:|---:|")
    labels = {"null (m = 0)": "false alarms without a margin (seed-only retrains)",
              "null": "false alarms with the calibrated margin (seed-only retrains)",
              "regressed": "regressions caught (retrains without the key feature)"}
    for kind, label in labels.items():
        lo, hi = wilson(counts[kind], n)
        print(f"| {label}: {counts[kind]}/{n} | {counts[kind] / n:.1%} | [{lo:.1%}, {hi:.1%}] |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

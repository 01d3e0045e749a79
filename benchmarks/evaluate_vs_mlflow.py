"""mlflow-ci's evaluation vs `mlflow.models.evaluate`, same model, data and metric set.

    python benchmarks/evaluate_vs_mlflow.py            # 100,000 rows, binary scikit-learn classifier

Prints both wall times, their ratio (measured in the same run), the largest difference between the
metric values (must be ≤ 1e-9), and what the paired bootstrap (1,000 resamples, both models) adds.
"""

from __future__ import annotations

import argparse
import warnings
import os
import tempfile
import time

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from mlflow_ci.evaluate.metrics import build_metric, model_output, paired_bootstrap

# our name -> mlflow.models.evaluate's default-evaluator name
PAIRS = {"accuracy": "accuracy_score", "f1": "f1_score", "precision": "precision_score",
         "recall": "recall_score", "log_loss": "log_loss", "roc_auc": "roc_auc"}


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    X, y = make_classification(n_samples=args.rows * 2, n_features=20, n_informative=8, random_state=0)
    columns = [f"f{i}" for i in range(X.shape[1])]
    train, test = slice(0, args.rows), slice(args.rows, None)
    model = LogisticRegression(max_iter=500).fit(pd.DataFrame(X[train], columns=columns), y[train])
    other = LogisticRegression(C=0.001, max_iter=500).fit(pd.DataFrame(X[train], columns=columns), y[train])
    data = pd.DataFrame(X[test], columns=columns)
    data["label"] = y[test]
    features = data.drop(columns=["label"])
    classes = np.asarray(model.classes_)

    def ours() -> dict:
        proba = model_output(model, features, "classification", classes)
        return {name: build_metric(name, "classification", data["label"].to_numpy(), proba, classes).value(None)
                for name in PAIRS}

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        import mlflow

        import mlflow.pyfunc
        import mlflow.sklearn
        import sklearn

        mlflow.set_experiment("evaluate-benchmark")
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(model, name="model", pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
        loaded = mlflow.pyfunc.load_model(info.model_uri)  # both sides start from a model in memory

        def theirs() -> dict:
            with mlflow.start_run():
                result = mlflow.models.evaluate(
                    loaded, data, targets="label", model_type="classifier", evaluators=["default"],
                    evaluator_config={"default": {"log_model_explainability": False}},
                )
            return {name: result.metrics[key] for name, key in PAIRS.items()}

        theirs()  # warm both (imports, first-call caches)
        ours()
        t_theirs = min(_time(theirs) for _ in range(args.repeat))
        t_ours = min(_time(ours) for _ in range(args.repeat))
        mine, reference = ours(), theirs()
    worst = max(abs(mine[k] - reference[k]) for k in PAIRS)
    start = time.perf_counter()
    paired_bootstrap(list(PAIRS), "classification", data["label"].to_numpy(),
                     model_output(model, features, "classification", classes),
                     model_output(other, features, "classification", classes), classes=classes, resamples=1000)
    t_boot = time.perf_counter() - start
    print(f"| {args.rows:,} rows, metrics {', '.join(PAIRS)} | seconds |")
    print("|---|---:|")
    print(f"| mlflow.models.evaluate (default evaluator, no explainability) | {t_theirs:.3f} |")
    print(f"| mlflow-ci evaluation (same model, data, metrics) | {t_ours:.3f} |")
    print(f"| speed-up | {t_theirs / t_ours:.1f}× |")
    print(f"| largest metric difference | {worst:.2e} ({'≤ 1e-9: agree' if worst <= 1e-9 else 'DISAGREE'}) |")
    print(f"| + paired bootstrap, 1,000 resamples, both models, all six metrics | {t_boot:.2f} |")
    return 0 if worst <= 1e-9 else 1


def _time(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


if __name__ == "__main__":
    raise SystemExit(main())

"""Demo model: logistic regression on scikit-learn's bundled breast cancer dataset.

mlflow-ci creates the MLflow run and sets MLFLOW_RUN_ID, so ``mlflow.start_run()`` below attaches to
it: params, metrics and the model all land in the run that mlflow-ci compares and gates.
"""

import mlflow
import mlflow.models
import mlflow.sklearn
import sklearn
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

with open("params.yaml", encoding="utf-8") as handle:  # noqa: SIM115
    params = yaml.safe_load(handle)

X, y = load_breast_cancer(return_X_y=True, as_frame=True)
features = params.get("features") or list(X.columns)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=7, stratify=y)

# The first step keeps the configured features, so the model accepts the full table: mlflow-ci can
# then score champion and candidate on the very same rows, whatever features each one uses.
model = make_pipeline(
    ColumnTransformer([("features", "passthrough", features)]),
    StandardScaler(),
    LogisticRegression(C=params["C"], max_iter=params["max_iter"]),
)

with mlflow.start_run():
    mlflow.log_params({"C": params["C"], "max_iter": params["max_iter"], "n_features": len(features)})
    model.fit(X_train, y_train)
    proba = model.predict_proba(X_test)[:, 1]
    pred = (proba >= 0.5).astype(int)
    metrics = {
        "accuracy": accuracy_score(y_test, pred),
        "f1": f1_score(y_test, pred),
        "roc_auc": roc_auc_score(y_test, proba),
        "log_loss": log_loss(y_test, proba),
    }
    mlflow.log_metrics(metrics)
    # Known requirements: skips MLflow's slow requirement inference.
    mlflow.sklearn.log_model(
        model,
        name="model",
        signature=mlflow.models.infer_signature(X_test, model.predict_proba(X_test)),
        pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"mlflow=={mlflow.__version__}"],
    )
    print("metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

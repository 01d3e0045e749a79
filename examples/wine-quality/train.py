"""Wine classifier that does not use MLflow at all: it writes metrics.json, which mlflow-ci logs.

This is how CML and DVC users work today; mlflow-ci still creates the MLflow run, tags it with the
commit, and gates the metrics.
"""

import json

import yaml
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score, log_loss
from sklearn.model_selection import train_test_split

with open("params.yaml", encoding="utf-8") as handle:
    params = yaml.safe_load(handle)

X, y = load_wine(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
model = RandomForestClassifier(
    n_estimators=params["n_estimators"], max_depth=params["max_depth"], random_state=params["seed"]
).fit(X_train, y_train)
proba = model.predict_proba(X_test)
pred = proba.argmax(axis=1)
metrics = {
    "accuracy": accuracy_score(y_test, pred),
    "f1_macro": f1_score(y_test, pred, average="macro"),
    "log_loss": log_loss(y_test, proba),
}
with open("metrics.json", "w", encoding="utf-8") as handle:
    json.dump(metrics, handle)
print("metrics:", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

"""The kinds of project users bring, end to end with ``evaluate:``: an XGBoost regressor and classifier
trained with autolog, and a PyTorch classifier. For each: a baseline on main, promoted; a regressing
PR exits 1; an improving PR exits 0; both models scored on the same rows. (scikit-learn: the demo.)"""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest
from conftest import Project, git
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

pytestmark = pytest.mark.slow

XGB_CLASSIFIER = textwrap.dedent("""
    import json, mlflow, pandas as pd, xgboost as xgb
    mlflow.xgboost.autolog(log_input_examples=False, log_model_signatures=True)
    p = json.load(open("params.json"))
    data = pd.read_csv("train.csv")
    X, y = data[p["features"]], data["label"]
    with mlflow.start_run():
        xgb.XGBClassifier(n_estimators=p["rounds"], max_depth=p["depth"], random_state=0).fit(X, y)
""")

XGB_REGRESSOR = textwrap.dedent("""
    import json, mlflow, pandas as pd, xgboost as xgb
    mlflow.xgboost.autolog(log_input_examples=False)
    p = json.load(open("params.json"))
    data = pd.read_csv("train.csv")
    dtrain = xgb.DMatrix(data[p["features"]], label=data["label"])
    with mlflow.start_run():
        xgb.train({"max_depth": p["depth"], "eta": 0.3, "seed": 0}, dtrain, num_boost_round=p["rounds"])
""")

TORCH_CLASSIFIER = textwrap.dedent("""
    import json, mlflow, mlflow.pytorch, numpy as np, pandas as pd, torch
    torch.manual_seed(0)
    p = json.load(open("params.json"))
    data = pd.read_csv("train.csv")
    X = data[p["features"]].to_numpy(dtype=np.float32)
    y = torch.tensor(data["label"].to_numpy())
    mean, std = torch.tensor(X.mean(axis=0)), torch.tensor(X.std(axis=0) + 1e-6)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.layers = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        def forward(self, x):
            return self.layers((x - self.mean) / self.std)

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    features = torch.from_numpy(X)
    for _ in range(p["epochs"]):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(features), y).backward()
        opt.step()
    net.eval()
    with mlflow.start_run():
        mlflow.pytorch.log_model(net, name="model", input_example=X[:2], pip_requirements=["torch"])
""")


def project(root, script: str, dataset, task: str, metric: str, params: dict):
    X, y = dataset(return_X_y=True, as_frame=True)
    X.columns = [f"f{i}" for i in range(X.shape[1])]
    train_X, eval_X, train_y, eval_y = train_test_split(X, y, test_size=0.3, random_state=0)
    pd.concat([train_X, train_y.rename("label")], axis=1).to_csv(root / "train.csv", index=False)
    pd.concat([eval_X, eval_y.rename("label")], axis=1).to_csv(root / "eval.csv", index=False)
    (root / "train.py").write_text(script)
    (root / "params.json").write_text(json.dumps({**params, "features": list(X.columns)}))
    (root / "mlflow-ci.yml").write_text(textwrap.dedent(f"""\
        experiment: {task}-{metric}
        model: {task}-{metric}
        train:
          command: python train.py
        evaluate:
          data: eval.csv
          target: label
          task: {task}
          metrics: [{metric}]
          resamples: 200
        gate:
          eval.{metric}: {{max_drop: 0}}
    """))
    (root / ".gitignore").write_text(".mlflow-ci/\nmlflow.db\nmlartifacts/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "model project")


def pull_request(proj, name: str, **params) -> tuple[int, dict]:
    git(proj.root, "checkout", "-q", "-B", name, "main")
    current = json.loads((proj.root / "params.json").read_text())
    proj.write("params.json", json.dumps({**current, **params}))
    proj.commit(name)
    proc = proj.cli("check", "--base-branch", "main")
    git(proj.root, "checkout", "-q", "main")
    return proc.returncode, {**proj.result(), "stdout": proc.stdout + proc.stderr}


def baseline_then_two_prs(proj, worse: dict, better: dict, metric: str):
    first = proj.cli("check")
    assert first.returncode == 0, first.stdout + first.stderr
    assert proj.cli("promote", "--no-deploy").returncode == 0
    code, regress = pull_request(proj, "regress", **worse)
    assert code == 1, regress["stdout"]
    assert regress["baseline"]["source"] == "alias:champion"
    assert regress["evaluation"]["rows"] > 100  # both models on the same held-out rows
    code, improve = pull_request(proj, "improve", **better)
    assert code == 0, improve["stdout"]
    rows = {m["name"]: m for m in improve["metrics"]}
    assert rows[f"eval.{metric}"]["baseline"] is not None and rows[f"eval.{metric}"]["ci_low"] is not None
    return regress, improve


def make(tmp_path, script, dataset, task, metric, params) -> Project:
    root = tmp_path / "repo"
    root.mkdir()
    project(root, script, dataset, task, metric, params)
    return Project(root=root, store=tmp_path / "mlflow.db")


def test_xgboost_classifier_with_autolog(tmp_path):
    pytest.importorskip("xgboost")
    proj = make(tmp_path, XGB_CLASSIFIER, load_breast_cancer, "classification", "roc_auc", {"rounds": 10, "depth": 2})
    baseline_then_two_prs(proj, {"rounds": 1, "depth": 1}, {"rounds": 60, "depth": 3}, "roc_auc")


def test_xgboost_regressor_native_booster_with_autolog(tmp_path):
    pytest.importorskip("xgboost")
    proj = make(tmp_path, XGB_REGRESSOR, load_diabetes, "regression", "rmse", {"rounds": 2, "depth": 2})
    baseline_then_two_prs(proj, {"rounds": 1, "depth": 1}, {"rounds": 10, "depth": 2}, "rmse")


def test_pytorch_classifier(tmp_path):
    pytest.importorskip("torch")
    proj = make(tmp_path, TORCH_CLASSIFIER, load_breast_cancer, "classification", "log_loss", {"epochs": 10})
    baseline_then_two_prs(proj, {"epochs": 2}, {"epochs": 80}, "log_loss")

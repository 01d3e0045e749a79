"""Scoring logged models of every common flavor: each is trained for real, logged with its MLflow
flavor (as the examples and autolog log them), loaded back through the tracking wing and asked for
probabilities or predictions. Classification (binary and multiclass) and regression for each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlflow_ci.errors import TrainingError
from mlflow_ci.evaluate import predict
from mlflow_ci.tracking import MlflowTracker

pytestmark = pytest.mark.slow

IRIS = load_iris(as_frame=True)
X_MULTI, Y_MULTI = IRIS.data, IRIS.target.to_numpy()
X_BIN, Y_BIN = X_MULTI[Y_MULTI < 2].reset_index(drop=True), Y_MULTI[Y_MULTI < 2]
DIABETES = load_diabetes(as_frame=True)
X_REG, Y_REG = DIABETES.data, DIABETES.target.to_numpy()
PIP = ["scikit-learn"]  # skips MLflow's requirement inference (seconds per model)


@pytest.fixture
def store(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("flavors")
    yield uri, tmp_path
    mlflow.set_tracking_uri(None)


def logged(store, log) -> predict.Who:
    """Log a model with ``log(name)`` inside a run; return how mlflow-ci loads it back."""
    import mlflow

    uri, tmp = store
    with mlflow.start_run() as run:
        log("model")
    tracker = MlflowTracker(uri)
    model = tracker.load_for_scoring(run.info.run_id, "model", tmp / run.info.run_id)
    return model, predict.Who("candidate", run.info.run_id, model.flavor_label)


def check_probabilities(model, who, X, y, expected):
    proba, classes = predict.probabilities(model, X, y, who)
    assert proba.shape == (len(X), len(np.unique(y)))
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.sort(classes.astype(int)), np.unique(y))
    return proba


@pytest.mark.parametrize("X, y", [(X_BIN, Y_BIN), (X_MULTI, Y_MULTI)], ids=["binary", "multiclass"])
def test_sklearn(store, X, y):
    import mlflow.sklearn

    clf = LogisticRegression(max_iter=500).fit(X, y)
    model, who = logged(store, lambda n: mlflow.sklearn.log_model(clf, name=n, pip_requirements=PIP, input_example=X.head(2)))
    assert model.flavor == "sklearn"
    check_probabilities(model, who, X, y, clf.predict_proba(X))


@pytest.mark.parametrize("X, y", [(X_BIN, Y_BIN), (X_MULTI, Y_MULTI)], ids=["binary", "multiclass"])
def test_xgboost_sklearn_api_and_native_booster(store, X, y):
    xgb = pytest.importorskip("xgboost")
    import mlflow.xgboost

    clf = xgb.XGBClassifier(n_estimators=20, max_depth=2).fit(X, y)
    model, who = logged(store, lambda n: mlflow.xgboost.log_model(clf, name=n, pip_requirements=PIP))
    assert model.flavor == "xgboost"
    check_probabilities(model, who, X, y, clf.predict_proba(X))

    multi = len(np.unique(y)) > 2
    params = {"objective": "multi:softprob", "num_class": 3} if multi else {"objective": "binary:logistic"}
    booster = xgb.train({**params, "max_depth": 2}, xgb.DMatrix(X, label=y), num_boost_round=20)
    model, who = logged(store, lambda n: mlflow.xgboost.log_model(booster, name=n, pip_requirements=PIP))
    raw = booster.predict(xgb.DMatrix(X))
    check_probabilities(model, who, X, y, raw if multi else np.column_stack([1 - raw, raw]))


@pytest.mark.parametrize("X, y", [(X_BIN, Y_BIN), (X_MULTI, Y_MULTI)], ids=["binary", "multiclass"])
def test_lightgbm_sklearn_api_and_native_booster(store, X, y):
    lgb = pytest.importorskip("lightgbm")
    import mlflow.lightgbm

    clf = lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, y)
    model, who = logged(store, lambda n: mlflow.lightgbm.log_model(clf, name=n, pip_requirements=PIP))
    check_probabilities(model, who, X, y, clf.predict_proba(X))

    multi = len(np.unique(y)) > 2
    params = {"objective": "multiclass", "num_class": 3} if multi else {"objective": "binary"}
    booster = lgb.train({**params, "verbose": -1}, lgb.Dataset(X, label=y), num_boost_round=20)
    model, who = logged(store, lambda n: mlflow.lightgbm.log_model(booster, name=n, pip_requirements=PIP))
    raw = booster.predict(X)
    check_probabilities(model, who, X, y, raw if multi else np.column_stack([1 - raw, raw]))


@pytest.mark.parametrize("X, y", [(X_BIN, Y_BIN), (X_MULTI, Y_MULTI)], ids=["binary", "multiclass"])
def test_onnx_from_skl2onnx(store, X, y):
    pytest.importorskip("onnxruntime")
    skl2onnx = pytest.importorskip("skl2onnx")
    import mlflow.onnx
    from skl2onnx.common.data_types import FloatTensorType

    clf = LogisticRegression(max_iter=500).fit(X.to_numpy(dtype=np.float32), y)
    onx = skl2onnx.convert_sklearn(clf, initial_types=[("input", FloatTensorType([None, X.shape[1]]))])
    model, who = logged(store, lambda n: mlflow.onnx.log_model(onx, name=n, pip_requirements=PIP))
    assert model.flavor == "onnx"
    frame = pd.DataFrame(X.to_numpy(dtype=np.float32))  # ONNX takes one float32 tensor
    check_probabilities(model, who, frame, y, clf.predict_proba(X.to_numpy(dtype=np.float32)))


@pytest.mark.parametrize("X, y", [(X_BIN, Y_BIN), (X_MULTI, Y_MULTI)], ids=["binary", "multiclass"])
def test_pytorch_logits_with_a_float32_signature(store, X, y):
    torch = pytest.importorskip("torch")
    import mlflow.pytorch
    from mlflow.models import infer_signature

    torch.manual_seed(0)
    k = len(np.unique(y))
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 16), torch.nn.ReLU(), torch.nn.Linear(16, k))
    features = torch.tensor(X.to_numpy(), dtype=torch.float32)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(features), torch.tensor(y))
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        expected = torch.softmax(net(features), dim=1).numpy()
    example = X.to_numpy(dtype=np.float32)[:2]
    signature = infer_signature(example, expected[:2])
    model, who = logged(store, lambda n: mlflow.pytorch.log_model(net, name=n, signature=signature, input_example=example,
                                                                  pip_requirements=["torch"]))
    assert model.flavor == "pytorch" and model.tensors[0].dtype == "float32"
    check_probabilities(model, who, X, y, expected)  # float64 rows cast to the float32 the model expects


def test_regression_for_each_flavor(store):
    import mlflow.sklearn

    reg = LinearRegression().fit(X_REG, Y_REG)
    model, who = logged(store, lambda n: mlflow.sklearn.log_model(reg, name=n, pip_requirements=PIP))
    np.testing.assert_allclose(predict.regression(model, X_REG, who), reg.predict(X_REG))
    xgb = pytest.importorskip("xgboost")
    import mlflow.xgboost

    xreg = xgb.XGBRegressor(n_estimators=10).fit(X_REG, Y_REG)
    model, who = logged(store, lambda n: mlflow.xgboost.log_model(xreg, name=n, pip_requirements=PIP))
    np.testing.assert_allclose(predict.regression(model, X_REG, who), xreg.predict(X_REG), rtol=1e-6)
    lgb = pytest.importorskip("lightgbm")
    import mlflow.lightgbm

    booster = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(X_REG, label=Y_REG), num_boost_round=10)
    model, who = logged(store, lambda n: mlflow.lightgbm.log_model(booster, name=n, pip_requirements=PIP))
    np.testing.assert_allclose(predict.regression(model, X_REG, who), booster.predict(X_REG))


def test_a_custom_pyfunc_returning_labels_and_one_that_raises(store):
    import mlflow.pyfunc

    class Labels(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return (model_input.iloc[:, 2] > 2.5).astype(int).to_numpy()

    class Broken(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            raise RuntimeError("CUDA out of memory")

    model, who = logged(store, lambda n: mlflow.pyfunc.log_model(name=n, python_model=Labels(), pip_requirements=PIP))
    proba, classes = predict.probabilities(model, X_BIN, Y_BIN, who)
    assert set(np.unique(proba)) <= {0.0, 1.0} and list(classes) == [0, 1]
    assert (proba.argmax(axis=1) == Y_BIN).mean() > 0.9
    model, who = logged(store, lambda n: mlflow.pyfunc.log_model(name=n, python_model=Broken(), pip_requirements=PIP))
    with pytest.raises(TrainingError, match=r"evaluate: the candidate model \(run \w{12}, pyfunc\) raised while predicting: "
                                            r"\w+: .*CUDA out of memory"):
        predict.probabilities(model, X_BIN, Y_BIN, who)


def test_missing_columns_and_unreadable_scores_say_what_to_do(store):
    import mlflow.pyfunc

    class Margins(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input.to_numpy()[:, :2] * 10 - 30

    model, who = logged(store, lambda n: mlflow.pyfunc.log_model(name=n, python_model=Margins(), pip_requirements=PIP,
                                                                 input_example=X_BIN.head(2)))
    with pytest.raises(predict.ModelProblem, match=r"cannot tell what the candidate model \(run \w{12}, pyfunc\) returns") as caught:
        predict.probabilities(model, X_BIN, Y_BIN, who)
    assert caught.value.hint == "set evaluate.output: logits (or probabilities, labels)"
    proba, _ = predict.probabilities(model, X_BIN, Y_BIN, who, output="logits")
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    with pytest.raises(predict.ModelProblem, match="expects columns the evaluation data lacks: petal width"):
        predict.probabilities(model, X_BIN.drop(columns=["petal width (cm)"]), Y_BIN, who)

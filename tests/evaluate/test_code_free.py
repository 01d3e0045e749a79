"""Opening a model without running its code: the four code-free formats the trusted publisher scores, and
everything else refused with the reason (``mlflow_ci.evaluate.code_free``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlflow_ci.evaluate.code_free import open_code_free

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One small binary classifier per format, logged with MLflow's own flavors and downloaded as folders."""
    import lightgbm
    import mlflow
    import mlflow.lightgbm
    import mlflow.onnx
    import mlflow.sklearn
    import mlflow.xgboost
    import xgboost
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("code-free")
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :6]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'store.db'}")
    linear = LogisticRegression(max_iter=500).fit(X, y)
    with mlflow.start_run():
        infos = {
            "skops": mlflow.sklearn.log_model(linear, name="skops", serialization_format="skops", pip_requirements=["scikit-learn"]),
            "pickle": mlflow.sklearn.log_model(linear, name="pickle", serialization_format="cloudpickle", pip_requirements=["scikit-learn"]),
            "xgboost": mlflow.xgboost.log_model(xgboost.XGBClassifier(n_estimators=5).fit(X, y), name="xgboost",
                                                model_format="ubj", pip_requirements=["xgboost"]),
            "lightgbm": mlflow.lightgbm.log_model(lightgbm.train({"objective": "binary", "verbose": -1}, lightgbm.Dataset(X, y), 5),
                                                  name="lightgbm", pip_requirements=["lightgbm"]),
            "onnx": mlflow.onnx.log_model(to_onnx(linear, X.to_numpy(np.float32)[:1], options={id(linear): {"zipmap": False}}),
                                          name="onnx", pip_requirements=["onnx"]),
        }
    folders = {name: Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / name))) for name, info in infos.items()}
    return folders, X, y, linear


@pytest.mark.parametrize("name, fmt", [("skops", "scikit-learn skops"), ("xgboost", "XGBoost UBJ"),
                                       ("lightgbm", "LightGBM text"), ("onnx", "ONNX")])
def test_each_code_free_format_scores_as_its_library_does(logged, name, fmt):
    folders, X, y, linear = logged
    model, what = open_code_free(folders[name])
    assert model is not None and what == fmt
    proba = model.output(X, "classification", np.array([0, 1]))
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert ((proba[:, 1] > 0.5) == y.to_numpy()).mean() > 0.8  # a real classifier, columns in label order
    if name in ("skops", "onnx"):  # the same estimator, read two ways
        assert np.allclose(proba, linear.predict_proba(X), atol=1e-4)


def test_what_may_run_code_is_refused_with_the_reason(logged, tmp_path):
    folders, *_ = logged
    model, why = open_code_free(folders["pickle"])
    assert model is None and "scikit-learn model serialized with 'cloudpickle' runs code" in why
    escaping = tmp_path / "escaping"
    escaping.mkdir()
    (escaping / "MLmodel").write_text("flavors:\n  onnx: {data: ../outside.onnx}\n")
    assert open_code_free(escaping) == (None, "its ONNX flavor names no model file in the folder")
    (escaping / "MLmodel").write_text("flavors:\n  python_function: {loader_module: evil, code: code}\n")
    assert open_code_free(escaping)[1] == "a python_function model may run code when it is loaded (pickle or a Python model)"
    (escaping / "MLmodel").write_text("flavors: [\n")
    assert open_code_free(escaping)[1] == "its MLmodel cannot be read (ParserError)"

"""Models whose files execute no code when they are loaded, opened without MLflow's loaders.

The trusted publisher re-evaluates a pull request's model itself, in a job that holds write tokens, so it may
only open formats that are data: ONNX graphs (onnxruntime, CPU, no custom-op libraries), XGBoost boosters
saved as JSON or UBJSON, LightGBM boosters saved as text, and scikit-learn estimators saved with skops (only
the types skops trusts by default). ``MLmodel`` is read as YAML data; its ``loader_module``, ``code`` paths
and ``python_model`` are never used. Anything else — pickle, cloudpickle, a Python model — is refused with
the reason, and the verdict stays the one the PR's job computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

XGBOOST_CLASSES = {"xgboost.sklearn.XGBClassifier": "classifier", "xgboost.sklearn.XGBRegressor": "regressor",
                   "xgboost.core.Booster": "booster"}


@dataclass(frozen=True)
class CodeFreeModel:
    format: str  # what was opened, for the report: "XGBoost JSON", "ONNX", ...
    raw: Callable[[Any], Any]  # features -> the format's raw output (probabilities or predictions)
    classes: Any = None  # the estimator's own class labels, when the format records them (skops)

    def output(self, X, task: str, labels):
        """Probabilities with a column per class of ``labels`` (classification), else predictions; the
        formats that record no labels (boosters, ONNX) are taken to number the classes 0..k-1 in sorted order."""
        import numpy as np

        out = np.asarray(self.raw(X), dtype=np.float64)
        if task == "regression":
            return out.reshape(len(out), -1)[:, 0]
        if out.ndim == 1 or out.shape[1] == 1:  # a binary booster: the positive class's probability
            out = out.reshape(-1)
            out = np.column_stack([1 - out, out])
        labels = np.asarray(labels)
        if self.classes is not None:
            from mlflow_ci.evaluate.predict import align

            return align(out, np.asarray(self.classes), labels)
        if out.shape[1] != len(labels):
            raise ValueError(f"the {self.format} model scores {out.shape[1]} classes, the evaluation data has {len(labels)}")
        return out


def open_code_free(model_dir: Path) -> tuple[CodeFreeModel | None, str]:
    """The model of an MLflow model folder when its format runs no code on load, else None; with what it is
    (or why it is not opened)."""
    import yaml

    try:
        flavors = (yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8")) or {}).get("flavors") or {}
    except (OSError, ValueError, yaml.YAMLError, AttributeError) as exc:
        return None, f"its MLmodel cannot be read ({type(exc).__name__})"
    if not isinstance(flavors, dict):
        return None, "its MLmodel lists no flavors"
    for flavor, opener in OPENERS.items():
        spec = flavors.get(flavor)
        if isinstance(spec, dict):
            return opener(model_dir, spec)
    named = ", ".join(sorted(str(f) for f in flavors if f != "python_function")) or "python_function"
    return None, f"a {named} model may run code when it is loaded (pickle or a Python model)"


def _file(model_dir: Path, spec: dict, key: str) -> Path | None:
    """The model's data file named by ``spec[key]``: a plain file inside the folder, never a path out of it."""
    name = spec.get(key)
    if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
        return None
    path = model_dir / name
    return path if path.is_file() and not path.is_symlink() else None


def _onnx(model_dir: Path, spec: dict):
    path = _file(model_dir, spec, "data")
    if path is None:
        return None, "its ONNX flavor names no model file in the folder"
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        return None, f"its ONNX graph takes {len(inputs)} inputs (one feature tensor is re-evaluated)"
    wanted = next((o.name for o in outputs if o.name == "probabilities"), outputs[-1].name)

    def raw(X):
        values = np.asarray(X.to_numpy() if hasattr(X, "to_numpy") else X, dtype=np.float32)
        return session.run([wanted], {inputs[0].name: values})[0]

    return CodeFreeModel("ONNX", raw), "ONNX"


def _xgboost(model_dir: Path, spec: dict):
    fmt, cls = spec.get("model_format"), spec.get("model_class")
    path = _file(model_dir, spec, "data")
    if fmt not in ("json", "ubj") or path is None:
        return None, f"an XGBoost model saved as {fmt!r} (JSON and UBJSON are data; re-save with model_format='json')"
    if cls not in XGBOOST_CLASSES:
        return None, f"an XGBoost model of class {cls!r}"
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(str(path))
    return CodeFreeModel(f"XGBoost {fmt.upper()}", lambda X: booster.predict(xgboost.DMatrix(X))), f"XGBoost {fmt.upper()}"


def _lightgbm(model_dir: Path, spec: dict):
    path = _file(model_dir, spec, "data")
    if spec.get("model_class") != "lightgbm.basic.Booster" or path is None or path.suffix != ".lgb":
        return None, f"a LightGBM {spec.get('model_class')!r} model (a Booster saved as text is data; estimators are serialized)"
    import lightgbm

    booster = lightgbm.Booster(model_file=str(path))
    return CodeFreeModel("LightGBM text", booster.predict), "LightGBM text"


def _sklearn(model_dir: Path, spec: dict):
    path = _file(model_dir, spec, "pickled_model")
    if spec.get("serialization_format") != "skops" or path is None:
        return None, f"a scikit-learn model serialized with {spec.get('serialization_format')!r} runs code when loaded (skops does not)"
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=str(path))
    if untrusted:
        return None, f"its skops file holds types skops does not trust by default: {', '.join(sorted(untrusted)[:5])}"
    model = skops.io.load(str(path))
    return CodeFreeModel("scikit-learn skops", model.predict_proba if hasattr(model, "predict_proba") else model.predict,
                         getattr(model, "classes_", None)), "scikit-learn skops"


OPENERS = {"onnx": _onnx, "xgboost": _xgboost, "lightgbm": _lightgbm, "sklearn": _sklearn}

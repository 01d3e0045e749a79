"""How to get labels, scores and probabilities out of a logged model, whatever its flavor.

- scikit-learn, XGBoost and LightGBM estimators (the sklearn API, as autolog logs them):
  ``predict_proba``; ``decision_function`` read as logits; ``predict`` for regression.
- XGBoost and LightGBM ``Booster`` objects (their native training APIs): ``predict``, read according
  to the objective they were trained with (probabilities, margins or labels).
- PyTorch modules: a forward pass on a tensor of the signature's dtype (float32 by default); outputs
  are logits unless ``evaluate.output`` says otherwise (one column: sigmoid, several: softmax).
- Anything else (ONNX, TensorFlow/Keras, custom pyfunc): the pyfunc's output — labels, a probability
  matrix, logits, a frame with one column per class, or a column of per-row probability maps (what
  skl2onnx classifiers return).

The evaluation rows are first cast to the model's input signature (column order and dtypes, e.g. the
float32 a PyTorch model expects). ``evaluate.output`` (labels | probabilities | logits) and
``evaluate.classes`` say what cannot be inferred. Errors name the model (candidate or baseline), its
run, its flavor and what to do; a model that raises while predicting is exit 3.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from mlflow_ci.errors import TrainingError, UsageError, first_line

OUTPUTS = ("labels", "probabilities", "logits")
NUMPY_TYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32", "boolean": "bool"}


@dataclass(frozen=True)
class Who:
    """Which model, for messages: ``the candidate model (run 1a2b3c4d5e6f, XGBoost)``."""
    role: str  # candidate | baseline
    run_id: str
    flavor: str

    def __str__(self) -> str:
        return f"the {self.role} model (run {self.run_id[:12]}, {self.flavor})"


class ModelProblem(UsageError):
    """The model cannot be scored as configured (exit 2): the message says what to set."""


@contextlib.contextmanager
def predicting(who: Who) -> Iterator[None]:
    """A model that raises while predicting failed, like a training that crashed (exit 3)."""
    try:
        yield
    except (UsageError, TrainingError):
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own code: anything can come out
        raise TrainingError(f"evaluate: {who} raised while predicting: {type(exc).__name__}: {first_line(str(exc))}",
                            hint="run the model on the evaluation data yourself to see the full error") from None


# --------------------------------------------------------------------------------------------------
# Inputs


def conform(X: pd.DataFrame, model, who: Who) -> pd.DataFrame:
    """The evaluation rows in the signature's column order and dtypes (unchanged without a signature)."""
    if not model.columns or any(spec.name is None for spec in model.columns):
        return X
    missing = [s.name for s in model.columns if s.name not in X.columns and not s.optional]
    if missing:
        raise ModelProblem(f"evaluate: {who} expects columns the evaluation data lacks: {', '.join(missing[:10])}",
                           hint="evaluate the data the model was trained on (same feature columns)")
    present = [s for s in model.columns if s.name in X.columns]
    out = X[[s.name for s in present]].copy()
    for spec in present:
        dtype = NUMPY_TYPES.get(spec.type)
        if dtype is None:
            continue
        try:
            out[spec.name] = out[spec.name].astype(dtype)
        except (TypeError, ValueError) as exc:
            raise ModelProblem(f"evaluate: {who}: column {spec.name!r} cannot be cast to the signature's {spec.type}: {first_line(str(exc))}") from None
    return out


def as_tensor_array(X: pd.DataFrame, model) -> np.ndarray:
    """The rows as one array of the signature's tensor dtype (float32 when it says nothing)."""
    dtype = model.tensors[0].dtype if model.tensors else "float32"
    return np.ascontiguousarray(X.to_numpy(), dtype=dtype)


# --------------------------------------------------------------------------------------------------
# Outputs


def regression(model, X: pd.DataFrame, who: Who) -> np.ndarray:
    """One prediction per row, as float64."""
    out = _raw(model, conform(X, model, who), who)
    values = _frame_values(out) if isinstance(out, pd.DataFrame) else np.asarray(out)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or len(values) != len(X):
        raise ModelProblem(f"evaluate: {who} returned {values.shape} for {len(X)} rows; regression needs one number per row")
    return values


def probabilities(model, X: pd.DataFrame, y: np.ndarray, who: Who, *, output: str | None = None,
                  classes: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (rows × classes) and the class of each column."""
    Xc = conform(X, model, who)
    native = model.native
    own = _classes_of(native)
    with predicting(who):
        if model.flavor in ("sklearn", "xgboost", "lightgbm") and hasattr(native, "predict_proba") and output is None:
            return np.asarray(native.predict_proba(Xc), dtype=np.float64), own
        if model.flavor == "sklearn" and hasattr(native, "decision_function") and output is None:
            scores = np.asarray(native.decision_function(Xc), dtype=np.float64)
            return _read(scores, "logits", own, y, who), own if own is not None else _label_set(y, classes)
    out = _raw(model, Xc, who)
    hint = output or _booster_output(model)
    return _interpret(out, hint, own if own is not None else classes, y, who)


def _raw(model, Xc: pd.DataFrame, who: Who) -> Any:
    native = model.native
    with predicting(who):
        if model.flavor == "pytorch":
            import torch

            with torch.no_grad():
                result = native(torch.from_numpy(as_tensor_array(Xc, model)))
            return (result[0] if isinstance(result, (tuple, list)) else result).detach().cpu().numpy()
        if model.flavor == "xgboost" and not hasattr(native, "predict_proba") and type(native).__name__ == "Booster":
            import xgboost

            return native.predict(xgboost.DMatrix(Xc))
        if native is not None and hasattr(native, "predict") and model.flavor in ("sklearn", "xgboost", "lightgbm"):
            return native.predict(Xc)
        return model.pyfunc().predict(Xc)


def _booster_output(model) -> str | None:
    """What a native Booster's ``predict`` returns, from the objective it was trained with."""
    native = model.native
    if model.flavor == "xgboost" and type(native).__name__ == "Booster":
        import json

        name = json.loads(native.save_config())["learner"]["objective"]["name"]
        return {"binary:logitraw": "logits", "multi:softmax": "labels"}.get(name, "probabilities")
    if model.flavor == "lightgbm" and type(native).__name__ == "Booster":
        objective = str(native.params.get("objective", ""))
        return "probabilities" if objective in ("binary", "multiclass", "softmax", "multiclassova", "cross_entropy") else None
    if model.flavor == "pytorch":
        return "logits"
    return None


def _interpret(out: Any, hint: str | None, classes: Sequence | None, y: np.ndarray, who: Who) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(out, pd.DataFrame):
        maps = _map_column(out)
        if maps is not None:  # {class: probability} per row (skl2onnx's ZipMap)
            names = np.asarray(list(classes) if classes is not None else sorted(maps[0]))
            return np.array([[row.get(c, row.get(str(c), 0.0)) for c in names] for row in maps], dtype=np.float64), names
        out = _frame_values(out)
    values = np.asarray(out)
    if values.dtype == object and values.ndim == 1 and len(values) and isinstance(values[0], (list, np.ndarray)):
        values = np.stack(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    names = _label_set(y, classes)
    if values.ndim == 1 and (hint == "labels" or (hint is None and _looks_like_labels(values))):
        labels = values
        names = _label_set(np.concatenate([np.asarray(y), labels]) if classes is None else y, classes)
        return (labels[:, None] == names[None, :]).astype(np.float64), names
    if not np.issubdtype(values.dtype, np.number):
        raise ModelProblem(f"evaluate: {who} returned {values.dtype} values that are not labels of the evaluation data",
                           hint="set evaluate.output (labels, probabilities or logits) and evaluate.classes")
    values = values.astype(np.float64)
    if hint is None:
        hint = "probabilities" if _looks_like_probabilities(values) else None
    if hint is None:
        raise ModelProblem(f"evaluate: cannot tell what {who} returns (scores outside [0, 1])",
                           hint="set evaluate.output: logits (or probabilities, labels)")
    return _read(values, hint, names, y, who), names


def _read(values: np.ndarray, hint: str, names: np.ndarray | None, y: np.ndarray, who: Who) -> np.ndarray:
    """Scores of the positive class (1-D) or of every class (2-D), as probabilities."""
    if values.ndim == 1:
        p = 1 / (1 + np.exp(-values)) if hint == "logits" else values
        return np.column_stack([1 - p, p])
    if hint == "logits":
        shifted = values - values.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        values = e / e.sum(axis=1, keepdims=True)
    if names is not None and values.shape[1] != len(names):
        raise ModelProblem(f"evaluate: {who} returns {values.shape[1]} columns for {len(names)} classes",
                           hint="set evaluate.classes to the class of each column the model returns, in order")
    return values


def _map_column(frame: pd.DataFrame) -> list[dict] | None:
    for column in frame.columns:
        cells = frame[column].tolist()
        if cells and all(isinstance(c, dict) for c in cells):
            return cells
    return None


def _frame_values(frame: pd.DataFrame) -> np.ndarray:
    if frame.shape[1] == 1:
        cells = frame.iloc[:, 0].to_numpy()
        if cells.dtype == object and len(cells) and isinstance(cells[0], (list, np.ndarray)):
            return np.stack(cells)
        return cells
    numeric = frame.select_dtypes(include="number")
    return (numeric if numeric.shape[1] else frame).to_numpy()


def _classes_of(native) -> np.ndarray | None:
    found = getattr(native, "classes_", None)
    return np.asarray(found) if found is not None else None


def _label_set(y: np.ndarray, classes: Sequence | None) -> np.ndarray:
    return np.asarray(list(classes)) if classes is not None else np.unique(np.asarray(y))


def _looks_like_labels(values: np.ndarray) -> bool:
    if not np.issubdtype(values.dtype, np.number):
        return True
    return bool(np.all(np.mod(values, 1) == 0) and (values.min() < 0 or values.max() > 1 or set(np.unique(values)) <= {0, 1}))


def _looks_like_probabilities(values: np.ndarray) -> bool:
    if values.size == 0 or values.min() < 0 or values.max() > 1:
        return False
    return values.ndim == 1 or bool(np.allclose(values.sum(axis=1), 1.0, atol=1e-3))


def align(proba: np.ndarray, own: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Columns reordered to ``classes`` (a class the model does not know gets probability 0)."""
    if np.array_equal(own, classes):
        return proba
    index = {c: i for i, c in enumerate(own.tolist())}
    return np.column_stack([proba[:, index[c]] if c in index else np.zeros(len(proba)) for c in classes.tolist()])

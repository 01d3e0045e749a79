"""Loading a logged model for scoring: the flavor's own object where mlflow-ci knows how to ask it for
probabilities (scikit-learn, XGBoost, LightGBM, PyTorch), MLflow's pyfunc otherwise (ONNX,
TensorFlow/Keras, any custom model), and the input signature to cast the evaluation rows to.

What to ask each object is :mod:`mlflow_ci.evaluate.predict`'s business; this module only loads (it
is the one place besides the tracking clients that imports MLflow).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NATIVE = ("sklearn", "xgboost", "lightgbm", "pytorch")  # flavors loaded as their own objects, in this order
LABELS = {"sklearn": "scikit-learn", "xgboost": "XGBoost", "lightgbm": "LightGBM", "pytorch": "PyTorch",
          "onnx": "ONNX", "tensorflow": "TensorFlow", "keras": "Keras", "python_function": "pyfunc"}


@dataclass(frozen=True)
class ColumnSpec:
    name: str | None
    type: str  # MLflow's: double, float, long, integer, boolean, string, binary, datetime
    optional: bool = False


@dataclass(frozen=True)
class TensorSpec:
    name: str | None
    dtype: str  # numpy's, e.g. float32
    shape: tuple[int, ...]


@dataclass
class LoadedModel:
    """A logged model ready to score: ``native`` is the flavor's object (None when only the pyfunc is
    used), ``pyfunc()`` loads MLflow's generic wrapper on first use."""
    path: Path
    flavor: str  # the flavor mlflow-ci uses: one of NATIVE, or the first other flavor (scored as pyfunc)
    native: Any
    columns: tuple[ColumnSpec, ...] | None  # the input signature, when column-based
    tensors: tuple[TensorSpec, ...] | None  # the input signature, when tensor-based
    _pyfunc: Any = field(default=None, repr=False)
    inputs: tuple[str, ...] = ()  # the signature as text, "name: type" per input and output
    outputs: tuple[str, ...] = ()

    @property
    def flavor_label(self) -> str:
        return LABELS.get(self.flavor, self.flavor)

    def pyfunc(self):
        if self._pyfunc is None:
            import mlflow.pyfunc

            self._pyfunc = mlflow.pyfunc.load_model(str(self.path))
        return self._pyfunc


def load_for_scoring(path: Path) -> LoadedModel:
    """Load the model in ``path`` (a downloaded model folder with an MLmodel file)."""
    from mlflow.models import Model

    meta = Model.load(str(path / "MLmodel"))
    flavors = meta.flavors
    flavor = next((f for f in NATIVE if f in flavors), None)
    other = next((f for f in flavors if f != "python_function"), "python_function")
    native = _loaders()[flavor](str(path)) if flavor else None
    columns, tensors = _signature(meta)
    inputs, outputs = (_described(part) for part in (meta.signature.inputs, meta.signature.outputs)) if meta.signature else ((), ())
    return LoadedModel(path, flavor or other, native, columns, tensors, inputs=inputs, outputs=outputs)


def _described(schema) -> tuple[str, ...]:
    """Each input or output of a signature as ``name: type`` (``[shape]`` for tensors)."""
    if schema is None:
        return ()
    out = []
    for spec in schema.inputs:
        kind = getattr(spec.type, "name", None) or str(spec.type)
        shape = getattr(spec, "shape", None)
        out.append(f"{spec.name or '(unnamed)'}: {kind}" + (f" {list(shape)}" if shape is not None else ""))
    return tuple(out)


@functools.cache
def _loaders():
    def sklearn(p):
        import mlflow.sklearn

        return mlflow.sklearn.load_model(p)

    def xgboost(p):
        import mlflow.xgboost

        return mlflow.xgboost.load_model(p)

    def lightgbm(p):
        import mlflow.lightgbm

        return mlflow.lightgbm.load_model(p)

    def pytorch(p):
        import mlflow.pytorch
        import torch

        model = mlflow.pytorch.load_model(p, map_location="cpu")
        if not isinstance(model, torch.nn.Module) and callable(getattr(model, "module", None)):
            model = model.module()  # the 'pt2' format loads as an ExportedProgram: score its module
        try:
            model.eval()
        except NotImplementedError:  # exported graphs are already in inference form
            pass
        return model

    return {"sklearn": sklearn, "xgboost": xgboost, "lightgbm": lightgbm, "pytorch": pytorch}


def _signature(meta) -> tuple[tuple[ColumnSpec, ...] | None, tuple[TensorSpec, ...] | None]:
    signature = meta.signature
    if signature is None or signature.inputs is None:
        return None, None
    inputs = signature.inputs
    if inputs.is_tensor_spec():
        return None, tuple(TensorSpec(spec.name, str(spec.type), tuple(spec.shape)) for spec in inputs.inputs)
    specs = []
    for spec in inputs.inputs:
        kind = getattr(spec.type, "name", None) or str(spec.type)
        specs.append(ColumnSpec(spec.name, str(kind), bool(getattr(spec, "optional", False) or not getattr(spec, "required", True))))
    return tuple(specs), None

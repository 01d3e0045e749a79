"""Helpers of the engine tests (tests/engines): whether an engine can run here, generated rows, saved models."""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REQUIRED = os.environ.get("MLFLOW_CI_TEST_REQUIRE", "").split(",")


def need(engine: str) -> None:
    """Skip (or fail, where CI requires the engine) when it cannot run on this machine."""
    missing = None
    if importlib.util.find_spec("ray" if engine == "ray" else "pyspark") is None:
        missing = f"{engine} is not installed (pip install 'mlflow-ci[{engine}]')"
    elif engine == "spark" and shutil.which("java") is None:
        missing = "no Java for Spark (Debian's openjdk-17-jre-headless)"
    if missing:
        if engine in REQUIRED:
            pytest.fail(f"MLFLOW_CI_TEST_REQUIRE={engine}: {missing}")
        pytest.skip(missing)


def binary_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """A binary classification set: five features, a region to slice by, the label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"f{i}" for i in range(5)])
    frame["region"] = rng.choice(["north", "south", "east"], n)
    frame["label"] = (frame.f0 + 0.5 * frame.f1 + rng.normal(size=n) > 0).astype(int)
    return frame


@functools.cache
def saved_models(folder: str) -> dict[str, Path]:
    """Two scikit-learn logistic regressions (the candidate reads five features, the baseline three),
    saved as MLflow models."""
    import mlflow.sklearn
    import sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    train = binary_rows(5000, seed=99)
    features = [f"f{i}" for i in range(5)]
    out = {}
    for role, used in (("candidate", features), ("baseline", features[:3])):
        model = make_pipeline(ColumnTransformer([("x", "passthrough", used)]), LogisticRegression())
        model.fit(train.drop(columns=["label"]), train.label)
        path = Path(folder) / role
        mlflow.sklearn.save_model(model, path, pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
        out[role] = path
    return out

"""One evaluation of Parquet data on one engine, in a process of its own, for `benchmarks/run.py --only
engines`: prints the wall time and this process's peak resident memory (the runner's side: Spark's JVM
and workers, Ray's workers are other processes).

    python benchmarks/engines.py ENGINE DATA_FOLDER MODELS_FOLDER RESAMPLES

ENGINE: memory (the local engine as a check with one file runs it: every row in memory), local (the
local engine one row group at a time), spark, ray (RAY_ADDRESS from the environment).
"""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

METRICS = ("accuracy", "roc_auc", "log_loss", "f1", "precision", "recall")


def in_memory(folder: Path, models: dict[str, Path], resamples: int) -> int:
    import mlflow.sklearn
    import pandas as pd

    from mlflow_ci.evaluate import datachecks
    from mlflow_ci.evaluate import metrics as ev

    frame = pd.concat([pd.read_parquet(path) for path in sorted(folder.glob("*.parquet"))], ignore_index=True)
    X, y = frame.drop(columns=["label"]), frame["label"].to_numpy()
    outputs = {role: mlflow.sklearn.load_model(str(path)).predict_proba(X) for role, path in models.items()}
    ev.paired_bootstrap(list(METRICS), "classification", y, outputs["candidate"], outputs["baseline"],
                        classes=np.array([0, 1]), resamples=resamples, seed=0)
    datachecks.profile_and_compare(None, X)
    return len(frame)


def partitioned(engine: str, folder: Path, models: dict[str, Path], resamples: int) -> int:
    from mlflow_ci.engines import Job, open_engine
    from mlflow_ci.evaluate import dataset, on_engine
    from mlflow_ci.evaluate import partitioned as parts

    work = parts.Work("classification", "label", METRICS, resamples, 0, {role: (role * 4, "scikit-learn") for role in models},
                      engine, None, (0, 1), (), None)
    data = dataset.plan(str(folder) + "/", folder.parent)
    job = Job(functools.partial(on_engine.reduce_with_models, work), parts.pack, dataset.read_unit, data.units,
              data.files, data.offsets, models)
    summed = on_engine._run(open_engine(engine, os.environ), job)
    return summed.metrics.rows


def main() -> int:
    engine, folder, model_folder, resamples = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    models = {role: model_folder / role for role in ("candidate", "baseline")}
    start = time.perf_counter()
    rows = in_memory(folder, models, resamples) if engine == "memory" else partitioned(engine, folder, models, resamples)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"engine": engine, "rows": rows, "seconds": seconds, "peak_mb": peak_mb}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

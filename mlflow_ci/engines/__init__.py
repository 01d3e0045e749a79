"""Where heavy work runs: this machine, a Spark session, or a Ray cluster (docs/engines.md).

One small interface serves evaluation: an :class:`Engine` takes a :class:`Job` — the Parquet files
with their row groups, the model folders to ship, and a function that reduces a partition's rows to
packed partial statistics — runs that function where the data lives and yields each partition's
result as it arrives. The engines know nothing of metrics (that is the evaluate wing's, which hands
them the function); :mod:`.ray_jobs` runs training as a Ray job. Spark and Ray are imported only by
their own modules, only when a configuration names them.
"""

from __future__ import annotations

from typing import Mapping

from mlflow_ci.engines.base import Engine, Job, path_key
from mlflow_ci.errors import UsageError

__all__ = ["ENGINES", "Engine", "Job", "open_engine", "path_key"]

ENGINES = ("local", "spark", "ray")


def open_engine(name: str, env: Mapping[str, str]) -> Engine:
    """The engine ``evaluate.engine`` names, connected as the environment says."""
    if name == "local":
        from mlflow_ci.engines.local import LocalEngine

        return LocalEngine()
    if name == "spark":
        from mlflow_ci.engines.spark_engine import SparkEngine

        return SparkEngine.connect(env)
    if name == "ray":
        from mlflow_ci.engines.ray_engine import RayEngine

        return RayEngine.connect(env)
    raise UsageError(f"evaluate.engine: unknown engine {name!r} (expected one of: {', '.join(ENGINES)})")

"""Which way ``evaluate:`` scores the rows: in memory here (:mod:`.same_rows`), or partition by partition
(:mod:`.on_engine`) with an engine, or Parquet data given as a folder or glob."""

from __future__ import annotations

import os
from typing import Mapping

from mlflow_ci import compare as cmp
from mlflow_ci.config.models import Config
from mlflow_ci.evaluate.dataset import is_partitioned
from mlflow_ci.evaluate.kept import Evaluated
from mlflow_ci.evaluate.same_rows import evaluate_same_rows  # NumPy and pandas: a missing extra shows on import


def evaluate_rows(cfg: Config, tracker, registry, comparison: cmp.Comparison, *, keep: bool = True,
                  env: Mapping[str, str] | None = None) -> Evaluated:
    """Both models scored on the same rows, wherever ``evaluate.engine`` says (``env``: how to reach it)."""
    ecfg = cfg.evaluate
    if ecfg is not None and (ecfg.engine != "local" or is_partitioned(ecfg.data)):
        from mlflow_ci.evaluate.on_engine import evaluate_on_engine

        return evaluate_on_engine(cfg, tracker, registry, comparison, keep=keep, env=env if env is not None else os.environ)
    return evaluate_same_rows(cfg, tracker, registry, comparison, keep=keep)

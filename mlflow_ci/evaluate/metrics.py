"""Evaluate champion and candidate on the same rows, with paired bootstrap confidence intervals.

The arithmetic is in :mod:`.partial`: each metric is reduced from sums of per-row statistics (and ROC AUC
from score histograms), a resample is a vector of Poisson(1) row weights drawn from each row's stable id,
so the same rows give the same intervals whether they are scored here in one piece or on Spark or Ray in
many. Both models are scored on the same resampled rows (paired), so the interval is on the
*difference*, which is what the gate needs. Point estimates equal scikit-learn's (tests compare them to
1e-9; ROC AUC within the binning bound :mod:`.partial` reports, 0 unless scores differ by less than
0.1 % on a logit scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from mlflow_ci.evaluate import partial as pt

LOWER_IS_BETTER = {"log_loss", "brier", "mae", "mse", "rmse", "mape"}


@dataclass(frozen=True)
class Interval:
    delta: float  # candidate - baseline on all rows
    low: float
    high: float
    confidence: float
    samples: np.ndarray  # bootstrap deltas, sorted

    def one_sided_upper(self, alpha: float) -> float:
        return float(np.quantile(self.samples, 1 - alpha))

    def one_sided_lower(self, alpha: float) -> float:
        return float(np.quantile(self.samples, alpha))

    def for_decision(self, alpha: float) -> "Interval":
        """The two-sided (1 - 2·alpha) interval: its ends are the one-sided (1 - alpha) bounds a
        significance rule at level alpha decides on, so what is shown is what decided."""
        return Interval(self.delta, self.one_sided_lower(alpha), self.one_sided_upper(alpha), 1 - 2 * alpha, self.samples)


@dataclass(frozen=True)
class PairedResult:
    rows: int
    candidate: dict[str, float]
    baseline: dict[str, float]
    intervals: dict[str, Interval]
    resamples: int
    seed: int
    auc_error: dict[str, float] = field(default_factory=dict)  # ROC AUC: the bound of the binning's error, per side


@dataclass(frozen=True)
class Metric:
    """One metric of one model on some rows: how it is reduced, and the model's per-row statistics."""
    spec: pt.Spec
    side: pt.Side

    def value(self, weights: np.ndarray | None = None) -> float:
        """The value on all rows, or with these integer row weights (one resample)."""
        if weights is None:
            total = pt.partial({"m": self.side}, np.arange(len(self.side)), resamples=0, seed=0)
            return pt.values(self.spec, "m", total).point
        weights = np.asarray(weights, dtype=np.int64)
        rows = np.repeat(np.arange(len(weights)), weights)
        return Metric(self.spec, self.side.select(rows)).value(None)


class UserMetric:
    """A user metric ``module:function(y_true, output) -> float``: not a sum of per-row statistics, so a
    resample materialises its rows (slower, and only on the local engine)."""

    def __init__(self, func, y: np.ndarray, output: np.ndarray) -> None:
        self.func, self.y, self.output = func, y, output

    def value(self, weights: np.ndarray | None = None) -> float:
        if weights is None:
            return float(self.func(self.y, self.output))
        rows = np.repeat(np.arange(len(self.y)), np.asarray(weights, dtype=np.int64))
        return float(self.func(self.y[rows], self.output[rows]))


def metric_label(spec: str) -> str:
    """``pkg.metrics:weighted_cost`` -> ``weighted_cost``; built-in names unchanged."""
    return spec.rsplit(":", 1)[-1]


_USER_FUNCTIONS: dict[str, Callable] = {}


def register_user_metrics(specs: Sequence[str], root) -> None:
    """Import the ``module:function`` metrics of the config (from the config's folder)."""
    import importlib
    import sys

    from mlflow_ci.errors import UsageError

    for spec in specs:
        if ":" not in spec or spec in _USER_FUNCTIONS:
            continue
        module_name, _, func_name = spec.partition(":")
        sys.path.insert(0, str(root))
        try:
            _USER_FUNCTIONS[spec] = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"evaluate.metrics {spec!r}: cannot import it ({exc})") from None
        finally:
            sys.path.remove(str(root))


def spec_of(name: str, task: str, classes: np.ndarray | None) -> pt.Spec:
    if task == "classification":
        return pt.classification_spec(name, len(classes) if classes is not None else 0)
    return pt.regression_spec(name)


def side_of(specs: list[pt.Spec], task: str, y: np.ndarray, output: np.ndarray, classes: np.ndarray | None) -> pt.Side:
    """A model's per-row statistics for these metrics."""
    if task == "classification":
        return pt.classification_side(specs, np.asarray(y), np.asarray(output, dtype=np.float64), np.asarray(classes))
    return pt.regression_side(specs, y, output)


def build_metric(name: str, task: str, y: np.ndarray, output: np.ndarray, classes: np.ndarray | None):
    if ":" in name:
        if name not in _USER_FUNCTIONS:
            raise ValueError(f"metric {name} was not registered (register_user_metrics)")
        return UserMetric(_USER_FUNCTIONS[name], np.asarray(y), np.asarray(output))
    spec = spec_of(name, task, classes)
    return Metric(spec, side_of([spec], task, y, output, classes))


def paired_bootstrap(
    names: Sequence[str],
    task: str,
    y: np.ndarray,
    candidate_output: np.ndarray,
    baseline_output: np.ndarray,
    *,
    classes: np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    ids: np.ndarray | None = None,
) -> PairedResult:
    """Point estimates for both models and the bootstrap interval of each difference; ``ids``: the rows'
    stable ids (default: their positions), which decide each row's resample weights."""
    y = np.asarray(y)
    ids = np.arange(len(y)) if ids is None else np.asarray(ids)
    builtin = [name for name in names if ":" not in name]
    specs = {name: spec_of(name, task, classes) for name in builtin}
    sides = {"candidate": side_of(list(specs.values()), task, y, candidate_output, classes),
             "baseline": side_of(list(specs.values()), task, y, baseline_output, classes)}
    total = pt.partial(sides, ids, resamples=resamples, seed=seed)
    users = {name: (build_metric(name, task, y, candidate_output, classes), build_metric(name, task, y, baseline_output, classes))
             for name in names if ":" in name}
    return summarize(specs, total, resamples=resamples, seed=seed, confidence=confidence, users=users, ids=ids)


def summarize(specs: Mapping[str, pt.Spec], total: pt.Partial, *, resamples: int, seed: int, confidence: float,
              users: Mapping[str, tuple] | None = None, ids: np.ndarray | None = None) -> PairedResult:
    """Point estimates and paired intervals from the summed partials of both sides (and, on the local
    engine, user metrics resampled on the same row weights)."""
    point_c, point_b, deltas, errors = {}, {}, {}, {}
    for name, spec in specs.items():
        cand, base = pt.values(spec, "candidate", total), pt.values(spec, "baseline", total)
        point_c[name], point_b[name] = cand.point, base.point
        with np.errstate(invalid="ignore"):
            deltas[name] = cand.resampled - base.resampled
        if cand.error is not None:
            errors[name] = max(cand.error, base.error or 0.0)
    if users:  # the same row weights as the sums above, drawn once for every user metric
        keys = pt.row_keys(ids, seed)
        weights = [column for first in range(0, resamples, 64) for column in pt.poisson_weights(keys, first, min(64, resamples - first)).T]
    for name, (cand, base) in (users or {}).items():
        point_c[name], point_b[name] = cand.value(None), base.value(None)
        deltas[name] = np.array([cand.value(w) - base.value(w) for w in weights])
    tail = (1 - confidence) / 2
    intervals = {}
    for name in [*specs, *(users or {})]:
        samples = np.sort(deltas[name][np.isfinite(deltas[name])])
        low, high = (np.quantile(samples, [tail, 1 - tail]) if len(samples) else (np.nan, np.nan))
        intervals[name] = Interval(point_c[name] - point_b[name], float(low), float(high), confidence, samples)
    return PairedResult(total.rows, point_c, point_b, intervals, resamples, seed, errors)


def scored_value(values: np.ndarray) -> float:
    v = np.asarray(values, dtype=np.float64)
    scored = ~np.isnan(v)
    return float(v[scored].mean()) if scored.any() else float("nan")


def paired_metrics(cand: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray], n: int, *, resamples: int = 1000,
                   seed: int = 0, confidence: float = 0.95) -> PairedResult:
    """The mean over scored rows of each named per-row value (NaN: the row was not scored; e.g. a scorer's
    pass rate) for both sides,
    and the paired bootstrap interval of each difference: every resample weighs the same rows for both."""
    specs = {name: pt.scored_mean_spec(name) for name in cand}
    sides = {"candidate": pt.scored_side(cand), "baseline": pt.scored_side(base)}
    total = pt.partial(sides, np.arange(n), resamples=resamples, seed=seed)
    return summarize(specs, total, resamples=resamples, seed=seed, confidence=confidence)


# --------------------------------------------------------------------------------------------------
# Data and model outputs


def static_problems(ecfg, root) -> list[str]:
    """What ``validate`` can tell about ``evaluate:`` without loading a model or the data: the file
    exists, and its header has the target and slice columns (CSV and Parquet headers are read alone)."""
    from pathlib import Path

    import pandas as pd

    from mlflow_ci.evaluate import dataset
    from mlflow_ci.errors import UsageError

    path = Path(root) / ecfg.data
    if "://" in ecfg.data:
        return []  # a remote store: read (with the engine's credentials) when a check runs
    if ":" in ecfg.data and not path.exists():
        return []  # module:function: imported only when a check runs
    if dataset.is_partitioned(ecfg.data):  # a folder or glob of Parquet files: their footers say the columns
        try:
            columns = list(dataset.plan(ecfg.data, Path(root)).columns)
        except UsageError as exc:
            return [exc.message]
        return _missing_columns(ecfg, columns, ecfg.data)
    if not path.is_file():
        return [f"evaluate.data: file not found: {path}"]
    try:
        if path.suffix in (".parquet", ".pq"):
            import pyarrow.parquet

            columns = list(pyarrow.parquet.read_schema(path).names)
        else:
            columns = list(pd.read_csv(path, nrows=0).columns)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem to the user
        return [f"evaluate.data: {path.name} cannot be read ({type(exc).__name__})"]
    return _missing_columns(ecfg, columns, path.name)


def _missing_columns(ecfg, columns: list, shown: str) -> list[str]:
    wanted = [("evaluate.target", ecfg.target)] + [("evaluate.slices", c) for c in ecfg.slices]
    return [f"{where}: column {name!r} is not in {shown} (columns: {', '.join(map(str, columns[:20]))})"
            for where, name in wanted if name not in columns]


def load_dataset(spec: str, target: str, root, where: str = "evaluate.data"):
    """``spec``: a CSV/Parquet path (relative to the config) or ``module:function`` returning (X, y)
    or a DataFrame holding ``target``. Returns (X, y)."""
    import importlib
    import sys
    from pathlib import Path

    import pandas as pd

    from mlflow_ci.errors import UsageError

    path = Path(root) / spec
    if ":" in spec and not path.exists():
        module_name, _, func_name = spec.partition(":")
        sys.path.insert(0, str(root))
        try:
            func = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"{where} {spec!r}: cannot import it ({exc})") from None
        finally:
            sys.path.remove(str(root))
        data = func()
        if isinstance(data, tuple) and len(data) == 2:
            return data
        frame = data
    else:
        if not path.is_file():
            raise UsageError(f"{where}: file not found: {path}")
        frame = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    if target not in frame.columns:
        raise UsageError(f"evaluate.target: column {target!r} is not in the evaluation data (columns: {', '.join(map(str, frame.columns[:20]))})")
    return frame.drop(columns=[target]), frame[target]


def model_output(model, X, task: str, classes=None):
    """Probabilities of a scikit-learn estimator (columns in ``classes`` order), or its predictions
    (regression). Logged models of any flavor go through :mod:`.predict`."""
    from mlflow_ci.evaluate.predict import align

    if task == "regression":
        return np.asarray(model.predict(X), dtype=np.float64).ravel()
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    own = np.asarray(model.classes_)
    return proba if classes is None else align(proba, own, np.asarray(classes))

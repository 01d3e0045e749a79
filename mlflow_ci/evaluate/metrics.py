"""Evaluate champion and candidate on the same rows, with paired bootstrap confidence intervals.

Every built-in metric is a function of weighted sums of per-row statistics, so a resample is a row
weight vector and the sums are a matrix product, never a re-run of scikit-learn. Resamples are drawn
in batches: a batch of Poisson(1) row weights (the Poisson bootstrap, the standard for large data; the
weights come from a 65,536-entry inverse-CDF table over random 16-bit numbers, so P(k) is exact to
1/65,536 and a weight is at most 7), one float32 product for every distinct sum-based statistic of both
models, and ROC AUC as the Mann-Whitney count from the negatives' cumulative weights (rows arranged once
as negatives then positives in the candidate's score order). Batches have their own random streams and
run side by side on the machine's cores. Both models are scored on the same resampled rows (paired), so
the interval is on the *difference*, which is what the gate needs.

Point estimates equal scikit-learn's (tests compare them to 1e-9).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

LOWER_IS_BETTER = {"log_loss", "brier", "mae", "mse", "rmse", "mape"}
BATCH_CELLS = 4_000_000  # row weights drawn at once (resamples × rows): bounds the memory of a batch
BOOTSTRAP_THREADS = min(4, os.cpu_count() or 1)  # batches scored at once
# Poisson(1) by inverse CDF over 16-bit uniforms: entry u is the smallest k with P(X <= k) > u / 65536.
_POISSON_CDF = np.cumsum([np.exp(-1.0) / np.prod(np.arange(1, k + 1, dtype=np.float64)) for k in range(8)])
POISSON_TABLE = np.minimum(np.searchsorted(_POISSON_CDF * 65536, np.arange(65536), side="right"), 7).astype(np.uint8)
# The same draw a byte at a time: the first byte of the uniform decides the weight, except for the 5 of
# 256 values that a CDF boundary splits (marked 255), which a second byte settles.
_BY_BYTES = POISSON_TABLE.reshape(256, 256)
FIRST_BYTE = np.where(_BY_BYTES.min(axis=1) == _BY_BYTES.max(axis=1), _BY_BYTES[:, 0], 255).astype(np.uint8)


def poisson_weights(rng: np.random.Generator, resamples: int, rows: int) -> np.ndarray:
    """A batch of Poisson(1) row weights (resamples × rows, uint8), distributed exactly as
    ``POISSON_TABLE`` over 16-bit uniforms, with one random byte per weight for 98% of them."""
    first = np.frombuffer(rng.bytes(resamples * rows), dtype=np.uint8)
    weights = np.take(FIRST_BYTE, first)
    unsettled = np.flatnonzero(weights == 255)
    weights[unsettled] = _BY_BYTES[first[unsettled], np.frombuffer(rng.bytes(len(unsettled)), dtype=np.uint8)]
    return weights.reshape(resamples, rows)


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


class _Metric:
    """values = finalize(weighted sums of the stat columns, total weights): ``sums`` has one row per
    stat column and one column per resample, ``totals`` one entry per resample."""
    def __init__(self, stats: np.ndarray, finalize: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        self.stats = np.ascontiguousarray(stats, dtype=np.float64)
        self.finalize = finalize

    def value(self, weights: np.ndarray | None) -> float:
        return float(self.values(None if weights is None else weights[None, :])[0])

    def values(self, weights: np.ndarray | None) -> np.ndarray:
        """One value per row of ``weights`` (resamples × rows); None: all rows once."""
        if weights is None:
            return np.asarray(self.finalize(self.stats.sum(axis=0)[:, None], np.array([float(self.stats.shape[0])])), dtype=np.float64)
        return np.asarray(self.finalize((weights @ self.stats).T, weights.sum(axis=1, dtype=np.float64)), dtype=np.float64)


class _Auc:
    """Binary ROC AUC with integer row weights. Per resample batch: the negatives' weights summed
    cumulatively in score order, then each positive row takes the negative weight below its score (tied
    negatives count half) — one cumulative sum over the negatives, one gather and one product over the
    positives. When the rows come as [negatives | positives], each block in this score's order (what
    ``paired_bootstrap`` arranges for the candidate), nothing else is reordered."""
    def __init__(self, y: np.ndarray, score: np.ndarray) -> None:
        self.rows = len(y)
        neg, pos = np.flatnonzero(y != 1), np.flatnonzero(y == 1)
        self.neg, self.pos = _block(neg), _block(pos)
        order = np.argsort(score[neg], kind="mergesort")
        self.neg_order = None if np.array_equal(order, np.arange(len(order))) else order
        sorted_neg, pos_scores = score[neg][order], score[pos]
        self.below = np.searchsorted(sorted_neg, pos_scores, side="left")  # negatives scored lower
        upto = np.searchsorted(sorted_neg, pos_scores, side="right")  # ... or the same
        tied = np.flatnonzero(upto != self.below)
        self.tied, self.tied_upto = (tied, upto[tied]) if len(tied) else (None, None)

    def value(self, weights: np.ndarray | None) -> float:
        return float(self.values(None if weights is None else weights[None, :].astype(np.int32))[0])

    def values(self, weights: np.ndarray | None) -> np.ndarray:
        if weights is None:
            weights = np.ones((1, self.rows), dtype=np.uint8)
        neg = weights[:, self.neg]
        if self.neg_order is not None:
            neg = np.take(neg, self.neg_order, axis=1)
        most = 255 if weights.dtype == np.uint8 else int(weights.max(initial=0))
        wide = np.int32 if most * weights.shape[1] < 2**31 else np.int64
        below = _cumsum(neg, wide)  # below[:, k]: the weight of the k lowest-scored negatives
        pos = weights[:, self.pos]
        numerator = np.einsum("ij,ij->i", pos, np.take(below, self.below, axis=1), dtype=np.float64, casting="unsafe")
        if self.tied is not None:
            ties = np.take(below, self.tied_upto, axis=1) - np.take(below, self.below[self.tied], axis=1)
            numerator += 0.5 * np.einsum("ij,ij->i", pos[:, self.tied], ties, dtype=np.float64, casting="unsafe")
        total_n = below[:, -1].astype(np.float64)
        total_p = pos.sum(axis=1, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((total_p > 0) & (total_n > 0), numerator / (total_p * total_n), np.nan)


def _block(index: np.ndarray) -> slice | np.ndarray:
    """A slice when the indices are consecutive (a view instead of a gather), else the indices."""
    if len(index) and index[-1] - index[0] == len(index) - 1:
        return slice(int(index[0]), int(index[-1]) + 1)
    return index if len(index) else slice(0, 0)


def _cumsum(a: np.ndarray, dtype) -> np.ndarray:
    """Cumulative sums along rows with a leading 0 column: out[:, i + 1] is the sum through column i."""
    out = np.empty((a.shape[0], a.shape[1] + 1), dtype=dtype)
    out[:, 0] = 0
    np.cumsum(a, axis=1, dtype=dtype, out=out[:, 1:])
    return out


def _safe_div(a, b):
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape, dtype=np.float64), where=b != 0)


def _mean(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    return s[0] / w


def classification_metric(name: str, y: np.ndarray, proba: np.ndarray, classes: np.ndarray):
    """``y``: labels; ``proba``: (n, k) probabilities in the order of ``classes``."""
    idx = np.searchsorted(classes, y)
    if np.any(classes[np.clip(idx, 0, len(classes) - 1)] != y):
        raise ValueError("the evaluation data has labels the model was not trained on")
    pred = proba.argmax(axis=1)
    k = len(classes)
    onehot_y = np.eye(k)[idx]
    onehot_p = np.eye(k)[pred]
    if name == "accuracy":
        return _Metric((pred == idx)[:, None], _mean)
    if name == "log_loss":
        eps = np.finfo(proba.dtype).eps
        p = np.clip(proba / proba.sum(axis=1, keepdims=True), eps, 1 - eps)
        return _Metric(-np.log(p[np.arange(len(y)), idx])[:, None], _mean)
    if name == "brier":
        _binary(k, name)
        return _Metric(((proba[:, 1] - idx) ** 2)[:, None], _mean)
    if name == "roc_auc":
        _binary(k, name)
        return _Auc(idx, proba[:, 1])
    stats = np.hstack([onehot_y * onehot_p, onehot_p, onehot_y])  # tp, predicted, actual per class

    def per_class(s):
        tp, predicted, actual = s[:k], s[k:2 * k], s[2 * k:]
        return tp, predicted, actual

    if name == "balanced_accuracy":
        def fin(s, w):
            tp, _, actual = per_class(s)
            present = actual > 0
            return _safe_div(tp, actual).sum(axis=0) / present.sum(axis=0)
        return _Metric(stats, fin)
    kind, _, average = name.partition("_")
    if not average:
        _binary(k, name)
        average = "binary"

    def fin(s, w, kind=kind, average=average):
        tp, predicted, actual = per_class(s)
        if kind == "precision":
            scores = _safe_div(tp, predicted)
        elif kind == "recall":
            scores = _safe_div(tp, actual)
        else:
            scores = _safe_div(2 * tp, predicted + actual)
        if average == "binary":
            return scores[1]
        if average == "macro":
            return scores.mean(axis=0)
        return (scores * actual).sum(axis=0) / actual.sum(axis=0)

    return _Metric(stats, fin)


def _binary(k: int, name: str) -> None:
    if k != 2:
        raise ValueError(f"metric {name} needs a binary target (use f1_macro, precision_macro, ... for {k} classes)")


def regression_metric(name: str, y: np.ndarray, pred: np.ndarray):
    e = pred - y
    if name == "mae":
        return _Metric(np.abs(e)[:, None], _mean)
    if name == "mse":
        return _Metric((e ** 2)[:, None], _mean)
    if name == "rmse":
        return _Metric((e ** 2)[:, None], lambda s, w: np.sqrt(s[0] / w))
    if name == "mape":
        eps = np.finfo(np.float64).eps
        return _Metric((np.abs(e) / np.maximum(np.abs(y), eps))[:, None], _mean)
    if name == "r2":
        stats = np.column_stack([e ** 2, y, y ** 2])

        def fin(s, w):
            sst = s[2] - s[1] ** 2 / w
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(sst > 0, 1 - s[0] / np.where(sst > 0, sst, 1), np.nan)
        return _Metric(stats, fin)
    raise ValueError(f"unknown regression metric {name!r}")


class _Callable:
    """A user metric ``module:function(y_true, output) -> float``; resamples are materialised rows
    (slower than the built-in metrics, which never copy rows)."""

    def __init__(self, func, y: np.ndarray, output: np.ndarray) -> None:
        self.func, self.y, self.output = func, y, output

    def value(self, weights: np.ndarray | None) -> float:
        if weights is None:
            return float(self.func(self.y, self.output))
        rows = np.repeat(np.arange(len(self.y)), weights.astype(np.int64))
        return float(self.func(self.y[rows], self.output[rows]))

    def values(self, weights: np.ndarray | None) -> np.ndarray:
        if weights is None:
            return np.array([self.value(None)])
        return np.array([self.value(row) for row in weights])


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


def build_metric(name: str, task: str, y: np.ndarray, output: np.ndarray, classes: np.ndarray | None):
    if ":" in name:
        if name not in _USER_FUNCTIONS:
            raise ValueError(f"metric {name} was not registered (register_user_metrics)")
        return _Callable(_USER_FUNCTIONS[name], y, output)
    if task == "classification":
        return classification_metric(name, y, output, classes)
    return regression_metric(name, y, output)


def _stack(metrics: list[_Metric], n: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Every distinct statistic column of these metrics once (precision, recall and F1 share theirs),
    as float32 (sums over a million rows keep ~7 significant digits, far inside the Monte-Carlo error),
    and where each metric's columns are."""
    columns: list[np.ndarray] = []
    seen: dict[bytes, int] = {}
    slots = {}
    for metric in metrics:
        where = []
        for col in metric.stats.T:
            key = hashlib.blake2b(np.ascontiguousarray(col).tobytes(), digest_size=16).digest()
            if key not in seen:
                seen[key] = len(columns)
                columns.append(col)
            where.append(seen[key])
        slots[id(metric)] = np.array(where)
    stacked = np.column_stack(columns).astype(np.float32) if columns else np.zeros((n, 0), dtype=np.float32)
    return stacked, slots


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
) -> PairedResult:
    """Point estimates for both models and the bootstrap interval of each difference."""
    y = np.asarray(y)
    n = len(y)
    if ("roc_auc" in names and task == "classification" and classes is not None and len(classes) == 2
            and np.ndim(candidate_output) == 2 and candidate_output.shape[1] == 2):
        # negatives then positives, each in the candidate's score order: the candidate's AUC reorders
        # nothing, the baseline's only its negatives (row order is free in a bootstrap)
        order = np.lexsort((candidate_output[:, 1], y == classes[1]))
        y, candidate_output, baseline_output = y[order], candidate_output[order], baseline_output[order]
    cand = {name: build_metric(name, task, y, candidate_output, classes) for name in names}
    base = {name: build_metric(name, task, y, baseline_output, classes) for name in names}
    return paired_metrics(cand, base, n, resamples=resamples, seed=seed, confidence=confidence)


def mean_of_scored(values: np.ndarray) -> _Metric:
    """The mean of per-row values over the rows that have one (NaN: the row was not scored), e.g. a
    scorer's pass rate: a resample's value is the weighted sum of the scored rows' values over their weight."""
    values = np.asarray(values, dtype=np.float64)
    scored = ~np.isnan(values)
    return _Metric(np.column_stack([np.where(scored, values, 0.0), scored.astype(np.float64)]), _scored_mean)


def _scored_mean(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s[1] > 0, s[0] / np.where(s[1] > 0, s[1], 1), np.nan)


def paired_metrics(cand: dict, base: dict, n: int, *, resamples: int = 1000, seed: int = 0,
                   confidence: float = 0.95) -> PairedResult:
    """Point estimates of each named metric for both sides, and the paired bootstrap interval of each
    difference: every resample weighs the same rows for both."""
    names = list(cand)
    point_c = {name: float(m.value(None)) for name, m in cand.items()}
    point_b = {name: float(m.value(None)) for name, m in base.items()}
    # One matrix of every sum-based statistic of both models: one product per batch of resamples.
    stacked, slots = _stack([m for m in (*cand.values(), *base.values()) if isinstance(m, _Metric)], n)
    deltas = {name: np.empty(resamples) for name in names}
    batch = max(1, min(resamples, BATCH_CELLS // max(n, 1)))
    firsts = range(0, resamples, batch)

    def one_batch(first: int, seeds: np.random.SeedSequence) -> None:
        """Resamples first … first + batch, from the batch's own random stream (so the intervals do not
        depend on how many threads there are), into their own slice of ``deltas``."""
        count = min(batch, resamples - first)
        weights = poisson_weights(np.random.default_rng(seeds), count, n)
        totals = weights.sum(axis=1, dtype=np.float64)
        products = (weights.astype(np.float32) @ stacked).T.astype(np.float64)

        def values(metric):
            if id(metric) in slots:
                return np.asarray(metric.finalize(products[slots[id(metric)]], totals), dtype=np.float64)
            return metric.values(weights)

        with np.errstate(invalid="ignore", divide="ignore"):
            for name in names:
                deltas[name][first:first + count] = values(cand[name]) - values(base[name])

    streams = np.random.SeedSequence(seed).spawn(len(firsts))
    workers = min(len(firsts), BOOTSTRAP_THREADS)
    if workers > 1:  # NumPy lets go of the GIL in the heavy loops: batches run side by side on the cores
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one_batch, firsts, streams))
    else:
        for first, seeds in zip(firsts, streams):
            one_batch(first, seeds)
    tail = (1 - confidence) / 2
    intervals = {}
    for name in names:
        samples = np.sort(deltas[name][np.isfinite(deltas[name])])
        low, high = (np.quantile(samples, [tail, 1 - tail]) if len(samples) else (np.nan, np.nan))
        intervals[name] = Interval(point_c[name] - point_b[name], float(low), float(high), confidence, samples)
    return PairedResult(n, point_c, point_b, intervals, resamples, seed)


# --------------------------------------------------------------------------------------------------
# Data and model outputs


def static_problems(ecfg, root) -> list[str]:
    """What ``validate`` can tell about ``evaluate:`` without loading a model or the data: the file
    exists, and its header has the target and slice columns (CSV and Parquet headers are read alone)."""
    from pathlib import Path

    import pandas as pd

    path = Path(root) / ecfg.data
    if ":" in ecfg.data and not path.exists():
        return []  # module:function: imported only when a check runs
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
    wanted = [("evaluate.target", ecfg.target)] + [("evaluate.slices", c) for c in ecfg.slices]
    return [f"{where}: column {name!r} is not in {path.name} (columns: {', '.join(map(str, columns[:20]))})"
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

"""The paired bootstrap, reduced partition by partition.

Every metric is a function of sums over rows: a resample is a vector of Poisson(1) row weights, and a
metric's value on it is computed from weighted sums of per-row statistics (counts, sums, sums of
squares) or, for ROC AUC, from weighted score histograms of the negatives and the positives. A row's
weight in resample ``b`` is a pure function of ``(seed, row id, b)`` — a counter-based generator
(splitmix64's mixer over the row's stable id and the resample index, four 16-bit uniforms per 64-bit
draw, each turned into a Poisson(1) weight by a 65,536-entry inverse-CDF table: P(k) exact to
1/65,536, a weight at most 7). So the rows can arrive in any order and in any partitions: each partition returns
its :class:`Partial` (sums per resample, histograms), partials add up, and :func:`values` turns the
total into each metric's point estimate and resampled values (:func:`mlflow_ci.evaluate.metrics.summarize`:
the paired intervals). The local engine, Spark and Ray all run this module on
their partitions; their intervals are the same up to floating-point summation order.

ROC AUC is the Mann-Whitney statistic from histograms of the positive class's score on a logit scale:
a point estimate from 65,536 bins (:data:`FINE_BINS`), the resamples from 512 (:data:`COARSE_BINS`),
each resample shifted by the difference the coarse bins make on all rows. Two rows in the same bin
count as tied (half a pair), so the point estimate is exact unless a positive and a negative share a
fine bin without sharing their score; :func:`values` reports the bound of that error, computed from
the histograms, and it is 0 for scores that differ by more than a bin (0.00085 on the logit scale).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

BATCH_CELLS = 4_000_000  # row weights drawn at once (resamples × rows): bounds the memory of a batch
THREADS = min(4, os.cpu_count() or 1)  # batches scored at once (NumPy lets go of the GIL)
FINE_BINS = 1 << 16  # ROC AUC point estimate: logit-scale bins over [-LOGIT_SPAN, LOGIT_SPAN]
COARSE_SHIFT = 7
COARSE_BINS = FINE_BINS >> COARSE_SHIFT  # ROC AUC per resample: 512 bins
LOGIT_SPAN = 28.0  # |logit| of a probability within 1e-12 of 0 or 1

# Poisson(1) by inverse CDF over 16-bit uniforms: entry u is the smallest k with P(X <= k) > u / 65536.
_POISSON_CDF = np.cumsum([np.exp(-1.0) / np.prod(np.arange(1, k + 1, dtype=np.float64)) for k in range(8)])
POISSON_TABLE = np.minimum(np.searchsorted(_POISSON_CDF * 65536, np.arange(65536), side="right"), 7).astype(np.uint8)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, in place: a bijection of 64-bit integers whose every output bit depends on
    every input bit."""
    x ^= x >> _S30
    x *= _MIX1
    x ^= x >> _S27
    x *= _MIX2
    x ^= x >> _S31
    return x


def row_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """Each row's key for the weight generator: its stable id and the seed, mixed."""
    with np.errstate(over="ignore"):
        keys = np.asarray(ids, dtype=np.uint64) * _GOLDEN
        keys ^= np.uint64((seed * 0xD1B54A32D192ED03 + 0x8CB92BA72F3D8DD7) & 0xFFFFFFFFFFFFFFFF)
        return _mix(keys)


def poisson_weights(keys: np.ndarray, first: int, count: int) -> np.ndarray:
    """Poisson(1) weights of resamples ``first … first + count`` (rows: the rows, columns: resamples,
    uint8). Resample ``b`` of a row depends on its key and ``b`` only: draw ``q`` (the key mixed with
    ``q``) gives resamples 4q … 4q+3, one 16-bit uniform each."""
    q0, q1 = first // 4, (first + count + 3) // 4
    with np.errstate(over="ignore"):
        draws = np.arange(q0, q1, dtype=np.uint64) * _GOLDEN + np.uint64(0x632BE59BD9B4E019)
        x = _mix(keys[:, None] ^ draws[None, :])  # rows × draws
    weights = np.take(POISSON_TABLE, x.view(np.uint16))  # rows × 4·draws, resample 4q + j in column 4(q - q0) + j
    return weights[:, first - 4 * q0:first - 4 * q0 + count]


# --------------------------------------------------------------------------------------------------
# What a metric needs from each row, and how it becomes a value


Getter = Callable[[str], np.ndarray]  # a statistic's sum (one per resample)


@dataclass(frozen=True)
class Spec:
    """How metric ``name`` is reduced: the per-row statistics it sums (``columns``) and the function of
    their sums and of the total weight that gives its value; ``finalize`` None: ROC AUC (histograms)."""
    name: str
    columns: tuple[str, ...]
    finalize: Callable[[Getter, np.ndarray], np.ndarray] | None


def _safe_div(a, b):
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape, dtype=np.float64), where=b != 0)


def _mean(column: str):
    return lambda s, w: s(column) / w


def classification_spec(name: str, k: int) -> Spec:
    if name in ("accuracy", "log_loss", "brier"):
        if name == "brier":
            _binary(k, name)
        column = {"accuracy": "correct", "log_loss": "nll", "brier": "brier"}[name]
        return Spec(name, (column,), _mean(column))
    if name == "roc_auc":
        _binary(k, name)
        return Spec(name, (), None)
    tp, predicted, actual = ([f"{kind}{j}" for j in range(k)] for kind in ("tp", "pred", "actual"))

    def per_class(s: Getter, *kinds):
        return tuple(np.array([s(c) for c in kind]) for kind in kinds)

    if name == "balanced_accuracy":
        def balanced(s, w):
            hits, truth = per_class(s, tp, actual)
            return _safe_div(hits, truth).sum(axis=0) / (truth > 0).sum(axis=0)
        return Spec(name, (*tp, *actual), balanced)
    kind, _, average = name.partition("_")
    if kind not in ("precision", "recall", "f1") or average not in ("", "macro", "weighted"):
        raise ValueError(f"unknown classification metric {name!r}")
    if not average:
        _binary(k, name)
        average = "binary"

    def averaged(s, w):
        hits, said, truth = per_class(s, tp, predicted, actual)
        scores = (_safe_div(hits, said) if kind == "precision" else _safe_div(hits, truth) if kind == "recall"
                  else _safe_div(2 * hits, said + truth))
        if average == "binary":
            return scores[1]
        if average == "macro":
            return scores.mean(axis=0)
        return (scores * truth).sum(axis=0) / truth.sum(axis=0)
    return Spec(name, (*tp, *predicted, *actual), averaged)


def _binary(k: int, name: str) -> None:
    if k != 2:
        raise ValueError(f"metric {name} needs a binary target (use f1_macro, precision_macro, ... for {k} classes)")


def regression_spec(name: str) -> Spec:
    if name in ("mae", "mse", "mape"):
        column = {"mae": "abs", "mse": "sq", "mape": "ape"}[name]
        return Spec(name, (column,), _mean(column))
    if name == "rmse":
        return Spec(name, ("sq",), lambda s, w: np.sqrt(s("sq") / w))
    if name == "r2":
        def r2(s, w):
            sst = s("y2") - s("y") ** 2 / w
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(sst > 0, 1 - s("sq") / np.where(sst > 0, sst, 1), np.nan)
        return Spec(name, ("sq", "y", "y2"), r2)
    raise ValueError(f"unknown regression metric {name!r}")


def scored_mean_spec(name: str) -> Spec:
    """The mean of per-row values over the rows that have one (a scorer's pass rate)."""
    value, scored = f"{name}.value", f"{name}.scored"

    def fin(s, w):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(s(scored) > 0, s(value) / np.where(s(scored) > 0, s(scored), 1), np.nan)
    return Spec(name, (value, scored), fin)


# --------------------------------------------------------------------------------------------------
# One model's statistics on some rows


@dataclass
class Side:
    """One model's per-row statistics on a set of rows: named columns, and for ROC AUC each row's class
    (True: positive) and fine logit bin."""
    columns: dict[str, np.ndarray]
    auc: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        if self.auc is not None:
            return len(self.auc[0])
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def select(self, rows: np.ndarray) -> "Side":
        """These rows' statistics (a boolean mask, or row indices: a row may come more than once)."""
        return Side({k: v[rows] for k, v in self.columns.items()},
                    None if self.auc is None else (self.auc[0][rows], self.auc[1][rows]))


def logit_bins(score: np.ndarray) -> np.ndarray:
    """The fine ROC AUC bin of each score (a probability of the positive class), monotone in the score."""
    p = np.clip(np.asarray(score, dtype=np.float64), 1e-12, 1 - 1e-12)
    t = np.log(p) - np.log1p(-p)
    scaled = (t + LOGIT_SPAN) * (FINE_BINS / (2 * LOGIT_SPAN))
    return np.clip(scaled, 0, FINE_BINS - 1).astype(np.int64)


def classification_side(specs: list[Spec], y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> Side:
    """``y``: labels; ``proba``: (n, k) probabilities in the order of ``classes``."""
    idx = np.searchsorted(classes, y)
    if np.any(classes[np.clip(idx, 0, len(classes) - 1)] != y):
        raise ValueError("the evaluation data has labels the model was not trained on")
    wanted = {c for spec in specs for c in spec.columns}
    pred = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=np.int64)
    columns: dict[str, np.ndarray] = {}
    if "correct" in wanted:
        columns["correct"] = (pred == idx).astype(np.float64)
    if "nll" in wanted:
        eps = np.finfo(proba.dtype).eps
        p = np.clip(proba / proba.sum(axis=1, keepdims=True), eps, 1 - eps)
        columns["nll"] = -np.log(p[np.arange(len(y)), idx])
    if "brier" in wanted:
        columns["brier"] = (proba[:, 1] - idx) ** 2
    for j in range(len(classes)):
        for kind, flag in (("tp", (pred == j) & (idx == j)), ("pred", pred == j), ("actual", idx == j)):
            if f"{kind}{j}" in wanted:
                columns[f"{kind}{j}"] = flag.astype(np.float64)
    auc = (idx == 1, logit_bins(proba[:, 1])) if any(spec.finalize is None for spec in specs) else None
    return Side(columns, auc)


def regression_side(specs: list[Spec], y: np.ndarray, pred: np.ndarray) -> Side:
    y = np.asarray(y, dtype=np.float64)
    e = np.asarray(pred, dtype=np.float64) - y
    every = {"abs": lambda: np.abs(e), "sq": lambda: e ** 2, "y": lambda: y, "y2": lambda: y ** 2,
             "ape": lambda: np.abs(e) / np.maximum(np.abs(y), np.finfo(np.float64).eps)}
    wanted = {c for spec in specs for c in spec.columns}
    return Side({name: make() for name, make in every.items() if name in wanted})


def scored_side(values: Mapping[str, np.ndarray]) -> Side:
    """Per-row values by metric name, NaN where a row was not scored."""
    columns = {}
    for name, raw in values.items():
        v = np.asarray(raw, dtype=np.float64)
        scored = ~np.isnan(v)
        columns[f"{name}.value"], columns[f"{name}.scored"] = np.where(scored, v, 0.0), scored.astype(np.float64)
    return Side(columns)


# --------------------------------------------------------------------------------------------------
# A partition's partial statistics, their sum, and the result


@dataclass
class Partial:
    """What a partition of rows contributes: the row count, each statistic's sum (``point``, by
    ``side/column``), each resample's total weight and statistic sums (``totals``, ``sums``: resamples ×
    statistics, in ``layout`` order), and per side the ROC AUC histograms (fine: 2 × FINE_BINS for all
    rows; coarse: resamples × 2 × COARSE_BINS)."""
    rows: int
    layout: tuple[str, ...]
    point: np.ndarray
    totals: np.ndarray
    sums: np.ndarray
    fine: dict[str, np.ndarray] = field(default_factory=dict)
    coarse: dict[str, np.ndarray] = field(default_factory=dict)

    def __add__(self, other: "Partial") -> "Partial":
        if self.layout != other.layout or self.sums.shape != other.sums.shape:
            raise ValueError("partials of different plans cannot be added")
        return Partial(self.rows + other.rows, self.layout, self.point + other.point, self.totals + other.totals,
                       self.sums + other.sums, {k: v + other.fine[k] for k, v in self.fine.items()},
                       {k: np.add(v, other.coarse[k], dtype=np.int64) for k, v in self.coarse.items()})


def layout_of(sides: Mapping[str, Side]) -> tuple[str, ...]:
    return tuple(f"{role}/{column}" for role in sorted(sides) for column in sorted(sides[role].columns))


def partial(sides: Mapping[str, Side], ids: np.ndarray, *, resamples: int, seed: int) -> Partial:
    """The partial statistics of these rows (``ids``: their stable ids, one per row)."""
    layout = layout_of(sides)
    n = len(ids)
    stats = (np.column_stack([sides[key.split("/", 1)[0]].columns[key.split("/", 1)[1]] for key in layout])
             if layout else np.zeros((n, 0)))
    stats = np.ascontiguousarray(stats, dtype=np.float64)
    point = stats.sum(axis=0)
    aucs = {role: side.auc for role, side in sorted(sides.items()) if side.auc is not None}
    fine = {role: _histogram(pos, bins, FINE_BINS) for role, (pos, bins) in aucs.items()}
    totals, sums = np.zeros(resamples), np.zeros((resamples, len(layout)))
    coarse = {role: np.zeros((resamples, 2, COARSE_BINS), dtype=np.int32) for role in aucs}  # a partition's weights: < 2**31
    if resamples and n:
        keys = row_keys(ids, seed)
        stats32 = np.column_stack([stats, np.ones(n)]).astype(np.float32)  # the last column: each resample's total weight
        grouped = {role: _grouping(pos, bins >> COARSE_SHIFT) for role, (pos, bins) in aucs.items()}
        batch = max(4, min(resamples, (BATCH_CELLS // max(n, 1)) // 4 * 4))
        firsts = range(0, resamples, batch)

        def one_batch(first: int) -> None:
            count = min(batch, resamples - first)
            weights = poisson_weights(keys, first, count)  # rows × resamples
            product = weights.T.astype(np.float32) @ stats32
            sums[first:first + count], totals[first:first + count] = product[:, :-1], product[:, -1]
            for role, (order, starts, cells) in grouped.items():  # int32: a partition's weights sum below 2**31
                reduced = np.add.reduceat(np.take(weights, order, axis=0), starts, axis=0, dtype=np.int32)
                coarse[role][first:first + count].reshape(count, -1)[:, cells] = reduced.T

        workers = min(len(firsts), THREADS)
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(one_batch, firsts))
        else:
            for first in firsts:
                one_batch(first)
    return Partial(n, layout, point, totals, sums, fine, coarse)


def _histogram(pos: np.ndarray, bins: np.ndarray, size: int) -> np.ndarray:
    """Rows per (class, bin): row 0 the negatives, row 1 the positives."""
    return np.bincount(pos.astype(np.int64) * size + bins, minlength=2 * size).reshape(2, size).astype(np.int64)


def _grouping(pos: np.ndarray, coarse: np.ndarray):
    """The rows in (class, coarse bin) order, where each group starts, and the cell each group adds to."""
    cell = pos.astype(np.int64) * COARSE_BINS + coarse
    order = np.argsort(cell, kind="stable")
    ordered = cell[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else np.zeros(0, dtype=np.int64)
    return order, starts, ordered[starts]


def auc_from_histograms(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC (Mann-Whitney, a shared bin counted as a tie) and the bound of what the shared bins may
    change, from histograms shaped (..., 2, bins)."""
    neg, pos = hist[..., 0, :].astype(np.float64), hist[..., 1, :].astype(np.float64)
    below = np.cumsum(neg, axis=-1) - neg
    pairs = neg.sum(axis=-1) * pos.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(pairs > 0, ((pos * (below + 0.5 * neg)).sum(axis=-1)) / np.where(pairs > 0, pairs, 1), np.nan)
        bound = np.where(pairs > 0, 0.5 * (pos * neg).sum(axis=-1) / np.where(pairs > 0, pairs, 1), np.nan)
    return auc, bound


def _coarsen(fine: np.ndarray) -> np.ndarray:
    return fine.reshape(2, COARSE_BINS, 1 << COARSE_SHIFT).sum(axis=-1)


@dataclass(frozen=True)
class Values:
    """A metric's value on all rows and on each resample (NaN where it is undefined), and for ROC AUC the
    bound of the binning's error on the point estimate."""
    point: float
    resampled: np.ndarray
    error: float | None = None


def values(spec: Spec, role: str, total: Partial) -> Values:
    """The metric's value for ``role`` from the summed partials."""
    if spec.finalize is None:
        fine = total.fine[role]
        point, bound = auc_from_histograms(fine)
        coarse_point, _ = auc_from_histograms(_coarsen(fine))
        resampled, _ = auc_from_histograms(total.coarse[role])
        return Values(float(point), resampled + (point - coarse_point), float(bound))
    where = {key: i for i, key in enumerate(total.layout)}

    def column(source: np.ndarray) -> Getter:
        return lambda name: source[..., where[f"{role}/{name}"]]

    with np.errstate(invalid="ignore", divide="ignore"):
        point = spec.finalize(column(total.point[None, :]), np.array([float(total.rows)]))
        resampled = spec.finalize(column(total.sums), total.totals) if len(total.totals) else np.zeros(0)
    return Values(float(np.asarray(point, dtype=np.float64).ravel()[0]), np.asarray(resampled, dtype=np.float64))

"""Data checks on the evaluation data: shape, columns and dtypes, missing values and distribution
shift (PSI) against the evaluation data the baseline was checked on.

The profile of each check's evaluation data is kept with its run (``mlflow_ci/data_profile.json``), so
the next PR compares its data with the data the champion was judged on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlflow_ci.gate import Check

BINS = 10
PROFILE_ARTIFACT = "mlflow_ci/data_profile.json"
EPS = 1e-4


def _frame(X):
    """The evaluation features as a DataFrame with string column names (as profiles store them)."""
    import pandas as pd

    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))
    return frame.rename(columns=str)


SAMPLE_CELLS = 10_000_000  # numeric values kept to read quantile edges from, over all columns
FREQUENCY_CAP = 10_000  # distinct values counted per column (beyond it, the rarest are dropped)
SAMPLE_SEED = 0x5EED


@dataclass
class ProfilePartial:
    """What a partition of the evaluation data contributes to its profile: rows, each column's dtype
    and missing count; for numeric columns the values of the rows with the smallest hashes of their
    stable ids (a sample that is the same however the rows are split) and the counts per bin of the
    baseline's edges; for the others, counts per value."""
    rows: int
    dtypes: dict[str, str]
    missing: dict[str, int]
    sample: dict[str, tuple[np.ndarray, np.ndarray]]  # column -> (hashes, values)
    counts: dict[str, dict[str, int]]
    base_counts: dict[str, np.ndarray]
    keep: int

    def __add__(self, other: "ProfilePartial") -> "ProfilePartial":
        def merged(a: dict, b: dict, add) -> dict:
            return {k: add(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k)) for k in {**a, **b}}

        return ProfilePartial(
            self.rows + other.rows, merged(self.dtypes, other.dtypes, _wider), merged(self.missing, other.missing, int.__add__),
            merged(self.sample, other.sample, lambda x, y: _smallest(np.concatenate([x[0], y[0]]), np.concatenate([x[1], y[1]]), self.keep)),
            merged(self.counts, other.counts, _add_counts), merged(self.base_counts, other.base_counts, np.add), self.keep)


def _wider(a: str, b: str) -> str:
    """The dtype of two partitions' values together (int64 and float64: float64; else object)."""
    if a == b:
        return a
    try:
        return str(np.result_type(np.dtype(a), np.dtype(b)))
    except TypeError:
        return "object"


def _smallest(hashes: np.ndarray, values: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    if len(hashes) <= keep:
        return hashes, values
    picked = np.argpartition(hashes, keep - 1)[:keep]
    return hashes[picked], values[picked]


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, count in b.items():
        out[key] = out.get(key, 0) + count
    if len(out) > FREQUENCY_CAP:
        out = dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))[:FREQUENCY_CAP])
    return out


def _numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def profile_partial(X, ids: np.ndarray, base: dict | None) -> ProfilePartial:
    """The partial profile of these rows (``ids``: their stable ids; ``base``: the baseline's profile,
    whose numeric edges the rows are counted in)."""
    from mlflow_ci.evaluate.partial import row_keys

    frame = _frame(X)
    numeric = [name for name in frame.columns if _numeric(frame[name])]
    keep = int(min(100_000, max(10_000, SAMPLE_CELLS // max(len(numeric), 1))))
    hashes = row_keys(np.asarray(ids), SAMPLE_SEED)
    base_cols = (base or {}).get("columns", {})
    part = ProfilePartial(len(frame), {}, {}, {}, {}, {}, keep)
    for name in frame.columns:
        series = frame[name]
        present = series.notna().to_numpy()
        part.dtypes[name] = str(series.dtype)
        part.missing[name] = int((~present).sum())
        if name in numeric:
            values = series.to_numpy(dtype=float)[present]
            part.sample[name] = _smallest(hashes[present], values, keep)
            edges = (base_cols.get(name) or {}).get("edges")
            if edges is not None:
                part.base_counts[name] = _counts(values, edges)
        else:
            counts = series[present].astype(str).value_counts()
            part.counts[name] = _add_counts({}, {str(k): int(v) for k, v in counts.items()})
    return part


def finish_profile(part: ProfilePartial) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The profile (as :func:`profile` has always written it) and, per numeric column the baseline
    profiled, the shares of these rows in the baseline's bins (what PSI compares)."""
    columns: dict[str, Any] = {}
    for name, dtype in part.dtypes.items():
        present = part.rows - part.missing[name]
        entry: dict[str, Any] = {"dtype": dtype, "missing": float(part.missing[name] / part.rows) if part.rows else 0.0}
        if name in part.sample and present:
            values = part.sample[name][1]
            edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1))) if len(values) else np.zeros(0)
            entry["edges"] = [float(e) for e in edges]
            entry["shares"] = _shares(values, edges)
        elif name in part.counts and present:
            top = sorted(part.counts[name].items(), key=lambda kv: (-kv[1], kv[0]))[:50]
            entry["frequencies"] = {key: count / present for key, count in top}
        columns[name] = entry
    shares = {name: [float(c) / max(int(counts.sum()), 1) for c in counts] for name, counts in part.base_counts.items()}
    return {"rows": int(part.rows), "columns": columns}, shares


def profile(X, y=None, ids: np.ndarray | None = None) -> dict[str, Any]:
    """A JSON-able summary: rows, dtypes, missing rates, quantile bins (numeric) or frequencies."""
    ids = np.arange(len(X)) if ids is None else ids
    return finish_profile(profile_partial(X, ids, None))[0]


def profile_and_compare(base: dict | None, X, ids: np.ndarray | None = None) -> tuple[dict[str, Any], DataReport]:
    """Profile the rows of ``X`` and compare them with the baseline's profile."""
    ids = np.arange(len(X)) if ids is None else ids
    return finish_report(base, profile_partial(X, ids, base))


def finish_report(base: dict | None, part: ProfilePartial) -> tuple[dict[str, Any], "DataReport"]:
    current, shares = finish_profile(part)
    return current, compare_profiles(base, current, shares)


def _counts(values: np.ndarray, edges) -> np.ndarray:
    edges = np.asarray(edges, dtype=float)
    if len(edges) < 2:
        return np.array([len(values)], dtype=np.int64)
    return np.bincount(np.searchsorted(edges[1:-1], values, side="right"), minlength=len(edges) - 1).astype(np.int64)


def _shares(values: np.ndarray, edges: list | np.ndarray) -> list[float]:
    edges = np.asarray(edges, dtype=float)
    if len(edges) < 2:
        return [1.0]
    inner = edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(edges) - 1)
    return [float(c) / max(len(values), 1) for c in counts]


def psi(expected: list[float], actual: list[float]) -> float:
    e = np.clip(np.asarray(expected, dtype=float), EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


SHOWN_PSI = 0.1  # a PSI above 0.1 is a small shift worth a look (0.25: a large one)
SHOWN_MISSING = 0.01  # a missing rate that moved by more than one percentage point


@dataclass(frozen=True)
class DataReport:
    rows: tuple[int | None, int]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    dtype_changes: tuple[tuple[str, str, str], ...]
    features: tuple[dict, ...]  # name, missing (base, cur), psi

    def as_dict(self, *, psi_shown: float = SHOWN_PSI, missing_shown: float = SHOWN_MISSING) -> dict:
        """The report for result.json; each feature says whether it ``changed`` enough to be listed: a
        PSI above ``psi_shown``, a missing rate that moved by more than ``missing_shown``, a new dtype."""
        retyped = {c for c, _, _ in self.dtype_changes}
        features = [{**f, "changed": _changed(f, psi_shown, missing_shown) or f["name"] in retyped} for f in self.features]
        features.sort(key=lambda f: (not f["changed"], -(f.get("psi") or 0.0)))  # what changed most, first
        return {"rows": {"baseline": self.rows[0], "current": self.rows[1]}, "added": list(self.added),
                "removed": list(self.removed),
                "dtype_changes": [{"column": c, "baseline": b, "current": n} for c, b, n in self.dtype_changes],
                "features": features, "shown": {"psi": psi_shown, "missing": missing_shown}}


def _changed(feature: dict, psi_shown: float, missing_shown: float) -> bool:
    value, before = feature.get("psi"), feature.get("baseline_missing")
    moved = before is not None and abs(feature.get("missing", 0.0) - before) > missing_shown
    return bool(moved or (value is not None and value > psi_shown))


def compare_profiles(base: dict | None, current: dict, base_shares: dict[str, list[float]]) -> DataReport:
    """Current evaluation data against the baseline's profile (None: only what can be said alone);
    ``base_shares``: per numeric column, the current rows' shares in the baseline's bins."""
    cur_cols, base_cols = current["columns"], (base or {}).get("columns", {})
    features = []
    for name, entry in cur_cols.items():
        before = base_cols.get(name)
        value = None
        if before and "edges" in before and "edges" in entry and name in base_shares:
            value = psi(before["shares"], base_shares[name])
        elif before and "frequencies" in before and "frequencies" in entry:
            keys = set(before["frequencies"]) | set(entry["frequencies"])
            value = psi([before["frequencies"].get(k, 0.0) for k in keys], [entry["frequencies"].get(k, 0.0) for k in keys])
        features.append({"name": name, "missing": entry["missing"],
                         "baseline_missing": before["missing"] if before else None,
                         "psi": None if value is None or math.isnan(value) else round(value, 6)})
    return DataReport(
        rows=((base or {}).get("rows"), current["rows"]),
        added=tuple(sorted(set(cur_cols) - set(base_cols))) if base else (),
        removed=tuple(sorted(set(base_cols) - set(cur_cols))) if base else (),
        dtype_changes=tuple((c, base_cols[c]["dtype"], cur_cols[c]["dtype"]) for c in sorted(set(cur_cols) & set(base_cols))
                            if base_cols[c]["dtype"] != cur_cols[c]["dtype"]),
        features=tuple(features),
    )


def checks(report: DataReport, *, max_psi: float | None, max_missing: float | None, fail_on_removed_columns: bool) -> list[Check]:
    """Gate checks from the data report (rule names ``data_*``)."""
    out = []

    def check(metric, rule, limit, value, passed, message):
        out.append(Check(metric=metric, rule=rule, limit=limit, value=value, baseline=None, bound=limit,
                         passed=passed, blocking=True, direction="lower", message=message))

    if fail_on_removed_columns:
        if report.rows[0] is None:
            check("data", "data_columns", None, None, None, "no baseline data profile; columns not compared")
        else:
            gone = ", ".join(report.removed) or "none"
            changed = ", ".join(f"{c} {b}→{n}" for c, b, n in report.dtype_changes) or "none"
            ok = not report.removed and not report.dtype_changes
            check("data", "data_columns", None, float(len(report.removed) + len(report.dtype_changes)), ok,
                  f"columns removed: {gone}; dtypes changed: {changed}")
    for feature in report.features:
        if max_psi is not None and feature["psi"] is not None:
            ok = feature["psi"] <= max_psi
            check(f"data:{feature['name']}", "data_psi", max_psi, feature["psi"], ok,
                  f"PSI {feature['psi']:.4g} {'≤' if ok else '>'} {max_psi:g} against the baseline's evaluation data")
        if max_missing is not None:
            ok = feature["missing"] <= max_missing
            if not ok:
                check(f"data:{feature['name']}", "data_missing", max_missing, feature["missing"], False,
                      f"missing {feature['missing']:.1%} > {max_missing:.1%}")
    return out

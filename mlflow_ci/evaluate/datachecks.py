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


def profile(X, y) -> dict[str, Any]:
    """A JSON-able summary: rows, dtypes, missing rates, quantile bins (numeric) or frequencies."""
    import pandas as pd

    frame = _frame(X)
    columns = {}
    for name in frame.columns:
        series = frame[name]
        entry: dict[str, Any] = {"dtype": str(series.dtype), "missing": float(series.isna().mean())}
        values = series.dropna()
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series) and len(values):
            edges = np.unique(np.quantile(values.to_numpy(dtype=float), np.linspace(0, 1, BINS + 1)))
            entry["edges"] = [float(e) for e in edges]
            entry["shares"] = _shares(values.to_numpy(dtype=float), edges)
        elif len(values):
            counts = values.astype(str).value_counts(normalize=True).head(50)
            entry["frequencies"] = {str(k): float(v) for k, v in counts.items()}
        columns[name] = entry
    return {"rows": int(len(frame)), "columns": columns}


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


def compare_profiles(base: dict | None, current: dict, X) -> DataReport:
    """Current evaluation data against the baseline's profile (None: only what can be said alone)."""
    frame = _frame(X)
    cur_cols, base_cols = current["columns"], (base or {}).get("columns", {})
    features = []
    for name, entry in cur_cols.items():
        before = base_cols.get(name)
        value = None
        if before and "edges" in before and "edges" in entry:
            values = frame[name].dropna().to_numpy(dtype=float)
            value = psi(before["shares"], _shares(values, before["edges"]))
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

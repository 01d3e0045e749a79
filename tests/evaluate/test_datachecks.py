from __future__ import annotations

import numpy as np
import pandas as pd

from mlflow_ci.evaluate.datachecks import checks, profile_and_compare, profile, psi


def frame(shift: float = 0.0, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(40 + shift, 10, n),
        "city": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2] if shift == 0 else [0.2, 0.3, 0.5]),
        "income": np.where(rng.random(n) < (0.3 if shift else 0.0), np.nan, rng.normal(5, 1, n)),
    })


def test_same_distribution_has_small_psi_and_shift_is_caught():
    base = profile(frame(), None)
    same = profile_and_compare(base, frame(seed=1))[1]
    assert all(f["psi"] < 0.05 for f in same.features)
    shifted_frame = frame(shift=15)
    shifted = profile_and_compare(base, shifted_frame)[1]
    by_name = {f["name"]: f for f in shifted.features}
    assert by_name["age"]["psi"] > 0.25 and by_name["city"]["psi"] > 0.25
    assert by_name["income"]["missing"] > 0.25 and by_name["income"]["baseline_missing"] == 0
    result = checks(shifted, max_psi=0.25, max_missing=0.1, fail_on_removed_columns=True)
    failed = {(c.metric, c.rule) for c in result if c.passed is False}
    assert failed == {("data:age", "data_psi"), ("data:city", "data_psi"), ("data:income", "data_missing")}


def test_only_features_that_changed_are_listed_first_the_rest_counted():
    base = profile(frame(), None)
    same = profile_and_compare(base, frame(seed=1))[1].as_dict()
    assert not any(f["changed"] for f in same["features"]) and same["shown"] == {"psi": 0.1, "missing": 0.01}
    shifted_frame = frame(shift=15)
    shifted = profile_and_compare(base, shifted_frame)[1].as_dict(psi_shown=0.2)
    assert [f["changed"] for f in shifted["features"]] == [True, True, True]
    assert shifted["features"][0]["psi"] >= shifted["features"][1]["psi"]  # the largest shift first
    retyped = frame().assign(age=lambda d: d["age"].round().astype(int))
    report = profile_and_compare(base, retyped)[1].as_dict()
    assert {f["name"] for f in report["features"] if f["changed"]} == {"age"}  # a new dtype is listed


def test_removed_columns_and_dtype_changes():
    base = profile(frame(), None)
    changed = frame().drop(columns=["city"]).assign(age=lambda d: d["age"].round().astype(int))
    report = profile_and_compare(base, changed)[1]
    assert report.removed == ("city",)
    assert report.dtype_changes == (("age", "float64", "int64"),)
    column = [c for c in checks(report, max_psi=None, max_missing=None, fail_on_removed_columns=True) if c.rule == "data_columns"]
    assert column[0].passed is False and "columns removed: city" in column[0].message
    alone = profile_and_compare(None, frame())[1]
    column = checks(alone, max_psi=0.2, max_missing=None, fail_on_removed_columns=True)
    assert column[0].passed is None and "no baseline data profile" in column[0].message


def test_psi():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert psi([0.9, 0.1], [0.1, 0.9]) > 1


def test_integer_column_names_and_arrays():
    rng = np.random.default_rng(0)
    data = pd.DataFrame({0: rng.normal(size=500), 1: rng.normal(size=500)})
    report = profile_and_compare(profile(data, None), data)[1]
    assert [f["name"] for f in report.features] == ["0", "1"] and all(f["psi"] == 0 for f in report.features)
    array = data.to_numpy()
    assert profile_and_compare(profile(array, None), array)[1].features[0]["psi"] == 0

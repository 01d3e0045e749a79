"""Local, Spark and Ray evaluation give the same numbers on the same rows: the partial statistics of
every partition add up to what the local engine computes in one piece (up to float summation order),
whatever the partitioning; a model the workers cannot load is exit 2 with the package named."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from enginekit import binary_rows, saved_models
from mlflow_ci.engines import Job, open_engine
from mlflow_ci.errors import UsageError
from mlflow_ci.evaluate import dataset, on_engine, partitioned
from mlflow_ci.evaluate import metrics as ev

METRICS = ("accuracy", "roc_auc", "log_loss", "f1", "brier")
CLASSES = np.array([0, 1])


def write_parts(frame: pd.DataFrame, folder: Path, parts: int, row_group: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(frame), parts + 1).astype(int)
    for i in range(parts):
        frame.iloc[bounds[i]:bounds[i + 1]].to_parquet(folder / f"part-{i:03d}.parquet", row_group_size=row_group, index=False)


def on(engine_name: str, env: dict, root: Path, spec: str, models: dict, *, resamples: int = 1000, slices=("region",)):
    """(summed partials, summarized result) of the two models on ``spec`` through an engine."""
    work = partitioned.Work("classification", "label", METRICS, resamples, 0,
                            {role: (role[0] * 32, "scikit-learn") for role in models}, engine_name, None, (0, 1), slices, None)
    data = dataset.plan(spec, root)
    job = Job(functools.partial(on_engine.reduce_with_models, work), partitioned.pack, dataset.read_unit, data.units,
              data.files, data.offsets, models)
    summed = on_engine._run(open_engine(engine_name, env), job)
    specs = {name: ev.spec_of(name, "classification", CLASSES) for name in METRICS}
    return summed, ev.summarize(specs, summed.metrics, resamples=resamples, seed=0, confidence=0.95)


def in_memory(frame: pd.DataFrame, models: dict, resamples: int = 1000):
    """The local engine's arithmetic on the whole frame at once (what a check with a CSV file does)."""
    import mlflow.sklearn

    X, y = frame.drop(columns=["label"]), frame.label.to_numpy()
    outputs = {role: mlflow.sklearn.load_model(str(path)).predict_proba(X) for role, path in models.items()}
    return ev.paired_bootstrap(list(METRICS), "classification", y, outputs["candidate"], outputs["baseline"],
                               classes=CLASSES, resamples=resamples, seed=0)


def assert_same(got, expected, tol=1e-6):
    for name in METRICS:
        a, b = got.intervals[name], expected.intervals[name]
        assert a.delta == pytest.approx(b.delta, abs=1e-9), name
        assert (a.low, a.high) == pytest.approx((b.low, b.high), abs=tol), name  # float32 sums in another order
        assert got.candidate[name] == pytest.approx(expected.candidate[name], abs=1e-9), name


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return saved_models(str(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def demo_rows():
    """The demo project's held-out rows, as the demo evaluates them, with the labels as `label`."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.3, random_state=7, stratify=y)
    return X_test.assign(label=y_test.to_numpy()).reset_index(drop=True)


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory):
    """Two models of the demo's kind (its training script's estimator, two settings)."""
    import mlflow.sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.3, random_state=7, stratify=y)
    root = tmp_path_factory.mktemp("demo-models")
    out = {}
    for role, c in (("candidate", 1.0), ("baseline", 0.05)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500)).fit(X_train, y_train)
        mlflow.sklearn.save_model(model, root / role, pip_requirements=[])
        out[role] = root / role
    return out


def test_the_local_engine_adds_up_to_the_whole_whatever_the_partitions(tmp_path, models):
    frame = binary_rows(30_000)
    write_parts(frame, tmp_path / "three", parts=3, row_group=4_000)
    write_parts(frame, tmp_path / "seven", parts=7, row_group=1_500)
    summed, three = on("local", {}, tmp_path, "three/", models)
    _, seven = on("local", {}, tmp_path, "seven/", models)
    whole = in_memory(frame, models)
    assert summed.metrics.rows == 30_000 and len(dataset.plan("three/", tmp_path).units) == 9
    assert_same(three, whole)
    assert_same(seven, whole)
    assert {key for key in summed.slices} == {("region", v) for v in ("north", "south", "east")}


def test_spark_and_ray_agree_with_local_on_the_demo_rows(tmp_path, demo_rows, demo_models, spark_env, loopback_ray):
    write_parts(demo_rows, tmp_path / "demo", parts=2, row_group=50)
    whole = in_memory(demo_rows, demo_models)
    for name, env in (("spark", spark_env), ("ray", loopback_ray)):
        summed, got = on(name, env, tmp_path, "demo/", demo_models, slices=())
        assert summed.metrics.rows == len(demo_rows) == 171
        assert_same(got, whole)
        verdicts = {n: got.intervals[n].low > 0 for n in METRICS}
        assert verdicts == {n: whole.intervals[n].low > 0 for n in METRICS}


@pytest.mark.slow
def test_spark_ray_and_local_agree_on_a_million_rows(tmp_path, models, spark_env, loopback_ray):
    """1,000,000 generated rows in 4 files of 50,000-row groups; 200 resamples keep it quick."""
    write_parts(binary_rows(1_000_000, seed=5), tmp_path / "million", parts=4, row_group=50_000)
    runs = {name: on(name, env, tmp_path, "million/*.parquet", models, resamples=200, slices=())
            for name, env in (("local", {}), ("spark", spark_env), ("ray", loopback_ray))}
    for name in ("spark", "ray"):
        assert runs[name][0].metrics.rows == 1_000_000
        for metric in METRICS:
            a, b = runs[name][1].intervals[metric], runs["local"][1].intervals[metric]
            assert (a.delta, a.low, a.high) == pytest.approx((b.delta, b.low, b.high), abs=1e-6), (name, metric)


MISSING = textwrap.dedent("""
    import mlflow.pyfunc

    class Scorer(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            import numpy as np
            return np.full(len(model_input), 0.5)
    """)


def test_a_model_whose_flavor_needs_a_package_the_workers_lack_says_so(tmp_path, models, spark_env, loopback_ray, monkeypatch):
    """A Python model pickled against a module only this process can import (the workers cannot): exit 2
    naming the package, on Spark and on Ray; the local engine, which has it, scores it."""
    import mlflow.pyfunc

    (tmp_path / "onlyhere_pkg.py").write_text(MISSING)
    monkeypatch.syspath_prepend(str(tmp_path))
    import onlyhere_pkg

    mlflow.pyfunc.save_model(tmp_path / "odd", python_model=onlyhere_pkg.Scorer(), pip_requirements=[])
    write_parts(binary_rows(2_000), tmp_path / "rows", parts=1, row_group=1_000)
    odd = {"candidate": tmp_path / "odd", "baseline": models["baseline"]}
    for name, env in (("spark", spark_env), ("ray", loopback_ray)):
        with pytest.raises(UsageError, match=rf"evaluate.engine {name}: the candidate model .* needs the package onlyhere_pkg"):
            on(name, env, tmp_path, "rows/", odd, resamples=100)


@pytest.mark.slow
def test_a_check_evaluates_on_spark_with_the_verdict_and_intervals_of_the_local_engine(project, spark_env):
    """The same PR checked twice against the same champion: rows scored on Spark (a folder of Parquet
    files) and here (the same rows as one CSV file): same metrics, intervals, slices, data checks, verdict."""
    from evaluate.test_same_rows import SCRIPT, make_data
    from mlflow_ci.tracking import MlflowTracker

    make_data(3000, 0).to_csv(project.root / "train.csv", index=False)
    rows = make_data(1500, 1)
    rows.to_csv(project.root / "eval.csv", index=False)
    write_parts(rows, project.root / "eval", parts=2, row_group=400)
    project.write("train.py", SCRIPT)
    project.write("params.json", '{"corrupt_region": null}')
    config = textwrap.dedent("""\
        experiment: regions
        train:
          command: python train.py
          inputs: ["*.py", "params.json", "train.csv"]
        evaluate:
          data: {data}
          engine: {engine}
          target: label
          task: classification
          metrics: [accuracy, roc_auc, log_loss]
          resamples: 300
          slices: [region]
          slice_gate:
            accuracy: {{max_drop: 0.02, significance: 0.05}}
          data_checks: {{max_psi: 0.25}}
        gate:
          eval.accuracy: {{max_drop: 0.02, significance: 0.05}}
        """)
    project.write("mlflow-ci.yml", config.format(data="eval/", engine="spark"))
    project.commit("regions model")
    env = project.env(**spark_env)
    first = project.cli("check", env=env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    tracker = MlflowTracker(project.uri)
    tracker.set_alias("regions", "champion", tracker.register(project.result()["candidate"]["run_id"], "regions"))
    project.branch("bug")
    project.write("params.json", '{"corrupt_region": "south"}')
    project.commit("corrupt one region")
    results = {}
    for data, engine in (("eval/", "spark"), ("eval.csv", "local")):
        project.write("mlflow-ci.yml", config.format(data=data, engine=engine))
        proc = project.cli("check", env=env, timeout=600)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        results[engine] = project.result()
        results[engine]["report"] = (project.root / ".mlflow-ci" / "report.md").read_text()
    spark, local = results["spark"], results["local"]
    assert spark["evaluation"]["engine"] == "spark" and "scored on Spark" in spark["report"]
    assert spark["verdict"] == local["verdict"] == "fail"
    by_name = {engine: {m["name"]: m for m in r["metrics"] if m["name"].startswith("eval.")} for engine, r in results.items()}
    assert set(by_name["spark"]) == set(by_name["local"]) and "eval.accuracy/region:south" in by_name["spark"]
    for name, got in by_name["spark"].items():
        want = by_name["local"][name]
        for key in ("candidate", "baseline", "delta", "ci_low", "ci_high"):
            assert got.get(key) == pytest.approx(want.get(key), abs=1e-6), (name, key)
    checks = {engine: {(c["metric"], c["rule"]): c["passed"] for c in r["checks"]} for engine, r in results.items()}
    assert checks["spark"] == checks["local"]
    assert spark["evaluation"]["data_checks"]["features"] == local["evaluation"]["data_checks"]["features"]


def test_validate_reads_a_parquet_folder_by_its_footers(tmp_path):
    from mlflow_ci.config.loader import parse_config
    from mlflow_ci.evaluate.metrics import static_problems

    write_parts(binary_rows(100), tmp_path / "rows", parts=2, row_group=30)
    text = "experiment: e\ntrain:\n  command: 'true'\nevaluate:\n  data: {data}\n  target: {target}\n  task: classification\n  engine: spark\n"
    ok = parse_config(text.format(data="rows/", target="label"), tmp_path / "mlflow-ci.yml", shown="mlflow-ci.yml")
    assert static_problems(ok.evaluate, tmp_path) == []
    wrong = parse_config(text.format(data="rows/*.parquet", target="churned"), tmp_path / "mlflow-ci.yml", shown="mlflow-ci.yml")
    assert static_problems(wrong.evaluate, tmp_path) == [
        "evaluate.target: column 'churned' is not in rows/*.parquet (columns: f0, f1, f2, f3, f4, region, label)"]
    empty = parse_config(text.format(data="nothing/", target="label"), tmp_path / "mlflow-ci.yml", shown="mlflow-ci.yml")
    assert static_problems(empty.evaluate, tmp_path) == ["evaluate.data: no Parquet files in 'nothing/'"]

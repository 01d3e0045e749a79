"""perf.*: both models timed in one process, interleaved; a 5× slower candidate fails a ratio rule
whatever the machine's speed, an equally fast one passes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlflow_ci.config.models import PerfConfig
from mlflow_ci.evaluate import perf
from mlflow_ci.tracking import MlflowTracker


class FakeClock:
    """Advances only when a model predicts: each prediction costs its model's fixed time per row."""

    def __init__(self):
        self.now = 0.0
        self.calls: list[tuple[str, int]] = []

    def __call__(self) -> float:
        return self.now

    def model(self, role: str, seconds_per_row: float):
        def predict(rows: slice):
            n = len(range(*rows.indices(10_000)))
            self.calls.append((role, n))
            self.now += seconds_per_row * n
        return predict


def test_measure_interleaves_the_models_and_reports_per_1000_rows_and_per_row(tmp_path):
    clock = FakeClock()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"\0" * 2_500_000)
    subjects = [perf.Subject("candidate", clock.model("candidate", 0.005), tmp_path / "model"),
                perf.Subject("baseline", clock.model("baseline", 0.001), None)]
    got = perf.measure(subjects, 400, PerfConfig(repeats=4, batch_rows=1000, single_rows=3), clock=clock)
    timed = clock.calls[2:-2]  # after the untimed warm-up, before the memory pass
    assert timed[:8] == [("candidate", 400), ("baseline", 400), ("baseline", 400), ("candidate", 400)] * 2  # A B, B A, ...
    assert timed[8:] == [("candidate", 1), ("baseline", 1), ("baseline", 1), ("candidate", 1), ("candidate", 1), ("baseline", 1)]
    cand, base = got["candidate"], got["baseline"]
    assert cand["perf.batch_ms_per_1k_p50"] == pytest.approx(5000) and base["perf.batch_ms_per_1k_p95"] == pytest.approx(1000)
    assert cand["perf.latency_p95_ms"] == pytest.approx(5) and base["perf.latency_p50_ms"] == pytest.approx(1)
    assert cand["perf.model_size_mb"] == pytest.approx(2.5) and "perf.model_size_mb" not in base
    assert cand["perf.predict_memory_mb"] >= 0


def test_percentile_matches_numpy():
    values = [5.0, 1.0, 3.0, 9.0, 7.0, 2.0]
    for q in (0, 50, 95, 100):
        assert perf.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_perf_rules_need_evaluate_and_turn_timing_on(project):
    project.write("mlflow-ci.yml", "experiment: e\ntrain: {command: python t.py}\ngate:\n  perf.latency_p95_ms: {max_drop_pct: 100}\n")
    out = project.cli("validate")
    assert out.returncode == 2 and "gate.perf.latency_p95_ms" in out.stderr and "evaluate" in out.stderr, out.stderr
    from mlflow_ci.config.loader import load_config

    project.write("mlflow-ci.yml", "experiment: e\ntrain: {command: python t.py}\nevaluate: {data: e.csv, target: y, task: regression}\n"
                  "gate:\n  perf.latency_p95_ms: {max_drop_pct: 100}\n")
    assert load_config(project.root / "mlflow-ci.yml").evaluate.perf == PerfConfig()


SLEEPY = """
import json, time, mlflow, mlflow.pyfunc, numpy as np
delay = json.load(open("params.json"))["delay"]

class Sleepy(mlflow.pyfunc.PythonModel):
    def __init__(self, delay):
        self.delay = delay

    def predict(self, context, model_input, params=None):
        time.sleep(self.delay)  # the cost of a call, whatever the machine
        p = 1 / (1 + np.exp(-model_input["x"].to_numpy()))
        return np.column_stack([1 - p, p])

with mlflow.start_run():
    mlflow.log_param("delay", delay)
    mlflow.pyfunc.log_model(name="model", python_model=Sleepy(delay), pip_requirements=["numpy"])
"""


@pytest.mark.slow
def test_a_five_times_slower_candidate_fails_a_latency_ratio_rule_and_an_equal_one_passes(project):
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    pd.DataFrame({"x": x, "y": (x + rng.normal(0, 1, 300) > 0).astype(int)}).to_csv(project.root / "eval.csv", index=False)
    project.write("train.py", SLEEPY)
    project.write("mlflow-ci.yml", """\
experiment: sleepy
train:
  command: python train.py
evaluate:
  data: eval.csv
  target: y
  task: classification
  output: probabilities
  resamples: 200
  perf: {repeats: 5, single_rows: 30}
gate:
  perf.latency_p95_ms: {max_drop_pct: 100}
  perf.batch_ms_per_1k_p50: {max_drop_pct: 100}
""")

    def check_with(delay: float, label: str) -> dict:
        project.write("params.json", json.dumps({"delay": delay, "label": label}))  # a new label: retrained
        project.commit(label)
        out = project.cli("check")
        assert out.returncode in (0, 1), out.stdout + out.stderr
        return project.result()

    champion = check_with(0.010, "champion")
    tracker = MlflowTracker(project.uri)
    champion_run = champion["candidate"]["run_id"]
    tracker.set_alias("sleepy", "champion", tracker.register(champion_run, "sleepy"))
    logged = tracker.get_run(champion_run).metrics["perf.latency_p95_ms"]  # its own check logged it

    project.branch("slow")
    slow = check_with(0.050, "five times slower")
    checks = {c["metric"]: c for c in slow["checks"]}
    assert slow["verdict"] == "fail" and checks["perf.latency_p95_ms"]["passed"] is False, checks
    metrics = {m["name"]: m for m in slow["metrics"]}
    ratio = metrics["perf.latency_p95_ms"]["candidate"] / metrics["perf.latency_p95_ms"]["baseline"]
    # 5× the sleep, diluted by the overhead of a call both share (a few ms on a loaded runner): far above the 2× limit
    assert ratio > 3, ratio
    assert slow["evaluation"]["perf"]["single_rows"] == 30 and "candidate" in slow["evaluation"]["perf"]

    project.branch("same-speed")
    same = check_with(0.010, "as fast")
    assert same["verdict"] == "pass", same["checks"]
    # timings belong to the check that took them: logged with its candidate, never written onto the baseline's run
    assert tracker.get_run(champion_run).metrics["perf.latency_p95_ms"] == logged

"""`evaluate:` end to end: real models logged by the training script, scored on the same rows,
slices with their own diff and gate, data checks, and a significant regression failing the check."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mlflow_ci.tracking import MlflowTracker

SCRIPT = """
import json, mlflow, mlflow.sklearn, numpy as np, pandas as pd, sklearn
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
params = json.load(open("params.json"))
train = pd.read_csv("train.csv")
if params["corrupt_region"]:  # a bug that only hurts one segment
    bad = train["region"] == params["corrupt_region"]
    train.loc[bad, "label"] = 1 - train.loc[bad, "label"]
model = make_pipeline(
    ColumnTransformer([("region", OneHotEncoder(), ["region"]), ("x", "passthrough", ["x1", "x2"])]),
    LogisticRegression(max_iter=500),
).fit(train.drop(columns=["label"]), train["label"])
with mlflow.start_run():
    mlflow.log_metric("train_rows", len(train))
    mlflow.sklearn.log_model(model, name="model", pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
"""


def make_data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east"], n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    shift = np.select([region == "north", region == "south"], [1.0, -1.0], 0.0)
    label = (x1 + 0.5 * x2 + shift + rng.normal(0, 0.5, n) > 0).astype(int)
    return pd.DataFrame({"region": region, "x1": x1, "x2": x2, "label": label})


def test_slices_data_checks_and_significance(project):
    make_data(3000, 0).to_csv(project.root / "train.csv", index=False)
    make_data(1500, 1).to_csv(project.root / "eval.csv", index=False)
    project.write("train.py", SCRIPT)
    project.write("costs.py", "def fnr(y, proba):\n    pred = proba.argmax(axis=1)\n"
                  "    return float(((pred == 0) & (y == 1)).sum() / max((y == 1).sum(), 1))\n")
    project.write("params.json", json.dumps({"corrupt_region": None}))
    project.write("mlflow-ci.yml", """\
experiment: regions
train:
  command: python train.py
evaluate:
  data: eval.csv
  target: label
  task: classification
  metrics: [accuracy, roc_auc, log_loss, "costs:fnr"]
  resamples: 300
  slices: [region]
  slice_gate:
    accuracy: {max_drop: 0.02, significance: 0.05}
  data_checks: {max_psi: 0.25, fail_on_removed_columns: true}
gate:
  eval.accuracy: {max_drop: 0.02, significance: 0.05}
""")
    project.commit("regions model")
    first = project.cli("check")
    assert first.returncode == 0, first.stdout + first.stderr
    champion_run = project.result()["candidate"]["run_id"]
    tracker = MlflowTracker(project.uri)
    tracker.set_alias("regions", "champion", tracker.register(champion_run, "regions"))

    project.branch("bug")
    project.write("params.json", json.dumps({"corrupt_region": "south"}))
    project.commit("corrupt one region")
    second = project.cli("check")
    assert second.returncode == 1, second.stdout + second.stderr
    result = project.result()
    rows = {m["name"]: m for m in result["metrics"]}
    south = rows["eval.accuracy/region:south"]
    assert south["ci_high"] < 0 and south["status"] == "worse"  # the corrupted segment is hit hardest...
    assert south["delta"] < min(rows["eval.accuracy/region:north"]["delta"], rows["eval.accuracy/region:east"]["delta"])
    failed = {(c["metric"], c["rule"]) for c in result["checks"] if c["passed"] is False}
    assert ("eval.accuracy/region:south", "max_drop") in failed  # ...and the slice gate catches it
    data = result["evaluation"]["data_checks"]
    assert data["rows"] == {"baseline": 1500, "current": 1500} and not data["removed"]
    assert all(c["passed"] for c in result["checks"] if c["rule"] == "data_psi")  # same data: no shift
    report = (project.root / ".mlflow-ci" / "report.md").read_text()
    assert "eval.accuracy/region:south" in report
    charts = [block.split("```", 1)[0] for block in report.split("```mermaid")[1:]]
    assert any('title "eval.accuracy: last gated run on main, then this PR' in chart for chart in charts)  # the trend
    assert not any("region:" in chart for chart in charts)  # data never enters a chart
    # a user metric function gets the same paired interval
    fnr = rows["eval.fnr"]  # "fnr" reads as lower-is-better
    assert fnr["ci_low"] <= fnr["delta"] <= fnr["ci_high"] and fnr["direction"] == "lower"
    # the champion's run got the same-rows evaluation logged too, under the eval. prefix
    assert "eval.accuracy" in tracker.get_run(champion_run).metrics


@pytest.mark.parametrize("data", ["eval.csv", "evaldata:rows"])
def test_a_cached_check_reuses_the_model_outputs_kept_with_the_runs(project, data):
    """Second check on unchanged inputs: the candidate run is reused, and so are both models' outputs on
    the unchanged evaluation data; no model is loaded. Changed data: computed again. Rows returned by a
    module:function are kept by the digest of the frame, like a file's (#24: they were scored every time)."""
    import io

    from mlflow_ci.commands.check import do_check
    from mlflow_ci.commands.session import Options, make_session
    from mlflow_ci.config.loader import load_config

    make_data(1000, 0).to_csv(project.root / "train.csv", index=False)
    make_data(500, 1).to_csv(project.root / "eval.csv", index=False)
    project.write("train.py", SCRIPT)
    project.write("params.json", json.dumps({"corrupt_region": None}))
    project.write("evaldata.py", "from pathlib import Path\nimport pandas as pd\n\ndef rows():\n"
                  "    frame = pd.read_csv(Path(__file__).parent / 'eval.csv')\n    return frame.drop(columns=['label']), frame['label']\n")
    project.write("mlflow-ci.yml", f"experiment: cached\ntrain:\n  command: python train.py\n  inputs: ['*.py', '*.json', 'train.csv']\n"
                                   f"evaluate:\n  data: {data}\n"
                                   "  target: label\n  task: classification\n  resamples: 200\ngate:\n  eval.accuracy: {min: 0.5}\n")
    project.commit("model")

    loads = []

    def check():
        s = make_session(load_config(project.root / "mlflow-ci.yml"), project.env(), project.root, io.StringIO())
        registry = s.registry()
        original = registry.load_for_scoring

        def counting(run_id, *args, **kwargs):
            loads.append(run_id)
            return original(run_id, *args, **kwargs)

        registry.load_for_scoring = counting
        return do_check(s, Options(out_dir=project.root / ".mlflow-ci"))

    first = check()
    assert len(loads) == 1 and first.verdict == "pass"
    again = check()
    assert again.result.candidate.cached and len(loads) == 1  # nothing loaded the second time
    assert again.result.candidate.metrics["eval.accuracy"] == first.result.candidate.metrics["eval.accuracy"]
    card = first.result.evaluation["models"]["candidate"]
    assert card["flavor"] == "scikit-learn" and card["size_mb"] > 0 and card["inputs_total"] == len(card["inputs"])  # no signature logged here
    assert again.result.evaluation["models"]["candidate"] == card  # the model card kept with the run, read back
    assert again.result.candidate.train_seconds == first.result.candidate.train_seconds > 0
    assert again.result.evaluation["data_digest"] == first.result.evaluation["data_digest"]
    assert again.result.evaluation["data_digest"].startswith("frame:") == (":" in data)
    if ":" not in data:  # rows from a file: the result itself is kept; a third identical check imports no pandas
        script = ("import io, sys\nfrom pathlib import Path\nfrom mlflow_ci.commands.check import do_check\n"
                  "from mlflow_ci.commands.session import Options, make_session\nfrom mlflow_ci.config.loader import load_config\n"
                  "root = Path(sys.argv[1])\ns = make_session(load_config(root / 'mlflow-ci.yml'), dict(__import__('os').environ), root, io.StringIO())\n"
                  "out = do_check(s, Options(out_dir=root / '.mlflow-ci'))\n"
                  "print(out.verdict, out.result.candidate.metrics['eval.accuracy'], 'pandas' in sys.modules, 'numpy' in sys.modules)\n")
        proc = subprocess.run([sys.executable, "-c", script, str(project.root)], env=project.env(), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["pass", repr(first.result.candidate.metrics["eval.accuracy"]), "False", "False"]
    make_data(500, 2).to_csv(project.root / "eval.csv", index=False)
    project.commit("new evaluation rows")
    third = check()
    # new rows, same model: the reused run is scored again on them (nothing kept for these rows yet)
    assert third.result.candidate.cached and loads[1:] == [first.result.candidate.run_id]
    assert third.result.evaluation["data_digest"] != first.result.evaluation["data_digest"]


NOISY = """
import json, mlflow, mlflow.pyfunc, numpy as np
params = json.load(open("params.json"))

class Dropout(mlflow.pyfunc.PythonModel):
    \"\"\"A classifier that, like a network with dropout left on at inference, answers differently each call.\"\"\"
    def __init__(self, noise):
        self.noise = noise
    def predict(self, context, model_input, params=None):
        x = model_input["x1"].to_numpy() + 0.5 * model_input["x2"].to_numpy()
        x = x + np.random.default_rng().normal(0, self.noise, len(x)) if self.noise else x
        p = 1 / (1 + np.exp(-x))
        return np.column_stack([1 - p, p])

with mlflow.start_run():
    mlflow.pyfunc.log_model(name="model", python_model=Dropout(params["noise"]), pip_requirements=["numpy"])
"""


def test_a_model_whose_predictions_change_between_two_calls_is_reported(project):
    """#24 item 7: a model scoring 0.933 then 0.867 in the next check went unnoticed."""
    make_data(400, 1).to_csv(project.root / "eval.csv", index=False)
    project.write("train.py", NOISY)
    project.write("params.json", json.dumps({"noise": 0.0}))
    config = """\
experiment: dropout
train:
  command: python train.py
evaluate:
  data: eval.csv
  target: label
  task: classification
  metrics: [accuracy]
  resamples: 200
  classes: [0, 1]
gate:
  eval.accuracy: {min: 0.5}
"""
    project.write("mlflow-ci.yml", config)
    project.commit("steady model")
    steady = project.cli("check")
    assert steady.returncode == 0, steady.stdout + steady.stderr
    result = project.result()
    assert result["evaluation"]["determinism"] == {"rows": 64, "max_abs_diff": {"candidate": 0.0}}
    assert not any("differ between two calls" in n for n in result["notes"])

    project.write("params.json", json.dumps({"noise": 1.0}))
    project.commit("dropout left on")
    noisy = project.cli("check")
    result = project.result()
    diff = result["evaluation"]["determinism"]["max_abs_diff"]
    assert diff["candidate"] > 0.01 and diff["baseline"] == 0.0, diff  # the baseline's kept outputs say it was steady
    [note] = [n for n in result["notes"] if "differ between two calls" in n]
    assert note.startswith("warning: the candidate model's predictions differ between two calls on the same 64 rows")
    assert "warning: the candidate model's predictions differ" in noisy.stdout  # the terminal says it too

    project.write("mlflow-ci.yml", config.replace("  classes: [0, 1]\n", "  classes: [0, 1]\n  deterministic: required\n"))
    project.commit("determinism required")
    required = project.cli("check")
    assert required.returncode == 1, required.stdout + required.stderr
    [check] = [c for c in project.result()["checks"] if c["rule"] == "deterministic"]
    assert check["metric"] == "determinism:candidate" and check["passed"] is False
    assert check["message"].startswith("two calls on the same rows differ by up to ")

"""`mlflow-ci calibrate`: retrain with seeds, measure the spread, propose and write margins; checks
then warn about margins below the noise, and about trainings that are not seeded at all."""

from __future__ import annotations

import json

from mlflow_ci.commands.calibrate import _set_key
from mlflow_ci.tracking import MlflowTracker

SEEDED = """
import json, os, random
seed = int(os.environ.get("MLFLOW_CI_SEED", "0"))
random.seed(seed)
json.dump({"accuracy": 0.9 + random.uniform(-0.01, 0.01), "rmse": 5 + random.uniform(0, 0.4)}, open("metrics.json", "w"))
"""


def test_calibrate_measures_the_seed_noise_and_writes_margins(project):
    project.write("train.py", SEEDED)
    project.write("mlflow-ci.yml", "experiment: churn\nmodel: churn-model\ntrain:\n  command: python train.py\n"
                                   "  metrics_file: metrics.json\ngate:\n  accuracy: {min: 0.8, max_drop: 0.001}  # keep\n"
                                   "  rmse:\n    max: 10\n    max_drop_pct: 0.1\n    direction: lower\n")
    project.commit("seeded training")
    proc = project.cli("calibrate", "--runs", "6", "--write")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "calibrated on 6 trainings of the same code, MLFLOW_CI_SEED=1..6 (level 0.05)" in proc.stdout
    config = (project.root / "mlflow-ci.yml").read_text()
    accuracy = float(config.split("max_drop: ")[1].split("}")[0])
    assert 0.001 < accuracy < 0.03 and "{min: 0.8, max_drop: " in config and "# keep" in config
    pct = float(config.split("max_drop_pct: ")[1].split("\n")[0])
    assert 0.1 < pct < 10 and "    max: 10\n" in config
    runs = MlflowTracker(project.uri).client.search_runs(
        [MlflowTracker(project.uri).experiment_id("churn", create=False)], "tags.`mlflow_ci.role` = 'calibration'")
    assert len(runs) == 6 and {r.data.tags["mlflow_ci.seed"] for r in runs} == {str(i) for i in range(1, 7)}
    assert all("mlflow_ci.verdict" not in r.data.tags for r in runs)  # never baselines, never promoted

    # a check now uses the written margins; with a margin below the noise it warns
    assert project.cli("check").returncode in (0, 1)
    project.write("mlflow-ci.yml", config.replace(f"max_drop: {config.split('max_drop: ')[1].split('}')[0]}", "max_drop: 0.0001"))
    project.cli("check", "--no-cache")
    notes = project.result()["notes"]
    assert any(n.startswith("gate.accuracy allows a regression of 0.0001, less than the seed-to-seed noise") for n in notes)


def test_a_training_that_is_not_seeded_is_noticed(project):
    project.write("train.py", "import json, random\njson.dump({'accuracy': 0.85 + random.random() / 100, 'rmse': 5}, open('metrics.json', 'w'))\n")
    project.commit("unseeded")
    assert project.cli("check").returncode == 0
    project.cli("check", "--no-cache")
    assert any(n.startswith("warning: two trainings of the same inputs disagree (accuracy ") for n in project.result()["notes"])


def test_margins_are_written_in_flow_and_block_style(tmp_path):
    path = tmp_path / "mlflow-ci.yml"
    text = "gate:\n  auc: {min: 0.5}\n  'log_loss':\n    max: 1  # cap\n    max_drop: 0.5\n  acc:\n    min: 0.1\n"
    text = _set_key(text, "auc", "max_drop", "0.01", path)
    text = _set_key(text, "log_loss", "max_drop", "0.02", path)
    text = _set_key(text, "acc", "max_drop", "0.03", path)
    assert text == ("gate:\n  auc: {min: 0.5, max_drop: 0.01}\n  'log_loss':\n    max: 1  # cap\n    max_drop: 0.02\n"
                    "  acc:\n    max_drop: 0.03\n    min: 0.1\n")
    assert json.dumps(text)


def test_a_deterministic_training_is_said_and_no_margin_is_lowered(project):
    project.commit("deterministic metrics-file training")
    before = (project.root / "mlflow-ci.yml").read_text()
    proc = project.cli("calibrate", "--runs", "3", "--write")
    assert proc.returncode == 0, proc.stderr
    assert "every seed gave the same values: the training is deterministic, or it does not read MLFLOW_CI_SEED" in proc.stdout
    assert "accuracy (higher is better): value per seed 0.9 .. 0.9; max_drop now 0.02, proposed 0.02" in proc.stdout
    assert "proposed: the drop that two seeds of unchanged code exceed in fewer than 5% of pairs" in proc.stdout
    assert "saturated" not in proc.stdout
    assert (project.root / "mlflow-ci.yml").read_text() == before  # max_drop: 0.02 stays


def test_a_saturated_metric_is_told_apart_from_a_training_that_ignores_the_seed(project):
    """Issue #27, item 8: accuracy 1.0 for every seed says the rows cannot tell models apart, not that the
    training ignores MLFLOW_CI_SEED (its other metric does move with the seed)."""
    project.write("train.py", "import json, os\nseed = int(os.environ['MLFLOW_CI_SEED'])\n"
                              "json.dump({'accuracy': 1.0, 'rmse': 5.0 + seed / 10}, open('metrics.json', 'w'))\n")
    project.write("mlflow-ci.yml", (project.root / "mlflow-ci.yml").read_text().replace("max: 10, direction: lower",
                                                                                         "max: 10, max_drop: 0.01, direction: lower"))
    project.commit("a saturated accuracy")
    proc = project.cli("calibrate", "--runs", "3")
    assert proc.returncode == 0, proc.stderr
    assert "saturated: every seed scored 1, the best accuracy can be: these rows cannot tell models apart" in proc.stdout
    assert "every seed gave the same values" not in proc.stdout  # rmse moved: the seed is read
    assert "rmse (lower is better): value per seed 5.1 .. 5.3" in proc.stdout

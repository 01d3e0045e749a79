"""The REST tracker against a real `mlflow server`: same answers as MLflow's client, no MLflow import."""

from __future__ import annotations

import subprocess
import sys
import uuid

from conftest import clean_env

from mlflow_ci.tracking import MlflowTracker
from mlflow_ci.tracking.rest import RestTracker


def test_rest_and_mlflow_clients_agree(mlflow_server, tmp_path):
    rest = RestTracker(mlflow_server.uri, {})
    ref = MlflowTracker(mlflow_server.uri)
    name = f"rest-{uuid.uuid4().hex[:8]}"
    exp = rest.experiment_id(name, create=True)
    assert rest.experiment_id(name, create=True) == exp == ref.experiment_id(name, create=False)
    run_id = rest.start_run(exp, run_name="r1", tags={"mlflow.source.git.commit": "a" * 40, "k": "v"})
    rest.log_metrics(run_id, {"acc": 0.9, "loss": float("nan")})
    rest.set_tags(run_id, {"mlflow_ci.verdict": "pass"})
    log = tmp_path / "train.log"
    log.write_text("hello\n")
    rest.log_artifact(run_id, log)
    rest.end_run(run_id, "FINISHED")
    mine, theirs = rest.get_run(run_id), ref.get_run(run_id)
    assert mine.metrics["acc"] == theirs.metrics["acc"] == 0.9
    assert mine.metrics["loss"] != mine.metrics["loss"]  # NaN survives the round trip
    assert {k: v for k, v in mine.tags.items()} == theirs.tags
    assert (mine.status, mine.run_name, mine.experiment_id) == (theirs.status, theirs.run_name, theirs.experiment_id)
    assert [a.path for a in ref.client.list_artifacts(run_id)] == ["train.log"]
    found = rest.search(exp, tags={"mlflow.source.git.commit": "a" * 40}, require_tag="mlflow_ci.verdict")
    assert found.run_id == run_id
    assert rest.search(exp, tags={"mlflow.source.git.commit": "a" * 40}, skip_verdicts=("pass",)) is None
    assert rest.get_run("0" * 32) is None
    assert rest.run_for_alias("no-such-model", "champion") is None
    version = ref.register(run_id, name)
    ref.set_alias(name, "champion", version)
    run, number = rest.run_for_alias(name, "champion")
    assert (run.run_id, number) == (run_id, version)
    assert rest.run_for_version(name, version).run_id == run_id


def test_check_against_a_server_never_imports_mlflow(project, mlflow_server):
    name = f"noimport-{uuid.uuid4().hex[:8]}"
    project.write("mlflow-ci.yml", (project.root / "mlflow-ci.yml").read_text().replace("experiment: churn", f"experiment: {name}"))
    code = (
        "import sys\nfrom mlflow_ci.cli import main\n"
        "try:\n    main(['check', '--no-publish'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'mlflow' not in sys.modules, 'mlflow was imported'\nprint('OK no mlflow')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True,
                          env=clean_env(MLFLOW_TRACKING_URI=mlflow_server.uri))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK no mlflow" in proc.stdout and "verdict: PASS" in proc.stdout

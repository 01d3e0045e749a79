"""`mlflow-ci verify` and rollback: a registered version's files against the digest promote recorded."""

from __future__ import annotations

from pathlib import Path

from conftest import clean_env

from mlflow_ci.provenance import model_digest
from mlflow_ci.tracking import MlflowTracker

CONFIG = "experiment: iris\nmodel: iris\ntrain:\n  command: python train.py\ngate:\n  accuracy: {min: 0.8}\n"


def registered_twice(tmp_path: Path) -> tuple[str, list[str]]:
    """A local store with iris versions 1 and 2 (champion), each tagged with its digest as promote does."""
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow.tracking import MlflowClient
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("iris", artifact_location=(tmp_path / "artifacts").as_uri())
    X, y = load_iris(return_X_y=True)
    digests = []
    for C in (1.0, 0.5):
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(experiment_id=experiment) as run:
            info = mlflow.sklearn.log_model(LogisticRegression(C=C, max_iter=300).fit(X, y), name="model",
                                            pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
        # as the trusted publisher digests it from the store
        digests.append(model_digest(MlflowTracker(uri).download_model(run.info.run_id, "model", tmp_path / f"v{C}")))
        version = mlflow.register_model(info.model_uri, "iris").version
        client.set_model_version_tag("iris", version, "mlflow_ci.model_digest", digests[-1])
        client.set_tag(run.info.run_id, "mlflow_ci.verdict", "pass")  # gated on main, as a check tags it
        client.set_tag(run.info.run_id, "mlflow_ci.gate_rules", "1")
    client.set_registered_model_alias("iris", "champion", "2")
    client.set_registered_model_alias("iris", "previous", "1")
    return uri, digests


def test_verify_and_rollback_refuse_files_changed_after_promotion(project, tmp_path):
    project.write("mlflow-ci.yml", CONFIG)
    project.commit("config")
    uri, digests = registered_twice(tmp_path)
    env = clean_env(MLFLOW_TRACKING_URI=uri)
    ok = project.cli("verify", "models:/iris/1", env=env)
    assert ok.returncode == 0 and f"iris version 1: {digests[0]} (as promote verified)" in ok.stdout, ok.stderr

    from mlflow.tracking import MlflowClient

    source = Path(MlflowClient(uri).get_model_version_download_uri("iris", "1").removeprefix("file://"))
    (source / "MLmodel").write_text((source / "MLmodel").read_text() + "# swapped\n")
    back = project.cli("rollback", "--no-deploy", env=env)
    assert back.returncode == 1 and f"iris version 1 has digest" in back.stderr and f"promote verified {digests[0]}" in back.stderr
    assert str(MlflowClient(uri).get_model_version_by_alias("iris", "champion").version) == "2"  # nothing moved


DIGEST_HOOK = ("python -c \"import os; from pathlib import Path; from mlflow_ci.provenance import model_digest; "
               "Path('deployed.txt').write_text(os.environ['MODEL_URI'] + ' ' + model_digest(Path(os.environ['MODEL_PATH'])))\"")


def swap(uri: str, version: str) -> None:
    """What PR code holding the experiment's credentials can do after promote: rewrite the version's files."""
    from mlflow.tracking import MlflowClient

    source = Path(MlflowClient(uri).get_model_version_download_uri("iris", version).removeprefix("file://"))
    (source / "MLmodel").write_text((source / "MLmodel").read_text() + "# swapped\n")


def test_the_deploy_hook_gets_a_verified_local_copy_and_never_a_swapped_one(project, tmp_path):
    project.write("mlflow-ci.yml", CONFIG + f"deploy:\n  command: {DIGEST_HOOK}\n")
    project.commit("config")
    uri, digests = registered_twice(tmp_path)
    env = clean_env(MLFLOW_TRACKING_URI=uri)
    back = project.cli("rollback", env=env)
    assert back.returncode == 0, back.stdout + back.stderr
    assert (project.root / "deployed.txt").read_text() == f"models:/iris@champion {digests[0]}"  # MODEL_PATH: v1's bytes

    from mlflow.tracking import MlflowClient

    (tmp_path / "second").mkdir()
    uri, digests = registered_twice(tmp_path / "second")  # v2 champion, never deployed
    client = MlflowClient(uri)
    swap(uri, "2")
    (project.root / "deployed.txt").unlink()
    again = project.cli("promote", "--run", client.get_model_version("iris", "2").run_id, env=clean_env(MLFLOW_TRACKING_URI=uri))
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"promote verified {digests[1]}: its files changed after promotion; do not load it; not deployed" in again.stderr
    assert not (project.root / "deployed.txt").exists()
    assert client.get_model_version("iris", "2").tags.get("mlflow_ci.deploy_failed")


EVALUATED = """\
experiment: iris
model: iris
train:
  command: python train.py
evaluate:
  data: iris.csv
  target: target
  task: classification
  metrics: [accuracy]
  resamples: 100
gate:
  eval.accuracy: {max_drop: 0.05}
"""


def test_the_next_gate_refuses_a_champion_whose_files_changed_after_promotion(project, tmp_path):
    """The baseline model is scored on the PR's rows: if its files are not the bytes promote verified, the
    check fails (exit 1) before loading them, and says which version."""
    from sklearn.datasets import load_iris

    from conftest import MODEL_SCRIPT

    frame = load_iris(as_frame=True).frame
    frame.to_csv(project.root / "iris.csv", index=False)
    project.write("train.py", MODEL_SCRIPT.replace("X, y = load_iris(return_X_y=True)",
                                                   "X, y = load_iris(return_X_y=True, as_frame=True)"))
    project.write("params.json", '{"C": 0.3}')
    project.write("mlflow-ci.yml", EVALUATED)
    project.commit("an evaluated model")
    uri, digests = registered_twice(tmp_path)
    env = clean_env(MLFLOW_TRACKING_URI=uri)
    swap(uri, "2")
    checked = project.cli("check", env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    result = project.result()
    assert result["verdict"] == "fail" and result["baseline"] is None, result
    [closed] = [c for c in result["checks"] if c["rule"] == "baseline_required"]
    assert "iris version 2" in closed["message"] and f"has changed since promote verified it ({digests[1]})" in closed["message"]
    assert "the baseline was passed over" in checked.stdout, checked.stdout

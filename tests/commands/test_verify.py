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

"""The release chain's fixtures shared by the promote tests: the repository's reviewed caller workflow,
the workflow run GitHub describes for it, the artifacts its jobs uploaded, and what PR code holding the
tracking credentials can forge."""

from __future__ import annotations

import shutil
from pathlib import Path

from fakegithub import RESULT_ARTIFACT, zip_artifact

from mlflow_ci.commands.leaderboard import CANDIDATE_ARTIFACT

CALLER = ".github/workflows/mlflow-ci.yml"  # the repository's reviewed caller workflow
PINNED = "mlflow-ci/mlflow-ci/.github/workflows/mlflow-ci-pr.yml@" + "a" * 40  # as the caller pins mlflow-ci
CALLER_YAML = f"on: pull_request\njobs:\n  mlflow-ci:\n    uses: {PINNED} # v1.0.0\n"


def uploaded_candidates(root: Path, names, dest: Path) -> Path:
    """What the leaderboard job downloads: each matrix job's upload of ``.mlflow-ci/<name>/`` (result,
    report, exported model) in a folder named after its artifact."""
    for name in names:
        src, folder = root / ".mlflow-ci" / name, dest / f"{CANDIDATE_ARTIFACT}-{name}"
        folder.mkdir(parents=True)
        for rel in RESULT_ARTIFACT:
            if (src / rel).is_dir():
                shutil.copytree(src / rel, folder / rel)
            elif (src / rel).is_file():
                shutil.copy2(src / rel, folder / rel)
    return dest


def run_of_candidates(gh, run_id: int, head: str, pr: int, candidates: Path) -> None:
    """The fake GitHub's description of the caller's workflow run ``run_id`` for PR ``pr`` at ``head``,
    holding every candidate artifact under ``candidates``."""
    gh.add_pr_run(run_id, head, pr, path=CALLER, calls=PINNED)
    for folder in sorted(candidates.iterdir()):
        gh.add_artifact(run_id, folder.name, zip_artifact(folder))


def forge_run(uri: str, experiment: str, tags: dict, C: float, accuracy: float = 0.99) -> str:
    """What PR code holding the shared credentials can do: a run of its own, tagged as someone else's."""
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    X, y = load_iris(return_X_y=True)
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(LogisticRegression(C=C, max_iter=300).fit(X, y), name="model", pip_requirements=["scikit-learn"])
        mlflow.set_tags(tags)
        mlflow.log_metric("accuracy", accuracy)
    return run.info.run_id

"""The trusted publisher recomputes eval.* for a model whose format runs no code on load (issue #26, design
item): a PR job that forges its own verdict is overruled by the numbers the publish job computes itself."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import based_on, clean_env, git

pytestmark = pytest.mark.slow

TRAIN = """
import json, mlflow, mlflow.xgboost, pandas as pd, xgboost
params = json.load(open("params.json"))
data = pd.read_csv("train.csv")
X, y = data.drop(columns=["target"]), data["target"]
with mlflow.start_run():
    model = xgboost.XGBClassifier(n_estimators=params["n"], max_depth=params["depth"], learning_rate=1.0).fit(X, y)
    mlflow.log_metric("accuracy", float((model.predict(X) == y).mean()))
    mlflow.xgboost.log_model(model, name="model", model_format=params.get("format", "json"), pip_requirements=["xgboost"])
"""


def _project(project, uri: str):
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    frame = load_breast_cancer(as_frame=True).frame.rename(columns=lambda c: c.replace(" ", "_"))
    train, held = train_test_split(frame, test_size=0.4, random_state=0)
    train.to_csv(project.root / "train.csv", index=False)
    held.to_csv(project.root / "eval.csv", index=False)
    project.write("train.py", TRAIN)
    project.write("params.json", json.dumps({"n": 30, "depth": 3}))
    project.write("mlflow-ci.yml", textwrap.dedent("""\
        experiment: cancer
        model: cancer
        train:
          command: python train.py
          inputs: ["*.py", "params.json", "*.csv"]
        evaluate:
          data: eval.csv
          target: target
          task: classification
          metrics: [accuracy]
          resamples: 300
        gate:
          eval.accuracy: {min: 0.8, max_drop: 0.02}
        """))
    project.commit("xgboost on breast cancer")
    return clean_env(MLFLOW_TRACKING_URI=uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")


def test_a_forged_verdict_is_overruled_by_the_trusted_recomputation(project, mlflow_server, tmp_path):
    from fakegithub import EVENTS, TOKEN, FakeGitHub

    env = _project(project, mlflow_server.uri)
    assert project.cli("check", "--no-publish", env=env).returncode == 0
    promoted = project.cli("promote", "--no-deploy", env=env)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr

    project.branch("pr/stump")
    project.write("params.json", json.dumps({"n": 1, "depth": 1}))  # a stump: far worse on held-out rows
    head = project.commit("a smaller model")
    checked = project.cli("check", "--no-publish", "--export-model", "--base-branch", "main", env=env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    out = project.root / ".mlflow-ci"
    honest = json.loads((out / "result.json").read_text())
    real = next(m for m in honest["metrics"] if m["name"] == "eval.accuracy")
    # the PR's code controls its job: it rewrites its own verdict before the artifact is uploaded
    forged = {**honest, "verdict": "pass",
              "checks": [{**c, "passed": True, "message": "ok"} for c in honest["checks"]],
              "metrics": [{**m, "candidate": m["baseline"], "delta": 0.0, "status": "same"} if m["name"] == "eval.accuracy" else m
                          for m in honest["metrics"]]}
    (out / "result.json").write_text(json.dumps(forged))

    with FakeGitHub(TOKEN) as gh:
        payload = based_on(json.loads((EVENTS / "pull_request.opened.json").read_text()), project.root, "main")
        payload["pull_request"]["head"]["sha"] = head
        event = tmp_path / "event.json"
        event.write_text(json.dumps(payload))
        git(project.root, "checkout", "-q", "main")  # the publisher reads the base commit's configuration and data
        publisher = {**env, "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event),
                     "GITHUB_REPOSITORY": "Codertocat/Hello-World", "GITHUB_API_URL": gh.url, "GITHUB_TOKEN": TOKEN,
                     "GITHUB_RUN_ID": "555"}
        published = project.cli("publish", "--from", str(out / "result.json"), "--model-dir", str(out / "model"),
                                "--out", str(tmp_path / "published"), env=publisher)
        assert published.returncode == 0, published.stdout + published.stderr
        run = gh.check_runs[-1]
    result = json.loads((tmp_path / "published" / "result.json").read_text())
    accuracy = next(m for m in result["metrics"] if m["name"] == "eval.accuracy")
    assert result["recomputed"] == ["eval.accuracy"] and result["verdict"] == "fail"
    assert accuracy["candidate"] == pytest.approx(real["candidate"]) and accuracy["baseline"] == pytest.approx(real["baseline"])
    assert run["conclusion"] == "failure" and "eval.accuracy recomputed by the trusted job" in run["output"]["summary"]

    # a pickled model is not opened by the trusted job: the verdict stays the PR job's, and the check run says so
    git(project.root, "checkout", "-q", "pr/stump")
    project.write("params.json", json.dumps({"n": 1, "depth": 1, "format": "deprecated-pickle"}))
    (out / "result.json").write_text(json.dumps(forged))
    from mlflow_ci.commands.recompute import recompute
    from mlflow_ci.config.loader import load_config
    from mlflow_ci.evaluate.code_free import open_code_free
    from mlflow_ci.result import load_untrusted

    (out / "model" / "MLmodel").write_text((out / "model" / "MLmodel").read_text().replace("model_format: json", "model_format: deprecated"))
    assert open_code_free(out / "model")[0] is None
    kept = recompute(load_config(project.root / "mlflow-ci.yml"), env, open("/dev/null", "w"), load_untrusted(out / "result.json"),
                     out / "model")
    assert kept.verdict == "pass" and kept.recomputed == [] and "not recomputed by the trusted job" in " ".join(kept.notes)

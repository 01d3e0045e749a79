"""Training inside an MLflow run that mlflow-ci created, against a real SQLite store."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from mlflow_ci.commands.session import Options, make_session
from mlflow_ci.commands.stages import do_train
from mlflow_ci.config.loader import load_config
from mlflow_ci.errors import TrainingError
from mlflow_ci.tracking import MlflowTracker
from mlflow_ci.train import read_metrics_file

MLFLOW_SCRIPT = """
import os, mlflow
expected = os.environ["MLFLOW_RUN_ID"]  # MLflow removes it from os.environ once it attaches
with mlflow.start_run() as run:
    assert run.info.run_id == expected, "did not attach"
    mlflow.log_param("alpha", 0.5)
    mlflow.log_metric("accuracy", 0.91)
    mlflow.log_metric("rmse", 4.0)
    print("attached to", run.info.run_id)
"""


def session(project, **env):
    cfg = load_config(project.root / "mlflow-ci.yml")
    stream = io.StringIO()
    return make_session(cfg, project.env(**env), project.root, stream), stream


def train(project, **kwargs):
    s, stream = session(project, **kwargs.pop("env", {}))
    result = do_train(s, Options(out_dir=project.root / ".mlflow-ci", **kwargs))
    return result, stream.getvalue()


def test_metrics_file_is_logged_and_run_is_tagged(project):
    result, output = train(project, pr_number=42)
    assert result.cached is False
    run = result.run
    assert run.status == "FINISHED"
    assert dict(run.metrics) == {"accuracy": 0.9, "rmse": 5.0}
    tags = run.tags
    from conftest import git

    assert tags["mlflow.source.git.commit"] == git(project.root, "rev-parse", "HEAD")
    assert tags["mlflow.source.git.branch"] == "main"
    assert tags["mlflow.source.name"] == "python train.py"
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.runName"] == run.run_name == f"pr-42@{tags['mlflow.source.git.commit'][:7]}"
    assert tags["mlflow_ci.pr"] == "42"
    assert tags["mlflow_ci.fingerprint"].startswith("sha256:")
    assert "training with" in output
    log = MlflowTracker(project.uri).client.list_artifacts(run.run_id)
    assert [a.path for a in log] == ["train.log"]


def test_ci_tags_from_github_environment(project):
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "octo/models",
        "GITHUB_RUN_ID": "99",
        "GITHUB_SERVER_URL": "https://github.example.com",
        "GITHUB_REF": "refs/pull/5/merge",
        "GITHUB_HEAD_REF": "feature/x",
        "GITHUB_BASE_REF": "main",
        "GITHUB_ACTOR": "octocat",
    }
    result, _ = train(project, env=env)
    tags = result.run.tags
    assert tags["mlflow_ci.ci_run_url"] == "https://github.example.com/octo/models/actions/runs/99"
    assert tags["mlflow.source.git.repoURL"] == "https://github.example.com/octo/models"
    assert tags["mlflow_ci.pr"] == "5"
    assert tags["mlflow.source.git.branch"] == "feature/x"
    assert tags["mlflow_ci.base_branch"] == "main"
    assert tags["mlflow.source.type"] == "JOB"
    assert tags["mlflow.user"] == "octocat"


def test_script_using_mlflow_attaches_to_our_run(project):
    project.write("train.py", MLFLOW_SCRIPT)
    text = (project.root / "mlflow-ci.yml").read_text().replace("  metrics_file: metrics.json\n", "")
    project.write("mlflow-ci.yml", text)
    result, output = train(project)
    assert "attached to " + result.run.run_id in output
    assert result.run.metrics == {"accuracy": 0.91, "rmse": 4.0}
    assert result.run.params == {"alpha": "0.5"}
    assert result.run.status == "FINISHED"


def test_workdir_and_env_are_applied(project):
    project.write("src/train.py", "import os, json\njson.dump({'seed': float(os.environ['SEED'])}, open('m.json', 'w'))\n")
    project.write(
        "mlflow-ci.yml",
        "experiment: e\ntrain:\n  command: python train.py\n  workdir: src\n  env: {SEED: 3}\n  metrics_file: m.json\n"
        "  inputs: []\n",
    )
    result, _ = train(project)
    assert result.run.metrics == {"seed": 3.0}
    assert result.fingerprint is None  # inputs: []: no cache


def test_failure_marks_run_failed(project):
    project.write("params.json", json.dumps({"fail": True}))
    s, _ = session(project)
    with pytest.raises(TrainingError, match="exited with code 7"):
        do_train(s, Options(out_dir=project.root / ".mlflow-ci"))
    tracker = MlflowTracker(project.uri)
    exp = tracker.experiment_id("churn", create=False)
    runs = tracker.client.search_runs([exp])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "training blew up" in (project.root / ".mlflow-ci" / "train.log").read_text()


def test_cache_reuses_identical_inputs_and_only_those(project):
    first, _ = train(project)
    again, output = train(project)
    assert again.cached and again.run.run_id == first.run.run_id
    assert output == ""  # nothing was trained
    forced, _ = train(project, use_cache=False)
    assert not forced.cached and forced.run.run_id != first.run.run_id
    # a changed input file is a different fingerprint
    project.set_metrics(accuracy=0.5, rmse=1.0)
    changed, _ = train(project)
    assert not changed.cached and changed.fingerprint != first.fingerprint
    # an added file matching a glob is too
    project.write("extra.py", "X = 1\n")
    added, _ = train(project)
    assert not added.cached and added.fingerprint != changed.fingerprint
    # the command is part of the fingerprint
    text = (project.root / "mlflow-ci.yml").read_text().replace("python train.py", "python ./train.py")
    project.write("mlflow-ci.yml", text)
    cmd, _ = train(project)
    assert not cmd.cached and cmd.fingerprint != added.fingerprint


def test_check_only_reuses_gated_runs(project):
    train(project)  # finished but never gated
    s, _ = session(project)
    from mlflow_ci.commands.check import do_check

    outcome = do_check(s, Options(out_dir=project.root / ".mlflow-ci"))
    assert outcome.train.cached is False
    outcome2 = do_check(s, Options(out_dir=project.root / ".mlflow-ci"))
    assert outcome2.train.cached is True
    assert outcome2.result["candidate"]["cached"] is True
    assert "it was not retrained" in outcome2.report_path.read_text()


def test_read_metrics_file(tmp_path: Path):
    path = tmp_path / "m.json"
    path.write_text('{"a": 1, "b": 2.5, "c": NaN}')
    out = read_metrics_file(path, "m.json")
    assert out["a"] == 1.0 and out["b"] == 2.5 and out["c"] != out["c"]  # NaN: the gate fails it closed
    path.write_text('{"a": true}')
    with pytest.raises(TrainingError, match="m.json: key 'a': expected a number, got true"):
        read_metrics_file(path, "m.json")
    with pytest.raises(TrainingError, match="did not write it"):
        read_metrics_file(tmp_path / "none.json", "none.json")
    # #24 item 9: Infinity reached MLflow, which stores it as the largest double, and a min rule passed it
    path.write_text('{"a": Infinity}')
    with pytest.raises(TrainingError, match="m.json: key 'a': expected a finite number, got inf"):
        read_metrics_file(path, "m.json")


def test_the_largest_double_is_read_as_the_infinity_mlflow_stored():
    from mlflow_ci.config.models import Rule
    from mlflow_ci.gate import evaluate

    [check] = evaluate((Rule("acc", min=0.5),), {"acc": sys.float_info.max}, None).checks
    assert check.passed is False and "acc of the candidate is infinite (stored as the largest double)" in check.message


@pytest.mark.parametrize("name, ok", [
    ("accuracy", True), ("eval/f1 macro", True), ("loss:val-1.5", True), ("é_score", True), ("a" * 250, True),
    ("", False), ("a" * 251, False), ("acc@1", False), ("a\nb", False), ("..", False), ("../x", False),
    ("/abs", False), ("a//b", False), ("a/", False), ("./a", False), (".", False),
])
def test_metric_names_follow_mlflow_rule(tmp_path: Path, name: str, ok: bool):
    """The same names MLflow's own validation accepts, so a bad name is a clear exit 3, not a store error."""
    from mlflow.utils.validation import _validate_metric_name

    try:
        _validate_metric_name(name)
        mlflow_ok = len(name) <= 250
    except Exception:  # noqa: BLE001 - MlflowException
        mlflow_ok = False
    assert mlflow_ok == ok
    path = tmp_path / "m.json"
    path.write_text(json.dumps({name: 1.0}))
    if ok:
        assert read_metrics_file(path, "m.json") == {name: 1.0}
    else:
        with pytest.raises(TrainingError, match="expected a metric name of 1 to 250"):
            read_metrics_file(path, "m.json")


def test_cache_never_reuses_a_run_whose_inputs_differ(project):
    """Every kind of change gets a new fingerprint; a README-only change reuses the run."""
    project.write("data/train.csv", "x,y\n1,2\n")
    project.write("uv.lock", "version = 1\n")
    project.write("README.md", "# churn\n")
    text = (project.root / "mlflow-ci.yml").read_text().replace(
        'inputs: ["*.py", "params.json"]', 'inputs: ["*.py", "params.json", "data/**", "uv.lock"]')
    project.write("mlflow-ci.yml", text)
    base, _ = train(project)
    seen = {base.fingerprint}

    def changed(description, edit):
        edit()
        result, _ = train(project)
        assert not result.cached, description
        assert result.fingerprint not in seen, description
        seen.add(result.fingerprint)

    project.write("README.md", "# churn\n\nOnly docs changed.\n")
    docs_only, output = train(project)
    assert docs_only.cached and docs_only.run.run_id == base.run.run_id and output == ""

    changed("a data byte", lambda: project.write("data/train.csv", "x,y\n1,3\n"))
    changed("a param", lambda: project.set_metrics(accuracy=0.91, rmse=5.0))
    changed("the lock file", lambda: project.write("uv.lock", "version = 2\n"))
    changed("an added file matching a glob", lambda: project.write("data/extra.csv", "x\n"))
    changed("a new script", lambda: project.write("features.py", "X = 1\n"))
    changed("the training env", lambda: project.write(
        "mlflow-ci.yml", (project.root / "mlflow-ci.yml").read_text().replace("  metrics_file:", "  env: {SEED: 1}\n  metrics_file:")))
    changed("the command", lambda: project.write(
        "mlflow-ci.yml", (project.root / "mlflow-ci.yml").read_text().replace("python train.py", "python -u train.py")))
    # a rename is a change too, even with identical content
    changed("a renamed data file", lambda: (project.root / "data" / "extra.csv").rename(project.root / "data" / "more.csv"))


def test_auto_inputs_retrain_on_a_root_level_data_change_and_reuse_on_a_readme_change(project):
    project.write("train.py", "import json\nrows = open('data.csv').read().count('\\n')\n"
                              "json.dump({'accuracy': 0.9, 'rows': float(rows)}, open('metrics.json', 'w'))\n")
    project.write("data.csv", "a,b\n1,2\n3,4\n")
    project.write("mlflow-ci.yml", "experiment: e\ntrain:\n  command: python train.py\n  metrics_file: metrics.json\n")
    project.commit("data at the root")
    first, _ = train(project)
    assert first.run.metrics["rows"] == 3.0 and first.fingerprint
    project.write("README.md", "how to use it\n")
    project.commit("README only")
    readme, _ = train(project)
    assert readme.cached and readme.run.run_id == first.run.run_id
    project.write("data.csv", "a,b\n1,2\n")  # the data was truncated: a stale run must not decide
    project.commit("less data")
    data, _ = train(project)
    assert not data.cached and data.run.metrics["rows"] == 2.0

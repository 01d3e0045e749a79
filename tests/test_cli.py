"""The command line as a user meets it: every documented exit code, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import clean_env


def test_help_does_not_import_mlflow():
    code = (
        "import sys\n"
        "from mlflow_ci.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "bad = [m for m in ('mlflow', 'sklearn', 'jinja2', 'requests', 'pydantic', 'ray', 'pyspark') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert "Exit codes: 0 passed, 1 gate failed" in proc.stdout


def test_validate_does_not_import_mlflow(project):
    code = (
        "import sys\n"
        "from mlflow_ci.cli import main\n"
        "try:\n    main(['validate'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'mlflow' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "mlflow-ci.yml: valid (experiment 'churn', 2 gated metrics, 3 rules)\n"


def test_a_local_check_imports_neither_engine(project):
    """Ray and mlflow-ci's Spark engine are imported only where a configuration names them (mlflow-ci[ray],
    [spark]). (MLflow's own type module imports PySpark whenever it is installed: not ours to avoid.)"""
    code = (
        "import sys\n"
        "from mlflow_ci.cli import main\n"
        "try:\n    main(['check', '--no-publish'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "bad = [m for m in ('ray', 'mlflow_ci.engines.spark_engine', 'mlflow_ci.engines.ray_engine') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True, env=project.env())
    assert proc.returncode == 0, proc.stderr


def test_python_dash_m_and_version(project):
    proc = project.cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("mlflow-ci, version ")


def test_validate_lists_every_problem_with_exit_2(project):
    project.write("mlflow-ci.yml", "experiment: e\ntrian: {}\ngate:\n  acc: {min: high}\n")
    proc = project.cli("validate")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: mlflow-ci.yml:2: trian: unknown key; did you mean 'train'? (expected one of: experiment, model, tracking_uri, artifact_location, train, baseline, gate, report, publish, promote, deploy, evaluate, genai)",
        "error: mlflow-ci.yml:1: train: required key is missing (expected a mapping with 'command' or 'entry_point')",
        "error: mlflow-ci.yml:4: gate.acc.min: expected a finite number, got 'high'",
        "mlflow-ci.yml: 3 configuration problems; nothing was run",
    ]
    assert "Traceback" not in proc.stderr


def test_missing_config_exit_2(project):
    proc = project.cli("check", "--config", "nope.yml")
    assert proc.returncode == 2
    assert "nope.yml: file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_option_exit_2(project):
    proc = project.cli("check", "--frobnicate")
    assert proc.returncode == 2 and "No such option" in proc.stderr


def test_check_pass_exit_0_then_regression_exit_1(project):
    first = project.cli("check")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "verdict: PASS" in first.stdout
    assert "training with" in first.stdout  # the training output streams through
    assert project.result()["baseline"] is None

    project.branch("feature")
    project.set_metrics(accuracy=0.85, rmse=5.0)
    project.commit("worse")
    second = project.cli("check")
    assert second.returncode == 1, second.stdout + second.stderr
    result = project.result()
    assert result["verdict"] == "fail"
    assert result["baseline"]["source"].startswith("base_commit:")
    failed = [c for c in result["checks"] if c["passed"] is False]
    assert [(c["metric"], c["rule"]) for c in failed] == [("accuracy", "max_drop")]
    report = (project.root / ".mlflow-ci" / "report.md").read_text()
    assert "❌" in report and "regressed by 0.05" in report


def test_training_failure_exit_3(project):
    project.write("params.json", json.dumps({"fail": True}))
    project.commit("broken")
    proc = project.cli("check")
    assert proc.returncode == 3
    assert "training blew up" in proc.stdout
    assert "error: training command exited with code 7; run " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_timeout_exit_3(project):
    project.write("params.json", json.dumps({"sleep": 30, "metrics": {}}))
    text = (project.root / "mlflow-ci.yml").read_text().replace("  metrics_file:", "  timeout: 1s\n  metrics_file:")
    project.write("mlflow-ci.yml", text)
    proc = project.cli("train")
    assert proc.returncode == 3
    assert "training command timed out after 1s (train.timeout)" in proc.stderr


def test_unreachable_tracking_server_exit_4(project):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    env = clean_env(
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="5",
    )
    proc = project.cli("check", env=env)
    assert proc.returncode == 4, proc.stderr
    assert f"error: could not look up experiment 'churn' at http://127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_debug_shows_traceback(project):
    proc = project.cli("--debug", "check", "--config", "nope.yml")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


def test_stages_one_by_one(project):
    assert project.cli("train").returncode == 0
    state = json.loads((project.root / ".mlflow-ci" / "train.json").read_text())
    assert state["cached"] is False and state["fingerprint"].startswith("sha256:")
    compare = project.cli("compare")
    assert compare.returncode == 0 and "baseline: none" in compare.stdout
    assert "accuracy: — -> 0.9" in compare.stdout
    gate = project.cli("gate")
    assert gate.returncode == 0 and gate.stdout.splitlines()[-1] == "verdict: PASS"
    report = project.cli("report")
    assert report.returncode == 0 and (project.root / ".mlflow-ci" / "report.md").is_file()
    # gate --from re-evaluates a result.json offline, with the config's rules
    project.write("mlflow-ci.yml", (project.root / "mlflow-ci.yml").read_text().replace("min: 0.8", "min: 0.95"))
    offline = project.cli("gate", "--from", ".mlflow-ci/result.json")
    assert offline.returncode == 1 and "[FAIL] accuracy min: 0.9 < min 0.95" in offline.stdout


def test_compare_without_train_is_a_usage_error(project):
    proc = project.cli("compare")
    assert proc.returncode == 2
    assert "no candidate run: pass --run RUN_ID, or run 'mlflow-ci train' first" in proc.stderr


def test_bad_explicit_baseline_exit_2(project):
    assert project.cli("train").returncode == 0
    proc = project.cli("compare", "--baseline", "models:/nope@champion")
    assert proc.returncode == 2
    assert "--baseline models:/nope@champion: no such registered model version" in proc.stderr
    proc = project.cli("compare", "--baseline", "0123456789abcdef0123456789abcdef")
    assert proc.returncode == 2 and "no such run" in proc.stderr


@pytest.mark.parametrize("bad", ["[1, 2]", '{"acc": "high"}', "not json"])
def test_bad_metrics_file_exit_3(project, bad):
    project.write("train.py", f"open('metrics.json', 'w').write({bad!r})\n")
    proc = project.cli("train")
    assert proc.returncode == 3, proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("error: ") and "metrics.json" in last
    assert "Traceback" not in proc.stderr


def test_validate_checks_the_evaluation_data_without_loading_a_model(project):
    project.write("eval.csv", "a,b,label\n1,2,0\n")
    base = (project.root / "mlflow-ci.yml").read_text()
    project.write("mlflow-ci.yml", base + "evaluate:\n  data: eval.csv\n  target: label\n  task: classification\n"
                                          "  slices: [region]\n")
    proc = project.cli("validate")
    assert proc.returncode == 2
    assert "evaluate.slices: column 'region' is not in eval.csv (columns: a, b, label)" in proc.stderr
    project.write("mlflow-ci.yml", base + "evaluate:\n  data: missing.csv\n  target: label\n  task: regression\n"
                                          "  output: logits\n")
    proc = project.cli("validate")
    assert proc.returncode == 2
    assert "evaluate.output: only for task: classification" in proc.stderr
    project.write("mlflow-ci.yml", base + "evaluate:\n  data: missing.csv\n  target: label\n  task: regression\n")
    proc = project.cli("validate")
    line = len(base.splitlines()) + 2  # every file-not-found error names the line that names the file
    assert proc.returncode == 2 and f"mlflow-ci.yml:{line}: evaluate.data: file not found:" in proc.stderr
    project.write("mlflow-ci.yml", base + "evaluate:\n  data: eval.csv\n  target: label\n  task: classification\n")
    assert project.cli("validate").returncode == 0


def test_validate_names_the_line_of_every_path_that_does_not_exist(project):
    base = (project.root / "mlflow-ci.yml").read_text()
    project.write("mlflow-ci.yml", base + "report:\n  template: report.j2\ndeploy:\n  command: sh d.sh\n  workdir: ops\n")
    proc = project.cli("validate")
    n = len(base.splitlines())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: mlflow-ci.yml:{n + 5}: deploy.workdir: folder not found: {project.root / 'ops'}" in proc.stderr
    assert f"error: mlflow-ci.yml:{n + 2}: report.template: file not found: {project.root / 'report.j2'}" in proc.stderr


def test_validate_checks_the_genai_rows_app_scorers_and_prompts_without_running_them(project):
    base = (project.root / "mlflow-ci.yml").read_text()
    genai = ("genai:\n  data: faq.jsonl\n  predict_fn: bot.app:answer\n  scorers: [contains, tone:calm]\n"
             "  prompts: [{name: faq, file: prompts/faq.txt}]\n")
    project.write("mlflow-ci.yml", base + genai)
    project.write("faq.jsonl", '{"inputs": {"q": "hi"}}\n{"inputs": "not an object"}\n')
    proc = project.cli("validate")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert 'genai.data: ' in proc.stderr and 'faq.jsonl:2: expected an object with "inputs"' in proc.stderr
    assert "genai.predict_fn: no module bot.app in" in proc.stderr and "bot/app.py" in proc.stderr
    assert "genai.scorers[1]: no module tone in" in proc.stderr
    assert "genai.prompts[0].file: file not found:" in proc.stderr
    project.write("faq.jsonl", '{"inputs": {"q": "hi"}, "expectations": {"expected_facts": ["hello"]}}\n')
    project.write("bot/app.py", "raise SystemExit('validate must not import the app')\n")
    project.write("tone.py", "raise SystemExit('nor the scorers')\n")
    project.write("prompts/faq.txt", "{text}\n")
    proc = project.cli("validate")
    assert proc.returncode == 0, proc.stderr

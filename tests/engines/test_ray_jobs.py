"""``train.engine: ray``: a PR check trains as a job on a real Ray head (127.0.0.1), logs to a real
`mlflow server`, and gates; a timeout and a cancelled check stop the job (the cluster says so); a
failing job is exit 3 with its last lines; a store the cluster cannot reach is refused at validate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import MODEL_SCRIPT, Project, clean_env, git

RAY_CONFIG = """\
experiment: {name}
model: {name}
train:
  command: python {script}
  inputs: ["*.py", "params.json"]
  engine: ray
  timeout: {timeout}
  ray: {{entrypoint_num_cpus: 1}}
  env: {{GREETING: from-mlflow-ci}}
gate:
  accuracy: {{min: 0.8}}
"""

SLOW_SCRIPT = textwrap.dedent("""
    import time
    print("training on the cluster: mlflow-ci-sleeper", flush=True)
    time.sleep(600)
    """)


def ray_project(tmp_path, name: str, script: str, timeout: str = "5m", file: str = "train.py") -> Project:
    root = tmp_path / "repo"
    root.mkdir()
    proj = Project(root=root, store=tmp_path / "unused.db")
    proj.write(file, script)
    proj.write("params.json", json.dumps({"C": 1.0}))
    proj.write("mlflow-ci.yml", RAY_CONFIG.format(name=name, timeout=timeout, script=file))
    proj.write(".gitignore", ".mlflow-ci/\n")
    git(root, "init", "-q", "-b", "main")
    proj.commit("initial")
    return proj


def env_for(head, server, **extra) -> dict:
    return clean_env(MLFLOW_TRACKING_URI=server.uri, RAY_ADDRESS=head.jobs_address, **head.env(), **extra)


def active(head) -> list[dict]:
    return [job for job in head.jobs() if job["status"] in ("PENDING", "RUNNING")]


def sleeper(test: str) -> str:
    return f"ray_sleeper_{test}.py"  # a name no other test's training has (tests run side by side)


def sleeper_running(name: str) -> bool:
    """Whether the slow training's process is still alive anywhere on this machine."""
    proc = subprocess.run(["pgrep", "-f", f"python {name}"], capture_output=True, text=True)
    return bool(proc.stdout.split())


@pytest.mark.slow
def test_a_check_trains_as_a_ray_job_logs_to_the_server_and_gates(tmp_path, ray_head, mlflow_server):
    script = "import os\nprint('job env:', os.environ['GREETING'], os.environ['MLFLOW_RUN_ID'])\n" + MODEL_SCRIPT
    proj = ray_project(tmp_path, "ray-train", script)
    before = len(ray_head.jobs())
    proc = proj.cli("check", "--no-publish", env=env_for(ray_head, mlflow_server))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = proj.result()
    run_id = result["candidate"]["run_id"]
    assert result["verdict"] == "pass" and result["candidate"]["metrics"]["accuracy"] > 0.8
    log = (proj.root / ".mlflow-ci" / "train.log").read_text()
    assert f"job env: from-mlflow-ci {run_id}" in log and "[mlflow-ci] training on Ray: job mlflow-ci-" in log
    jobs = ray_head.jobs()
    ours = [job for job in jobs if job.get("metadata", {}).get("mlflow_ci.run_id") == run_id]
    assert len(jobs) == before + 1 and ours and ours[0]["status"] == "SUCCEEDED"
    assert ours[0]["runtime_env"]["env_vars"]["MLFLOW_TRACKING_URI"] == mlflow_server.uri
    assert "GITHUB_TOKEN" not in ours[0]["runtime_env"]["env_vars"]
    again = proj.cli("check", "--no-publish", env=env_for(ray_head, mlflow_server))
    assert again.returncode == 0 and proj.result()["candidate"]["cached"] is True
    assert len(ray_head.jobs()) == before + 1  # a cached run submits nothing


@pytest.mark.slow
def test_a_timeout_stops_the_job_and_a_failed_job_shows_its_last_lines(tmp_path, ray_head, mlflow_server):
    proj = ray_project(tmp_path, "ray-timeout", SLOW_SCRIPT, timeout="8s", file=sleeper("timeout"))
    proc = proj.cli("check", "--no-publish", env=env_for(ray_head, mlflow_server))
    assert proc.returncode == 3, proc.stderr
    assert "training job timed out after 8s (train.timeout)" in proc.stderr
    assert not active(ray_head) and not sleeper_running(sleeper("timeout"))
    assert proj.result()["verdict"] == "error"
    proj.write(sleeper("timeout"), "print('about to fail: mlflow-ci-broken-line')\nraise SystemExit(5)\n")
    proj.commit("fails")
    failed = proj.cli("check", "--no-publish", env=env_for(ray_head, mlflow_server))
    assert failed.returncode == 3
    assert "training job ended FAILED (Job entrypoint command failed with exit code 5) on Ray" in failed.stderr
    assert "its last lines:" in failed.stderr and "mlflow-ci-broken-line" in failed.stderr


@pytest.mark.slow
def test_a_cancelled_check_stops_its_job_before_it_exits(tmp_path, ray_head, mlflow_server):
    proj = ray_project(tmp_path, "ray-cancel", SLOW_SCRIPT, file=sleeper("cancel"))
    check = subprocess.Popen([sys.executable, "-m", "mlflow_ci", "check", "--no-publish"], cwd=proj.root,
                             env=env_for(ray_head, mlflow_server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (active(ray_head) and sleeper_running(sleeper("cancel"))) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert active(ray_head), "the job never started"
        check.send_signal(signal.SIGTERM)  # what Actions sends when a newer push cancels the run
        out, err = check.communicate(timeout=120)
    finally:
        if check.poll() is None:
            check.kill()
            check.wait()
    assert check.returncode == 3, err
    assert "the check was cancelled (SIGTERM); Ray job mlflow-ci-" in err and "stopped" in err
    assert not active(ray_head) and not sleeper_running(sleeper("cancel"))  # asked of the cluster, and of the machine


def test_validate_refuses_a_store_the_cluster_cannot_reach(tmp_path):
    proj = ray_project(tmp_path, "ray-local", "print('never runs')\n")
    proc = proj.cli("validate", env=clean_env())
    assert proc.returncode == 2
    assert "train.engine: the Ray job cannot reach this machine's store (sqlite:///" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_signal_during_the_submission_stops_the_job_and_says_so(tmp_path, monkeypatch):
    """SIGTERM may arrive while the job is being submitted (the upload of a large project takes time):
    the job may exist already, so it is stopped, and the check ends with the usual one-line error."""
    import io

    from mlflow_ci.config.models import RayJobConfig
    from mlflow_ci.engines import ray_jobs
    from mlflow_ci.errors import TrainingError
    from mlflow_ci.process import Cancelled

    calls = []

    class Client:
        def submit_job(self, **kwargs):
            calls.append(("submit", kwargs["submission_id"]))
            raise Cancelled(signal.SIGTERM)

        def stop_job(self, job_id):
            calls.append(("stop", job_id))

        def get_job_status(self, job_id):
            return "JobStatus.STOPPED"

    monkeypatch.setattr(ray_jobs, "client_for", lambda env: Client())
    with pytest.raises(TrainingError, match=r"the check was cancelled \(SIGTERM\); Ray job mlflow-ci-abc-\w+ stopped"):
        ray_jobs.run_job("python train.py", tmp_path, {}, RayJobConfig(), 60, tmp_path / "train.log", io.StringIO(), {},
                         run_id="abc", sleep=lambda s: None)
    assert [kind for kind, _ in calls] == ["submit", "stop"] and calls[0][1] == calls[1][1]

"""The shared server for teams that outgrow one runner, for real: `mlflow server` backed by PostgreSQL
(Debian's packages, a throw-away cluster) with artifacts in an S3-compatible bucket (moto's server).
Twenty candidates of one pull request checked by twenty parallel processes, the leaderboard comment,
then promote — nothing lost, nothing registered twice, one comment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest
import requests
import yaml
from chainkit import CALLER, CALLER_YAML, run_of_candidates, uploaded_candidates
from commands.test_leaderboard import FANOUT_SCRIPT, check_candidates, merge_and_push
from conftest import ROOT, clean_env, server_config
from fakegithub import EVENTS, TOKEN, FakeGitHub
from stack import (
    S3,
    S3_KEYS,
    MlflowServer,
    Postgres,
    Process,
    base_env,
    free_port,
    postgres_bin,
)

from mlflow_ci.tracking import MlflowTracker

pytestmark = pytest.mark.slow

SHARED_DOCS = ROOT / "docs" / "shared-server"
REQUIRED = os.environ.get("MLFLOW_CI_TEST_REQUIRE", "").split(",")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """PostgreSQL + S3 + `mlflow server`; stopped by PID whatever the tests did."""
    if postgres_bin() is None:
        message = "PostgreSQL is not installed (Debian: apt-get install postgresql)"
        if "postgres" in REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("shared")
    started = []
    try:
        pg = Postgres().start()
        started.append(pg)
        s3 = S3(root / "s3").start()
        started.append(s3)
        server = MlflowServer(root / "server", backend=pg.create_database("mlflow"),
                              artifacts=f"s3://{s3.bucket}/artifacts", extra_env=s3.env())
        started.append(server)
        server.start()
        yield pg, s3, server
    finally:
        for process in reversed(started):
            process.stop()


def candidates(count: int) -> dict[str, dict]:
    """Accuracies 0.70, 0.71, …: the first ten fail `min: 0.8`, the last one is the best."""
    return {f"c{i:02d}": {"C": 0.05 * (i + 1), "accuracy": round(0.70 + 0.01 * i, 2)} for i in range(count)}


def pr_event(tmp_path, number: int, head: str) -> str:
    payload = json.loads((EVENTS / "pull_request.opened.json").read_text())
    payload["pull_request"]["number"] = number
    payload["pull_request"]["head"]["sha"] = head
    event = tmp_path / f"event-{number}.json"
    event.write_text(json.dumps(payload))
    return str(event)


def test_twenty_parallel_checks_one_leaderboard_one_version(shared, project, tmp_path):
    pg, s3, server = shared
    name = f"fleet-{uuid.uuid4().hex[:8]}"
    env = clean_env(MLFLOW_TRACKING_URI=server.uri, MLFLOW_HTTP_REQUEST_TIMEOUT="120")
    fleet = candidates(20)
    project.write("train.py", FANOUT_SCRIPT)
    project.write("params.json", json.dumps({"candidates": fleet}))
    project.write("mlflow-ci.yml", server_config(name, "promote:\n  select: {metric: accuracy, direction: higher}\n"))
    project.write(CALLER, CALLER_YAML)
    project.commit("a fleet of candidates")
    project.branch("pr-9")
    head = project.commit("twenty candidates")

    started = time.monotonic()
    checked = check_candidates(project.root, env, fleet, pr=9, timeout=900)
    seconds = time.monotonic() - started
    expected = {cand: 0 if spec["accuracy"] >= 0.8 else 1 for cand, spec in fleet.items()}
    assert {c: proc.returncode for c, proc in checked.items()} == expected, {
        c: proc.stderr[-1500:] for c, proc in checked.items() if proc.returncode != expected[c]}

    # nothing lost: one finished, gated run per candidate in PostgreSQL, its files in the bucket, none on the server's disk
    (exp_id,) = pg.sql("mlflow", f"SELECT experiment_id FROM experiments WHERE name = '{name}'")[0]
    runs = pg.sql("mlflow", f"""
        SELECT r.run_uuid, r.status, c.value, v.value FROM runs r
        JOIN tags c ON c.run_uuid = r.run_uuid AND c.key = 'mlflow_ci.candidate'
        JOIN tags v ON v.run_uuid = r.run_uuid AND v.key = 'mlflow_ci.verdict'
        WHERE r.experiment_id = {exp_id}""")
    assert sorted(r[2] for r in runs) == sorted(fleet)
    assert {r[1] for r in runs} == {"FINISHED"}
    assert {r[2]: r[3] for r in runs} == {c: "pass" if code == 0 else "fail" for c, code in expected.items()}
    keys = s3.keys(f"artifacts/{exp_id}/")
    for run_id, *_ in runs:
        mine = [k for k in keys if f"/{run_id}/" in k]
        assert any(k.endswith("/train.log") for k in mine), (run_id, mine)
    assert sum(k.endswith("/MLmodel") for k in keys) == len(fleet)  # every candidate's model, in the bucket
    assert not (server.root / "artifacts").exists()

    event = pr_event(tmp_path, 9, head)
    with FakeGitHub(TOKEN) as gh:
        uploads = uploaded_candidates(project.root, fleet, tmp_path / "candidates")
        run_of_candidates(gh, 777, head, 9, uploads)
        gh_env = {**env, "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": event,
                  "GITHUB_REPOSITORY": "octo/models", "GITHUB_API_URL": gh.url, "GITHUB_TOKEN": TOKEN, "GITHUB_RUN_ID": "777"}
        for _ in range(2):  # a re-run edits the same comment
            board = project.cli("report", "--pr", "9", "--candidates", str(uploads), "--expect", json.dumps(list(fleet)), env=gh_env)
            assert board.returncode == 0, board.stderr
        assert "20 candidates for PR #9; verdict: PASS" in board.stdout
        assert len(gh.comments[9]) == 1
        entries = json.loads((project.root / ".mlflow-ci" / "leaderboard.json").read_text())
        assert [e["candidate"] for e in entries][:3] == ["c19", "c18", "c17"]
        assert entries[0]["selected"] and sum(e["selected"] for e in entries) == 1
        best_run = entries[0]["run_id"]

        promote_env = {**gh_env, **merge_and_push(project.root, gh, tmp_path, branch="pr-9", number=9, head=head)}
        # two deploy jobs racing (a re-run while the first still runs): one version, one champion
        racing = [subprocess.Popen([sys.executable, "-m", "mlflow_ci", "promote", "--out", f".mlflow-ci/promote-{i}"],
                                   cwd=project.root, env=promote_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for i in range(2)]
        outs = [proc.communicate(timeout=300) for proc in racing]
        assert [proc.returncode for proc in racing] == [0, 0], "\n".join(out + err[-3000:] for out, err in outs)
    tracker = MlflowTracker(server.uri)
    versions = tracker.client.search_model_versions(f"name = '{name}'")
    # one version, standing for the best candidate, registered from a release copy of its model
    assert [(v.version, v.tags["mlflow_ci.run_id"]) for v in versions] == [("1", best_run)]
    release = tracker.client.get_run(versions[0].run_id)
    assert release.data.tags["mlflow_ci.release_of"] == best_run
    assert tracker.client.get_experiment(release.info.experiment_id).name == f"{name} releases"
    assert tracker.alias_version(name, "champion").version == "1"
    print(f"\nshared server: 20 candidates checked in parallel in {seconds:.1f} s")


def compose_environment(ports: dict[str, str], secrets: dict[str, str]) -> dict[str, str]:
    """The mlflow service's environment from docs/shared-server/compose.yaml, its ${VARS} filled in from
    ``secrets`` and its service addresses (postgres:5432, http://s3:8333) pointed at the test's servers."""
    compose = yaml.safe_load((SHARED_DOCS / "compose.yaml").read_text())
    env = {}
    for key, value in compose["services"]["mlflow"]["environment"].items():
        value = re.sub(r"\$\{(\w+)(:\?[^}]*)?\}", lambda m: secrets[m.group(1)], str(value))
        for service, address in ports.items():
            value = value.replace(service, address)
        env[key] = value
    return env


def test_the_compose_files_server_with_auth(shared, project, tmp_path):
    pg, s3, _ = shared
    secrets = {"POSTGRES_PASSWORD": "pg-secret", "S3_ACCESS_KEY": S3_KEYS["AWS_ACCESS_KEY_ID"],
               "S3_SECRET_KEY": S3_KEYS["AWS_SECRET_ACCESS_KEY"], "MLFLOW_ADMIN_PASSWORD": "admin-secret-1", "MLFLOW_SECRET_KEY": "csrf-secret"}
    port = free_port()
    pg.create_database("compose")
    env = compose_environment({"@postgres:5432/mlflow": f"@127.0.0.1:{pg.port}/compose", "http://s3:8333": s3.endpoint,
                               "s3://mlflow-artifacts/": f"s3://{s3.bucket}/"}, secrets)
    assert env.pop("MLFLOW_WORKERS") == "4"
    env.update(MLFLOW_HOST="127.0.0.1", MLFLOW_PORT=str(port), MLFLOW_WORKERS="1")
    server = Process()
    server.name = "docs/shared-server/serve.py"
    server.spawn([sys.executable, str(SHARED_DOCS / "serve.py")], cwd=tmp_path, env=base_env(**env),
                 log=tmp_path / "serve.log", what=f"serve.py on 127.0.0.1:{port}")
    uri = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(lambda: requests.get(f"{uri}/health", timeout=2).ok, 120)
        anonymous = requests.get(f"{uri}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "x"}, timeout=5)
        assert anonymous.status_code == 401
        indexes = pg.sql("compose", "SELECT indexname FROM pg_indexes WHERE tablename = 'tags'")
        assert ("mlflow_ci_tags_key_value",) in indexes
        assert pg.sql("postgres", "SELECT 1 FROM pg_database WHERE datname = 'compose_auth'") == [(1,)]  # created by serve.py

        name = f"auth-{uuid.uuid4().hex[:8]}"
        project.write("mlflow-ci.yml", (project.root / "mlflow-ci.yml").read_text().replace("experiment: churn",
                                                                                          f"experiment: {name}"))
        project.commit("on the shared server")
        admin = clean_env(MLFLOW_TRACKING_URI=uri, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD="admin-secret-1")
        checked = project.cli("check", "--no-publish", env=admin)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "admin-secret-1" not in checked.stdout + checked.stderr
        assert any(k.endswith("/train.log") for k in s3.keys("runs/"))  # through the server's proxy into the bucket

        wrong = project.cli("check", "--no-publish", env={**admin, "MLFLOW_TRACKING_PASSWORD": "nope"})
        assert wrong.returncode == 4, wrong.stdout + wrong.stderr
        assert "MLFLOW_TRACKING_USERNAME" in wrong.stderr and "Traceback" not in wrong.stderr
    finally:
        server.stop()


def test_the_compose_file_is_valid_and_every_secret_is_documented():
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(SHARED_DOCS / "compose.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    used = set(re.findall(r"\$\{(\w+)", (SHARED_DOCS / "compose.yaml").read_text()))
    documented = {line.split("=")[0] for line in (SHARED_DOCS / "env.example").read_text().splitlines()
                  if line and not line.startswith("#")}
    assert used == documented
    served = yaml.safe_load((SHARED_DOCS / "compose.yaml").read_text())["services"]["mlflow"]["environment"]
    needed = set(re.findall(r'need\("(\w+)"\)', (SHARED_DOCS / "serve.py").read_text()))
    assert needed <= set(served)

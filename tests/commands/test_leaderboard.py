"""Fan-out / fan-in: three candidates trained concurrently against a real tracking server,
aggregated into one leaderboard comment, and promote picking the best that passed."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from chainkit import CALLER, CALLER_YAML, forge_run, run_of_candidates, uploaded_candidates
from conftest import git
from fakegithub import EVENTS, TOKEN, FakeGitHub

from mlflow_ci.provenance import Record

FANOUT_SCRIPT = """
import json, os, mlflow, mlflow.sklearn, sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
name = os.environ["MLFLOW_CI_CANDIDATE"]
spec = json.load(open("params.json"))["candidates"][name]
X, y = load_iris(return_X_y=True)
with mlflow.start_run():
    model = LogisticRegression(C=spec["C"], max_iter=300).fit(X, y)
    mlflow.log_param("C", spec["C"])
    mlflow.log_metric("accuracy", spec["accuracy"])
    mlflow.sklearn.log_model(model, name="model", pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
"""

def check_candidates(root, env, names, *, pr: int, timeout: float = 600) -> dict[str, subprocess.CompletedProcess]:
    """`check --candidate NAME --export-model` for every name at once, each its own process (a matrix job
    each, uploading ``.mlflow-ci/NAME/``)."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "mlflow_ci", "check", "--candidate", name, "--pr", str(pr), "--out",
             f".mlflow-ci/{name}", "--base-branch", "main", "--export-model"],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in names
    }
    try:
        outputs = {name: proc.communicate(timeout=timeout) for name, proc in procs.items()}
        return {name: subprocess.CompletedProcess(procs[name].args, procs[name].returncode, out, err)
                for name, (out, err) in outputs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()


def merge_and_push(root, gh, tmp_path, *, branch: str, number: int, head: str) -> dict[str, str]:
    """Merge PR ``number`` (``branch``, head ``head``) into main with a merge commit, tell the fake GitHub
    the PR is merged, and return the environment of the push event's workflow."""
    git(root, "checkout", "-q", "main")
    git(root, "merge", "-q", "--no-ff", branch, "-m", f"Merge PR {number}")
    merged = git(root, "rev-parse", "HEAD")
    gh.pulls.append({"number": number, "state": "closed", "merged_at": "2026-11-29T08:00:00Z", "merge_commit_sha": merged,
                     "head": {"sha": head}})
    push = tmp_path / "push.json"
    push.write_text(json.dumps({"ref": "refs/heads/main", "after": merged, "deleted": False}))
    return {"GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(push)}


CANDIDATES = {"weak": {"C": 0.01, "accuracy": 0.5}, "good": {"C": 1.0, "accuracy": 0.93}, "best": {"C": 10.0, "accuracy": 0.97}}


def test_three_candidates_one_leaderboard_then_promote_the_best(served, tmp_path):  # noqa: F811
    served.write("train.py", FANOUT_SCRIPT)
    served.write("params.json", json.dumps({"candidates": CANDIDATES}))
    config = (served.root / "mlflow-ci.yml").read_text() + "promote:\n  select: {metric: accuracy, direction: higher}\n"
    served.write("mlflow-ci.yml", config)
    served.write(CALLER, CALLER_YAML)
    served.commit("fan-out project")
    served.branch("pr-7")
    head = served.commit("candidates")

    started = time.monotonic()
    checked = check_candidates(served.root, served.server_env, CANDIDATES, pr=7)
    parallel_seconds = time.monotonic() - started
    assert {n: p.returncode for n, p in checked.items()} == {"weak": 1, "good": 0, "best": 0}, {
        n: p.stderr for n, p in checked.items()}
    # another PR's code, holding the same tracking credentials, plants a better "candidate" of PR 7
    planted = forge_run(served.server_env["MLFLOW_TRACKING_URI"], served.name,
                        {"mlflow_ci.pr": "7", "mlflow_ci.head_sha": head, "mlflow_ci.candidate": "zzz"}, C=5.0, accuracy=0.999)

    payload = json.loads((EVENTS / "pull_request.opened.json").read_text())
    payload["pull_request"]["number"] = 7
    payload["pull_request"]["head"]["sha"] = head
    event = tmp_path / "event.json"
    event.write_text(json.dumps(payload))
    with FakeGitHub(TOKEN) as gh:
        candidates = uploaded_candidates(served.root, CANDIDATES, tmp_path / "candidates")
        run_of_candidates(gh, 777, head, 7, candidates)
        env = {**served.server_env, "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request",
               "GITHUB_EVENT_PATH": str(event), "GITHUB_REPOSITORY": "octo/models", "GITHUB_API_URL": gh.url,
               "GITHUB_TOKEN": TOKEN, "GITHUB_RUN_ID": "777"}
        started = time.monotonic()
        agg = served.cli("report", "--pr", "7", "--candidates", str(candidates), env=env)
        aggregate_seconds = time.monotonic() - started
        assert agg.returncode == 0, agg.stderr
        assert "3 candidates for PR #7; verdict: PASS" in agg.stdout
        assert len(gh.comments[7]) == 1
        body = gh.comments[7][0]["body"]
        assert "3 candidates for PR" in body and "🏆 | best | ✅" in body and "| weak | ❌" in body and "zzz" not in body
        assert gh.check_runs[0]["conclusion"] == "success"
        board = json.loads((served.root / ".mlflow-ci" / "leaderboard.json").read_text())
        assert [(e["candidate"], e["verdict"], e["selected"]) for e in board] == [
            ("best", "pass", True), ("good", "pass", False), ("weak", "fail", False)]
        assert planted not in {e["run_id"] for e in board}
        best_run = next(e["run_id"] for e in board if e["candidate"] == "best")
        record = Record.parse(gh.check_runs[0]["external_id"])
        assert (record.run_id, record.artifact) == (best_run, "777/mlflow-ci-candidate-best")  # the one promote will pick
        print(f"\nfan-out: 3 candidates in parallel {parallel_seconds:.1f}s, aggregate report {aggregate_seconds:.1f}s")

        pushed = merge_and_push(served.root, gh, tmp_path, branch="pr-7", number=7, head=head)
        promoted = served.cli("promote", env={**env, **pushed})
        assert promoted.returncode == 0, promoted.stderr
        assert f"(run {best_run}, run recorded by the check run on {head[:12]}" in promoted.stdout


def test_a_planted_candidate_is_never_selected(project, tmp_path):
    """The store's tags select nothing in the PR workflow: a candidate that only exists as a run tagged with
    the PR (another PR's code can write one) is not on the board; one whose upload claims another name,
    another experiment or no run is left off, saying why."""
    project.write("train.py", CANDIDATE_METRICS)
    project.write("params.json", json.dumps({"metrics": {"accuracy": 0.5, "rmse": 5.0},
                                             "candidates": {"a": {"accuracy": 0.9, "rmse": 4.0}, "b": {"accuracy": 0.85, "rmse": 4.0},
                                                            "c": {"accuracy": 0.99, "rmse": 1.0}}}))
    project.commit("project")
    project.branch("pr-3")
    project.commit("candidates")
    for name in ("a", "b", "c"):  # c is checked (its run tagged with the PR) but not one of this run's uploads
        done = project.cli("check", "--candidate", name, "--pr", "3", "--out", f".mlflow-ci/{name}", "--export-model")
        assert done.returncode == 0, done.stdout + done.stderr
    candidates = uploaded_candidates(project.root, ("a", "b"), tmp_path / "candidates")
    local = project.cli("report", "--pr", "3")  # a local leaderboard reads the store's tags: c is there
    assert "3 candidates for PR #3" in local.stdout, local.stdout + local.stderr
    board = project.cli("report", "--pr", "3", "--candidates", str(candidates))
    assert board.returncode == 0 and "2 candidates for PR #3" in board.stdout, board.stdout + board.stderr
    assert {e["candidate"] for e in json.loads((project.root / ".mlflow-ci" / "leaderboard.json").read_text())} == {"a", "b"}

    (candidates / "mlflow-ci-candidate-b").rename(candidates / "mlflow-ci-candidate-x")  # a name the workflow does not list
    foreign = json.loads((candidates / "mlflow-ci-candidate-a" / "result.json").read_text())
    foreign["experiment"] = "someone-else"
    (candidates / "mlflow-ci-candidate-a" / "result.json").write_text(json.dumps(foreign))
    (candidates / "mlflow-ci-candidate-y").mkdir()
    (candidates / "mlflow-ci-candidate-y" / "result.json").write_text("{not json")
    empty = project.cli("report", "--pr", "3", "--candidates", str(candidates), "--expect", '["a", "b", "y"]')
    assert "0 candidates for PR #3; verdict: FAIL" in empty.stdout, empty.stdout + empty.stderr
    assert "mlflow-ci-candidate-x: not a candidate the workflow lists (a, b, y): left off the leaderboard" in empty.stdout
    assert "mlflow-ci-candidate-a: the result is for experiment 'someone-else': left off the leaderboard" in empty.stdout
    assert "mlflow-ci-candidate-y: " in empty.stdout and "Traceback" not in empty.stderr
    bad = project.cli("report", "--pr", "3", "--candidates", str(candidates), "--expect", "a,b")
    assert bad.returncode == 2 and "--expect: expected a JSON list of candidate names" in bad.stderr, bad.stderr
    missing = project.cli("report", "--pr", "3", "--candidates", str(tmp_path / "nothing"))
    assert missing.returncode == 0 and "0 candidates for PR #3; verdict: FAIL" in missing.stdout, missing.stdout + missing.stderr
    assert "no candidate results" in missing.stdout


CANDIDATE_METRICS = """
import json, os
name = os.environ.get("MLFLOW_CI_CANDIDATE", "")
spec = json.load(open("params.json"))
json.dump(spec["candidates"][name] if name else spec["metrics"], open("metrics.json", "w"))
"""


def test_the_leaderboard_fails_closed_like_a_single_check(project):
    """#24: with runs on main that went through the gate and none that may serve, no candidate passes on
    drop rules it cannot evaluate; without them (a first model) the absolute rules decide."""
    project.write("train.py", CANDIDATE_METRICS)
    project.write("params.json", json.dumps({"metrics": {"accuracy": 0.5, "rmse": 5.0},
                                             "candidates": {"a": {"accuracy": 0.9, "rmse": 4.0}, "b": {"accuracy": 0.85, "rmse": 4.0}}}))
    project.commit("a weak main")
    main = project.cli("check")
    assert main.returncode == 1, main.stdout + main.stderr  # main's own run failed its gate: gated, not a baseline
    project.branch("pr-3")
    project.commit("candidates")
    for name in ("a", "b"):
        single = project.cli("check", "--candidate", name, "--pr", "3", "--base-branch", "main", "--out", f".mlflow-ci/{name}")
        assert single.returncode == 1 and "no usable baseline" in single.stdout, single.stdout + single.stderr
    board = project.cli("report", "--pr", "3", "--base-branch", "main")
    assert board.returncode == 0 and "2 candidates for PR #3; verdict: FAIL" in board.stdout, board.stdout + board.stderr
    entries = json.loads((project.root / ".mlflow-ci" / "leaderboard.json").read_text())
    assert {e["verdict"] for e in entries} == {"fail"}
    result = json.loads((project.root / ".mlflow-ci" / "result.json").read_text())
    assert any("no usable baseline" in c["message"] for c in result["checks"] if c["rule"] == "baseline_required")

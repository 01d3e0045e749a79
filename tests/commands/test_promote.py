"""Merge -> promote -> deploy -> rollback against a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
from conftest import git

from mlflow_ci.tracking import MlflowTracker


def cli(project, *args, **env):
    return project.cli(*args, env={**project.server_env, **env})


def merge_pr(project, branch: str, params: dict) -> str:
    """Open a PR branch, run the check on it, merge it with a merge commit; return the PR head."""
    project.branch(branch)
    project.write("params.json", json.dumps(params))
    head = project.commit(f"change on {branch}")
    check = cli(project, "check", "--base-branch", "main")
    assert check.returncode in (0, 1), check.stderr
    git(project.root, "checkout", "-q", "main")
    git(project.root, "merge", "-q", "--no-ff", branch, "-m", f"Merge {branch}")
    return head


def champion(project):
    tracker = MlflowTracker(project.server_env["MLFLOW_TRACKING_URI"])
    return tracker.alias_version(project.name, "champion"), tracker.alias_version(project.name, "previous"), tracker


def test_merge_promote_deploy_idempotent_rollback(served):
    head1 = merge_pr(served, "pr-1", {"C": 1.0})
    first = cli(served, "promote")
    assert first.returncode == 0, first.stderr
    assert f"{served.name} version 1 @champion: promoted" in first.stdout
    assert "second parent of merge commit" in first.stdout
    current, previous, tracker = champion(served)
    assert current.version == "1" and previous is None
    assert current.tags["mlflow_ci.commit"] == head1 and current.tags["mlflow_ci.verdict"] == "pass"
    assert current.tags["mlflow_ci.deployed"] == "true"
    assert "mlflow_ci.metric.accuracy" in current.tags
    assert (served.root / "deployed.txt").read_text() == f"deploying models:/{served.name}@champion v1 ({served.name})\n"
    summary = (served.root / ".mlflow-ci" / "promote.md").read_text()
    assert "version 1 is @champion" in summary and "| accuracy |" in summary

    again = cli(served, "promote")
    assert again.returncode == 0 and "already champion" in again.stdout
    assert len(tracker.client.search_model_versions(f"name = '{served.name}'")) == 1
    assert (served.root / "deployed.txt").read_text().count("deploying") == 1  # nothing moved, nothing redeployed

    merge_pr(served, "pr-2", {"C": 0.5})
    second = cli(served, "promote")
    assert second.returncode == 0 and "version 2 @champion: promoted" in second.stdout
    assert "previous champion: version 1" in second.stdout
    current, previous, _ = champion(served)
    assert (current.version, previous.version) == ("2", "1")

    back = cli(served, "rollback", "--reason", "latency regression", GITHUB_ACTOR="octocat")
    assert back.returncode == 0, back.stderr
    assert f"{served.name}@champion: version 2 -> 1 (deployed)" in back.stdout
    current, previous, tracker = champion(served)
    assert (current.version, previous.version) == ("1", "2")
    demoted = tracker.version(served.name, "2")
    assert demoted.tags["mlflow_ci.rolled_back_reason"] == "latency regression"
    assert demoted.tags["mlflow_ci.rolled_back_by"] == "octocat"

    # rollback sticks: the deploy job run again for pr-2's merge is a no-op, naming the rolled-back run
    rerun = cli(served, "promote")
    assert rerun.returncode == 0, rerun.stderr
    assert f"nothing promoted: run {demoted.run_id} was rolled back (" in rerun.stdout and "latency regression" in rerun.stdout
    current, previous, tracker = champion(served)
    assert (current.version, previous.version) == ("1", "2")
    assert (served.root / "deployed.txt").read_text().count("deploying") == 3  # promote 1, promote 2, rollback
    # named explicitly it is refused (exit 1), saying how to promote it anyway
    named = cli(served, "promote", "--run", demoted.run_id)
    assert named.returncode == 1 and "was rolled back" in named.stderr and "--force" in named.stderr
    # a rolled-back run is never a baseline: the next PR compares with version 1 again
    assert tracker.get_run(demoted.run_id).tags["mlflow_ci.rolled_back"].endswith("by octocat: latency regression")
    forced = cli(served, "promote", "--run", demoted.run_id, "--force", "fixed upstream", "--no-deploy")
    assert forced.returncode == 0 and "version 2 @champion: promoted" in forced.stdout, forced.stderr
    current, _, tracker = champion(served)
    assert current.version == "2" and current.tags["mlflow_ci.forced_reason"] == "fixed upstream"
    assert tracker.get_run(demoted.run_id).tags["mlflow_ci.rolled_back"] == ""


def test_promote_refuses_without_a_validated_run(served):
    served.write("params.json", json.dumps({"C": 2.0}))
    served.commit("pushed straight to main, never checked")
    proc = cli(served, "promote")
    assert proc.returncode == 1
    assert "no run passed the gate for the merged commit" in proc.stderr
    assert "Traceback" not in proc.stderr
    # a PR whose gate failed is refused too
    merge_pr(served, "pr-bad", {"C": 1.0, "accuracy": 0.1})
    assert cli(served, "promote").returncode == 1


def test_promote_on_missing_retrain(served):
    served.write("mlflow-ci.yml", (served.root / "mlflow-ci.yml").read_text() + "promote:\n  on_missing: retrain\n")
    served.commit("retrain on merge")
    proc = cli(served, "promote")
    assert proc.returncode == 0, proc.stderr
    assert "retrained and gated on the merged commit" in proc.stdout


def test_failing_deploy_hook_restores_the_alias(served):
    merge_pr(served, "pr-1", {"C": 1.0})
    assert cli(served, "promote").returncode == 0
    merge_pr(served, "pr-2", {"C": 0.7})
    failed = cli(served, "promote", DEPLOY_EXIT="9")
    assert failed.returncode == 3
    assert f"deploy hook exited with code 9; {served.name}@champion was moved back" in failed.stderr
    current, previous, tracker = champion(served)
    assert current.version == "1" and previous is None
    assert "mlflow_ci.deploy_failed" in tracker.version(served.name, "2").tags
    # fixed: the re-run promotes the same version 2, no third version
    fixed = cli(served, "promote")
    assert fixed.returncode == 0 and "version 2 @champion: promoted" in fixed.stdout


def test_server_going_away_mid_promotion(served, mlflow_server):
    merge_pr(served, "pr-1", {"C": 1.0})
    config = (served.root / "mlflow-ci.yml").read_text()
    # the deploy hook takes the whole server down: the alias has moved, "deployed" cannot be recorded
    served.write("mlflow-ci.yml", config.replace(
        "command: sh deploy.sh", f"command: sh deploy.sh && kill -9 -{mlflow_server.proc.pid}"))
    try:
        proc = cli(served, "promote")
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert "error: could not" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        mlflow_server.stop()
        mlflow_server.start()
    served.write("mlflow-ci.yml", config)
    rerun = cli(served, "promote")
    assert rerun.returncode == 0, rerun.stderr
    assert "already champion, redeployed" in rerun.stdout  # it finishes what was left: the deploy
    current, _, tracker = champion(served)
    assert current.version == "1" and current.tags["mlflow_ci.deployed"] == "true"
    assert len(tracker.client.search_model_versions(f"name = '{served.name}'")) == 1


def test_rollback_without_previous_is_a_usage_error(served):
    merge_pr(served, "pr-1", {"C": 1.0})
    assert cli(served, "promote").returncode == 0
    proc = cli(served, "rollback")
    assert proc.returncode == 2 and f"{served.name}@previous does not exist; pass --to VERSION" in proc.stderr


@pytest.mark.parametrize("status", [403, 404, 409])
def test_promote_falls_back_to_the_merge_parents_when_github_cannot_list_the_pulls(status):
    import io

    from mlflow_ci.commands.validated import _merged_pulls
    from mlflow_ci.github.client import GitHubError

    class Client:
        def pulls_for_commit(self, sha):
            raise GitHubError("no", status=status)

    stream = io.StringIO()
    assert _merged_pulls(Client(), "a" * 40, stream) == []
    assert f"({status}); using the merge parents" in stream.getvalue()
    with pytest.raises(GitHubError):
        class Broken(Client):
            def pulls_for_commit(self, sha):
                raise GitHubError("server", status=502)
        _merged_pulls(Broken(), "a" * 40, stream)


def test_a_pr_verdicted_by_a_reused_run_is_promoted_after_merge(project):
    """A README-only PR reuses the identical run of main instead of training; merging it promotes that
    run (here: already the champion, so nothing new) instead of refusing for want of a run at its head."""
    from conftest import MODEL_SCRIPT

    project.write("train.py", MODEL_SCRIPT)
    project.write("params.json", json.dumps({"C": 1.0}))
    project.write("mlflow-ci.yml", "experiment: iris\nmodel: iris\ntrain:\n  command: python train.py\n"
                                   "  inputs: ['*.py', 'params.json']\ngate:\n  accuracy: {min: 0.8}\n")
    project.commit("model project")
    first = project.cli("check")
    assert first.returncode == 0, first.stderr
    run_id = project.result()["candidate"]["run_id"]
    assert project.cli("promote", "--no-deploy").returncode == 0

    project.branch("docs")
    project.write("README.md", "how to use the model\n")
    head = project.commit("README only")
    cached = project.cli("check", "--base-branch", "main")
    assert cached.returncode == 0 and "(reused, not retrained)" in cached.stdout
    tracker = MlflowTracker(project.uri)
    assert tracker.get_run(run_id).tags[f"mlflow_ci.verdict_at.{head}"] == "pass"
    git(project.root, "checkout", "-q", "main")
    git(project.root, "merge", "-q", "--no-ff", "docs", "-m", "Merge docs")

    merged = project.cli("promote", "--no-deploy")
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert f"champion already is run {run_id}: nothing new to promote" in merged.stdout
    assert f"run reused by the check of {head[:12]}" in merged.stdout
    assert len(tracker.client.search_model_versions("name = 'iris'")) == 1


def _auth_server(root):
    """A real ``mlflow server --app-name basic-auth`` on 127.0.0.1: users read everything by default and
    write only what they were granted."""
    from stack import MlflowServer

    (root / "auth.ini").parent.mkdir(parents=True, exist_ok=True)
    (root / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\nadmin_username = admin\nadmin_password = deploy-secret-1\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return MlflowServer(root, extra_args=["--app-name", "basic-auth"],
                        extra_env={"MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"),
                                   "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-test-only-csrf-key"}).start()


@pytest.mark.slow
def test_a_champion_registered_from_its_release_copy_cannot_be_changed_by_pr_credentials(project, tmp_path):
    """Issue #26, attack 2: PR checks hold EDIT on the experiment (they log runs there). promote copies the verified
    model into the release experiment, which those credentials can only read, and registers it from there: rewriting
    the gated run's files afterwards changes nothing that is loaded, verified or deployed, and the copy is refused."""
    import requests
    from mlflow.tracking import MlflowClient

    from conftest import MODEL_SCRIPT, clean_env, server_config

    server = _auth_server(tmp_path / "auth-server")
    try:
        admin = ("admin", "deploy-secret-1")
        requests.post(f"{server.uri}/api/2.0/mlflow/users/create", json={"username": "pr", "password": "pr-secret-12"},
                      auth=admin, timeout=10).raise_for_status()
        # the deploy credentials own the registered model (docs/security.md): created before the first PR, whose
        # check reads iris@champion (a name that does not exist reads as 403 to a user under basic-auth)
        requests.post(f"{server.uri}/api/2.0/mlflow/registered-models/create", json={"name": "iris"},
                      auth=admin, timeout=10).raise_for_status()
        project.write("train.py", MODEL_SCRIPT)
        project.write("params.json", json.dumps({"C": 1.0}))
        project.write("mlflow-ci.yml", server_config("iris"))
        project.commit("model project")
        base = clean_env(MLFLOW_TRACKING_URI=server.uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
        pr_env = {**base, "MLFLOW_TRACKING_USERNAME": "pr", "MLFLOW_TRACKING_PASSWORD": "pr-secret-12"}
        deploy_env = {**base, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "deploy-secret-1"}
        pr_client = MlflowClient(server.uri)

        # the PR's check (PR credentials: they create the experiment, and so may write all of it)
        project.branch("pr-1")
        project.write("params.json", json.dumps({"C": 0.5}))
        project.commit("tune C")
        check = project.cli("check", "--base-branch", "main", env=pr_env)
        assert check.returncode == 0, check.stdout + check.stderr
        git(project.root, "checkout", "-q", "main")
        git(project.root, "merge", "-q", "--no-ff", "pr-1", "-m", "Merge pr-1")
        promoted = project.cli("promote", env=deploy_env)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr

        import os

        os.environ.update(MLFLOW_TRACKING_USERNAME="pr", MLFLOW_TRACKING_PASSWORD="pr-secret-12")
        try:
            champion = pr_client.get_model_version_by_alias("iris", "champion")
            gated = champion.tags["mlflow_ci.run_id"]
            release = pr_client.get_run(champion.run_id)
            assert release.data.tags["mlflow_ci.release_of"] == gated and release.info.run_id != gated
            assert pr_client.get_experiment(release.info.experiment_id).name == "iris releases"
            # what PR code holding those credentials tries next: rewrite the champion's files, both copies
            evil = tmp_path / "evil"
            evil.mkdir()
            (evil / "MLmodel").write_text("flavors: {}\n# swapped\n")
            pr_client.log_artifact(gated, str(evil / "MLmodel"), "model")  # the gated run: its experiment is writable
            with pytest.raises(Exception, match="PERMISSION_DENIED|403|Permission denied"):
                pr_client.log_artifact(champion.run_id, str(evil / "MLmodel"), "model")
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
            os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)

        # what is verified (and what serving, the deploy hook and the next gate load) is the release copy, unchanged
        verified = project.cli("verify", "models:/iris@champion", env=pr_env)
        assert verified.returncode == 0 and "as promote verified" in verified.stdout, verified.stdout + verified.stderr
        # and the next PR's gate compares with the gated run's metrics, as before
        project.branch("pr-2")
        project.write("params.json", json.dumps({"C": 0.25}))
        project.commit("tune C again")
        second = project.cli("check", "--base-branch", "main", env=pr_env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert json.loads((project.root / ".mlflow-ci" / "result.json").read_text())["baseline"]["run_id"] == gated
    finally:
        server.stop()

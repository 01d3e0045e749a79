"""The provenance chain, end to end: check --export-model → trusted publish --model-dir (record in the
check run) → merge → promote verifies the digest, against a real `mlflow server` and the fake GitHub.

Each attack is the one the hostile review reproduced against the store-tag lookup."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from chainkit import CALLER, CALLER_YAML, PINNED, forge_run
from conftest import MODEL_SCRIPT, clean_env, git
from fakegithub import EVENTS, RESULT_ARTIFACT, TOKEN, FakeGitHub, zip_artifact

from mlflow_ci.provenance import Record, model_digest
from mlflow_ci.tracking import MlflowTracker

REPO = "Codertocat/Hello-World"
CHECK = "mlflow-ci / {name}"


@pytest.fixture
def gh():
    with FakeGitHub(TOKEN) as server:
        yield server


def github_env(gh, tmp_path: Path, event_name: str | None = None, payload: dict | None = None, **extra) -> dict:
    env = dict(GITHUB_REPOSITORY=REPO, GITHUB_API_URL=gh.url, GITHUB_SERVER_URL="https://github.test", GITHUB_TOKEN=TOKEN,
               GITHUB_RUN_ID="777", MLFLOW_CI_GITHUB_MAX_ATTEMPTS="1")
    if event_name:
        event = tmp_path / f"{event_name}.json"
        event.write_text(json.dumps(payload))
        env.update(GITHUB_EVENT_NAME=event_name, GITHUB_EVENT_PATH=str(event), GITHUB_ACTIONS="true",
                   GITHUB_OUTPUT=str(tmp_path / "output"), GITHUB_STEP_SUMMARY=str(tmp_path / "summary"))
    return {**env, **extra}


def pr_event(number: int, head: str, base: str) -> dict:
    payload = json.loads((EVENTS / "pull_request.opened.json").read_text())
    payload["number"] = payload["pull_request"]["number"] = number
    payload["pull_request"]["head"]["sha"] = head
    payload["pull_request"]["base"]["sha"] = base
    payload["pull_request"]["head"]["repo"]["full_name"] = payload["repository"]["full_name"] = REPO
    return payload


def reviewed_caller(project) -> None:
    """The default branch's caller workflow, pinning mlflow-ci's PR workflow (what promote's checkout holds)."""
    if not (project.root / CALLER).is_file():
        git(project.root, "checkout", "-q", "main")
        project.write(CALLER, CALLER_YAML)
        project.commit("the caller workflow")


def open_and_check(project, gh, tmp_path, number: int, params: dict, env: dict) -> tuple[str, dict]:
    """A PR branch, its untrusted check (exports the model) and its trusted publish (records it), in
    workflow run 777 of the caller workflow, as GitHub describes that run."""
    reviewed_caller(project)
    base = git(project.root, "rev-parse", "main")
    project.branch(f"pr-{number}")
    project.write("params.json", json.dumps(params))
    head = project.commit(f"PR {number}")
    check = project.cli("check", "--no-publish", "--export-model", "--base-branch", "main", env=env)
    assert check.returncode in (0, 1), check.stdout + check.stderr
    assert (project.root / ".mlflow-ci" / "model" / "MLmodel").is_file()
    published = project.cli(
        "publish", "--from", ".mlflow-ci/result.json", "--model-dir", ".mlflow-ci/model", "--model-artifact", "mlflow-ci-result",
        "--out", str(tmp_path / f"publish-{number}"),
        env={**env, **github_env(gh, tmp_path, "pull_request", pr_event(number, head, base))},
    )
    assert published.returncode == 0, published.stdout + published.stderr
    gh.add_pr_run(777, head, number, path=CALLER, calls=PINNED)
    gh.add_artifact(777, "mlflow-ci-result", zip_artifact(project.root / ".mlflow-ci", RESULT_ARTIFACT))
    return head, project.result()


def merge(project, gh, number: int, head: str) -> str:
    git(project.root, "checkout", "-q", "main")
    git(project.root, "merge", "-q", "--no-ff", f"pr-{number}", "-m", f"Merge #{number}")
    merged = git(project.root, "rev-parse", "HEAD")
    gh.pulls.append({"number": number, "state": "closed", "merged_at": "2026-11-29T08:00:00Z", "merge_commit_sha": merged,
                     "head": {"sha": head, "label": f"Codertocat:pr-{number}"}})
    return merged


def on_push(gh, tmp_path: Path, merged: str) -> dict:
    """The deploy workflow's environment: the push of the merge commit to main."""
    payload = json.loads((EVENTS / "push.json").read_text())
    payload.update(after=merged, ref="refs/heads/main", deleted=False)
    return github_env(gh, tmp_path, "push", payload, GITHUB_SHA=merged)


def rezip(data: bytes, member: str, change) -> bytes:
    """The artifact with one member's bytes changed."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for info in source.infolist():
            content = source.read(info)
            zf.writestr(info.filename, change(content) if info.filename == member else content)
    return buffer.getvalue()


def digest_of(data: bytes, tmp_path: Path) -> str:
    folder = tmp_path / f"unzipped-{len(list(tmp_path.glob('unzipped-*')))}"
    zipfile.ZipFile(io.BytesIO(data)).extractall(folder)
    return model_digest(folder / "model")


def test_the_recorded_model_is_promoted_not_a_run_forged_with_the_prs_tags(served, gh, tmp_path):
    env = served.server_env
    head, result = open_and_check(served, gh, tmp_path, 2, {"C": 0.7}, env)
    [check_run] = gh.check_runs
    record = Record.parse(check_run["external_id"])
    assert record.run_id == result["candidate"]["run_id"] and record.model_id and record.artifact == "777/mlflow-ci-result"
    assert record.digest == model_digest(served.root / ".mlflow-ci" / "model")
    assert "### Provenance" in check_run["output"]["summary"] and record.digest in check_run["output"]["summary"]
    forged = forge_run(env["MLFLOW_TRACKING_URI"], served.name, {
        "mlflow_ci.head_sha": head, "mlflow_ci.pr": "2", "mlflow_ci.verdict": "pass", "mlflow.source.git.commit": head}, C=0.01)
    merged = merge(served, gh, 2, head)
    gh.approvals[777] = [  # the deploy run waited for the production environment's reviewers
        {"state": "rejected", "comment": "", "user": {"login": "mallory"}, "environments": [{"name": "production"}]},
        {"state": "approved", "comment": "looks good", "user": {"login": "alice"}, "environments": [{"name": "production"}]},
    ]

    promoted = served.cli("promote", env={**env, **on_push(gh, tmp_path, merged)})
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    tracker = MlflowTracker(env["MLFLOW_TRACKING_URI"])
    champion = tracker.alias_version(served.name, "champion")
    assert champion.run_id == record.run_id != forged, promoted.stdout + str(gh.requests())
    assert champion.tags["mlflow_ci.model_digest"] == record.digest
    assert champion.tags["mlflow_ci.provenance"].startswith("verified")
    assert champion.tags["mlflow_ci.provenance"].endswith(f"written by pull_request workflow run 777 of {CALLER} → {PINNED}")
    summary = (served.root / ".mlflow-ci" / "promote.md").read_text()
    assert "🔒 Provenance verified" in summary
    assert "Approved: alice approved production: looks good." in summary and "mallory" not in summary
    promote_json = json.loads((served.root / ".mlflow-ci" / "promote.json").read_text())
    assert promote_json["provenance"].startswith("verified") and promote_json["approvals"] == ["alice approved production: looks good"]
    assert promote_json["model_url"] == f"{env['MLFLOW_TRACKING_URI']}/#/models/{served.name}/versions/1"


def test_a_model_changed_after_the_gate_is_refused(served, gh, tmp_path):
    env = served.server_env
    head, _ = open_and_check(served, gh, tmp_path, 3, {"C": 0.7}, env)
    record = Record.parse(gh.check_runs[0]["external_id"])
    # the shared credentials let anyone rewrite the validated model's files
    from mlflow.tracking import MlflowClient

    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "model.pkl").write_bytes(b"not the model that was gated")
    MlflowClient(env["MLFLOW_TRACKING_URI"]).log_model_artifacts(record.model_id, str(swapped))
    merged = merge(served, gh, 3, head)

    refused = served.cli("promote", env={**env, **on_push(gh, tmp_path, merged)})
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "the check run recorded " + record.digest in refused.stderr and "refusing to promote" in refused.stderr
    assert MlflowTracker(env["MLFLOW_TRACKING_URI"]).alias_version(served.name, "champion") is None


def test_no_check_run_or_someone_elses_is_refused_unless_provenance_is_optional(served, gh, tmp_path):
    env = served.server_env
    base = git(served.root, "rev-parse", "main")
    served.branch("pr-4")
    served.write("params.json", json.dumps({"C": 0.7}))
    head = served.commit("PR 4")
    assert served.cli("check", "--no-publish", "--base-branch", "main", env=env).returncode == 0
    # another app (or a user's token) plants a passing check run with our name and a forged record
    planted = Record("0" * 32, "sha256:" + "1" * 64).external_id()
    gh.add_check_run(head, CHECK.format(name=served.name), app="evil-app", external_id=planted)
    merged = merge(served, gh, 4, head)
    assert base

    refused = served.cli("promote", env={**env, **on_push(gh, tmp_path, merged)})
    assert refused.returncode == 1
    assert f"no check run 'mlflow-ci / {served.name}' by the github-actions app on the head of PR #4" in refused.stderr

    # a check run by our app without a record (the fork path, an older mlflow-ci) is refused too
    gh.add_check_run(head, CHECK.format(name=served.name))
    refused = served.cli("promote", env={**env, **on_push(gh, tmp_path, merged)})
    assert refused.returncode == 1 and "carries no provenance record" in refused.stderr

    # a failing newest check run is the verdict branch protection saw
    gh.add_check_run(head, CHECK.format(name=served.name), conclusion="failure")
    refused = served.cli("promote", env={**env, **on_push(gh, tmp_path, merged)})
    assert refused.returncode == 1 and "concluded failure" in refused.stderr

    gh.check_runs.clear()
    served.write("mlflow-ci.yml", (served.root / "mlflow-ci.yml").read_text() + "promote:\n  provenance: optional\n")
    optional = served.cli("promote", env={**env, **on_push(gh, tmp_path, merged)})
    assert optional.returncode == 0, optional.stderr
    champion = MlflowTracker(env["MLFLOW_TRACKING_URI"]).alias_version(served.name, "champion")
    assert champion.tags["mlflow_ci.provenance"].startswith("unverified: the PR's check run recorded no model")
    assert "⚠️ Provenance unverified" in (served.root / ".mlflow-ci" / "promote.md").read_text()


def test_zero_server_mode_promotes_the_recorded_artifact_into_the_default_branchs_store(project, gh, tmp_path):
    """The PR's store (restored from cache, thrown away) is not the default branch's: the model travels as
    the workflow artifact, and promote imports exactly the bytes whose digest the trusted job recorded."""
    project.write("train.py", MODEL_SCRIPT)
    project.write("params.json", json.dumps({"C": 1.0}))
    project.write("mlflow-ci.yml", "experiment: iris\nmodel: iris\ntrain:\n  command: python train.py\ngate:\n  accuracy: {min: 0.8}\n")
    project.commit("model project")
    pr_store = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'pr.db'}")
    main_store = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'main.db'}")
    head, result = open_and_check(project, gh, tmp_path, 5, {"C": 0.7}, pr_store)
    record = Record.parse(gh.check_runs[0]["external_id"])
    data = gh.artifacts[0]["data"]
    merged = merge(project, gh, 5, head)

    promoted = project.cli("promote", "--no-deploy", env={**main_store, **on_push(gh, tmp_path, merged)})
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "model imported from the PR's artifact" in promoted.stdout + (project.root / ".mlflow-ci" / "promote.md").read_text()
    assert all("Authorization" not in headers for headers in gh.blob_requests)  # the storage never sees the token
    tracker = MlflowTracker(main_store["MLFLOW_TRACKING_URI"])
    champion = tracker.alias_version("iris", "champion")
    imported = tracker.get_run(champion.run_id)
    assert imported.tags["mlflow_ci.imported_from_run"] == record.run_id and imported.tags["mlflow_ci.pr"] == "5"
    assert imported.metrics["accuracy"] == result["candidate"]["metrics"]["accuracy"]
    downloaded = tracker.download_model(champion.run_id, "model", tmp_path / "registered")
    assert model_digest(downloaded) == record.digest
    assert tracker.load_for_scoring(champion.run_id, "model", tmp_path / "loaded").native.predict([[5.1, 3.5, 1.4, 0.2]]).shape == (1,)

    again = project.cli("promote", "--no-deploy", env={**main_store, **on_push(gh, tmp_path, merged)})
    assert again.returncode == 0 and "already champion" in again.stdout

    # the champion's files are the verified bytes, until someone with write access to the experiment swaps them
    verified = project.cli("verify", "models:/iris@champion", env=main_store)
    assert verified.returncode == 0 and f"iris version 1: {record.digest} (as promote verified)" in verified.stdout, verified.stderr
    source = Path(tracker.client.get_model_version_download_uri("iris", "1").removeprefix("file://"))
    (source / "MLmodel").write_text((source / "MLmodel").read_text() + "# swapped after promotion\n")
    swapped = project.cli("verify", "models:/iris/1", env=main_store)
    assert swapped.returncode == 1 and f"promote verified {record.digest}: its files changed after promotion" in swapped.stderr
    bad = project.cli("verify", "runs:/abc/model", env=main_store)
    assert bad.returncode == 2 and "is not models:/<name>@<alias>" in bad.stderr
    assert len(tracker.client.search_model_versions("name = 'iris'")) == 1  # the import is found, not repeated

    # an artifact whose bytes differ from the record is refused, and an expired one is explained
    gh.artifacts.clear()
    gh.add_artifact(777, "mlflow-ci-result", rezip(data, "model/MLmodel", lambda b: b + b"# swapped\n"))
    fresh = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'other.db'}")
    refused = project.cli("promote", "--no-deploy", env={**fresh, **on_push(gh, tmp_path, merged)})
    assert refused.returncode == 1 and "the model in artifact 'mlflow-ci-result' of workflow run 777 has digest" in refused.stderr
    gh.artifacts.clear()
    gh.add_artifact(777, "mlflow-ci-result", data, expired=True)
    expired = project.cli("promote", "--no-deploy", env={**fresh, **on_push(gh, tmp_path, merged)})
    assert expired.returncode == 1 and "is expired" in expired.stderr


def test_only_the_publish_job_of_the_reviewed_caller_vouches_for_a_model(served, gh, tmp_path):
    """The attacks on the record itself: any workflow's GITHUB_TOKEN writes check runs as github-actions."""
    env = served.server_env
    head, result = open_and_check(served, gh, tmp_path, 6, {"C": 0.7}, env)
    genuine = Record.parse(gh.check_runs[0]["external_id"])
    merged = merge(served, gh, 6, head)
    pushed = {**env, **on_push(gh, tmp_path, merged)}
    check = CHECK.format(name=served.name)
    tracker = MlflowTracker(env["MLFLOW_TRACKING_URI"])

    # a workflow pushed to another branch (never in the reviewed diff) uploads its own model and posts a
    # passing check run on the PR head, after the genuine one, recording that model
    evil = rezip(gh.artifacts[0]["data"], "model/MLmodel", lambda b: b + b"# the attacker's model\n")
    gh.add_pr_run(888, "f" * 40, None, event="push", path=".github/workflows/evil.yml")
    gh.add_artifact(888, "mlflow-ci-result", evil)
    forged = Record(genuine.run_id, digest_of(evil, tmp_path), artifact="888/mlflow-ci-result")
    gh.add_check_run(head, check, external_id=forged.external_id())
    refused = served.cli("promote", env=pushed)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "workflow run 888, named by the check run's record, ran on push, not on the PR's pull_request event" in refused.stderr
    assert tracker.alias_version(served.name, "champion") is None

    # a passing check run that names the genuine run while the gate failed it: the artifact's result decides
    failed = rezip(gh.artifacts[0]["data"], "result.json",
                   lambda b: json.dumps({**json.loads(b), "verdict": "fail"}).encode())
    real = gh.artifacts[0]["data"]
    gh.artifacts[0]["data"] = failed
    gh.add_check_run(head, check, external_id=genuine.external_id())
    refused = served.cli("promote", env=pushed)
    assert refused.returncode == 1 and "says the gate's verdict was fail, yet the check run passed" in refused.stderr
    gh.artifacts[0]["data"] = real

    # a PR that changes the repository's workflows ran its own workflow: refused unless a maintainer allows it
    gh.pull_files[6] = [{"filename": "params.json"}, {"filename": ".github/workflows/mlflow-ci.yml"}]
    refused = served.cli("promote", env=pushed)
    assert refused.returncode == 1
    assert "provenance: unverified (the PR changed workflows: .github/workflows/mlflow-ci.yml)" in refused.stderr
    assert "--allow-unverified" in refused.stderr and tracker.alias_version(served.name, "champion") is None
    allowed = served.cli("promote", "--allow-unverified", env={**pushed, "GITHUB_ACTOR": "maintainer"})
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    champion = tracker.alias_version(served.name, "champion")
    assert champion.run_id == genuine.run_id == result["candidate"]["run_id"]
    assert champion.tags["mlflow_ci.provenance"] == (
        "unverified: the PR changed workflows (.github/workflows/mlflow-ci.yml); promoted with --allow-unverified by maintainer")
    assert "⚠️ Provenance unverified" in (served.root / ".mlflow-ci" / "promote.md").read_text()

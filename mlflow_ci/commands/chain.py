"""The provenance chain, both ends (see :mod:`mlflow_ci.provenance` for the record and the digest).

- The trusted publisher digests the candidate's model — from the result artifact's ``model/`` folder
  (the two-job PR workflow) or from the store (a single-job check) — and the record goes into the
  check run on the PR head.
- ``promote`` finds that check run on the merged PR's head (our check name, created by the trusted
  app), recomputes the digest of the run's model in the store — or, when the run is not in this store
  (the zero-server mode), of the model in the PR's artifact, which it then imports — and refuses any
  mismatch.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow_ci.errors import MlflowCiError, NotValidatedError, UsageError, printable
from mlflow_ci.provenance import (
    MODEL_DIR,
    TAG_DIGEST,
    Record,
    extract_zip,
    logged_model_id,
    model_digest,
)
from mlflow_ci.result import Result, load_untrusted
from mlflow_ci.tracking import (
    TAG_COMMIT,
    TAG_HEAD_SHA,
    TAG_PR,
    TAG_VERDICT,
    RunSnapshot,
)
from mlflow_ci.train import artifact_location

VERDICT_OF = {"success": "pass", "neutral": "warn"}
ARTIFACT_LIMIT = 4 << 30  # bytes of a model artifact promote downloads and unpacks
TAG_IMPORTED_FROM = "mlflow_ci.imported_from_run"


# --------------------------------------------------------------------------------------------------
# The publishing end


def record_from_dir(result: Result, model_dir: Path, artifact: str | None, log) -> Record | None:
    """The record for a model that travelled in the result artifact (untrusted bytes, digested as data);
    None (said in the log) when there is no model to record: the check is still published, and promote
    will refuse to promote without a record."""
    run_id = result.candidate.run_id
    try:
        if not run_id:
            raise UsageError("the result has no candidate run id")
        return Record(run_id, model_digest(model_dir), logged_model_id(model_dir), artifact)
    except UsageError as exc:
        log(f"warning: no provenance recorded: {exc.message}")
        return None


def record_from_store(registry, run_id: str, model_path: str, log, workflow_run: str | None = None) -> Record | None:
    """The record for a run's model read from the store, gated in ``workflow_run`` (``GITHUB_RUN_ID``);
    None (said in the log) when there is none."""
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-digest-") as tmp:
        try:
            local = registry.download_model(run_id, model_path, Path(tmp))
            return Record(run_id, model_digest(local), logged_model_id(local), workflow=workflow_run or None)
        except MlflowCiError as exc:
            log(f"warning: no provenance recorded for run {run_id}: {exc.message}")
            return None


# --------------------------------------------------------------------------------------------------
# The promoting end


@dataclass(frozen=True)
class CheckRecord:
    """A record as found on GitHub, with where it was found."""
    record: Record
    head_sha: str
    verdict: str  # pass | warn
    check_url: str | None
    how: str  # e.g. "head of merged PR #7 (GitHub API)"
    vouched_by: str | None = None  # the workflow run that made the record (:mod:`.vouch`)


def find_record(client, heads: list[tuple[str, str]], check_name: str, app: str) -> CheckRecord | None:
    """The newest check run named ``check_name`` by ``app`` on the first PR head that has one.

    Its conclusion must be success or neutral and it must carry a record, else promotion is refused:
    the newest verdict on the merged head is the one branch protection saw.
    """
    for sha, how in heads:
        ours = [run for run in client.check_runs(sha, check_name) if (run.get("app") or {}).get("slug") == app]
        if not ours:
            continue
        newest = ours[0]
        conclusion = newest.get("conclusion")
        where = f"check run {check_name!r} on {sha[:12]} ({how})"
        if conclusion not in VERDICT_OF:
            raise NotValidatedError(f"the newest {where} concluded {printable(str(conclusion))}; refusing to promote")
        record = Record.parse(newest.get("external_id"))
        if record is None:
            raise NotValidatedError(
                f"the newest {where} carries no provenance record (published by the fork path or an older mlflow-ci)",
                hint="re-run the PR's mlflow-ci workflow so its trusted publisher records the model, or promote a run you checked with --run RUN_ID",
            )
        return CheckRecord(record, sha, VERDICT_OF[conclusion], newest.get("html_url"), how)
    return None


def no_record(check_name: str, app: str, heads: list[tuple[str, str]], pr: int | None) -> NotValidatedError:
    which = ", ".join(sha[:12] for sha, _ in heads) or "no commit"
    return NotValidatedError(
        f"no check run {check_name!r} by the {app} app on the head of {'PR #' + str(pr) if pr else 'the merged PR'} ({which}); refusing to promote",
        hint="the PR was merged without mlflow-ci's trusted publisher (require the check in branch protection); "
             "promote a run you checked with --run RUN_ID, or set promote.provenance: optional",
    )


def verified_run(s, experiment_id: str | None, found: CheckRecord, client, pr: int | None) -> tuple[RunSnapshot, str]:
    """The store's run whose model has the recorded digest: the recorded run itself, or the PR's
    artifact imported as a new run (once: a re-run finds the import). A recorded artifact is always
    read, from the vouched workflow run only: its model must have the recorded digest and its result
    must say the recorded run passed. Refuses any mismatch."""
    registry = s.registry()
    record = found.record
    if record.artifact is None:
        run = registry.get_run(record.run_id) or (_imported(registry, experiment_id, record) if experiment_id else None)
        if run is None:
            raise NotValidatedError(
                f"run {record.run_id}, recorded in the {found.check_url or 'check run'}, is not in this store, and no model artifact was recorded; refusing to promote"
            )
        return _digest_checked(s, experiment_id, record, run), "run recorded by the check run"
    assert record.workflow_run is not None and record.artifact_name
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-artifact-") as tmp:
        unpacked = fetch_artifact(client, record.workflow_run, record.artifact_name, Path(tmp))
        what = f"artifact {record.artifact_name!r} of workflow run {record.workflow_run}"
        _same(record, model_digest(unpacked / MODEL_DIR), f"the model in {what}")
        result = _passed(unpacked / "result.json", record, s.cfg.experiment, what)
        run = registry.get_run(record.run_id) or (_imported(registry, experiment_id, record) if experiment_id else None)
        if run is not None:
            return _digest_checked(s, experiment_id, record, run), "run recorded by the check run"
        imported = _import_artifact(s, experiment_id, found, unpacked, result, pr)
    return imported, "model imported from the PR's artifact, as recorded by the check run"


def _digest_checked(s, experiment_id: str | None, record: Record, run: RunSnapshot) -> RunSnapshot:
    if run.experiment_id != experiment_id:
        raise NotValidatedError(f"run {record.run_id} recorded by the check run belongs to another experiment; refusing to promote")
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-verify-") as tmp:
        local = s.registry().download_model(run.run_id, s.cfg.promote.model_path, Path(tmp))
        _same(record, model_digest(local), f"the model of run {run.run_id} in the store")
    return run


def _same(record: Record, digest: str, what: str) -> None:
    if digest != record.digest:
        raise NotValidatedError(
            f"{what} has digest {digest}, the check run recorded {record.digest}: "
            "the model changed after it was gated; refusing to promote"
        )


def _passed(path: Path, record: Record, experiment: str, what: str) -> Result:
    """The artifact's result (untrusted data), which the genuine publisher gated on: it must be for this
    experiment and the recorded run, and pass. A check run concluding otherwise was not written from it."""
    try:
        result = load_untrusted(path)
    except UsageError as exc:
        raise NotValidatedError(f"the result in {what} cannot be read ({exc.message}); refusing to promote") from None
    if result.experiment != experiment or result.candidate.run_id != record.run_id:
        raise NotValidatedError(f"the result in {what} is not the recorded run {record.run_id} of {experiment!r}; refusing to promote")
    if result.verdict not in VERDICT_OF.values():
        raise NotValidatedError(f"the result in {what} says the gate's verdict was {result.verdict}, yet the check run passed: "
                                "it was not written from that result; refusing to promote")
    return result


def _imported(registry, experiment_id: str, record: Record) -> RunSnapshot | None:
    found = registry.search_runs(experiment_id, tags={TAG_IMPORTED_FROM: record.run_id, TAG_DIGEST: record.digest})
    return found[0] if found else None


def _import_artifact(s, experiment_id: str | None, found: CheckRecord, unpacked: Path, result: Result, pr: int | None) -> RunSnapshot:
    record = found.record
    registry = s.registry()
    tags = {
        TAG_IMPORTED_FROM: record.run_id,
        TAG_DIGEST: record.digest,
        TAG_HEAD_SHA: found.head_sha,
        TAG_COMMIT: found.head_sha,
        TAG_VERDICT: result.verdict,
        **({TAG_PR: str(pr)} if pr else {}),
    }
    if experiment_id is None:  # a store that has never seen this experiment (a first deploy)
        experiment_id = registry.experiment_id(s.cfg.experiment, create=True,
                                               artifact_location=artifact_location(s.cfg, registry.tracking_uri))
    run_id = registry.import_model(experiment_id, unpacked / MODEL_DIR, s.cfg.promote.model_path,
                                   run_name=f"validated-{record.run_id[:8]}", tags=tags)
    metrics = {k: float(v) for k, v in result.candidate.metrics.items() if isinstance(v, (int, float))}
    if metrics:
        registry.log_metrics(run_id, metrics)
    run = registry.get_run(run_id)
    assert run is not None
    return run


def fetch_artifact(client, workflow_run: int, name: str, work: Path) -> Path:
    """Download a workflow run's artifact and unpack it (as untrusted data) under ``work``."""
    artifacts = [a for a in client.run_artifacts(workflow_run, name) if a.get("name") == name and isinstance(a.get("id"), int)]
    live = [a for a in artifacts if not a.get("expired")]
    if not live:
        state = "expired" if artifacts else "not found"
        raise NotValidatedError(
            f"the artifact {name!r} of workflow run {workflow_run} is {state}",
            hint="re-run the PR's mlflow-ci workflow (artifacts expire), then try again",
        )
    archive = client.download_artifact(live[0]["id"], work / "artifact.zip", max_bytes=ARTIFACT_LIMIT)
    return extract_zip(archive, work / "unpacked", max_bytes=ARTIFACT_LIMIT)


def provenance_note(found: CheckRecord | None, reason: str | None) -> str:
    if found is not None and reason is None:
        by = f", written by {found.vouched_by}" if found.vouched_by else ""
        return f"verified: model digest {found.record.digest} matches the check run on {found.head_sha[:12]}{by}"
    return f"unverified: {reason}"


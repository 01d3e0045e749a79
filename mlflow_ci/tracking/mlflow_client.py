"""MLflow's own client, wrapped to return plain snapshots: the reference implementation of the tracking
wing, and the only way to create stores and experiments, write the registry and load models.

``mlflow`` is imported lazily, inside :class:`MlflowTracker`, so that ``mlflow-ci --help`` and
``mlflow-ci validate`` stay instant. Every MLflow failure that means "the service is unreachable or
broken" becomes a :class:`ServiceError` (exit 4); everything else the caller handles by value.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator, Mapping

from mlflow_ci.errors import NotValidatedError, ServiceError, UsageError
from mlflow_ci.provenance import TAG_DIGEST, model_digest
from mlflow_ci.tracking.base import (
    SEARCH_WINDOW,
    TAG_VALIDATED_RUN,
    PromptInfo,
    RunSnapshot,
    SearchMixin,
    VersionInfo,
    finished_with_tags,
    first_line,
    now_ms,
    quote_value,
    redact,
    validated_run_of,
)


LOCAL_STACK = ("sqlalchemy", "alembic")  # MLflow's SQL store: in the full mlflow distribution, not in mlflow-skinny


def needs_local_stack(tracking_uri: str) -> None:
    """A store MLflow itself opens from this machine (SQLite, PostgreSQL, MySQL, a folder) needs MLflow's
    SQL store, which mlflow-ci's own install leaves out: say which install line brings it (exit 2)."""
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return
    import importlib.util

    missing = [name for name in LOCAL_STACK if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"the tracking store {redact(tracking_uri)} is opened by MLflow's SQL store, which is not installed "
                         f"(no {', '.join(missing)}): pip install 'mlflow-ci[local]', or use a tracking server (MLFLOW_TRACKING_URI=https://…)")


def _is_service_failure(exc: BaseException, remote: bool) -> bool:
    """True when the store could not be reached or answered with a server-side failure."""
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    code = getattr(exc, "error_code", "")
    if code == "TEMPORARILY_UNAVAILABLE" or "API request to" in str(exc):
        return True
    if not remote:
        import sqlalchemy.exc

        return isinstance(exc, sqlalchemy.exc.OperationalError)
    return code == "INTERNAL_ERROR"


def _version_info(mv) -> VersionInfo:
    tags = dict(mv.tags or {})
    return VersionInfo(mv.name, str(mv.version), validated_run_of(mv.run_id, tags), tags)


def _drop_download_meta(local: Path) -> None:
    """MLflow's downloader writes ``registered_model_meta`` (the registered name and version) beside the files of
    a ``models:/`` URI once the model is registered: it is not stored with the model and is rewritten on every
    download, so it is not part of the bytes a digest covers."""
    if local.is_dir():
        (local / "registered_model_meta").unlink(missing_ok=True)


ALIAS_ATTEMPTS = 3  # set_alias: how often a lost insert race is tried again


class RegistryMixin:
    """Registry operations used by promote and rollback (aliases, not the deprecated stages)."""
    def alias_version(self, model: str, alias: str) -> VersionInfo | None:
        found = self._or_none(f"read {model}@{alias}", lambda: self.client.get_model_version_by_alias(model, alias))
        return _version_info(found) if found else None

    def version(self, model: str, version: str) -> VersionInfo | None:
        found = self._or_none(f"read {model} version {version}", lambda: self.client.get_model_version(model, version))
        return _version_info(found) if found else None

    def version_for_run(self, model: str, run_id: str) -> VersionInfo | None:
        """The (first) version of ``model`` that stands for the gated run ``run_id`` (a release copy of its
        model, or the run's model itself): promote's idempotency key."""
        name = quote_value(model)
        with self._service(f"search versions of {model}"):
            found = [*self.client.search_model_versions(f"name = '{name}' and tags.`{TAG_VALIDATED_RUN}` = '{quote_value(run_id)}'"),
                     *self.client.search_model_versions(f"name = '{name}' and run_id = '{quote_value(run_id)}'")]
        versions = sorted((v for v in map(_version_info, found) if v.run_id == run_id), key=lambda v: int(v.version))
        return versions[0] if versions else None

    def register_once(self, run_id: str, model: str, *, artifact_path: str, tags: Mapping[str, str],
                      source_run: str | None = None) -> VersionInfo:
        """The version of ``model`` that stands for ``run_id``: the existing one, else a new one registered
        from ``source_run``'s model (a release copy; default: the run's own). Two jobs promoting the same run at
        once can both register it; each then keeps the lowest-numbered version of the run and deletes its own
        if that is not the one, so a single version remains."""
        existing = self.version_for_run(model, run_id)
        if existing is not None:
            return existing
        number = self.register(source_run or run_id, model, artifact_path=artifact_path,
                               tags={**tags, TAG_VALIDATED_RUN: run_id})
        first = self.version_for_run(model, run_id)
        if first is not None and first.version != number:
            with self._service(f"delete the duplicate version {number} of {model}"):
                self.client.delete_model_version(model, number)
            return first
        mine = self.version(model, number)
        assert mine is not None
        return mine

    def set_version_tags(self, model: str, version: str, tags: Mapping[str, str]) -> None:
        with self._service(f"tag {model} version {version}"):
            for key, value in tags.items():
                self.client.set_model_version_tag(model, version, key, str(value))

    def delete_alias(self, model: str, alias: str) -> None:
        with self._service(f"delete alias {alias!r} of {model!r}"):
            try:
                self.client.delete_registered_model_alias(model, alias)
            except Exception as exc:  # noqa: BLE001
                if not self._not_found(exc):
                    raise

    def download_model(self, run_id: str, model_path: str, dst: Path) -> Path:
        """The files of the run's model named ``model_path`` (its LoggedModel in MLflow 3, else the run's
        artifacts under that path), downloaded into ``dst``."""
        import mlflow.artifacts

        with self._service(f"download the model of run {run_id}"):
            source, model_id = self._model_source(run_id, model_path)
            if model_id is None and not self.client.list_artifacts(run_id, model_path):
                raise UsageError(f"run {run_id} has no model named {model_path!r} (promote.model_path)")
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=self.tracking_uri))
        _drop_download_meta(local)
        return local

    def download_version(self, model: str, version: str, dst: Path) -> Path:
        """The files ``models:/<model>/<version>`` resolves to now, downloaded into ``dst``."""
        import mlflow.artifacts

        with self._service(f"download {model} version {version}"):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model}/{version}", dst_path=str(dst),
                                                             tracking_uri=self.tracking_uri))
        _drop_download_meta(local)
        return local

    def import_model(self, experiment_id: str, model_dir: Path, model_path: str, *, run_name: str, tags: Mapping[str, str]) -> str:
        """A finished run of ``experiment_id`` holding ``model_dir``'s files under ``model_path``: how a
        model validated elsewhere (a PR's artifact) enters this store before it is registered."""
        with self._service("import the validated model into the store"):
            run = self.client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
            try:
                self.client.log_artifacts(run.info.run_id, str(model_dir), model_path)
            except BaseException:
                self.client.set_terminated(run.info.run_id, "FAILED")
                raise
            self.client.set_terminated(run.info.run_id, "FINISHED")
            return run.info.run_id

    def _still_verified(self, version: VersionInfo, local: Path) -> None:
        recorded = version.tags.get(TAG_DIGEST)
        if recorded and model_digest(local) != recorded:
            raise NotValidatedError(
                f"{version.model} version {version.version} (run {version.run_id}) has changed since promote verified it "
                f"({recorded}): its files in the store were overwritten; it is not loaded",
                hint=f"run mlflow-ci verify models:/{version.model}/{version.version}; roll back to a verified version or promote again")

    def load_for_scoring(self, run_id: str, model_path: str, dst: Path, *, registered_as: str | None = None):
        """The run's model, downloaded into ``dst`` and loaded for scoring (:mod:`.loading`). With
        ``registered_as``, a run a version of that model stands for is loaded from that version (its release
        copy), which must still have the bytes promote recorded (NotValidatedError, before anything is loaded)."""
        from mlflow_ci.tracking.loading import load_for_scoring

        version = self.version_for_run(registered_as, run_id) if registered_as else None
        if version is not None:
            local = self.download_version(version.model, version.version, dst)
            self._still_verified(version, local)
        else:
            local = self.download_model(run_id, model_path, dst)
        with self._service(f"load the model of run {run_id}"):
            try:
                return load_for_scoring(local)
            except ImportError as exc:
                raise UsageError(f"the model of run {run_id} needs {exc.name or 'a package'} to load, which is not installed",
                                 hint="install the model's requirements (its requirements.txt) next to mlflow-ci") from None


def _prompt_info(pv) -> PromptInfo:
    template = pv.template if isinstance(pv.template, str) else str(pv.template)
    return PromptInfo(pv.name, str(pv.version), template, dict(pv.tags or {}))


class GenaiMixin:
    """MLflow's GenAI side: the Prompt Registry (promote and rollback move a prompt's aliases, check reads
    its champion) and evaluation datasets (the rows of a ``genai:`` check)."""
    def eval_dataset(self, name: str) -> tuple[list[tuple[dict, dict]], str, str]:
        """The records of the evaluation dataset ``name`` as (inputs, expectations), in the order they were
        added, with the dataset's id and digest; UsageError when there is no such dataset or several."""
        import mlflow

        with self._service(f"read evaluation dataset {name}"):
            found = list(self.client.search_datasets(filter_string=f"name = '{quote_value(name)}'", max_results=2))
            if len(found) != 1:
                raise UsageError(f"MLflow has {'no' if not found else 'more than one'} evaluation dataset named {name!r} "
                                 f"in {redact(self.tracking_uri)} (genai.dataset)")
            dataset = self.client.get_dataset(found[0].dataset_id)
            earlier = mlflow.get_tracking_uri()
            mlflow.set_tracking_uri(self.tracking_uri)  # the records are read through MLflow's default client
            try:
                records = sorted(dataset.records, key=lambda r: (r.created_time or 0, r.dataset_record_id or ""))
            finally:
                mlflow.set_tracking_uri(earlier)
        rows = [(dict(r.inputs or {}), dict(r.expectations or {})) for r in records]
        return rows, str(dataset.dataset_id), str(dataset.digest)

    def prompt_alias(self, name: str, alias: str) -> PromptInfo | None:
        found = self._or_none(f"read prompt {name}@{alias}", lambda: self.client.get_prompt_version_by_alias(name, alias))
        return _prompt_info(found) if found else None

    def prompt_version(self, name: str, version: str) -> PromptInfo | None:
        found = self._or_none(f"read prompt {name} version {version}", lambda: self.client.get_prompt_version(name, version))
        return _prompt_info(found) if found else None

    def prompt_versions(self, name: str) -> list[PromptInfo]:
        """Every version of the prompt, newest first (none when it is not registered)."""
        found = self._or_none(f"search versions of prompt {name}", lambda: self.client.search_prompt_versions(name))
        versions = [_prompt_info(pv) for pv in (getattr(found, "prompt_versions", found) or [])]
        return sorted(versions, key=lambda v: -int(v.version))

    def register_prompt(self, name: str, template: str, *, message: str, tags: Mapping[str, str]) -> PromptInfo:
        with self._service(f"register a version of prompt {name}"):
            return _prompt_info(self.client.register_prompt(name=name, template=template, commit_message=message,
                                                            tags={k: str(v) for k, v in tags.items()}))

    def set_prompt_alias(self, name: str, alias: str, version: str) -> None:
        with self._service(f"move prompt alias {name}@{alias}"):
            self.client.set_prompt_alias(name, alias, int(version))

    def delete_prompt_alias(self, name: str, alias: str) -> None:
        with self._service(f"delete prompt alias {name}@{alias}"):
            try:
                self.client.delete_prompt_alias(name, alias)
            except Exception as exc:  # noqa: BLE001
                if not self._not_found(exc):
                    raise

    def set_prompt_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        with self._service(f"tag prompt {name} version {version}"):
            for key, value in tags.items():
                self.client.set_prompt_version_tag(name, version, key, str(value))


class MlflowTracker(SearchMixin, RegistryMixin, GenaiMixin):
    """MLflow client wrapper returning plain snapshots; construct once per command."""
    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        needs_local_stack(tracking_uri)
        with self._service("connect to the MLflow tracking store"):
            from mlflow.tracking import MlflowClient

            # Alembic's "Creating initial MLflow database tables..." is noise in a CI log.
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # -- error mapping -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _service(self, what: str) -> Iterator[None]:
        try:
            yield
        except (ServiceError, UsageError):
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            if _is_service_failure(exc, self.tracking_uri.startswith(("http://", "https://"))):
                raise ServiceError(
                    f"could not {what} at {redact(self.tracking_uri)}: {first_line(exc)}",
                    hint="check that the tracking server is up and MLFLOW_TRACKING_URI / credentials are right, then re-run",
                ) from exc
            raise

    def _or_none(self, what: str, call):
        """``call()``, or None when MLflow answers that the thing does not exist."""
        with self._service(what):
            try:
                return call()
            except Exception as exc:  # noqa: BLE001
                if self._not_found(exc):
                    return None
                raise

    @staticmethod
    def _not_found(exc: BaseException) -> bool:
        return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")

    # -- experiments and runs ----------------------------------------------------------------------
    def experiment_id(self, name: str, *, create: bool, artifact_location: str | None = None) -> str | None:
        with self._service(f"look up experiment {name!r}"):
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    raise UsageError(
                        f"experiment {name!r} is deleted in {redact(self.tracking_uri)}",
                        hint="restore it (mlflow experiments restore) or choose another name",
                    )
                return exp.experiment_id
            if not create:
                return None
            try:
                return self.client.create_experiment(name, artifact_location=artifact_location)
            except Exception as exc:  # noqa: BLE001
                # Parallel jobs (fan-out candidates) race to create it: the loser uses the winner's.
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
                existing = self.client.get_experiment_by_name(name)
                if existing is None:
                    raise
                return existing.experiment_id

    def start_run(self, experiment_id: str, *, run_name: str, tags: Mapping[str, str]) -> str:
        with self._service("create a run"):
            run = self.client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
            return run.info.run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        if not metrics:
            return
        from mlflow.entities import Metric

        now = now_ms()
        batch = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
        with self._service("log metrics"):
            for start in range(0, len(batch), 1000):
                self.client.log_batch(run_id, metrics=batch[start : start + 1000])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        with self._service("set run tags"):
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        with self._service("upload an artifact"):
            self.client.log_artifact(run_id, str(path), artifact_path)

    def read_artifact(self, run_id: str, artifact: str, dst: Path) -> bytes | None:
        """The bytes of a run's artifact, or None when it does not exist."""
        with self._service(f"download {artifact} of run {run_id}"):
            try:
                local = self.client.download_artifacts(run_id, artifact, str(dst))
            except Exception as exc:  # noqa: BLE001
                if self._not_found(exc) or isinstance(exc, (OSError, FileNotFoundError)) or "No such file" in str(exc):
                    return None
                raise
        return Path(local).read_bytes()


    def end_run(self, run_id: str, status: str) -> None:
        with self._service("finish the run"):
            self.client.set_terminated(run_id, status=status)

    def get_run(self, run_id: str) -> RunSnapshot | None:
        run = self._or_none(f"read run {run_id}", lambda: self.client.get_run(run_id))
        return _snapshot(run) if run else None

    def search_runs(self, experiment_id: str, *, tags: Mapping[str, str], limit: int = SEARCH_WINDOW,
                    since_ms: int | None = None) -> list[RunSnapshot]:
        """Newest FINISHED runs with these tags (bounded; started at ``since_ms`` or later)."""
        with self._service("search runs"):
            runs = self.client.search_runs(
                [experiment_id], filter_string=finished_with_tags(tags, since_ms),
                order_by=["attributes.start_time DESC"], max_results=limit,
            )
        return [_snapshot(run) for run in runs]

    # -- registry ----------------------------------------------------------------------------------
    def run_for_alias(self, model: str, alias: str) -> tuple[RunSnapshot, str] | None:
        """The run behind ``models:/model@alias`` and the version number, or None."""
        version = self.alias_version(model, alias)
        run = self.get_run(version.run_id) if version and version.run_id else None
        return (run, version.version) if run else None

    def run_for_version(self, model: str, version: str) -> RunSnapshot | None:
        found = self.version(model, version)
        return self.get_run(found.run_id) if found and found.run_id else None

    def register(self, run_id: str, model: str, *, artifact_path: str = "model", tags: Mapping[str, str] | None = None) -> str:
        """Register the run's logged model as a new version of ``model``; returns the version."""
        with self._service(f"register a version of {model!r}"):
            try:
                self.client.get_registered_model(model)
            except Exception as exc:  # noqa: BLE001
                if not self._not_found(exc):
                    raise
                try:
                    self.client.create_registered_model(model)
                except Exception as race:  # noqa: BLE001 - created meanwhile by a parallel job
                    if getattr(race, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                        raise
            source, model_id = self._model_source(run_id, artifact_path)
            mv = self.client.create_model_version(
                model, source, run_id=run_id, tags=dict(tags or {}), model_id=model_id
            )
            return str(mv.version)

    def has_model(self, run_id: str, artifact_path: str) -> bool:
        """Whether the run logged a model named ``artifact_path`` (a LoggedModel, or files under that path)."""
        with self._service(f"look for the model of run {run_id}"):
            _, model_id = self._model_source(run_id, artifact_path)
            return model_id is not None or bool(self.client.list_artifacts(run_id, artifact_path))

    def _model_source(self, run_id: str, artifact_path: str) -> tuple[str, str | None]:
        """Where the run's model named ``artifact_path`` lives, and its LoggedModel id (MLflow 3)."""
        run = self.client.get_run(run_id)
        models = self.client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{quote_value(run_id)}'",
            max_results=50,
        )
        for logged in models:
            if logged.name == artifact_path:
                return logged.artifact_location, logged.model_id
        return f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}", None

    def set_alias(self, model: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version``. MLflow's SQL store reads, then inserts: two deploy jobs setting
        the same new alias at once make one of them fail on the alias table's key; setting it again then
        updates the row the other inserted."""
        for attempt in range(ALIAS_ATTEMPTS):
            with self._service(f"set alias {alias!r} on {model!r}"):
                try:
                    self.client.set_registered_model_alias(model, alias, version)
                    return
                except Exception as exc:  # noqa: BLE001 - only the lost insert race is retried
                    if attempt + 1 == ALIAS_ATTEMPTS or not _lost_insert_race(exc):
                        raise


def _lost_insert_race(exc: BaseException) -> bool:
    """A unique-key violation of a concurrent insert, as PostgreSQL, MySQL and SQLite word it (through the
    server's BAD_REQUEST, or a direct database store's exception)."""
    text = str(exc)
    return any(marker in text for marker in ("UniqueViolation", "duplicate key value", "Duplicate entry", "UNIQUE constraint failed"))


def _snapshot(run) -> RunSnapshot:
    return RunSnapshot(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        start_time=run.info.start_time,
        run_name=run.info.run_name,
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
    )



"""A lightweight MLflow tracking client over the REST API, for ``http(s)://`` tracking servers.

Importing MLflow costs about two seconds; the PR check against a shared server needs a dozen REST
calls. This client speaks MLflow's REST API 2.0 with ``requests`` only, so the overhead mlflow-ci
adds around training stays a fraction of a second. It honours MLflow's auth and retry variables
(``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, ``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_INSECURE_TLS``,
``MLFLOW_TRACKING_SERVER_CERT_PATH``, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``).
Registry writes (promote, rollback) still go through MLflow's own client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

from mlflow_ci.errors import ServiceError, UsageError
from mlflow_ci.tracking.base import (
    SEARCH_WINDOW,
    RunSnapshot,
    SearchMixin,
    finished_with_tags,
    first_line,
    now_ms,
    redact,
    validated_run_of,
)


class MlflowApiError(Exception):
    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


def _session(env: Mapping[str, str]):
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retries = int(env.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5") or 0)
    session = requests.Session()
    retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=1.0,
                  backoff_max=60, status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None,
                  raise_on_status=False)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    if env.get("MLFLOW_TRACKING_TOKEN"):
        session.headers["Authorization"] = f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"
    elif env.get("MLFLOW_TRACKING_USERNAME") and env.get("MLFLOW_TRACKING_PASSWORD"):
        session.auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    if env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        session.verify = False
    elif env.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        session.verify = env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    return session


def _proto_double(value: float) -> float | str:
    """Protobuf's JSON form of a double: NaN and infinities are the strings MLflow's own client sends."""
    value = float(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _pairs(items: Any) -> dict[str, Any]:
    return {item["key"]: item.get("value") for item in items or [] if isinstance(item, dict) and "key" in item}


def _snapshot(run: dict) -> RunSnapshot:
    info, data = run.get("info", {}), run.get("data", {})
    return RunSnapshot(
        run_id=info["run_id"],
        experiment_id=str(info.get("experiment_id")),
        status=info.get("status", ""),
        start_time=int(info["start_time"]) if info.get("start_time") is not None else None,
        run_name=info.get("run_name"),
        metrics={k: float(v) for k, v in _pairs(data.get("metrics")).items()},
        params={k: str(v) for k, v in _pairs(data.get("params")).items()},
        tags={k: str(v) for k, v in _pairs(data.get("tags")).items()},
    )


class RestTracker(SearchMixin):
    """The subset of :class:`mlflow_ci.tracking.MlflowTracker` the PR check needs, over REST."""
    def __init__(self, tracking_uri: str, env: Mapping[str, str], *, session=None) -> None:
        self.tracking_uri = tracking_uri
        self.base = tracking_uri.rstrip("/")
        self.session = session or _session(env)
        self.timeout = float(env.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120") or 120)
        self._artifact_uris: dict[str, str] = {}

    # -- transport ---------------------------------------------------------------------------------
    def _call(self, method: str, endpoint: str, what: str, *, params=None, body=None, data=None, path=None, raw=False):
        import requests

        url = path or f"{self.base}/api/2.0/mlflow/{endpoint}"
        try:
            response = self.session.request(method, url, params=params, json=body, data=data, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServiceError(
                f"could not {what} at {redact(self.tracking_uri)}: {first_line(exc)}",
                hint="check that the tracking server is up and MLFLOW_TRACKING_URI / credentials are right, then re-run",
            ) from None
        if response.status_code < 400:
            if raw:
                return response.content
            return response.json() if response.content and "json" in response.headers.get("content-type", "") else {}
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        code = payload.get("error_code", "") if isinstance(payload, dict) else ""
        message = payload.get("message", response.text[:200]) if isinstance(payload, dict) else response.text[:200]
        if response.status_code in (401, 403):
            raise ServiceError(
                f"the tracking server refused to {what} ({response.status_code} {message})",
                hint="set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN",
            )
        if response.status_code >= 500:
            raise ServiceError(f"could not {what} at {redact(self.tracking_uri)}: HTTP {response.status_code} {message}")
        raise MlflowApiError(response.status_code, code, message)

    @staticmethod
    def _missing(exc: MlflowApiError) -> bool:
        return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or exc.status == 404

    # -- experiments and runs ----------------------------------------------------------------------
    def experiment_id(self, name: str, *, create: bool, artifact_location: str | None = None) -> str | None:
        try:
            exp = self._call("GET", "experiments/get-by-name", f"look up experiment {name!r}", params={"experiment_name": name})["experiment"]
            if exp.get("lifecycle_stage") == "deleted":
                raise UsageError(f"experiment {name!r} is deleted in {redact(self.tracking_uri)}",
                                 hint="restore it (mlflow experiments restore) or choose another name")
            return str(exp["experiment_id"])
        except MlflowApiError as exc:
            if not self._missing(exc):
                raise ServiceError(f"could not look up experiment {name!r}: {exc}") from None
        if not create:
            return None
        body = {"name": name, **({"artifact_location": artifact_location} if artifact_location else {})}
        try:
            return str(self._call("POST", "experiments/create", "create the experiment", body=body)["experiment_id"])
        except MlflowApiError as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # a parallel job created it first
                raise ServiceError(f"could not create experiment {name!r}: {exc}") from None
            return self.experiment_id(name, create=False)

    def start_run(self, experiment_id: str, *, run_name: str, tags: Mapping[str, str]) -> str:
        body = {"experiment_id": experiment_id, "run_name": run_name, "start_time": now_ms(),
                "tags": [{"key": k, "value": str(v)} for k, v in {**tags, "mlflow.runName": run_name}.items()]}
        info = self._call("POST", "runs/create", "create a run", body=body)["run"]["info"]
        self._artifact_uris[info["run_id"]] = info.get("artifact_uri", "")
        return info["run_id"]

    def log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        now = now_ms()
        items = [{"key": k, "value": _proto_double(v), "timestamp": now, "step": 0} for k, v in metrics.items()]
        for start in range(0, len(items), 1000):
            self._call("POST", "runs/log-batch", "log metrics", body={"run_id": run_id, "metrics": items[start:start + 1000]})

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self._call("POST", "runs/log-batch", "set run tags", body={"run_id": run_id, "tags": [{"key": k, "value": str(v)} for k, v in tags.items()]})

    def end_run(self, run_id: str, status: str) -> None:
        self._call("POST", "runs/update", "finish the run", body={"run_id": run_id, "status": status, "end_time": now_ms()})

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload through the server's artifact proxy (``mlflow-artifacts:``); other stores via MLflow."""
        uri = self._artifact_uris.get(run_id) or ""
        if not uri:
            got = self._call("GET", "runs/get", f"read run {run_id}", params={"run_id": run_id})
            uri = got["run"]["info"].get("artifact_uri", "")
        if uri.startswith("mlflow-artifacts:"):
            rel = uri.split(":", 1)[1].lstrip("/")
            sub = f"{quote(artifact_path.strip('/'))}/" if artifact_path else ""
            target = f"{self.base}/api/2.0/mlflow-artifacts/artifacts/{quote(rel)}/{sub}{quote(path.name)}"
            self._call("PUT", "", "upload an artifact", data=path.read_bytes(), path=target)
            return
        from mlflow_ci.tracking.mlflow_client import MlflowTracker  # direct-to-store artifact URIs need MLflow's clients

        MlflowTracker(self.tracking_uri).log_artifact(run_id, path, artifact_path)

    def read_artifact(self, run_id: str, artifact: str, dst: Path) -> bytes | None:
        """Through the server's artifact proxy (``mlflow-artifacts:``); other stores via MLflow."""
        uri = self._artifact_uris.get(run_id) or ""
        if not uri:
            got = self._call("GET", "runs/get", f"read run {run_id}", params={"run_id": run_id})
            uri = got["run"]["info"].get("artifact_uri", "")
        if not uri.startswith("mlflow-artifacts:"):
            from mlflow_ci.tracking.mlflow_client import MlflowTracker

            return MlflowTracker(self.tracking_uri).read_artifact(run_id, artifact, dst)
        rel = uri.split(":", 1)[1].lstrip("/")
        target = f"{self.base}/api/2.0/mlflow-artifacts/artifacts/{quote(rel)}/{quote(artifact)}"
        try:
            return self._call("GET", "", f"download {artifact} of run {run_id}", path=target, raw=True)
        except MlflowApiError as exc:
            if exc.status == 404:
                return None
            raise


    def get_run(self, run_id: str) -> RunSnapshot | None:
        got = self._get_or_none("runs/get", f"read run {run_id}", {"run_id": run_id})
        return _snapshot(got["run"]) if got else None

    def search_runs(self, experiment_id: str, *, tags: Mapping[str, str], limit: int = SEARCH_WINDOW,
                    since_ms: int | None = None) -> list[RunSnapshot]:
        body = {"experiment_ids": [experiment_id], "filter": finished_with_tags(tags, since_ms), "max_results": limit,
                "order_by": ["attributes.start_time DESC"]}
        return [_snapshot(run) for run in self._call("POST", "runs/search", "search runs", body=body).get("runs", [])]

    # -- registry (reads) --------------------------------------------------------------------------
    def _get_or_none(self, endpoint: str, what: str, params: dict) -> dict | None:
        """A GET whose "does not exist" answer is None rather than an error."""
        try:
            return self._call("GET", endpoint, what, params=params)
        except MlflowApiError as exc:
            if self._missing(exc) or exc.error_code == "INVALID_PARAMETER_VALUE":
                return None
            raise ServiceError(f"could not {what}: {exc}") from None

    def run_for_alias(self, model: str, alias: str) -> tuple[RunSnapshot, str] | None:
        got = self._get_or_none("registered-models/alias", f"read {model}@{alias}", {"name": model, "alias": alias})
        mv = got["model_version"] if got else {}
        run_id = _validated_run(mv)
        run = self.get_run(run_id) if run_id else None
        return (run, str(mv["version"])) if run else None

    def run_for_version(self, model: str, version: str) -> RunSnapshot | None:
        got = self._get_or_none("model-versions/get", f"read {model}/{version}", {"name": model, "version": version})
        run_id = _validated_run(got["model_version"] if got else {})
        return self.get_run(run_id) if run_id else None


def _validated_run(mv: dict) -> str | None:
    """The gated run a version (as the REST API gives it) stands for (:func:`validated_run_of`)."""
    tags = {t.get("key"): t.get("value") for t in mv.get("tags") or [] if isinstance(t, dict)}
    return validated_run_of(mv.get("run_id"), {k: v for k, v in tags.items() if isinstance(k, str) and isinstance(v, str)})

"""``train.engine: ray``: the training command as a job on a Ray cluster, through Ray's Jobs API.

The MLflow run exists before the job does; the job gets the project's files at this commit as its
working directory and, as its only environment, the run's MLflow variables (plus MLflow's own auth
variables, so it can log to the server), ``MLFLOW_CI_SEED`` when calibrating and ``train.env``. Its
logs stream into ``train.log`` and the terminal while mlflow-ci waits. ``train.timeout``, SIGTERM and
SIGINT (a newer push cancelling the check) stop the job, and mlflow-ci waits until the cluster says it
stopped before it exits. The cluster's address is ``RAY_ADDRESS`` (its dashboard, ``http://head:8265``,
as ``ray job submit`` reads it) and extra HTTP headers (a bearer token for a cluster behind a proxy)
come as a JSON object in ``MLFLOW_CI_RAY_HEADERS``: both from the workflow's secrets, never from the
configuration a pull request can edit.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Callable, Mapping, TextIO

from mlflow_ci.errors import ServiceError, TrainingError, UsageError
from mlflow_ci.process import Cancelled, cancellable

ADDRESS_VARIABLE = "RAY_ADDRESS"
HEADERS_VARIABLE = "MLFLOW_CI_RAY_HEADERS"
# MLflow's own variables the job needs to reach the tracking server as the check does
FORWARDED = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
             "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_CI_SEED")
POLL_SECONDS = 1.0
STOP_WAIT_SECONDS = 60.0  # how long a stopped job may take to say so
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
TAIL_LINES = 20


def store_problem(tracking_uri: str) -> str | None:
    """Why a job on the cluster could not log to this store (None: it can, as far as the URI tells)."""
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri:
        return (f"train.engine: the Ray job cannot reach this machine's store ({tracking_uri.split('?')[0]}); "
                "set MLFLOW_TRACKING_URI to a tracking server both reach (http(s)://, or a database URL)")
    return None


def job_environment(env: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The job's environment variables: ``extra`` (the run's MLflow variables, train.env) and the MLflow
    auth variables of this check; nothing else of the runner (its tokens stay here)."""
    return {**{k: env[k] for k in FORWARDED if env.get(k)}, **extra}


def client_for(env: Mapping[str, str]):
    """Ray's Jobs API client for the cluster the environment names."""
    address = env.get(ADDRESS_VARIABLE, "").strip()
    if not address:
        raise UsageError(f"train.engine: ray needs the cluster's Jobs API address in {ADDRESS_VARIABLE} "
                         "(e.g. http://ray-head:8265)", hint="docs/engines.md: how a workflow passes it")
    headers = None
    if env.get(HEADERS_VARIABLE):
        try:
            headers = json.loads(env[HEADERS_VARIABLE])
        except ValueError:
            headers = None
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise UsageError(f"{HEADERS_VARIABLE}: expected a JSON object of header names to strings")
    try:
        import logging

        from ray.job_submission import JobSubmissionClient

        logging.getLogger("ray").setLevel(logging.ERROR)  # the client's upload chatter is not the training's output
    except ImportError:
        raise UsageError("train.engine: ray needs Ray's job client: pip install 'mlflow-ci[ray]'") from None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError or requests' own
        raise ServiceError(f"Ray cluster at {address}: cannot reach its Jobs API ({type(exc).__name__}: {str(exc)[:160]})") from None


def run_job(command: str, workdir: Path, job_env: Mapping[str, str], rcfg, timeout: float, log_path: Path,
            stream: TextIO, env: Mapping[str, str], *, run_id: str,
            clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> tuple[int, bool, str]:
    """Submit ``command`` and wait for it; returns (0 or 1, whether it timed out, how the job ended)."""
    client = client_for(env)
    runtime_env: dict = {"working_dir": str(workdir), "env_vars": dict(job_env), "excludes": [".git", *rcfg.excludes]}
    if rcfg.pip:
        runtime_env["pip"] = list(rcfg.pip)
    job_id = f"mlflow-ci-{run_id[:12]}-{secrets.token_hex(4)}"
    resources = {key: value for key, value in (("entrypoint_num_cpus", rcfg.entrypoint_num_cpus),
                                               ("entrypoint_num_gpus", rcfg.entrypoint_num_gpus),
                                               ("entrypoint_memory", rcfg.entrypoint_memory)) if value is not None}
    if rcfg.entrypoint_resources:
        resources["entrypoint_resources"] = dict(rcfg.entrypoint_resources)
    with log_path.open("w", encoding="utf-8", errors="replace") as log, cancellable():
        try:  # a signal during the submission too: the job may exist already, so it is stopped
            _submit(client, command, job_id, runtime_env, run_id, resources)
            _say(stream, log, f"[mlflow-ci] training on Ray: job {job_id}\n")
            status = _wait(client, job_id, timeout, stream, log, clock, sleep)
        except Cancelled as cancelled:
            _say(stream, log, f"[mlflow-ci] {cancelled.signal_name}: stopping job {job_id}\n")
            ended = _stop(client, job_id, clock, sleep)
            raise TrainingError(f"the check was cancelled ({cancelled.signal_name}); Ray job {job_id} {ended.lower()}") from None
    if status is None:
        return 1, True, "STOPPED"
    if status == "SUCCEEDED":
        return 0, False, status
    info = _safe(lambda: client.get_job_info(job_id))
    message = getattr(info, "message", None) or ""
    reason = message.split(", last available logs", 1)[0].splitlines()[0][:200] if message.strip() else ""
    return 1, False, f"{status} ({reason})" if reason else status


def _submit(client, command: str, job_id: str, runtime_env: dict, run_id: str, resources: dict) -> None:
    try:
        client.submit_job(entrypoint=command, submission_id=job_id, runtime_env=runtime_env,
                          metadata={"mlflow_ci.run_id": run_id}, **resources)
    except Exception as exc:  # noqa: BLE001 - the cluster refused the job: its reason, one line
        raise ServiceError(f"Ray cluster: the training job was not accepted ({type(exc).__name__}: {_line(exc)})") from None


def _wait(client, job_id: str, timeout: float, stream: TextIO, log: TextIO, clock, sleep) -> str | None:
    """Stream the job's logs until it ends; its final status, or None when train.timeout stopped it."""
    deadline = clock() + timeout
    shown = 0
    while True:
        status = str(client.get_job_status(job_id)).rsplit(".", 1)[-1]
        shown = _show_new(client, job_id, shown, stream, log)
        if status in TERMINAL:
            return status
        if clock() >= deadline:
            _say(stream, log, f"[mlflow-ci] train.timeout ({timeout:g}s): stopping job {job_id}\n")
            _stop(client, job_id, clock, sleep)
            _show_new(client, job_id, shown, stream, log)
            return None
        sleep(POLL_SECONDS)


def _show_new(client, job_id: str, shown: int, stream: TextIO, log: TextIO) -> int:
    """Write the log text the job printed since ``shown`` characters; the new count."""
    text = _safe(lambda: client.get_job_logs(job_id)) or ""
    if len(text) > shown:
        _say(stream, log, text[shown:])
    return max(shown, len(text))


def _say(stream: TextIO, log: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()
    log.write(text)
    log.flush()


def _stop(client, job_id: str, clock, sleep) -> str:
    """Ask the cluster to stop the job and wait until it says it ended; how it ended."""
    _safe(lambda: client.stop_job(job_id))
    until = clock() + STOP_WAIT_SECONDS
    status = "UNKNOWN"
    while clock() < until:
        status = str(_safe(lambda: client.get_job_status(job_id))).rsplit(".", 1)[-1]
        if status in TERMINAL:
            return status
        sleep(0.5)
    return f"still {status} after {STOP_WAIT_SECONDS:g}s"


def tail(log_path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _safe(action):
    try:
        return action()
    except Exception:  # noqa: BLE001 - best effort while reporting or stopping
        return None


def _line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else "")[:200]

"""`mlflow-ci train`: run the user's training command inside an MLflow run that mlflow-ci created.

The run is created first; the command then runs with ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``
and ``MLFLOW_RUN_ID`` set, so ``mlflow.start_run()`` and autolog inside the script attach to it. Its
output streams live and is kept as the run's ``train.log`` artifact. A script that does not use MLflow
may write a flat JSON metrics file that mlflow-ci logs for it.
"""

from __future__ import annotations

import getpass
import json
import math
import posixpath
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci import __version__
from mlflow_ci import tracking as t
from mlflow_ci.config.models import Config
from mlflow_ci.errors import TrainingError, UsageError
from mlflow_ci.fingerprint import data_fingerprint, fingerprint
from mlflow_ci.gitctx import GitContext
from mlflow_ci.process import Cancelled, cancellable, run_logged


@dataclass(frozen=True)
class TrainResult:
    run: t.RunSnapshot
    cached: bool
    fingerprint: str | None
    seconds: float
    experiment_id: str
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "run_id": self.run.run_id,
            "experiment_id": self.experiment_id,
            "cached": self.cached,
            "fingerprint": self.fingerprint,
            "commit": self.run.commit,
            "seconds": round(self.seconds, 3),
        }


def run_tags(cfg: Config, ctx: GitContext, fp: str | None, env: Mapping[str, str]) -> dict[str, str]:
    tags = {
        t.TAG_SOURCE_NAME: cfg.train.command or f"MLproject entry point {cfg.train.entry_point}",
        t.TAG_SOURCE_TYPE: "JOB" if env.get("GITHUB_ACTIONS") == "true" else "LOCAL",
        t.TAG_VERSION: __version__,
    }
    optional = {
        t.TAG_COMMIT: ctx.commit,
        t.TAG_BRANCH: ctx.branch,
        t.TAG_REPO_URL: ctx.repo_url,
        t.TAG_PR: str(ctx.pr_number) if ctx.pr_number else None,
        t.TAG_HEAD_SHA: ctx.head_sha or ctx.commit,
        t.TAG_CI_RUN_URL: ctx.run_url,
        t.TAG_BASE_BRANCH: ctx.base_branch,
        t.TAG_FINGERPRINT: fp,
        t.TAG_USER: env.get("GITHUB_ACTOR") or _user(),
    }
    tags.update({k: v for k, v in optional.items() if v})
    return tags


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no passwd entry in some containers
        return None


def run_name(ctx: GitContext) -> str:
    short = (ctx.commit or "nocommit")[:7]
    if ctx.pr_number:
        return f"pr-{ctx.pr_number}@{short}"
    return f"{ctx.branch or 'detached'}@{short}"


def train(
    cfg: Config,
    tracker: t.MlflowTracker,
    ctx: GitContext,
    env: Mapping[str, str],
    *,
    out_dir: Path,
    use_cache: bool = True,
    require_gated: bool = False,
    stream: TextIO,
    candidate: str | None = None,
) -> TrainResult:
    """Train (or reuse a run with the same fingerprint) and return the finished run."""
    started = time.monotonic()
    experiment_id = tracker.experiment_id(cfg.experiment, create=True, artifact_location=artifact_location(cfg, tracker.tracking_uri))
    assert experiment_id is not None
    fp = fingerprint(cfg, exclude=_store_files(tracker.tracking_uri), candidate=candidate) if cfg.train.cached else None
    if fp and use_cache:
        reused = tracker.search(
            experiment_id,
            tags={t.TAG_FINGERPRINT: fp},
            skip_verdicts=("error",),
            require_tag=t.TAG_VERDICT if require_gated else None,
        )
        if reused is not None:
            return TrainResult(reused, True, fp, time.monotonic() - started, experiment_id)

    command = cfg.training_command()  # an MLproject entry point is read now, before a run exists
    if cfg.train.engine == "ray":
        from mlflow_ci.engines.ray_jobs import store_problem

        problem = store_problem(tracker.tracking_uri)
        if problem:
            raise UsageError(cfg.located(problem))
    tags = run_tags(cfg, ctx, fp, env)
    data = data_fingerprint(cfg, exclude=_store_files(tracker.tracking_uri))
    if data:
        tags[t.TAG_DATA_FINGERPRINT] = data
    if candidate:
        tags[t.TAG_CANDIDATE] = candidate
    name = run_name(ctx) + (f"/{candidate}" if candidate else "")
    run_id = tracker.start_run(experiment_id, run_name=name, tags=tags)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "train.log"
    workdir = cfg.resolve(cfg.train.workdir)
    job_env = {
        **dict(cfg.train.env),
        **({"MLFLOW_CI_CANDIDATE": candidate} if candidate else {}),
        **t.mlflow_env_for_run(tracker.tracking_uri, cfg.experiment, experiment_id, run_id),
    }
    try:
        code, timed_out, how = _run(cfg, command, workdir, env, job_env, log_path, stream, run_id)
        if timed_out:
            raise TrainingError(
                f"training {_what(cfg)} timed out after {cfg.train.timeout:g}s (train.timeout); run {run_id} marked FAILED",
                hint=f"raise train.timeout in {cfg.path.name} or make training faster; output is in {log_path}",
            )
        if code != 0:
            last = ray_jobs_tail(log_path) if cfg.train.engine == "ray" else ""
            raise TrainingError(
                f"training {_what(cfg)} {how or f'exited with code {code}'}; run {run_id} marked FAILED",
                hint=(f"the command was: {command} (in {workdir}); output is in {log_path}"
                      + (f"; its last lines:\n{last}" if last else "")),
            )
        if cfg.train.metrics_file:
            tracker.log_metrics(run_id, read_metrics_file(workdir / cfg.train.metrics_file, cfg.train.metrics_file))
    except BaseException:
        _safe(lambda: tracker.log_artifact(run_id, log_path))
        _safe(lambda: tracker.end_run(run_id, "FAILED"))
        raise
    tracker.log_artifact(run_id, log_path)
    tracker.set_tags(run_id, {t.TAG_TRAIN_SECONDS: f"{time.monotonic() - started:.3f}"})
    tracker.end_run(run_id, "FINISHED")
    run = tracker.get_run(run_id)
    assert run is not None
    notes = unseeded(tracker, experiment_id, run, fp) if fp else ()
    return TrainResult(run, False, fp, time.monotonic() - started, experiment_id, notes)


def _run(cfg: Config, command: str, workdir: Path, env: Mapping[str, str], job_env: dict[str, str], log_path: Path,
         stream: TextIO, run_id: str) -> tuple[int, bool, str | None]:
    """Run the training where train.engine says: (exit code, timed out, how it ended when not by a code)."""
    if cfg.train.engine == "ray":
        from mlflow_ci.engines import ray_jobs

        code, timed_out, how = ray_jobs.run_job(command, workdir, ray_jobs.job_environment(env, job_env), cfg.train.ray,
                                                cfg.train.timeout, log_path, stream, env, run_id=run_id)
        return code, timed_out, f"ended {how} on Ray" if code else None
    try:
        with cancellable():
            code, timed_out = run_logged(command, workdir, t.child_environment(env, job_env), cfg.train.timeout, log_path, stream)
    except Cancelled as cancelled:  # the command's processes were killed on the way out
        raise TrainingError(f"the check was cancelled ({cancelled.signal_name}); the training command was stopped") from None
    return code, timed_out, None


def _what(cfg: Config) -> str:
    return "job" if cfg.train.engine == "ray" else "command"


def ray_jobs_tail(log_path: Path) -> str:
    from mlflow_ci.engines.ray_jobs import tail

    return tail(log_path)


def unseeded(tracker, experiment_id: str, run: t.RunSnapshot, fp: str) -> tuple[str, ...]:
    """A note when an earlier training of exactly the same inputs logged different metrics: the training
    is not deterministic, so a retrain that changes nothing can pass or fail the gate by chance."""
    for other in tracker.search_runs(experiment_id, tags={t.TAG_FINGERPRINT: fp}, limit=5):
        if other.run_id == run.run_id:
            continue
        differ = sorted(k for k in set(run.metrics) & set(other.metrics)
                        if not k.startswith("eval.") and run.metrics[k] != other.metrics[k])
        if differ:
            name = differ[0]
            return (f"warning: two trainings of the same inputs disagree ({name} {run.metrics[name]:.6g} vs {other.metrics[name]:.6g} "
                    f"in run {other.run_id[:12]}): seed the training (e.g. from MLFLOW_CI_SEED) and calibrate the margins "
                    f"(mlflow-ci calibrate)",)
        return ()
    return ()


def artifact_location(cfg: Config, tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: the configured location (a relative path made absolute
    against the project root); with a local SQLite store and nothing configured, ``mlartifacts/`` beside
    the database, so the store is one self-contained folder (what ``mlflow-ci store save`` keeps)."""
    loc = cfg.artifact_location
    if loc and "://" not in loc:
        return cfg.resolve(loc).as_uri()
    database = t.sqlite_path(tracking_uri)
    if loc is None and database is not None:
        return (database.parent / "mlartifacts").resolve().as_uri()
    return loc


def _safe(action) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - best effort while already failing
        pass


def _store_files(uri: str) -> list[Path]:
    """The local store's own files, never part of a fingerprint even when a glob matches them."""
    path = t.sqlite_path(uri)
    return [path] if path else []


METRIC_NAME = re.compile(r"[/\w.\- :]{1,250}")


def valid_metric_name(name: str) -> bool:
    """MLflow's rule for metric names (POSIX): these characters, and the name is its own normal path."""
    if not METRIC_NAME.fullmatch(name):
        return False
    norm = posixpath.normpath(name)
    return norm == name and norm != "." and not norm.startswith(("..", "/"))


def read_metrics_file(path: Path, shown: str) -> dict[str, float]:
    """A flat JSON object {name: number}; anything else is a training error naming the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainingError(
            f"train.metrics_file {shown}: the training command did not write it ({path})"
        ) from None
    except UnicodeDecodeError as exc:
        raise TrainingError(f"{shown}: not UTF-8 text (byte {exc.start}): expected a JSON object {{\"metric\": number}}") from None
    except OSError as exc:
        raise TrainingError(f"{shown}: cannot read it ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrainingError(f"{shown}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except (RecursionError, ValueError) as exc:  # nesting beyond the parser's depth; ints of over 4,300 digits
        raise TrainingError(f"{shown}: not a flat JSON object ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(data, dict):
        raise TrainingError(f"{shown}: expected a JSON object {{\"metric\": number}}, got {type(data).__name__}")
    metrics: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TrainingError(f"{shown}: key {key[:40]!r}: expected a number, got {_brief(value)}")
        try:
            value = float(value)
        except OverflowError:
            raise TrainingError(f"{shown}: key {key[:40]!r}: the number does not fit a double ({str(value)[:20]}...)") from None
        if math.isinf(value):  # NaN is kept: MLflow stores it, and the gate fails it closed
            raise TrainingError(f"{shown}: key {key[:40]!r}: expected a finite number, got {value} "
                                "(MLflow would store it as the largest double, which no gate may read as a score)")
        if not valid_metric_name(key):
            raise TrainingError(
                f"{shown}: key {key[:40]!r}: expected a metric name of 1 to 250 letters, digits, spaces and _ - . / :"
                " that is not a path like '..', '/x' or 'a//b' (MLflow's rule)"
            )
        metrics[key] = value
    return metrics


def _brief(value) -> str:
    try:
        return json.dumps(value)[:60]
    except (RecursionError, ValueError):
        return type(value).__name__

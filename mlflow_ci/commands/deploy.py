"""Deploying a registered version (promote and rollback): the deploy hook, trusted (merged code), run on a
local copy of the version checked against the digest promote recorded; on any failure the aliases go back."""

from __future__ import annotations

import getpass
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from mlflow_ci.commands.verify import as_promoted
from mlflow_ci.errors import DeployError, MlflowCiError, NotValidatedError, UsageError
from mlflow_ci.process import run_logged
from mlflow_ci.provenance import model_digest
from mlflow_ci.tracking import VersionInfo, child_environment


def who(env) -> str:
    if env.get("GITHUB_ACTOR"):
        return env["GITHUB_ACTOR"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover
        return "unknown"


def stamp(clock: Callable[[], float]) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock()))


def restore_aliases(tracker, model: str, alias: str, prev_alias: str, current: VersionInfo | None, earlier: VersionInfo | None) -> None:
    if current is not None:
        tracker.set_alias(model, alias, current.version)
    else:
        tracker.delete_alias(model, alias)
    if earlier is not None:
        tracker.set_alias(model, prev_alias, earlier.version)
    else:
        tracker.delete_alias(model, prev_alias)


DEPLOY_COPY = "deploy-model"  # under the promote output folder: the deploy hook's local copy (MODEL_PATH)


def deploy_or_restore(s, tracker, version: VersionInfo, out_dir: Path, *, restore, clock, prompts=()) -> None:
    """The deploy hook for ``version``, given a local copy of it (``MODEL_PATH``) downloaded after the alias
    moved and checked against the digest promote recorded: bytes swapped in the store since promote
    verified them (also between verifying and registering) are never deployed: the aliases move back."""
    cfg = s.cfg
    what = f"{cfg.model}@{cfg.champion_alias} was moved back"

    def failed() -> None:
        if restore is not None:
            restore()
        tracker.set_version_tags(cfg.model, version.version, {"mlflow_ci.deploy_failed": stamp(clock)})

    local = _deploy_copy(tracker, version, out_dir / DEPLOY_COPY, on_failure=failed, what=what)
    model = {"MODEL_NAME": cfg.model, "MODEL_VERSION": version.version, "MODEL_URI": f"models:/{cfg.model}@{cfg.champion_alias}",
             "MODEL_PATH": str(local)}
    run_deploy(s, out_dir, model, prompts, on_failure=failed, what=what)
    tracker.set_version_tags(cfg.model, version.version, {"mlflow_ci.deployed": "true", "mlflow_ci.deployed_at": stamp(clock)})


def _deploy_copy(tracker, version: VersionInfo, into: Path, *, on_failure: Callable[[], None], what: str) -> Path:
    """``version`` downloaded into ``into`` (emptied first) and digested; NotValidatedError (after
    ``on_failure``) when promote recorded other bytes. A failed download also puts things back first."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    try:
        local = tracker.download_version(version.model, version.version, into)
        as_promoted(version, model_digest(local))
    except (NotValidatedError, UsageError) as exc:  # other bytes, or a tree the digest refuses (a link, a FIFO)
        on_failure()
        raise NotValidatedError(f"{exc.message}; not deployed, {what}", hint=exc.hint) from None
    except MlflowCiError:
        on_failure()
        raise
    return local


def run_deploy(s, out_dir: Path, model: dict, prompts, *, on_failure: Callable[[], None], what: str) -> None:
    """The deploy hook, trusted (merged code), with what it deploys in its environment; on failure
    ``on_failure`` puts things back and DeployError (exit 3) says what was moved back."""
    cfg = s.cfg
    env = child_environment(s.env, trusted=True, extra={
        **dict(cfg.deploy.env), **model,
        "MLFLOW_CI_PROMPTS": json.dumps({m.name: m.version for m in prompts}),
        "MLFLOW_TRACKING_URI": s.tracking_uri,
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "deploy.log"
    code, timed_out = run_logged(cfg.deploy.command, cfg.resolve(cfg.deploy.workdir), env, cfg.deploy.timeout, log, s.stream)
    if code == 0 and not timed_out:
        return
    on_failure()
    why = f"timed out after {cfg.deploy.timeout:g}s" if timed_out else f"exited with code {code}"
    raise DeployError(f"deploy hook {why}; {what}", hint=f"the command was: {cfg.deploy.command}; output is in {log}")

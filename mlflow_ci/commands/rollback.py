"""`mlflow-ci rollback`: move the champion alias back to the previous version (or ``--to VERSION``), with who
and why, deploy it, and mark the run moved away from so that it is never a baseline again nor promoted again
without ``promote --force`` (docs/promote.md)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlflow_ci.commands.deploy import deploy_or_restore, restore_aliases, run_deploy, stamp, who
from mlflow_ci.commands.prompts import PromptMove, restore_prompts, rollback_prompts
from mlflow_ci.commands.verify import TAG_DIGEST, check_version
from mlflow_ci.errors import UsageError
from mlflow_ci.tracking import TAG_ROLLED_BACK




@dataclass(frozen=True)
class RollbackResult:
    model: str
    alias: str
    from_version: str
    to_version: str
    deployed: bool
    prompts: tuple[PromptMove, ...] = ()


def rollback(s, *, to: str | None, reason: str | None, out_dir: Path, deploy: bool = True, clock: Callable[[], float] = time.time) -> RollbackResult:
    cfg = s.cfg
    tracker = s.registry()
    alias, prev_alias = cfg.champion_alias, cfg.promote.previous_alias
    current = tracker.alias_version(cfg.model, alias)
    if current is None and cfg.genai is not None and cfg.genai.prompts:
        return _rollback_prompts_only(s, tracker, out_dir=out_dir, deploy=deploy)
    if current is None:
        raise UsageError(f"rollback: {cfg.model}@{alias} does not exist; nothing to roll back")
    target = tracker.version(cfg.model, to) if to else tracker.alias_version(cfg.model, prev_alias)
    if target is None:
        what = f"version {to}" if to else f"{cfg.model}@{prev_alias}"
        raise UsageError(f"rollback: {what} does not exist; pass --to VERSION")
    if target.version == current.version:
        raise UsageError(f"rollback: {cfg.model}@{alias} is already version {current.version}")
    if target.tags.get(TAG_DIGEST):  # promote recorded the bytes it verified: roll back only to those bytes
        check_version(tracker, target)
    earlier = tracker.alias_version(cfg.model, prev_alias)
    by, when = who(s.env), stamp(clock)
    tracker.set_alias(cfg.model, alias, target.version)
    tracker.set_alias(cfg.model, prev_alias, current.version)
    tracker.set_version_tags(cfg.model, current.version, {
        "mlflow_ci.rolled_back_at": when, "mlflow_ci.rolled_back_by": by,
        "mlflow_ci.rolled_back_reason": reason or "", "mlflow_ci.rolled_back_to": target.version,
    })
    tracker.set_version_tags(cfg.model, target.version, {"mlflow_ci.restored_at": when, "mlflow_ci.restored_by": by})
    if current.run_id:  # the run is never a baseline again, nor promoted again without --force
        tracker.set_tags(current.run_id, {TAG_ROLLED_BACK: f"{when} by {by}" + (f": {reason}" if reason else "")})
    if target.run_id:
        restored = tracker.get_run(target.run_id)
        if restored is not None and restored.tags.get(TAG_ROLLED_BACK):
            tracker.set_tags(target.run_id, {TAG_ROLLED_BACK: ""})  # rolled back to: trusted again
    moves = rollback_prompts(cfg, tracker, target.tags)
    deployed = False
    if cfg.deploy.command and deploy:
        def restore() -> None:
            restore_aliases(tracker, cfg.model, alias, prev_alias, current, earlier)
            restore_prompts(cfg, tracker, moves)

        deploy_or_restore(s, tracker, target, out_dir, restore=restore, clock=clock, prompts=moves)
        deployed = True
    return RollbackResult(cfg.model, alias, current.version, target.version, deployed, tuple(moves))


def _rollback_prompts_only(s, tracker, *, out_dir: Path, deploy: bool) -> RollbackResult:
    """A GenAI app without a registered model: each prompt back to its previous alias."""
    cfg = s.cfg
    moves = rollback_prompts(cfg, tracker, {})
    if not any(m.action == "promoted" for m in moves):
        raise UsageError(f"rollback: no prompt has a @{cfg.promote.previous_alias} version to go back to; nothing to roll back")
    deployed = False
    if cfg.deploy.command and deploy:
        run_deploy(s, out_dir, {"MODEL_NAME": "", "MODEL_VERSION": "", "MODEL_URI": ""}, moves,
                    on_failure=lambda: restore_prompts(cfg, tracker, moves), what="the prompts' aliases were moved back")
        deployed = True
    return RollbackResult(cfg.model, cfg.champion_alias, "", "", deployed, tuple(moves))

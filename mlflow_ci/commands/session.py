"""What every command shares: the loaded config, the environment, the output stream, the tracking
clients and the git/GitHub context, built once per command (:class:`Session`), and the options the
command line may override (:class:`Options`)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TextIO

from mlflow_ci import gitctx
from mlflow_ci.config.models import Config
from mlflow_ci.github import event as ghevent
from mlflow_ci.tracking import MlflowTracker, open_tracker, resolve_tracking_uri


@dataclass(frozen=True)
class Options:
    """What the command line may override."""
    out_dir: Path
    baseline: str | None = None
    base_branch: str | None = None
    pr_number: int | None = None
    run_id: str | None = None
    use_cache: bool = True
    candidate: str | None = None  # fan-out: one of several candidates trained for the same PR
    train_base: bool | None = None  # the base_trained baseline source: None decides by the runner
    defer_judging: bool = False  # genai: leave the judge's scorers to the trusted publish job (check --defer-judging)


@dataclass(frozen=True)
class Session:
    """Everything a command needs besides its options, built once."""
    cfg: Config
    env: Mapping[str, str]
    cwd: Path
    stream: TextIO
    tracking_uri: str
    clock: Callable[[], float] = field(default=time.time, compare=False)

    @functools.cached_property
    def code_env(self) -> Mapping[str, str]:
        """The environment for the project's own code (training, the GenAI app): without the variable that
        holds the judge's key, which only mlflow-ci's judge reads (and hands to MLflow's scorers through its
        loopback proxy); :func:`~mlflow_ci.tracking.child_environment` withholds the workflow's credentials."""
        g = self.cfg.genai
        key = g.judge.key_env() if g is not None and g.judge is not None else None
        return {k: v for k, v in self.env.items() if k != key}

    @functools.cached_property
    def _tracker(self):
        return open_tracker(self.tracking_uri, self.env)

    @functools.cached_property
    def _registry(self) -> MlflowTracker:
        return MlflowTracker(self.tracking_uri)

    def tracker(self):
        """One client per command: REST for http(s) servers, sqlite3 for a local store, else MLflow's."""
        return self._tracker

    def registry(self) -> MlflowTracker:
        """MLflow's own client, for registry writes (promote, rollback) and loading models."""
        return self._registry

    @functools.cached_property
    def event(self) -> ghevent.EventContext:
        return ghevent.from_env(self.env)

    @functools.cached_property
    def _contexts(self) -> dict:
        return {}

    def context(self, opts: Options) -> gitctx.GitContext:
        """Git facts, refined by the GitHub event (PR head/base) and then by explicit options.

        Computed once per command and options (each costs a few git subprocesses).
        """
        key = (opts.base_branch, opts.pr_number)
        if key not in self._contexts:
            self._contexts[key] = self._detect_context(opts)
        return self._contexts[key]

    def _detect_context(self, opts: Options) -> gitctx.GitContext:
        default_base = self.cfg.baseline.branch or "main"
        ctx = gitctx.detect(self.cfg.root, self.env, default_base_branch=default_base)
        ev = self.event
        if ev.event_name in ghevent.PR_EVENTS:
            ctx = ctx.with_overrides(
                branch=ev.head_ref, base_branch=ev.base_ref, pr_number=ev.pr_number,
                head_sha=ev.head_sha, base_commit=ev.base_sha,
            )
        elif ev.event_name == "workflow_dispatch" or ev.event_name == "push":
            ctx = ctx.with_overrides(head_sha=ev.head_sha)
        ctx = ctx.with_overrides(base_branch=opts.base_branch, pr_number=opts.pr_number)
        if ctx.base_commit is None:
            ctx = ctx.with_overrides(base_commit=gitctx.merge_base(ctx, self.cfg.root))
        return ctx

    def config_path(self) -> str:
        """The config file relative to the repository root (for annotations), else its name."""
        root = gitctx.git(["rev-parse", "--show-toplevel"], self.cfg.root)
        try:
            return self.cfg.path.relative_to(Path(root).resolve()).as_posix() if root else self.cfg.path.name
        except ValueError:
            return self.cfg.path.name


def make_session(cfg: Config, env: Mapping[str, str], cwd: Path, stream: TextIO) -> Session:
    return Session(cfg, env, cwd, stream, resolve_tracking_uri(cfg.tracking_uri, env, cfg.root))

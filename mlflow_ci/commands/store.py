"""``mlflow-ci store save`` and ``store restore``: the project's local store across workflow runs.

The workflows move the folder these commands write and read with GitHub's Actions cache
(docs/tracking.md, "A store that survives the runner"); the commands themselves only copy, check,
relocate and prune, so they work the same on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow_ci import __version__
from mlflow_ci.commands.session import Options, Session
from mlflow_ci.github.actions import ActionsIO, Annotation
from mlflow_ci.tracking import local_store, sqlite_path
from mlflow_ci.tracking.sqlite import schema_revision

DEFAULT_KEEP = 20  # finished runs kept per branch, besides every run a model version points at


@dataclass(frozen=True)
class StoreOutcome:
    action: str  # saved | restored | nothing | rejected | kept | remote
    message: str
    pruned: int = 0


def _database(s: Session) -> Path | None:
    return sqlite_path(s.tracking_uri)


def save_store(s: Session, dest: Path, *, keep: int = DEFAULT_KEEP) -> StoreOutcome:
    """Prune the local store to ``keep`` runs per branch (plus the registered ones) and copy it to ``dest``."""
    database = _database(s)
    if database is None:
        return StoreOutcome("remote", f"the store is {s.tracking_uri}, not a local SQLite file: nothing to save")
    if not database.is_file():
        return StoreOutcome("nothing", f"there is no store at {database} yet: nothing to save")
    pruned = local_store.prune(s.tracking_uri, keep, s.env) if keep > 0 else 0
    ctx = s.context(Options(out_dir=dest))
    meta = local_store.StoreMeta(
        branch=ctx.branch, commit=ctx.head_sha or ctx.commit, saved_at=s.clock(),
        artifact_root=(database.parent / local_store.ARTIFACTS).resolve().as_uri(), revision=schema_revision(database),
        runs=local_store.count_runs(database), workflow_run=ctx.run_url,
    )
    local_store.save(database, dest, meta)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    return StoreOutcome("saved", f"saved the {meta.name()} to {dest}: {meta.runs} runs, "
                                 f"{size / 1e6:.1f} MB (pruned {pruned}; mlflow-ci {__version__})", pruned)


def restore_store(s: Session, src: Path, via: str | None = None) -> StoreOutcome:
    """Put a saved store in place; a store that is not sound is refused with a warning (exit 0): the check
    then trains the base commit instead."""
    database = _database(s)
    if database is None:
        return StoreOutcome("remote", f"the store is {s.tracking_uri}, not a local SQLite file: nothing to restore")
    restored = local_store.restore(src, database, via)
    if restored.status == "restored" and restored.meta is not None:
        return StoreOutcome("restored", f"restored the {restored.meta.describe(s.clock())} ({restored.meta.runs} runs) to {database}")
    if restored.status == "rejected":
        ActionsIO(s.env, s.stream).annotate(Annotation("warning", restored.reason + "; the base commit will be trained instead",
                                                       title="mlflow-ci store"))
    return StoreOutcome(restored.status, restored.reason)


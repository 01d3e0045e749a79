"""``mlflow-ci store save`` and ``store restore``: the project's local store across workflow runs; ``store reset``:
start over after exploring, without deleting the store.

The workflows move the folder these commands write and read with GitHub's Actions cache
(docs/tracking.md, "A store that survives the runner"); the commands themselves only copy, check,
relocate and prune, so they work the same on a laptop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mlflow_ci import __version__
from mlflow_ci.commands.session import Options, Session
from mlflow_ci.github.actions import ActionsIO, Annotation
from mlflow_ci.tracking import TAG_FINGERPRINT, TAG_FORGOTTEN, local_store, sqlite_path
from mlflow_ci.tracking.sqlite import schema_revision

DEFAULT_KEEP = 20  # finished runs kept per branch, besides every run a model version points at
FORGOTTEN_FINGERPRINT = "forgotten"  # what a reset writes over a run's fingerprint: no check matches it


@dataclass(frozen=True)
class StoreOutcome:
    action: str  # saved | restored | nothing | rejected | kept | remote | reset
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



RESET_LIMIT = 10_000  # runs of the experiment one reset looks at, newest first


def forgettable(s: Session) -> list:
    """The finished runs of the experiment a reset would take out of baselines and the run cache: all but the
    runs the registered model's champion and previous aliases stand for (promoted: they stay baselines)."""
    tracker = s.tracker()
    experiment_id = tracker.experiment_id(s.cfg.experiment, create=False)
    if experiment_id is None:
        return []
    kept = {found[0].run_id for alias in (s.cfg.champion_alias, s.cfg.promote.previous_alias)
            if s.cfg.model and (found := tracker.run_for_alias(s.cfg.model, alias))}
    runs = tracker.search_runs(experiment_id, tags={}, limit=RESET_LIMIT)
    return [run for run in runs if run.run_id not in kept and not run.tags.get(TAG_FORGOTTEN)]


def reset_store(s: Session, runs: list, *, who: str) -> StoreOutcome:
    """Forget ``runs`` (:func:`forgettable`): tagged ``mlflow_ci.forgotten`` — never a baseline again — and their
    fingerprint cleared, so no check reuses them. Nothing is deleted: the runs stay in the store to look at."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.clock()))
    tracker = s.tracker()
    for run in runs:
        tracker.set_tags(run.run_id, {TAG_FORGOTTEN: f"{stamp} by {who}", TAG_FINGERPRINT: FORGOTTEN_FINGERPRINT})
    return StoreOutcome("reset", f"forgot {len(runs)} runs of {s.cfg.experiment}: they are no longer baselines nor "
                                 "reused by the run cache (still in the store; the champion's runs are kept)")

"""Baseline resolution and the metric / parameter diff.

Baseline, first that exists (PRODUCT.md): explicit ``--baseline`` (run id or ``models:/name@alias`` or
``models:/name/version``) → registry alias (default ``champion``) → latest finished run of the
experiment at the PR's base commit → latest finished run on the base branch → the base commit trained
in this job (where the caller allows it: a CI runner whose store did not survive) → none.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Protocol

from mlflow_ci.config.models import Config
from mlflow_ci.errors import UsageError
from mlflow_ci.gate import rule_direction
from mlflow_ci.gitctx import GitContext
from mlflow_ci.tracking import (
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_FORGOTTEN,
    TAG_GATE_RULES,
    TAG_ROLLED_BACK,
    TAG_VERDICT,
    RunSnapshot,
)


class Tracker(Protocol):
    def get_run(self, run_id: str) -> RunSnapshot | None: ...

    def run_for_alias(self, model: str, alias: str) -> tuple[RunSnapshot, str] | None: ...

    def run_for_version(self, model: str, version: str) -> RunSnapshot | None: ...

    def search(self, experiment_id: str, *, tags, exclude_run_id=None, skip_verdicts=(), require_tag=None) -> RunSnapshot | None: ...

    def search_runs(self, experiment_id: str, *, tags, limit: int = ..., since_ms: int | None = None) -> list[RunSnapshot]: ...


# Trains the base commit when nothing else gave a baseline; says in the Search why it could not.
TrainBase = Callable[["Search"], "Baseline | None"]


@dataclass(frozen=True)
class Baseline:
    run: RunSnapshot
    source: str  # "explicit:<ref>", "alias:champion", "base_commit:<sha>", "base_branch:<name>"
    description: str
    origin: str | None = None  # where the run was found: the tracking server, a restored store, this job
    age_seconds: float | None = None  # how long ago the run started


@dataclass(frozen=True)
class MetricDiff:
    name: str
    baseline: float | None
    candidate: float | None
    delta: float | None
    delta_pct: float | None
    direction: str
    status: str  # better | worse | same | new | removed | invalid
    ci_low: float | None = None  # paired bootstrap interval of the delta (evaluate: metrics)
    ci_high: float | None = None


@dataclass(frozen=True)
class ParamDiff:
    name: str
    baseline: str | None
    candidate: str | None
    status: str  # changed | added | removed


@dataclass(frozen=True)
class Point:
    """One gated run of the base branch, for the trend: its gated metrics."""
    run_id: str
    commit: str | None
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class Trend:
    """The last gated runs of the base branch, oldest first: the noise a change is measured against."""
    branch: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Comparison:
    candidate: RunSnapshot
    baseline: Baseline | None
    metrics: tuple[MetricDiff, ...]
    params: tuple[ParamDiff, ...]
    notes: tuple[str, ...] = ()  # why earlier baseline sources were passed over
    trend: Trend | None = None
    expected: tuple[str, ...] = ()  # with no baseline: why one should exist (the check then fails closed)


_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def resolve_explicit(tracker: Tracker, ref: str) -> Baseline:
    """``--baseline``: a run id, ``models:/name@alias`` or ``models:/name/version``; must exist."""
    match = _MODEL_URI.match(ref)
    if match:
        name = match.group("name")
        if match.group("alias"):
            found = tracker.run_for_alias(name, match.group("alias"))
            run = found[0] if found else None
        else:
            run = tracker.run_for_version(name, match.group("version"))
        if run is None:
            raise UsageError(f"--baseline {ref}: no such registered model version (or it has no run)")
        return Baseline(run, f"explicit:{ref}", f"explicit baseline {ref} (run {run.run_id})")
    if not re.fullmatch(r"[0-9a-zA-Z_-]{8,64}", ref):
        raise UsageError(f"--baseline {ref!r}: expected a run id, models:/NAME@ALIAS or models:/NAME/VERSION")
    run = tracker.get_run(ref)
    if run is None:
        raise UsageError(f"--baseline {ref}: no such run in the tracking store")
    return Baseline(run, f"explicit:{ref}", f"explicit baseline run {ref}")


@dataclass
class Search:
    """What the walk over the baseline sources saw: why each source was passed over (``notes``), and the
    evidence that a baseline should exist (``expected``): a registered champion, a run that went through a
    real gate at the base commit or on the base branch, a base commit whose configuration could be trained.
    A check that finds no usable baseline despite such evidence fails closed (``baseline.required``); one
    with no evidence at all is a project's first model, whose drop rules are simply not evaluated."""
    notes: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)


def resolve_baseline(
    tracker: Tracker,
    cfg: Config,
    ctx: GitContext,
    *,
    experiment_id: str,
    candidate_run_id: str,
    explicit: str | None = None,
    train_base: "TrainBase | None" = None,
) -> tuple[Baseline | None, Search]:
    """Walk the baseline sources in order; return the first found and what the walk saw.

    ``train_base`` serves the ``base_trained`` source; without it that source is not tried here.
    """
    seen = Search()
    if explicit:
        return resolve_explicit(tracker, explicit), seen
    for source in cfg.baseline.sources:
        if source == "base_trained":
            found = train_base(seen) if train_base is not None else None
        else:
            found = _try_source(source, tracker, cfg, ctx, experiment_id, candidate_run_id, seen)
        if found is not None:
            return found, seen
    if seen.expected:
        seen.notes.append("no usable baseline: " + "; ".join(seen.expected))
    else:
        seen.notes.append("no baseline found (a first model: nothing was ever gated for it): rules that need one are not evaluated")
    return None, seen


UNCHANGED = "the candidate is this run itself: no input of the model changed since it was gated"


def _try_source(source, tracker, cfg, ctx, experiment_id, candidate_run_id, seen: Search) -> Baseline | None:
    notes = seen.notes
    if source == "alias":
        alias = cfg.baseline.alias
        found = tracker.run_for_alias(cfg.model, alias)
        if found is None:
            notes.append(f"models:/{cfg.model}@{alias} does not exist")
            return None
        run, version = found
        where = f"models:/{cfg.model}@{alias} (version {version}, run {run.run_id[:12]})"
        refused = baseline_refusal(run)
        if refused is not None:
            notes.append(f"{where} is not a baseline: {refused}")
            seen.expected.append(f"{where}: {refused}")
            return None
        return Baseline(run, f"alias:{alias}", f"registered model {cfg.model} version {version} (@{alias})" + _same(run, candidate_run_id))
    if source == "base_commit":
        if not ctx.base_commit:
            notes.append("base commit unknown (no base branch or no merge-base)")
            return None
        where = f"at base commit {ctx.base_commit[:12]}"
        run = gated_run(tracker.search_runs(experiment_id, tags={TAG_COMMIT: ctx.base_commit}), candidate_run_id, seen, where)
        if run is None:
            return None
        return Baseline(run, f"base_commit:{ctx.base_commit}",
                        f"latest gated run at base commit {ctx.base_commit[:12]}" + _same(run, candidate_run_id))
    branch = ctx.base_branch
    if not branch:
        notes.append("base branch unknown")
        return None
    run = gated_run(tracker.search_runs(experiment_id, tags={TAG_BRANCH: branch}), candidate_run_id, seen, f"on base branch {branch}")
    if run is None:
        return None
    return Baseline(run, f"base_branch:{branch}", f"latest gated run on base branch {branch}" + _same(run, candidate_run_id))


def _same(run: RunSnapshot, candidate_run_id: str) -> str:
    """What a baseline's description adds when the baseline is the candidate's own run."""
    return f"; {UNCHANGED}" if run.run_id == candidate_run_id else ""


PASSED_OVER = {None: "no verdict", "fail": "gate failed", "error": "check failed"}
EXPLORATORY = "gated with no rule (an exploratory run: gate: {})"
FORGOTTEN = "forgotten by mlflow-ci store reset"


def baseline_refusal(run: RunSnapshot, *, rolled_back: bool = True) -> str | None:
    """Why ``run`` may not be a baseline, None when it may: the one rule every resolver and promote use.

    A baseline is a finished run gated with at least one rule that passed (pass or warn), and never rolled
    back. Runs gated before mlflow-ci recorded the rule count carry no count; they keep counting as gated.
    ``rolled_back=False`` leaves the rollback to the caller (promote says more about it).
    """
    if run.status != "FINISHED":
        return f"the run is {run.status.lower()}"
    verdict = run.tags.get(TAG_VERDICT)
    if verdict not in ("pass", "warn"):
        return PASSED_OVER.get(verdict, f"verdict {verdict}")
    if run.tags.get(TAG_GATE_RULES) == "0":
        return EXPLORATORY
    if rolled_back and run.tags.get(TAG_ROLLED_BACK):
        return f"rolled back ({run.tags[TAG_ROLLED_BACK]})"
    if run.tags.get(TAG_FORGOTTEN):
        return f"{FORGOTTEN} ({run.tags[TAG_FORGOTTEN]})"
    return None


def gated_run(runs, candidate_run_id: str, seen: Search, where: str) -> RunSnapshot | None:
    """The newest run that may be a baseline (:func:`baseline_refusal`); the runs passed over, and why, in
    ``seen.notes``. A passed-over run that went through a real gate (passed and rolled back since, or failed;
    not a check that errored before deciding) is evidence that a baseline should exist.

    The candidate itself is found only when it was gated before (a reused run: nothing changed).
    """
    skipped = []
    for run in runs:
        if run.status != "FINISHED":
            continue
        refused = baseline_refusal(run)
        if refused is None:
            if skipped:
                seen.notes.append(_passed_over(where, skipped))
            return run
        if run.run_id == candidate_run_id:
            continue
        skipped.append((run.run_id, refused))
        gated = (run.tags.get(TAG_VERDICT) in ("pass", "warn", "fail") and refused != EXPLORATORY
                 and not run.tags.get(TAG_FORGOTTEN))  # a forgotten run is no evidence that a baseline should exist
        if gated and not any(where in e for e in seen.expected):
            seen.expected.append(f"runs {where} went through the gate but none may be a baseline")
    seen.notes.append(_passed_over(where, skipped) if skipped else f"no finished run {where}")
    return None


def _passed_over(where: str, skipped: list[tuple[str, str]]) -> str:
    shown = ", ".join(f"{run_id[:12]} ({why})" for run_id, why in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return f"passed over {where}: runs {shown}{more}; only runs gated with at least one rule that passed, never rolled back, are baselines"


def trend(tracker: Tracker, cfg: Config, ctx: GitContext, candidate: RunSnapshot) -> Trend | None:
    """The last ``report.trend`` gated runs of the base branch (the pushed branch on a push), oldest
    first, with the values of the gated metrics; None when the trend is turned off or the branch unknown."""
    branch = ctx.base_branch or ctx.branch
    if not cfg.report.trend or not branch:
        return None
    gated = [rule.metric for rule in cfg.gate]
    runs = recent_runs(tracker, candidate, {TAG_BRANCH: branch}, limit=3 * cfg.report.trend + 1)
    points = [Point(run.run_id, run.commit, {name: run.metrics[name] for name in gated if _finite(run.metrics.get(name))})
              for run in runs
              if run.run_id != candidate.run_id and baseline_refusal(run) is None]
    return Trend(branch, tuple(reversed(points[: cfg.report.trend])))


# How far back the trend looks, widening until it has enough runs: a stock MLflow schema has no index that
# serves "newest runs with this tag" (the search sorts every run of the branch), so a recent window keeps
# the query's cost to the runs in it rather than to the experiment's whole history.
TREND_WINDOWS_DAYS = (14, 112, 896, None)
DAY_MS = 86_400_000


def recent_runs(tracker: Tracker, candidate: RunSnapshot, tags: dict[str, str], *, limit: int) -> list:
    """The newest ``limit`` finished runs with ``tags`` (failed and ungated runs are skipped by the caller,
    hence the limit a few times the points wanted), searched in widening windows before the candidate."""
    anchor = candidate.start_time
    for days in TREND_WINDOWS_DAYS if anchor else (None,):
        since = None if days is None else anchor - days * DAY_MS
        runs = tracker.search_runs(candidate.experiment_id, tags=tags, limit=limit, since_ms=since)
        if len(runs) >= limit:
            break
    return runs


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def diff_metrics(cfg: Config, candidate: dict, baseline: dict | None) -> tuple[MetricDiff, ...]:
    """One row per metric: gated metrics first, in config order, then the rest alphabetically."""
    rules = {r.metric: r for r in cfg.gate}
    names = list(rules)
    others = sorted((set(candidate) | set(baseline or {})) - set(rules))
    rows = []
    for name in names + others:
        direction = rule_direction(rules.get(name), name)
        base = (baseline or {}).get(name)
        rows.append(_metric_row(name, candidate.get(name), base, direction, baseline is not None))
    return tuple(rows)


def diff_with_intervals(cfg: Config, candidate: dict, baseline: dict | None, intervals: Mapping) -> tuple[MetricDiff, ...]:
    """:func:`diff_metrics`, each metric with a paired interval showing it; a metric a significance rule
    decides shows the interval whose ends are that rule's one-sided bounds (``Interval.for_decision``)."""
    decided = {rule.metric: rule.significance for rule in cfg.gate if rule.significance}
    rows = []
    for row in diff_metrics(cfg, candidate, baseline):
        interval = intervals.get(row.name)
        if interval is not None and row.name in decided:
            interval = interval.for_decision(decided[row.name])
        rows.append(replace(row, ci_low=interval.low, ci_high=interval.high) if interval is not None else row)
    return tuple(rows)


def _metric_row(name, cand, base, direction, have_baseline) -> MetricDiff:
    if (cand is not None and not _finite(cand)) or (base is not None and not _finite(base)):
        return MetricDiff(name, base, cand, None, None, direction, "invalid")
    if cand is None:
        return MetricDiff(name, base, None, None, None, direction, "removed" if base is not None else "invalid")
    if base is None:
        return MetricDiff(name, None, cand, None, None, direction, "new" if have_baseline else "n/a")
    delta = cand - base
    pct = (delta / abs(base) * 100) if base != 0 else None
    if delta == 0:
        status = "same"
    else:
        status = "better" if (delta > 0) == (direction == "higher") else "worse"
    return MetricDiff(name, base, cand, delta, pct, direction, status)


def diff_params(candidate: dict, baseline: dict | None) -> tuple[ParamDiff, ...]:
    if baseline is None:
        return ()
    rows = []
    for name in sorted(set(candidate) | set(baseline)):
        old, new = baseline.get(name), candidate.get(name)
        if old == new:
            continue
        status = "added" if old is None else "removed" if new is None else "changed"
        rows.append(ParamDiff(name, old, new, status))
    return tuple(rows)


def compare(
    tracker: Tracker,
    cfg: Config,
    ctx: GitContext,
    candidate: RunSnapshot,
    *,
    explicit_baseline: str | None = None,
    train_base: TrainBase | None = None,
) -> Comparison:
    baseline, seen = resolve_baseline(
        tracker,
        cfg,
        ctx,
        experiment_id=candidate.experiment_id,
        candidate_run_id=candidate.run_id,
        explicit=explicit_baseline,
        train_base=train_base,
    )
    base_metrics = dict(baseline.run.metrics) if baseline else None
    base_params = dict(baseline.run.params) if baseline else None
    return Comparison(
        candidate=candidate,
        baseline=baseline,
        metrics=diff_metrics(cfg, dict(candidate.metrics), base_metrics),
        params=diff_params(dict(candidate.params), base_params),
        notes=tuple(seen.notes),
        trend=trend(tracker, cfg, ctx, candidate),
        expected=tuple(seen.expected) if baseline is None else (),
    )

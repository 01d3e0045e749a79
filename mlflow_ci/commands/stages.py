"""The stages of the PR check, each a command of its own: ``train``, ``compare``, ``gate`` and
``report``. Each takes a :class:`~mlflow_ci.commands.session.Session` and returns a value; ``check``
(:mod:`.check`) chains them."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow_ci import compare as cmp
from mlflow_ci import report
from mlflow_ci.commands import base
from mlflow_ci.commands.session import Options, Session
from mlflow_ci.errors import UsageError
from mlflow_ci.gate import GateResult, evaluate, no_baseline
from mlflow_ci.result import Result, age
from mlflow_ci.tracking import TAG_DATA_FINGERPRINT, TAG_PR, MlflowTracker, RunSnapshot, local_store, sqlite_path
from mlflow_ci.train import TrainResult, train

TRAIN_STATE = "train.json"


@dataclass(frozen=True)
class CheckResult:
    verdict: str
    result: Result
    report_path: Path
    result_path: Path
    train: TrainResult | None


def do_train(s: Session, opts: Options, *, require_gated: bool = False) -> TrainResult:
    tracker = s.tracker()
    ctx = s.context(opts)
    result = train(
        s.cfg, tracker, ctx, s.code_env, out_dir=opts.out_dir, use_cache=opts.use_cache,
        require_gated=require_gated, stream=s.stream, candidate=opts.candidate,
    )
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    (opts.out_dir / TRAIN_STATE).write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
    return result


def candidate_run(s: Session, opts: Options, tracker: MlflowTracker) -> RunSnapshot:
    """The run named by --run, else the one the last `train` in this out dir produced."""
    run_id = opts.run_id
    if not run_id:
        state = opts.out_dir / TRAIN_STATE
        try:
            run_id = json.loads(state.read_text(encoding="utf-8"))["run_id"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UsageError(
                f"no candidate run: pass --run RUN_ID, or run 'mlflow-ci train' first (it writes {state})"
            ) from None
    run = tracker.get_run(run_id)
    if run is None:
        raise UsageError(f"run {run_id} does not exist in {s.tracking_uri}")
    return run


def do_compare(s: Session, opts: Options, tracker: MlflowTracker | None = None, run: RunSnapshot | None = None) -> cmp.Comparison:
    tracker = tracker or s.tracker()
    run = run or candidate_run(s, opts, tracker)
    comparison = cmp.compare(tracker, s.cfg, s.context(opts), run, explicit_baseline=opts.baseline,
                             train_base=base.trainer(s, opts))
    found = comparison.baseline
    if found is None:
        return comparison
    now = s.clock()
    seconds = max(0.0, now - found.run.start_time / 1000) if found.run.start_time else None
    found = replace(found, origin=baseline_origin(s, found), age_seconds=seconds)
    notes = [*comparison.notes]
    changed = data_changed(replace(comparison, baseline=found))
    if changed:
        notes.append(f"{changed}: the baseline's and the candidate's own training-logged metrics were computed on "
                     "different rows; rules comparing them are marked not comparable")
    limit = s.cfg.baseline.max_age
    if limit and seconds is not None and seconds > limit and found.run.run_id != run.run_id:
        notes.append(f"warning: the baseline run is {age(seconds).removesuffix(' ago')} old, older than baseline.max_age "
                     f"({age(limit).removesuffix(' ago')}): is the base branch still checked and promoted?")
    return replace(comparison, baseline=found, notes=tuple(notes))


def baseline_origin(s: Session, found: cmp.Baseline) -> str:
    """Where the baseline was found, for the report's first lines and the terminal: "the tracking server
    at …", "the restored store of main@abc saved 2 days ago (GitHub's Actions cache)", "trained in this job"."""
    if found.source.startswith("explicit:"):
        return "chosen with --baseline"
    if found.source.startswith("base_trained:"):
        return "trained in this job: no store could serve"
    database = sqlite_path(s.tracking_uri)
    if database is None:
        server = s.tracking_uri.startswith(("http://", "https://"))
        return f"the tracking server {redacted(s.tracking_uri)}" if server else f"the store {redacted(s.tracking_uri)}"
    meta = local_store.read_meta(database.parent)
    if meta is None:
        return f"the local store {database}"
    return f"the restored {meta.describe(s.clock())} ({meta.via or 'a saved folder'})"


def redacted(uri: str) -> str:
    """A tracking URI as a report may show it: a server's scheme and host (no credentials, path or query),
    any other store's location without its query."""
    scheme, sep, rest = uri.partition("://")
    if scheme in ("http", "https"):
        return f"{scheme}{sep}{rest.split('/', 1)[0].rsplit('@', 1)[-1]}"
    return uri.split("?", 1)[0]


def do_gate(s: Session, comparison: cmp.Comparison, intervals: dict | None = None, extra_rules: tuple = ()) -> GateResult:
    """The configured rules (plus ``extra_rules``, e.g. the per-slice ones) on a comparison."""
    baseline = dict(comparison.baseline.run.metrics) if comparison.baseline else None
    rules = s.cfg.gate + tuple(extra_rules)
    gate = evaluate(rules, dict(comparison.candidate.metrics), baseline, intervals)
    closed = no_baseline(rules, comparison.expected) if comparison.baseline is None and comparison.expected and s.cfg.baseline.required else None
    if closed:
        return GateResult((closed, *gate.checks))
    changed = data_changed(comparison)
    if changed:
        gate = gate.not_comparable(changed, inform=s.cfg.evaluate is not None and s.cfg.data_change == "inform")
    return gate


def data_changed(comparison: cmp.Comparison) -> str | None:
    """How the data the training read differs between baseline and candidate (their own metrics were then
    computed on different rows), or None when it is the same or unknown."""
    if comparison.baseline is None:
        return None
    base = comparison.baseline.run.tags.get(TAG_DATA_FINGERPRINT)
    cand = comparison.candidate.tags.get(TAG_DATA_FINGERPRINT)
    if not base or not cand or base == cand:
        return None
    return f"the training's data changed: {base.removeprefix('sha256:')[:12]} → {cand.removeprefix('sha256:')[:12]}"


def gate_from_result(s: Session, path: Path) -> GateResult:
    """Re-evaluate the gate on the metrics recorded in a result.json (no tracking store needed)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        candidate = _metrics(data["candidate"]["metrics"])
        baseline = _metrics(data["baseline"]["metrics"]) if data.get("baseline") else None
        failed_closed = baseline is None and any(c.get("rule") == "baseline_required" for c in data.get("checks") or ())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a usable result.json ({exc.__class__.__name__}: {exc})") from None
    gate = evaluate(s.cfg.gate, candidate, baseline)
    closed = no_baseline(s.cfg.gate, ("the check that wrote this result.json found none that may serve",)) if failed_closed else None
    return GateResult((closed, *gate.checks)) if closed and s.cfg.baseline.required else gate


def _metrics(raw) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise TypeError("metrics must be an object")
    return {str(k): float(v) for k, v in raw.items() if not isinstance(v, bool) and isinstance(v, (int, float, str))}


def do_report(
    s: Session,
    opts: Options,
    comparison: cmp.Comparison,
    gate: GateResult,
    *,
    cached: bool,
    fingerprint: str | None,
    evaluation: dict | None = None,
    genai: dict | None = None,
) -> CheckResult:
    ctx = s.context(opts)
    cand = comparison.candidate
    result = report.build_result(
        s.cfg, comparison, gate, cached=cached, fingerprint=fingerprint,
        tracking_uri=s.tracking_uri, pr_number=ctx.pr_number or _pr_tag(cand),
        head_sha=ctx.head_sha or ctx.commit, ci_run_url=ctx.run_url, config_path=s.config_path(),
        evaluation=evaluation, genai=genai,
    )
    try:
        markdown = report.render_markdown(result, s.cfg.report, s.cfg.root)
    except UsageError as exc:
        raise UsageError(s.cfg.located(exc.message) if exc.message.startswith("report.template: ") else exc.message) from None
    report_path, result_path = report.write_outputs(opts.out_dir, markdown, result)
    return CheckResult(gate.verdict, result, report_path, result_path, None)


def _pr_tag(run: RunSnapshot) -> int | None:
    value = run.tags.get(TAG_PR, "")
    return int(value) if value.isdigit() else None


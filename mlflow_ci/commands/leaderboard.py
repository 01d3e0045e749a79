"""Fan-in: gather every candidate of a PR (``check --candidate NAME`` in matrix jobs, possibly on
different runners) and report them as one leaderboard with the gate for each.

In the PR workflow the candidates are the results the matrix jobs of *this workflow run* uploaded
(``mlflow-ci-candidate-<name>``, read as untrusted data with ``--candidates DIR``), and the provenance
record names the selected candidate's artifact, as a single check's does. The store's tags are never
what selects a candidate there: any PR's code holding the tracking credentials can tag a run as PR N's
candidate. Without ``--candidates`` (a local leaderboard) the candidates are the store's runs tagged
with the PR, and nothing is recorded for promote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow_ci import report
from mlflow_ci.commands.chain import record_from_dir
from mlflow_ci.commands.judging import judge_deferred
from mlflow_ci.commands.publish import publish_result, say
from mlflow_ci.commands.recompute import recompute
from mlflow_ci.commands.session import Options, Session
from mlflow_ci.commands.stages import CheckResult
from mlflow_ci.commands.validated import select_candidate
from mlflow_ci.compare import Baseline, resolve_baseline
from mlflow_ci.errors import UsageError
from mlflow_ci.gate import GateResult, evaluate, infer_direction, no_baseline
from mlflow_ci.github.publish import PublishResult, Target
from mlflow_ci.provenance import MODEL_DIR
from mlflow_ci.report import VERDICT_ICON, code, md, number, sticky_marker
from mlflow_ci.result import Result, load_untrusted
from mlflow_ci.tracking import TAG_CANDIDATE, TAG_HEAD_SHA, TAG_PR, RunSnapshot

PR_WINDOW = 100  # newest runs of the PR looked at: a bounded query
CANDIDATE_ARTIFACT = "mlflow-ci-candidate"  # the PR workflow's artifact of each candidate: mlflow-ci-candidate-<name>


@dataclass(frozen=True)
class Uploaded:
    """A candidate as its matrix job uploaded it (untrusted data): its result and, beside it, its model."""
    folder: Path
    result: Result
    artifact: str  # its name in the workflow run


@dataclass(frozen=True)
class Entry:
    name: str
    run: RunSnapshot
    gate: GateResult
    selected: bool
    uploaded: Uploaded | None = None


@dataclass(frozen=True)
class Leaderboard:
    experiment: str
    pr: int
    entries: tuple[Entry, ...]
    baseline: Baseline | None
    metric: str | None
    direction: str

    @property
    def verdict(self) -> str:
        """pass when at least one candidate passed (promote picks among those), else fail."""
        if not self.entries:
            return "fail"
        return "pass" if any(e.gate.verdict != "fail" for e in self.entries) else "fail"

    @property
    def selected(self) -> Entry | None:
        return next((e for e in self.entries if e.selected), None)


def build(s, pr: int, opts, candidates: Path | None = None, expected: tuple[str, ...] | None = None) -> Leaderboard:
    cfg = s.cfg
    tracker = s.tracker()
    experiment_id = tracker.experiment_id(cfg.experiment, create=False)
    uploads: dict[str, Uploaded] = {}
    if candidates is not None:
        uploads = {name: replace(u, result=_trusted(s, u, opts.out_dir / "judge" / name))
                   for name, u in gathered(candidates, cfg.experiment, lambda m: say(s.stream, m), expected).items()}
        latest = {name: _as_run(name, u.result) for name, u in uploads.items()}
    else:
        latest = _tagged(tracker, experiment_id, pr)
    baseline, expected = None, ()
    if experiment_id:
        baseline, seen = resolve_baseline(tracker, cfg, s.context(opts), experiment_id=experiment_id, candidate_run_id="")
        expected = tuple(seen.expected)
    base_metrics = dict(baseline.run.metrics) if baseline else None
    closed = no_baseline(cfg.gate, expected) if baseline is None and expected and cfg.baseline.required else None
    gated = {name: evaluate(cfg.gate, dict(run.metrics), base_metrics) for name, run in latest.items()}
    if closed:  # the same fail-closed rule as a single check: no candidate passes on what it cannot compare
        gated = {name: GateResult((closed, *gate.checks)) for name, gate in gated.items()}
    passing = [run for name, run in latest.items() if gated[name].verdict != "fail"]
    chosen = select_candidate(cfg, passing).run_id if passing else None
    metric = cfg.promote.select_metric or (cfg.gate[0].metric if cfg.gate else None)
    direction = cfg.promote.select_direction or (infer_direction(metric) if metric else "higher")
    entries = [Entry(name, run, gated[name], run.run_id == chosen, uploads.get(name)) for name, run in latest.items()]
    entries.sort(key=lambda e: _rank_key(e, metric, direction))
    return Leaderboard(cfg.experiment, pr, tuple(entries), baseline, metric, direction)


def _trusted(s, upload: Uploaded, work: Path) -> Result:
    """A candidate's result with what this trusted job computes itself: the judge's verdicts on its answers, and
    eval.* of a model in a code-free format (each said in its notes when it cannot be done)."""
    judged = judge_deferred(s.cfg, s.env, s.stream, upload.result, upload.folder, work)
    return recompute(s.cfg, s.env, s.stream, judged, upload.folder / MODEL_DIR)


def _tagged(tracker, experiment_id: str | None, pr: int) -> dict[str, RunSnapshot]:
    """A local leaderboard's candidates: the store's newest runs tagged with the PR, at its latest head."""
    runs = tracker.search_runs(experiment_id, tags={TAG_PR: str(pr)}, limit=PR_WINDOW) if experiment_id else []
    head = runs[0].tags.get(TAG_HEAD_SHA) if runs else None
    latest: dict[str, RunSnapshot] = {}
    for run in runs:  # newest first; only the PR's latest head commit counts
        if head and run.tags.get(TAG_HEAD_SHA) != head:
            continue
        latest.setdefault(run.tags.get(TAG_CANDIDATE, ""), run)
    return latest


def gathered(folder: Path, experiment: str, log, expected: tuple[str, ...] | None = None) -> dict[str, Uploaded]:
    """The candidates the matrix jobs uploaded, one folder per artifact under ``folder``, named
    ``mlflow-ci-candidate-<name>`` (or ``folder`` itself: download-artifact extracts a pattern matching one
    artifact straight into its path, which then is the one ``expected`` candidate). The name is the
    artifact's; each result is validated as untrusted data. An upload for a candidate the caller does not
    list (``expected``), or whose result is not this experiment's or carries no run, is left off the board,
    saying why; so is a missing ``folder``."""
    if not folder.is_dir():  # no matrix job uploaded anything: an empty board, published as a failure
        log(f"warning: {folder}: no candidate results (the matrix jobs' {CANDIDATE_ARTIFACT}-<name> artifacts): see their jobs")
        return {}
    prefix = CANDIDATE_ARTIFACT + "-"
    if (folder / "result.json").is_file():
        named = {(expected[0] if expected and len(expected) == 1 else ""): folder}
    else:
        named = {p.name[len(prefix):]: p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.startswith(prefix)}
    found: dict[str, Uploaded] = {}
    for name, each in named.items():
        where = f"{prefix}{name}" if each != folder else str(folder)
        if expected is not None and name not in expected:
            log(f"warning: {where}: not a candidate the workflow lists ({', '.join(expected)}): left off the leaderboard")
            continue
        try:
            result = load_untrusted(each / "result.json", flag=f"{where}:")
        except UsageError as exc:
            log(f"warning: {exc.message}: left off the leaderboard")
            continue
        problem = ("is for experiment " + repr(result.experiment) if result.experiment != experiment
                   else "has no candidate run (its check failed: see its job)" if result.error is not None or not result.candidate.run_id
                   else None)
        if problem:
            log(f"warning: {where}: the result {problem}: left off the leaderboard")
            continue
        found[name] = Uploaded(each, result, f"{prefix}{name}")
    return found


def _as_run(name: str, result: Result) -> RunSnapshot:
    metrics = {k: float(v) for k, v in result.candidate.metrics.items() if isinstance(v, (int, float))}
    return RunSnapshot(result.candidate.run_id, "", "FINISHED", metrics=metrics,
                       tags={TAG_CANDIDATE: name, TAG_HEAD_SHA: result.head_sha or ""})


def _rank_key(entry: Entry, metric: str | None, direction: str):
    value = entry.run.metrics.get(metric) if metric else None
    missing = value is None or value != value
    score = 0.0 if missing else (-value if direction == "higher" else value)
    return (entry.gate.verdict == "fail", missing, score, entry.name)


def render(board: Leaderboard, cfg) -> str:
    metrics = [r.metric for r in cfg.gate] or sorted({m for e in board.entries for m in e.run.metrics})[:6]
    seen: list[str] = []
    for name in metrics:
        if name not in seen:
            seen.append(name)
    icon = VERDICT_ICON[board.verdict]
    lines = [
        sticky_marker(board.experiment),
        f"## {icon} mlflow-ci · {md(board.experiment)}: {len(board.entries)} candidates for PR \\#&#8203;{board.pr}",
        "",
    ]
    if board.selected:
        lines.append(f"**Best that passed:** {md(board.selected.name or 'default')}"
                     + (f" (by {md(board.metric)}, {board.direction} is better)" if board.metric else "") + ".")
    else:
        lines.append("**No candidate passed its gate.**")
    lines.append(f"Baseline: {md(board.baseline.description) if board.baseline else 'none found'}.")
    lines += ["", "| | Candidate | Gate | " + " | ".join(md(m) for m in seen) + " | Run |",
              "|:-:|---|:-:|" + "---:|" * len(seen) + "---|"]
    base = board.baseline.run.metrics if board.baseline else {}
    if board.baseline:
        lines.append("| | *baseline* | | " + " | ".join(number(base.get(m)) for m in seen) + f" | {code(board.baseline.run.run_id[:12])} |")
    for rank, entry in enumerate(board.entries, start=1):
        mark = "🏆" if entry.selected else str(rank)
        gate = {"pass": "✅", "warn": "⚠️", "fail": "❌"}[entry.gate.verdict]
        cells = " | ".join(number(entry.run.metrics.get(m)) for m in seen)
        lines.append(f"| {mark} | {md(entry.name or 'default')} | {gate} | {cells} | {code(entry.run.run_id[:12])} |")
    failures = [(e, c) for e in board.entries for c in e.gate.failed]
    if failures:
        lines += ["", "<details><summary>Failed rules</summary>", ""]
        for entry, check in failures:
            lines.append(f"- {md(entry.name or 'default')}: {md(check.metric)} {check.rule}: {md(check.message, 300)}")
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def as_result(board: Leaderboard) -> Result:
    """A result (for publish), carrying the leaderboard itself."""
    selected = board.selected
    checks = []
    for entry in board.entries:
        for check in entry.gate.checks:
            checks.append({**check.as_dict(), "metric": f"{entry.name or 'default'}/{check.metric}", "line": None})
    return Result.build({
        "schema": 1,
        "verdict": board.verdict,
        "experiment": board.experiment,
        "pr": board.pr,
        "candidate": {"run_id": selected.run.run_id if selected else "", "name": selected.name if selected else None,
                      "metrics": dict(selected.run.metrics) if selected else {}, "params": {}, "cached": False},
        "baseline": None if board.baseline is None else {
            "run_id": board.baseline.run.run_id, "source": board.baseline.source,
            "description": board.baseline.description, "metrics": dict(board.baseline.run.metrics)},
        "checks": checks,
        "leaderboard": [
            {"candidate": e.name, "run_id": e.run.run_id, "verdict": e.gate.verdict, "selected": e.selected,
             "metrics": dict(e.run.metrics)}
            for e in board.entries
        ],
        "head_sha": board.entries[0].run.tags.get(TAG_HEAD_SHA) if board.entries else None,
    })


def do_leaderboard(s: Session, opts: Options, pr: int, *, publish: bool, candidates: Path | None = None,
                   expected: tuple[str, ...] | None = None) -> tuple[CheckResult, PublishResult | None]:
    """Fan-in: the leaderboard of every candidate of PR ``pr`` (uploaded to ``candidates``, only those
    ``expected`` when given; else tagged in the store), written and optionally published."""
    board = build(s, pr, opts, candidates, expected)
    result = as_result(board)
    markdown = render(board, s.cfg)
    report_path, result_path = report.write_outputs(opts.out_dir, markdown, result)
    entries = [entry.model_dump(mode="json") for entry in result.leaderboard or ()]
    (opts.out_dir / "leaderboard.json").write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    outcome = CheckResult(board.verdict, result, report_path, result_path, None)
    if not publish:
        return outcome, None
    ev = s.event
    target = Target(ev.repository or "", pr, ev.head_sha, ev.run_url)  # the event's commit, never a store tag's
    published = publish_result(
        s.env, s.stream, ev, target, result, markdown, report_path=report_path,
        comment_mode=s.cfg.publish.comment, check_name=s.cfg.publish.check_name, provenance=_record(s, board, ev.head_sha),
    )
    return outcome, published


def _record(s: Session, board: Leaderboard, head_sha: str | None):
    """The provenance of the candidate promote will pick, when it was trained at the event's commit and
    uploaded by this workflow run's matrix job (its artifact, named in the record)."""
    selected = board.selected
    if selected is None or not head_sha:
        return None
    if selected.uploaded is None:
        say(s.stream, "warning: no provenance recorded: the candidates were read from the store's tags, which any PR's code "
                      "can write (the PR workflow passes --candidates with the artifacts of its matrix jobs)")
        return None
    if selected.run.tags.get(TAG_HEAD_SHA) != head_sha:
        say(s.stream, f"warning: no provenance recorded: the best candidate was trained at "
                      f"{selected.run.tags.get(TAG_HEAD_SHA, 'an unknown commit')[:12]}, not at {head_sha[:12]}")
        return None
    run_id = s.env.get("GITHUB_RUN_ID")
    artifact = f"{run_id}/{selected.uploaded.artifact}" if run_id else None
    return record_from_dir(selected.uploaded.result, selected.uploaded.folder / MODEL_DIR, artifact, lambda m: say(s.stream, m))

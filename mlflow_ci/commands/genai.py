"""``genai:`` in a check: the app of this checkout (the candidate) and the app of the base commit (the
baseline, from a git worktree) answer the same rows; every scorer judges both; each scorer's pass rate
becomes ``genai.<scorer>`` on both sides of the comparison, with the paired interval of its change, so
the gate's rules (``significance:`` included) decide on it as on any metric."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from mlflow_ci import compare as cmp
from mlflow_ci.commands.session import Options, Session
from mlflow_ci.config import MLFLOW_SCORER, MLFLOW_SCORERS
from mlflow_ci.config.models import JUDGE, mlflow_scorer_arguments, mlflow_scorer_class
from mlflow_ci.genai.compare import GenaiComparison, JudgeScorer, ScorerSet, compare_apps
from mlflow_ci.genai.judge import Judge, JudgeSettings
from mlflow_ci.genai.mlflow_scorers import MlflowScorers, MlflowScorerSpec
from mlflow_ci.genai.runner import load_rows, run_app
from mlflow_ci.genai.scorers import build, user_scorer
from mlflow_ci.gitctx import NOT_FETCHED, detached_worktree


@dataclass(frozen=True)
class GenaiOutcome:
    comparison: cmp.Comparison  # with genai.<scorer> merged into both sides
    intervals: dict  # genai.<scorer> -> the paired interval of the change
    summary: dict  # result.json's "genai"


def run_genai(s: Session, opts: Options, comparison: cmp.Comparison, intervals: dict) -> GenaiOutcome:
    g = s.cfg.genai
    assert g is not None
    rows = load_rows(s.cfg.resolve(g.data))
    scorers = _scorers(s, opts)
    ctx = s.context(opts)
    cand_out = run_app(g.predict_fn, rows, s.cfg.root, s.env, timeout=g.timeout,
                       log_path=opts.out_dir / "genai-candidate.log", stream=s.stream)
    base_out, where = None, "no base commit to compare with"
    if ctx.base_commit and ctx.repo_root and ctx.base_commit not in (ctx.commit, ctx.head_sha):
        base_out, where = _base_outputs(s, opts, ctx.repo_root, ctx.base_commit, rows)
    elif ctx.base_commit:
        where = "this is the base commit itself"
    cand_scores = scorers.score(rows, cand_out, "candidate")
    base_scores = scorers.score(rows, base_out, "baseline") if base_out is not None else None
    scored = compare_apps(rows, cand_scores, cand_out, base_scores, base_out, resamples=g.resamples, seed=g.seed,
                          confidence=g.confidence, judge=scorers.judge_summary())
    s.tracker().log_metrics(comparison.candidate.run_id, scored.candidate)
    return _merge(s, comparison, intervals, scored, where)


def _scorers(s: Session, opts: Options) -> ScorerSet:
    """Each scorer by its metric name; the judge scorers and MLflow's judges share one judge, hence one budget."""
    g = s.cfg.genai
    judge = None
    if g.judge is not None and g.uses_llm():
        j = g.judge
        model, base_url = j.endpoint()
        judge = Judge(JudgeSettings(model=model, base_url=base_url, api_key_env=j.key_env(), temperature=j.temperature,
                                    max_calls=j.max_calls, max_tokens=j.max_tokens, max_response_tokens=j.max_response_tokens,
                                    repeats=j.repeats, aggregate=j.aggregate, retries=j.retries, timeout_s=j.timeout), s.env)
    row_scorers, specs = {}, []
    for i, ((name, argument), metric) in enumerate(zip(g.scorers, g.metric_names())):
        if name == JUDGE:
            row_scorers[metric] = JudgeScorer(judge, argument["instructions"])
        elif name == MLFLOW_SCORER:
            cls = mlflow_scorer_class(argument)
            specs.append(MlflowScorerSpec(metric, cls, mlflow_scorer_arguments(argument), MLFLOW_SCORERS[cls][1],
                                          f"genai.scorers[{i}].mlflow"))
        elif ":" in name:
            row_scorers[metric] = user_scorer(name, s.cfg.root)
        else:
            row_scorers[metric] = build(name, argument)
    mlflow = None
    if specs:
        budgeted = g.timeout + (g.judge.timeout * g.judge.max_calls if g.judge else 0)
        mlflow = MlflowScorers(tuple(specs), judge, s.env, opts.out_dir, budgeted, s.stream, str(s.cfg.path))
    return ScorerSet(row_scorers, g.metric_names(), mlflow, judge)


def _base_outputs(s: Session, opts: Options, repo_root: Path, sha: str, rows):
    """The base commit's app on the rows, from a throw-away worktree (None and why, when it cannot run)."""
    g = s.cfg.genai
    folder = s.cfg.root.resolve().relative_to(repo_root.resolve())
    with detached_worktree(repo_root, sha, prefix="mlflow-ci-genai-base-") as worktree:
        if worktree is None:
            return None, f"could not check out base commit {sha[:12]} ({NOT_FETCHED})"
        out = run_app(g.predict_fn, rows, worktree / folder, s.env, timeout=g.timeout,
                      log_path=opts.out_dir / "genai-baseline.log", stream=s.stream)
    return out, f"the app at base commit {sha[:12]}"


def _merge(s: Session, comparison: cmp.Comparison, intervals: dict, scored: GenaiComparison, where: str) -> GenaiOutcome:
    cand = replace(comparison.candidate, metrics={**comparison.candidate.metrics, **scored.candidate})
    base = comparison.baseline
    if base is not None and scored.baseline is not None:
        base = replace(base, run=replace(base.run, metrics={**base.run.metrics, **scored.baseline}))
    merged_intervals = {**intervals, **scored.intervals}  # evaluate:'s and genai:'s, every row shows its own
    rows = cmp.diff_with_intervals(s.cfg, dict(cand.metrics), dict(base.run.metrics) if base else None, merged_intervals)
    g = s.cfg.genai
    note = f"GenAI: {g.predict_fn} answered the {scored.rows:,} rows of {g.data} " + (
        f"for the candidate and for {where}; {g.resamples:,} paired bootstrap resamples (seed {g.seed})"
        if scored.baseline is not None else f"for the candidate only ({where})")
    summary = {"data": g.data, "rows": scored.rows, "predict_fn": g.predict_fn, "baseline": where,
               "scorers": list(g.metric_names()), "errors": scored.errors,
               "regressed": scored.regressed, "fixed": scored.fixed,
               "changed": [vars(c) for c in scored.changed], "judge": scored.judge or None}
    updated = replace(comparison, candidate=cand, baseline=base, metrics=rows, notes=(*comparison.notes, note))
    return GenaiOutcome(updated, merged_intervals, summary)


"""``genai:`` in a check: the app of this checkout (the candidate) and the app of the base commit (the
baseline, from a git worktree) answer the same rows; every scorer judges both; each scorer's pass rate
becomes ``genai.<scorer>`` on both sides of the comparison, with the paired interval of its change, so
the gate's rules (``significance:`` included) decide on it as on any metric."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from mlflow_ci import compare as cmp
from mlflow_ci.commands.prompts import digest, run_tags
from mlflow_ci.commands.session import Options, Session
from mlflow_ci.config import MLFLOW_SCORER, USER_METRIC
from mlflow_ci.config.models import JUDGE, asks_judge, mlflow_scorer_arguments, mlflow_scorer_class
from mlflow_ci.errors import UsageError
from mlflow_ci.genai.answers import ANSWERS_FILE, Answers, write_answers
from mlflow_ci.genai.cache import OutputsCache, side_key
from mlflow_ci.genai.compare import (
    GenaiComparison,
    JudgeScorer,
    ScorerSet,
    compare_apps,
)
from mlflow_ci.genai.judge import Judge, JudgeSettings
from mlflow_ci.genai.mlflow_scorers import MlflowScorers, MlflowScorerSpec
from mlflow_ci.genai.runner import DataRow, load_rows, run_app, run_model
from mlflow_ci.genai.scorers import build, user_scorer
from mlflow_ci.config.loader import module_file
from mlflow_ci.gitctx import NOT_FETCHED, detached_worktree, tree_id
from mlflow_ci.tracking import RunSnapshot, sqlite_path


@dataclass(frozen=True)
class GenaiOutcome:
    comparison: cmp.Comparison  # with genai.<scorer> merged into both sides
    intervals: dict  # genai.<scorer> -> the paired interval of the change
    summary: dict  # result.json's "genai"


def run_genai(s: Session, opts: Options, comparison: cmp.Comparison, intervals: dict) -> GenaiOutcome:
    g = s.cfg.genai
    assert g is not None
    rows, data_digest = _rows(s)
    prompt_tags = run_tags(s.cfg)  # read first: a missing template stops the check before any app runs
    pending = g.judged_metrics() if opts.defer_judging and g.judge is not None else ()
    scorers = scorer_set(s.cfg, s.env, opts.out_dir, s.stream, judges=False if pending else None)
    sides = Sides(s, opts, rows, data_digest, scorers, comparison.candidate,
                  OutputsCache(s.tracker(), comparison.candidate.experiment_id, opts.out_dir), _key_settings(s),
                  keep=not pending)
    ctx = s.context(opts)
    repo = ctx.repo_root.resolve() if ctx.repo_root else None
    folder = s.cfg.root.resolve().relative_to(repo) if repo else None
    own = [opts.out_dir, *([store] if (store := sqlite_path(s.tracking_uri)) else [])]  # written by mlflow-ci itself
    cand_out, cand_scores = sides.answer("candidate", tree_id(repo, folder, outputs=own) if repo else None, lambda: run_app(
        g.predict_fn, rows, s.cfg.root, s.code_env, timeout=g.timeout, log_path=opts.out_dir / "genai-candidate.log", stream=s.stream))
    base_out, base_scores, where = _baseline(s, opts, sides, ctx, repo, folder)
    if pending:  # the judge scores these answers in the trusted publish job, which holds its key
        write_answers(opts.out_dir / ANSWERS_FILE, Answers(rows, cand_out, base_out, pending))
    scored = compare_apps(rows, cand_scores, cand_out, base_scores, base_out, resamples=g.resamples, seed=g.seed,
                          confidence=g.confidence, judge=sides.scorers.judge_summary())
    s.tracker().log_metrics(comparison.candidate.run_id, scored.candidate)
    if g.prompts:
        s.tracker().set_tags(comparison.candidate.run_id, prompt_tags)
    label = g.rows_label() if g.data is not None else f"{g.rows_label()} (digest {data_digest.rsplit(':', 1)[-1]})"
    return _merge(s, comparison, intervals, scored, where, sides.reused, label, pending)


@dataclass
class Sides:
    """Each side's answers and verdicts: from the cache when the same code was scored on the same rows
    with the same scorers before, else run, scored and kept (on the candidate's run)."""
    s: Session
    opts: Options
    rows: list
    data_digest: str
    scorers: ScorerSet
    run: object  # the candidate's RunSnapshot: where new entries are kept
    cache: OutputsCache
    settings: dict
    keep: bool = True  # False: judging is deferred, so this check's verdicts are partial: never cached nor reused
    reused: dict = field(default_factory=dict)  # side -> the run whose entry was reused

    def answer(self, side: str, tree: str | None, produce: Callable[[], list | None]):
        key = side_key(tree, data=self.data_digest, settings=self.settings)
        hit = self.cache.read(key, len(self.rows), self.scorers.order) if self.opts.use_cache and self.keep else None
        if hit is not None:
            self.reused[side] = hit.run_id
            return hit.outputs, hit.scores
        outputs = produce()
        if outputs is None:
            return None
        scores = self.scorers.score(self.rows, outputs, side)
        if self.keep:
            self.cache.write(self.run.run_id, key, outputs, scores)
        return outputs, scores


def _rows(s: Session) -> tuple[list[DataRow], str]:
    """The rows (a file in the repository, or an MLflow evaluation dataset) and their digest."""
    g = s.cfg.genai
    if g.data is not None:
        path = s.cfg.resolve(g.data)
        try:
            rows = load_rows(path)
        except UsageError as exc:  # the file named where the config names it
            raise UsageError(s.cfg.located(exc.message) if exc.message.startswith("genai.data: ") else exc.message) from None
        return rows, hashlib.sha256(path.read_bytes()).hexdigest()
    name = g.dataset.name
    records, dataset_id, digest = s.registry().eval_dataset(name)
    if g.dataset.digest and digest != g.dataset.digest:
        raise UsageError(f"{s.cfg.path}: genai.dataset.digest: MLflow dataset {name} has digest {digest}, not {g.dataset.digest} "
                         "(its records changed since the digest was pinned)", hint="review the new records, then update the digest")
    if not records:
        raise UsageError(f"MLflow dataset {name} has no records (genai.dataset)")
    return [DataRow(inputs, expectations) for inputs, expectations in records], f"{dataset_id}:{digest}"


def _key_settings(s: Session) -> dict:
    """What besides the code and the data decides a side's verdicts (the cache key's settings)."""
    g = s.cfg.genai
    judge = None
    if g.judge is not None and g.uses_llm():
        j = g.judge
        judge = {"endpoint": j.endpoint(), "temperature": j.temperature, "repeats": j.repeats, "aggregate": j.aggregate,
                 "max_response_tokens": j.max_response_tokens}
    own = {}
    for name, _ in g.scorers:
        if USER_METRIC.fullmatch(name):
            found = module_file(s.cfg.root, name.partition(":")[0])
            own[name] = hashlib.sha256(found.read_bytes()).hexdigest() if found else None
    return {"predict_fn": g.predict_fn, "scorers": [list(entry) for entry in g.scorers], "own_scorers": own, "judge": judge}


def scorer_set(cfg, env, out_dir: Path, stream, *, judges: bool | None = None) -> ScorerSet:
    """Each scorer by its metric name; the judge scorers and MLflow's judges share one judge, hence one budget.
    ``judges``: None, every scorer; False, those that do not ask the judge (a check whose judging is deferred:
    no key is read); True, only those that do (the trusted publish job judging a deferred check's answers)."""
    g = cfg.genai
    chosen = [(i, entry, metric) for i, (entry, metric) in enumerate(zip(g.scorers, g.metric_names()))
              if judges is None or asks_judge(*entry) == judges]
    judge = None
    if g.judge is not None and any(asks_judge(*entry) for _, entry, _ in chosen):
        j = g.judge
        model, base_url = j.endpoint()
        judge = Judge(JudgeSettings(model=model, base_url=base_url, api_key_env=j.key_env(), temperature=j.temperature,
                                    max_calls=j.max_calls, max_tokens=j.max_tokens, max_response_tokens=j.max_response_tokens,
                                    repeats=j.repeats, aggregate=j.aggregate, retries=j.retries, timeout_s=j.timeout), env)
    row_scorers, specs = {}, []
    for i, (name, argument), metric in chosen:
        if name == JUDGE:
            row_scorers[metric] = JudgeScorer(judge, argument["instructions"])
        elif name == MLFLOW_SCORER:
            cls = mlflow_scorer_class(argument)
            specs.append(MlflowScorerSpec(metric, cls, mlflow_scorer_arguments(argument), asks_judge(name, argument),
                                          f"genai.scorers[{i}].mlflow"))
        elif ":" in name:
            row_scorers[metric] = user_scorer(name, cfg.root)
        else:
            row_scorers[metric] = build(name, argument)
    mlflow = None
    if specs:
        budgeted = g.timeout + (g.judge.timeout * g.judge.max_calls if g.judge else 0)
        mlflow = MlflowScorers(tuple(specs), judge, env, out_dir, budgeted, stream, str(cfg.path))
    return ScorerSet(row_scorers, tuple(metric for _, _, metric in chosen), mlflow, judge)


def _baseline(s: Session, opts: Options, sides: "Sides", ctx, repo: Path | None, folder: Path | None):
    """(outputs, verdicts, what they are) of the baseline ``genai.baseline`` names; (None, None, why) without one."""
    g = s.cfg.genai
    fallback = ""
    if g.baseline == "model":
        name = f"{s.cfg.model}@{s.cfg.champion_alias}"
        champion = s.registry().run_for_alias(s.cfg.model, s.cfg.champion_alias)
        if champion is not None:
            run, version = champion
            answered = sides.answer("baseline", f"model:{run.run_id}:{version}", lambda: _model_outputs(s, opts, run.run_id, sides.rows))
            return (*answered, f"the champion model {name} (version {version})")
        fallback = f"{name} does not exist yet, so "
    if not ctx.base_commit or repo is None:
        return None, None, fallback + "no base commit to compare with"
    if ctx.base_commit in (ctx.commit, ctx.head_sha):
        return None, None, fallback + "this is the base commit itself"
    sha = ctx.base_commit
    champions, missing = _champion_prompts(s) if g.baseline == "prompts" else ({}, [])
    tree = tree_id(repo, folder, sha)
    key = tree and tree + "".join(f"+{file}={digest(p.template)}" for file, p in sorted(champions.items()))
    answered = sides.answer("baseline", key, lambda: _base_outputs(s, opts, repo, folder, sha, sides.rows, champions))
    if answered is None:
        return None, None, fallback + f"could not check out base commit {sha[:12]} ({NOT_FETCHED})"
    with_prompts = "".join(f" with prompt {p.name}@{s.cfg.champion_alias} (version {p.version})" for p in champions.values())
    with_prompts += "".join(f"; prompt {name} has no @{s.cfg.champion_alias} yet: its file at that commit" for name in missing)
    return (*answered, fallback + f"the app at base commit {sha[:12]}{with_prompts}")


def _champion_prompts(s: Session) -> tuple[dict, list[str]]:
    """Each configured prompt's champion version by its file (and the prompts that have none yet)."""
    found, missing = {}, []
    for prompt in s.cfg.genai.prompts:
        champion = s.registry().prompt_alias(prompt.name, s.cfg.champion_alias)
        if champion is None:
            missing.append(prompt.name)
        else:
            found[prompt.file] = champion
    return found, missing


def _model_outputs(s: Session, opts: Options, run_id: str, rows):
    """The champion model (the app logged as an MLflow model) on the rows, called with each row's inputs."""
    loaded = s.registry().load_for_scoring(run_id, s.cfg.promote.model_path, opts.out_dir / "genai-champion",
                                           registered_as=s.cfg.model)
    return run_model(loaded.pyfunc().predict, rows)


def _base_outputs(s: Session, opts: Options, repo_root: Path, folder: Path, sha: str, rows, prompts: dict):
    """The base commit's app on the rows, from a throw-away worktree (None when it cannot be checked out),
    with ``prompts`` (file -> PromptInfo) written over the templates of that commit."""
    g = s.cfg.genai
    with detached_worktree(repo_root, sha, prefix="mlflow-ci-genai-base-") as worktree:
        if worktree is None:
            return None
        for file, prompt in prompts.items():
            target = worktree / folder / file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(prompt.template, encoding="utf-8")
        return run_app(g.predict_fn, rows, worktree / folder, s.code_env, timeout=g.timeout,
                       log_path=opts.out_dir / "genai-baseline.log", stream=s.stream)


def _merge(s: Session, comparison: cmp.Comparison, intervals: dict, scored: GenaiComparison, where: str,
           reused: dict, rows_label: str, pending: tuple[str, ...] = ()) -> GenaiOutcome:
    cand = replace(comparison.candidate, metrics={**comparison.candidate.metrics, **scored.candidate})
    base = comparison.baseline
    if base is not None and scored.baseline is not None:
        base = replace(base, run=replace(base.run, metrics={**base.run.metrics, **scored.baseline}))
    elif scored.baseline is not None:  # no baseline run (a first pull request): the app's baseline still gates
        base = cmp.Baseline(RunSnapshot("", cand.experiment_id, "", metrics=dict(scored.baseline)),
                            f"genai:{s.cfg.genai.baseline}", f"GenAI only: {where}")
    merged_intervals = {**intervals, **scored.intervals}  # evaluate:'s and genai:'s, every row shows its own
    rows = cmp.diff_with_intervals(s.cfg, dict(cand.metrics), dict(base.run.metrics) if base else None, merged_intervals)
    g = s.cfg.genai
    note = f"GenAI: {g.predict_fn} answered the {scored.rows:,} rows of {rows_label} " + (
        f"for the candidate and for {where}; {g.resamples:,} paired bootstrap resamples (seed {g.seed})"
        if scored.baseline is not None else f"for the candidate only ({where})") + "".join(
        f"; the {side}'s answers and verdicts reused from run {run_id} (same code, rows and scorers)"
        for side, run_id in reused.items()) + (
        f"; {', '.join(pending)} pending: the judge scores these answers in the trusted publish job" if pending else "")
    summary = {"data": rows_label, "rows": scored.rows, "predict_fn": g.predict_fn, "baseline": where,
               "scorers": list(g.metric_names()), "errors": scored.errors,
               "regressed": scored.regressed, "fixed": scored.fixed,
               "changed": [vars(c) for c in scored.changed], "judge": scored.judge or None,
               "reused": dict(reused) or None, "pending": list(pending),
               "judged_by": None if pending or not g.judged_metrics() else "check"}
    updated = replace(comparison, candidate=cand, baseline=base, metrics=rows, notes=(*comparison.notes, note))
    return GenaiOutcome(updated, merged_intervals, summary)


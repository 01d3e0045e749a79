"""The ``base_trained`` baseline: when nothing in the store can serve (a hosted runner's store did not
survive: the first PR, a cache evicted after 7 days unused), train the PR's base commit in this job,
from a git worktree, before comparing. Before anything is decided about it, the base run is scored by
the same ``evaluate:`` as the candidate (its ``eval.*`` values exist only then), and then gated by the
rules that need no baseline, like any run that may become one. A base commit trained once is reused by
its fingerprint, like any run, so later PRs on the same base (while the store lives) do not train it
again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mlflow_ci.commands.evaluation import evaluate_alone
from mlflow_ci.commands.session import Options, Session
from mlflow_ci.compare import Baseline, Search, baseline_refusal
from mlflow_ci.config.loader import load_config
from mlflow_ci.errors import ConfigError, TrainingError
from mlflow_ci.gitctx import NOT_FETCHED, GitContext, detached_worktree
from mlflow_ci.gate import evaluate
from mlflow_ci.tracking import TAG_GATE_RULES, TAG_ROLE, TAG_VERDICT, sqlite_path
from mlflow_ci.train import train

BASE_ROLE = "base"  # the mlflow_ci.role tag of a run trained as a PR's baseline


def base_training_applies(s: Session, opts: Options) -> bool:
    """``--train-base`` / ``--no-train-base``; by default only on a CI runner with a local store, where
    nothing persists unless the workflow restored it."""
    if opts.train_base is not None:
        return opts.train_base
    return s.env.get("GITHUB_ACTIONS") == "true" and sqlite_path(s.tracking_uri) is not None


def trainer(s: Session, opts: Options):
    """The ``base_trained`` source for :func:`mlflow_ci.compare.compare`, or None where it does not apply."""
    if not base_training_applies(s, opts):
        return None
    return lambda seen: train_base_commit(s, opts, seen)


def train_base_commit(s: Session, opts: Options, seen: Search) -> Baseline | None:
    """The base commit's run, trained (or reused) and scored in this job; None, with the reason in
    ``seen`` (and, where a base model should exist, in ``seen.expected``), when it cannot serve."""
    ctx = s.context(opts)
    sha, root = ctx.base_commit, ctx.repo_root
    if not sha or root is None:
        seen.notes.append("base commit unknown (no base branch or no merge-base): could not train it")
        return None
    if sha in (ctx.commit, ctx.head_sha):
        return None  # on the base branch itself: the candidate is the base commit
    with detached_worktree(root, sha, prefix="mlflow-ci-base-") as worktree:
        if worktree is None:
            _unusable(seen, f"could not check out base commit {sha[:12]} ({NOT_FETCHED})")
            return None
        return _train_in(s, opts, ctx, worktree, seen)


def _unusable(seen: Search, why: str) -> None:
    seen.notes.append(why)
    seen.expected.append(why)


def _train_in(s: Session, opts: Options, ctx: GitContext, worktree: Path, seen: Search) -> Baseline | None:
    sha = ctx.base_commit or ""
    assert ctx.repo_root is not None
    try:
        relative = s.cfg.path.resolve().relative_to(ctx.repo_root.resolve())
    except ValueError:
        seen.notes.append(f"{s.cfg.path} is outside the repository: there is no version of it at base commit {sha[:12]}")
        return None
    if not (worktree / relative).is_file():
        seen.notes.append(f"base commit {sha[:12]} has no {relative}: nothing to train (a new project)")
        return None
    try:
        cfg = load_config(worktree / relative)
    except ConfigError as exc:
        _unusable(seen, f"the {relative} of base commit {sha[:12]} is not valid ({len(exc.problems)} problems): not trained")
        return None
    cfg = cfg.with_experiment(s.cfg.experiment)  # the base's runs belong with the candidate's
    base_ctx = GitContext(commit=sha, branch=ctx.base_branch, repo_root=worktree, run_url=ctx.run_url, repo_url=ctx.repo_url)
    s.stream.write(f"mlflow-ci: no baseline in the store; training base commit {sha[:12]} in this job\n")
    tracker = s.tracker()
    try:
        trained = train(cfg, tracker, base_ctx, s.code_env, out_dir=opts.out_dir / "base", use_cache=opts.use_cache, stream=s.stream)
    except TrainingError as exc:
        _unusable(seen, f"training base commit {sha[:12]} failed: {exc.message}")
        return None
    run = trained.run
    if run.tags.get(TAG_VERDICT) is None:
        run = _gate_base(s, tracker, run)
    refused = baseline_refusal(run)
    if refused is not None:
        _unusable(seen, f"base commit {sha[:12]} trained in this job is not a baseline: {refused}")
        return None
    how = "reused the earlier training of the same inputs" if trained.cached else f"trained in {trained.seconds:.1f}s"
    return Baseline(run, f"base_trained:{sha}", f"base commit {sha[:12]} trained in this job ({how})")


def _gate_base(s: Session, tracker, run):
    """Score the base run by the candidate's own ``evaluate:`` (its ``eval.*`` values are logged with it:
    it is this job's own run), then gate it by the rules that need no baseline."""
    if s.cfg.evaluate is not None:
        run = evaluate_alone(s, tracker, run)
    gate = evaluate(s.cfg.gate, dict(run.metrics), None)
    tags = {TAG_ROLE: BASE_ROLE, TAG_VERDICT: gate.verdict, TAG_GATE_RULES: str(len(s.cfg.gate))}
    tracker.set_tags(run.run_id, tags)
    return replace(run, tags={**run.tags, **tags})

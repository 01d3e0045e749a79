"""The ``base_trained`` baseline: when nothing in the store can serve (a hosted runner's store did not
survive: the first PR, a cache evicted after 7 days unused), train the PR's base commit in this job,
from a git worktree, before comparing. A base commit trained once is reused by its fingerprint, like
any run, so later PRs on the same base (while the store lives) do not train it again."""

from __future__ import annotations

from pathlib import Path

from mlflow_ci.commands.session import Options, Session
from mlflow_ci.compare import Baseline
from mlflow_ci.config.loader import load_config
from mlflow_ci.errors import ConfigError, TrainingError
from mlflow_ci.gitctx import NOT_FETCHED, GitContext, detached_worktree
from mlflow_ci.gate import evaluate
from mlflow_ci.tracking import TAG_ROLE, TAG_VERDICT, sqlite_path
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
    return lambda notes: train_base_commit(s, opts, notes)


def train_base_commit(s: Session, opts: Options, notes: list[str]) -> Baseline | None:
    ctx = s.context(opts)
    sha, root = ctx.base_commit, ctx.repo_root
    if not sha or root is None:
        notes.append("base commit unknown (no base branch or no merge-base): could not train it")
        return None
    if sha in (ctx.commit, ctx.head_sha):
        return None  # on the base branch itself: the candidate is the base commit
    with detached_worktree(root, sha, prefix="mlflow-ci-base-") as worktree:
        if worktree is None:
            notes.append(f"could not check out base commit {sha[:12]} ({NOT_FETCHED})")
            return None
        return _train_in(s, opts, ctx, worktree, notes)


def _train_in(s: Session, opts: Options, ctx: GitContext, worktree: Path, notes: list[str]) -> Baseline | None:
    sha = ctx.base_commit or ""
    assert ctx.repo_root is not None
    try:
        relative = s.cfg.path.resolve().relative_to(ctx.repo_root.resolve())
    except ValueError:
        notes.append(f"{s.cfg.path} is outside the repository: there is no version of it at base commit {sha[:12]}")
        return None
    if not (worktree / relative).is_file():
        notes.append(f"base commit {sha[:12]} has no {relative}: nothing to train")
        return None
    try:
        cfg = load_config(worktree / relative)
    except ConfigError as exc:
        notes.append(f"the {relative} of base commit {sha[:12]} is not valid ({len(exc.problems)} problems): not trained")
        return None
    cfg = cfg.with_experiment(s.cfg.experiment)  # the base's runs belong with the candidate's
    base_ctx = GitContext(commit=sha, branch=ctx.base_branch, repo_root=worktree, run_url=ctx.run_url, repo_url=ctx.repo_url)
    s.stream.write(f"mlflow-ci: no baseline in the store; training base commit {sha[:12]} in this job\n")
    tracker = s.tracker()
    try:
        trained = train(cfg, tracker, base_ctx, s.env, out_dir=opts.out_dir / "base", use_cache=opts.use_cache, stream=s.stream)
    except TrainingError as exc:
        notes.append(f"training base commit {sha[:12]} failed: {exc.message}")
        return None
    verdict = trained.run.tags.get(TAG_VERDICT)
    if verdict is None:  # gated by the rules that need no baseline, like any run that may become one
        verdict = evaluate(s.cfg.gate, dict(trained.run.metrics), None).verdict
        tracker.set_tags(trained.run.run_id, {TAG_ROLE: BASE_ROLE, TAG_VERDICT: verdict})
    if verdict not in ("pass", "warn"):
        notes.append(f"base commit {sha[:12]} trained in this job did not pass its own gate ({verdict}): not a baseline")
        return None
    how = "reused the earlier training of the same inputs" if trained.cached else f"trained in {trained.seconds:.1f}s"
    return Baseline(trained.run, f"base_trained:{sha}", f"base commit {sha[:12]} trained in this job ({how})")

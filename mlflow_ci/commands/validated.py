"""Which run ``promote`` registers: the one the merged PR's check run vouches for (:mod:`.chain`),
found on the merged PR's head (GitHub API, else the merge commit's parents); store tags only when
GitHub cannot vouch (no token, a push without a PR, ``promote.provenance: optional``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from mlflow_ci import gitctx
from mlflow_ci.commands.chain import (
    CheckRecord,
    find_record,
    no_record,
    provenance_note,
    verified_run,
)
from mlflow_ci.commands.vouch import changed_workflows, vouch, workflows_changed_refusal
from mlflow_ci.compare import baseline_refusal
from mlflow_ci.errors import NotValidatedError, UsageError
from mlflow_ci.gate import infer_direction
from mlflow_ci.github.client import GitHubError
from mlflow_ci.tracking import (
    TAG_CANDIDATE,
    TAG_COMMIT,
    TAG_GATE_RULES,
    TAG_HEAD_SHA,
    TAG_PR,
    TAG_VERDICT_AT,
    RunSnapshot,
)

PASSING = ("pass", "warn")
PUSHED = "the pushed commit"




def candidate_commits(s, opts, client) -> tuple[list[tuple[str, str]], int | None]:
    """(commit, how we know it) pairs to look for, most specific first, and the PR number if known."""
    event = s.event
    head = opts.commit or event.head_sha or gitctx.git(["rev-parse", "HEAD"], s.cfg.root)
    if not head:
        raise UsageError("promote: cannot tell which commit was merged (no --commit, no push event, no git repository)")
    commits: list[tuple[str, str]] = []
    pr = opts.pr_number
    for pull in _merged_pulls(client, head, s.stream):
        if pull.get("merged_at") or pull.get("merge_commit_sha") == head:
            pr = pr or pull.get("number")
            sha = (pull.get("head") or {}).get("sha")
            if isinstance(sha, str):
                commits.append((sha, f"head of merged PR #{pull.get('number')} (GitHub API)"))
            break
    parents = (gitctx.git(["rev-list", "--parents", "-n", "1", head], s.cfg.root) or "").split()
    if len(parents) >= 3:
        commits.append((parents[2], f"second parent of merge commit {head[:12]}"))
    commits.append((head, PUSHED))
    seen: set[str] = set()
    return [(c, how) for c, how in commits if not (c in seen or seen.add(c))], pr


def _merged_pulls(client, head: str, stream) -> list[dict]:
    """The pull requests GitHub associates with the pushed commit; none when GitHub cannot say (403
    without the permission, 404, 409 for an empty repository): the merge parents still tell."""
    if client is None:
        return []
    try:
        return client.pulls_for_commit(head)
    except GitHubError as exc:
        if exc.status not in (403, 404, 409):
            raise
        stream.write(f"mlflow-ci: GitHub could not list the pull requests of {head[:12]} ({exc.status}); using the merge parents\n")
        return []


@dataclass(frozen=True)
class Found:
    """The run promote registers, how it was found, and whether the provenance chain vouches for it."""
    run: RunSnapshot
    how: str
    chain: CheckRecord | None = None
    unverified: str | None = None  # why not, when chain is None

    @property
    def provenance(self) -> str:
        return provenance_note(self.chain, self.unverified)


def find_validated_run(s, tracker, experiment_id: str | None, opts, client) -> Found | None:
    """The run to promote. For a merged PR, with GitHub reachable, the check run on the PR's head
    decides (run and model digest, :mod:`.chain`); store tags decide only without GitHub, for a push
    without a PR, or with ``promote.provenance: optional`` when the check run recorded nothing."""
    cfg = s.cfg
    if opts.run_id:
        run = tracker.get_run(opts.run_id)
        if run is None:
            raise UsageError(f"promote --run {opts.run_id}: no such run")
        refused = baseline_refusal(run, rolled_back=False)
        if refused is not None:
            raise NotValidatedError(f"run {opts.run_id} is not a validated run ({refused}); refusing to promote it")
        return Found(run, f"--run {opts.run_id}", unverified="chosen with --run by whoever ran promote")
    commits, pr = candidate_commits(s, opts, client)
    heads = [(sha, how) for sha, how in commits if how != PUSHED]
    if client is None:
        unverified = "GitHub is not reachable (no token): the run was found by its store tags"
    elif not heads:
        unverified = "pushed without a pull request: the run was found by its store tags"
    else:
        check_name = cfg.publish.check_name or f"mlflow-ci / {cfg.experiment}"
        recorded = find_record(client, heads, check_name, cfg.publish.app)
        if recorded is not None:
            recorded, doubt = _vouched(s, recorded, client, pr, opts)
            run, how = verified_run(s, experiment_id, recorded, client, pr)
            return Found(run, f"{how} on {recorded.head_sha[:12]} ({recorded.how})", chain=recorded, unverified=doubt)
        if cfg.promote.provenance == "required":
            raise no_record(check_name, cfg.publish.app, heads, pr)
        unverified = "the PR's check run recorded no model (promote.provenance: optional): the run was found by its store tags"
    if experiment_id is None:
        return None
    for sha, how in commits:
        for tag in (TAG_HEAD_SHA, TAG_COMMIT):
            tags = {tag: sha, **({TAG_PR: str(pr)} if pr and tag == TAG_HEAD_SHA else {})}
            runs = [r for r in tracker.search_runs(experiment_id, tags=tags) if baseline_refusal(r, rolled_back=False) is None]
            if runs:
                return Found(select_candidate(s.cfg, runs), f"run gated at {sha[:12]} ({how})", unverified=unverified)
        reused = [r for verdict in PASSING for r in tracker.search_runs(experiment_id, tags={TAG_VERDICT_AT + sha: verdict})
                  if r.tags.get(TAG_GATE_RULES) != "0"]
        if reused:  # the check of this head reused an identical earlier run instead of training
            run = select_candidate(s.cfg, sorted(reused, key=lambda r: r.start_time or 0, reverse=True))
            return Found(run, f"run reused by the check of {sha[:12]} ({how})", unverified=unverified)
    return None


def _vouched(s, recorded: CheckRecord, client, pr: int | None, opts) -> tuple[CheckRecord, str | None]:
    """The record with the workflow run that made it (:mod:`.vouch`), or, for a PR that changed the
    workflows and a maintainer's ``--allow-unverified``, with why it is not verified."""
    if pr is None:
        raise NotValidatedError(f"GitHub names no PR merged as this commit, so the check run on {recorded.head_sha[:12]} cannot be "
                                "tied to a reviewed PR; refusing to promote",
                                hint="grant the deploy job 'pull-requests: read', or pass --pr N")
    touched = changed_workflows(client, pr)
    if touched:
        if not opts.allow_unverified:
            raise workflows_changed_refusal(pr, touched)
        return recorded, (f"the PR changed workflows ({', '.join(touched[:5])}); promoted with --allow-unverified by "
                          f"{s.env.get('GITHUB_ACTOR') or 'whoever ran promote'}")
    checkout = Path(gitctx.git(["rev-parse", "--show-toplevel"], s.cfg.root) or s.env.get("GITHUB_WORKSPACE") or s.cfg.root)
    vouched = vouch(client, recorded.record, recorded.head_sha, pr, checkout)
    return replace(recorded, vouched_by=vouched.describe()), None


def select_candidate(cfg, runs: list[RunSnapshot]) -> RunSnapshot:
    """Among passing runs of one commit (fan-out candidates), the configured best; else the newest."""
    latest: dict[str, RunSnapshot] = {}
    for run in runs:  # newest first: keep each candidate's latest run
        latest.setdefault(run.tags.get(TAG_CANDIDATE, ""), run)
    pool = list(latest.values())
    metric = cfg.promote.select_metric
    if metric and len(pool) > 1:
        direction = cfg.promote.select_direction or infer_direction(metric)
        scored = [r for r in pool if isinstance(r.metrics.get(metric), float)]
        if scored:
            return (max if direction == "higher" else min)(scored, key=lambda r: r.metrics[metric])
    return pool[0]

"""`mlflow-ci demo`: the whole story on an embedded project, offline, in a temporary folder.

1. A git repo with a small scikit-learn project (bundled breast cancer dataset) on ``main``.
2. Two more commits on ``main`` and two pull requests are made, each in a git worktree, and the four
   models train at once (as CI runs independent jobs side by side); each check below starts from its run.
3. ``check`` on main, twice (two commits: the trend the PRs are drawn against); the second model is
   registered and aliased ``champion``.
4. Branch ``pr/fewer-features`` regresses the model; ``check`` fails the gate.
5. Branch ``pr/tune-c`` improves it; ``check`` passes.
Exit 0 when the first PR failed and the second passed, as designed.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci.commands.check import do_check
from mlflow_ci.commands.session import Options, make_session
from mlflow_ci.commands.stages import CheckResult
from mlflow_ci.config.loader import load_config
from mlflow_ci.errors import MlflowCiError, UsageError, printable
from mlflow_ci.terminal import color_wanted, render
from mlflow_ci.train import TrainResult, artifact_location, train

PROJECT = Path(__file__).parent.parent / "demo_project"
REGRESS_BRANCH = "pr/fewer-features"
IMPROVE_BRANCH = "pr/tune-c"


@dataclass(frozen=True)
class DemoStep:
    branch: str
    title: str
    expected: str
    outcome: CheckResult
    report: Path  # a copy: every check rewrites .mlflow-ci/report.md


@dataclass(frozen=True)
class DemoResult:
    directory: Path
    tracking_uri: str
    champion_version: str
    steps: tuple[DemoStep, ...]
    seconds: float

    @property
    def as_designed(self) -> bool:
        return all(step.outcome.verdict == step.expected for step in self.steps)


def demo_env(env: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without CI and MLflow settings that would leak into the demo."""
    clean = {k: v for k, v in env.items() if not k.startswith(("GITHUB_", "MLFLOW_", "GIT_"))}
    clean["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    clean.update(
        GIT_AUTHOR_NAME="mlflow-ci demo", GIT_AUTHOR_EMAIL="demo@example.invalid",
        GIT_COMMITTER_NAME="mlflow-ci demo", GIT_COMMITTER_EMAIL="demo@example.invalid",
        GIT_CONFIG_NOSYSTEM="1", MLFLOW_CI_DEMO="1",
    )
    return clean


def run_git(repo: Path, env: Mapping[str, str], *args: str) -> None:
    proc = subprocess.run(["git", *args], cwd=repo, env=dict(env), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UsageError(f"demo: git {' '.join(args)} failed: {proc.stderr.strip()}")


def edit_line(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(pattern, replacement, text, count=1, flags=re.MULTILINE), encoding="utf-8")


def check_repo(repo: Path, env: Mapping[str, str], stream: TextIO, trained: TrainResult | None = None) -> CheckResult:
    cfg = load_config(repo / "mlflow-ci.yml")
    session = make_session(cfg, env, repo, stream)
    return do_check(session, Options(out_dir=repo / ".mlflow-ci", base_branch="main"), trained=trained)


def banner(stream: TextIO, text: str) -> None:
    stream.write(f"\n{'=' * 100}\n{text}\n{'=' * 100}\n")
    stream.flush()


@dataclass(frozen=True)
class Planned:
    """One commit of the story: where it is checked out while its model trains."""
    branch: str
    sha: str
    worktree: Path


def prepare(directory: Path | None, env: Mapping[str, str], *, repo_name: str, project: Path, files: tuple[str, ...],
            ignored: str) -> tuple[Path, Path, dict[str, str]]:
    """The demo's folder, its repository with the project's ``files`` (not yet committed) and the
    environment of its commands (a SQLite store in the folder)."""
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="mlflow-ci-demo-"))
    repo = root / repo_name
    if repo.exists() and any(repo.iterdir()):
        raise UsageError(f"demo: {repo} already exists and is not empty; pass another --dir")
    repo.mkdir(parents=True, exist_ok=True)
    denv = demo_env(env)
    denv["MLFLOW_TRACKING_URI"] = f"sqlite:///{(root / 'mlflow.db').resolve()}"
    for name in files:
        shutil.copy(project / name, repo / name)
    (repo / ".gitignore").write_text(ignored, encoding="utf-8")
    return root, repo, denv


def run_demo(directory: Path | None, *, env: Mapping[str, str], stream: TextIO) -> DemoResult:
    started = time.monotonic()
    root, repo, denv = prepare(directory, env, repo_name="model-repo", project=PROJECT,
                               files=("train.py", "data.py", "params.yaml", "mlflow-ci.yml"), ignored=".mlflow-ci/\nmlartifacts/\n")

    banner(stream, f"mlflow-ci demo in {root}\nfour commits: two on main, two pull requests; their models train side by side, "
                    "as CI runs independent jobs")
    first, second, regress, improve = _commits(repo, root / "worktrees", denv)
    trained = _train_side_by_side(repo, denv, (first, second, regress, improve), stream)
    for planned in (first, second, regress, improve):
        run_git(repo, denv, "worktree", "remove", "--force", str(planned.worktree))

    banner(stream, "1/3 main: two commits, each checked (the trend), the second registered as champion")
    for planned in (first, second):
        run_git(repo, denv, "merge", "-q", "--ff-only", planned.sha)
        base = check_repo(repo, denv, stream, trained[planned.sha])
        if base.verdict == "fail":
            raise MlflowCiError(f"demo: commit {planned.sha[:12]} on main failed its gate; the demo project is broken")
    version = _register_champion(denv["MLFLOW_TRACKING_URI"], repo, base)
    stream.write(f"registered demo-breast-cancer version {version} as @champion\n")

    steps = []
    plan = ((regress, "PR 1: use only the ten 'mean' features (regresses)", "fail"),
            (improve, "PR 2: weaker regularisation, C=0.3 (improves)", "pass"))
    for number, (planned, title, expected) in enumerate(plan, start=2):
        banner(stream, f"{number}/3 {planned.branch}: {title}")
        run_git(repo, denv, "checkout", "-q", planned.branch)
        outcome = check_repo(repo, denv, stream, trained[planned.sha])
        kept = root / f"report-{planned.branch.replace('/', '-')}.md"
        shutil.copy(outcome.report_path, kept)
        shutil.copy(outcome.result_path, root / f"result-{planned.branch.replace('/', '-')}.json")
        steps.append(DemoStep(planned.branch, title, expected, outcome, kept))

    result = DemoResult(root, denv["MLFLOW_TRACKING_URI"], version, tuple(steps), time.monotonic() - started)
    print_summary(result, stream, env)
    return result


# Each pull request edits one line of params.yaml.
REGRESS_FEATURES = ("features: [mean radius, mean texture, mean perimeter, mean area, mean smoothness, "
                    "mean compactness, mean concavity, mean concave points, mean symmetry, mean fractal dimension]")


def _commits(repo: Path, worktrees: Path, denv: Mapping[str, str]) -> tuple[Planned, ...]:
    """The story's four commits, each checked out in a worktree of its own: main's first (C=0.01, where
    ``main`` points for now) and second (C=0.02), and the two pull requests branched from the second."""
    run_git(repo, denv, "init", "-q", "-b", "main")
    edit_line(repo / "params.yaml", r"^C: .*$", "C: 0.01")
    run_git(repo, denv, "add", "-A")
    run_git(repo, denv, "commit", "-q", "-m", "First model: logistic regression, C=0.01")
    first = _worktree(repo, denv, worktrees / "main-1", "main", branch=None)
    second = _worktree(repo, denv, worktrees / "main-2", "main", branch=None,
                       edit=(r"^C: .*$", "C: 0.02", "Baseline model: C=0.02"))
    regress = _worktree(repo, denv, worktrees / "pr-1", second.sha, branch=REGRESS_BRANCH,
                        edit=(r"^features: .*$", REGRESS_FEATURES, "PR 1: use only the ten 'mean' features (regresses)"))
    improve = _worktree(repo, denv, worktrees / "pr-2", second.sha, branch=IMPROVE_BRANCH,
                        edit=(r"^C: .*$", "C: 0.3", "PR 2: weaker regularisation, C=0.3 (improves)"))
    return (replace(first, branch="main"), replace(second, branch="main"), regress, improve)


def _worktree(repo: Path, denv: Mapping[str, str], path: Path, start: str, *, branch: str | None,
              edit: tuple[str, str, str] | None = None) -> Planned:
    """A worktree at ``start`` (on a new ``branch``, else detached), with one commit editing params.yaml."""
    run_git(repo, denv, "worktree", "add", "-q", *(["-b", branch] if branch else ["--detach"]), str(path), start)
    if edit is not None:
        pattern, replacement, message = edit
        edit_line(path / "params.yaml", pattern, replacement)
        run_git(path, denv, "commit", "-q", "-am", message)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, env=dict(denv), capture_output=True, text=True,
                         check=True).stdout.strip()
    return Planned(branch or "", sha, path)


def _train_side_by_side(repo: Path, denv: Mapping[str, str], commits: tuple[Planned, ...], stream: TextIO) -> dict:
    """Train every commit at once, each in its worktree; the checks that follow start from these runs.
    Returns the TrainResult per commit; each training's output is written to ``stream`` when it ends."""
    cfg = load_config(repo / "mlflow-ci.yml")
    session = make_session(cfg, denv, repo, stream)
    session.tracker().experiment_id(cfg.experiment, create=True, artifact_location=artifact_location(cfg, session.tracking_uri))
    started = time.monotonic()
    lock = threading.Lock()
    turns = InTurn()

    def one(index_planned: tuple[int, Planned]):
        index, planned = index_planned
        captured = io.StringIO()
        wcfg = load_config(planned.worktree / "mlflow-ci.yml")
        ws = make_session(wcfg, denv, planned.worktree, captured)
        opts = Options(out_dir=planned.worktree / ".mlflow-ci", base_branch="main")
        ctx = ws.context(opts).with_overrides(branch=planned.branch)
        try:
            result = train(wcfg, turns.tracker(ws.tracker(), index), ctx, denv, out_dir=opts.out_dir, use_cache=False,
                           stream=captured)
        finally:
            turns.finish(index)  # a training that failed before its run must not hold the others back
        with lock:
            stream.write(f"--- {planned.branch} @ {planned.sha[:7]}: trained in {result.seconds:.1f}s\n{captured.getvalue()}")
            stream.flush()
        return planned.sha, result

    with ThreadPoolExecutor(max_workers=len(commits)) as pool:
        trained = dict(pool.map(one, enumerate(commits)))
    stream.write(f"four models trained side by side in {time.monotonic() - started:.1f}s\n")
    return trained


class InTurn:
    """The runs of commits trained side by side are created in commit order, each a few milliseconds after
    the one before: a run's start time orders the trend, and main's first commit must come before its second."""

    def __init__(self) -> None:
        self.turn = 0
        self.done: set[int] = set()
        self.changed = threading.Condition()

    def finish(self, index: int) -> None:
        """``index`` has had its turn (or will not take it: its training failed before starting a run)."""
        with self.changed:
            self.done.add(index)
            while self.turn in self.done:
                self.turn += 1
            self.changed.notify_all()

    def tracker(self, tracker, index: int):
        turns = self

        class Ordered:
            def __getattr__(self, name):
                return getattr(tracker, name)

            def start_run(self, *args, **kwargs):
                with turns.changed:
                    turns.changed.wait_for(lambda: turns.turn == index)
                try:
                    return tracker.start_run(*args, **kwargs)
                finally:
                    time.sleep(0.005)  # the next run starts at a later millisecond
                    turns.finish(index)

        return Ordered()


def _register_champion(tracking_uri: str, repo: Path, base: CheckResult) -> str:
    from mlflow_ci.tracking import MlflowTracker

    cfg = load_config(repo / "mlflow-ci.yml")
    tracker = MlflowTracker(tracking_uri)
    run_id = base.result.candidate.run_id
    version = tracker.register(run_id, cfg.model, tags={"mlflow_ci.commit": base.result.candidate.commit or ""})
    tracker.set_alias(cfg.model, cfg.baseline.alias, version)
    return version


def print_summary(result: DemoResult, stream: TextIO, env: Mapping[str, str]) -> None:
    color = color_wanted(env, stream)
    for step in result.steps:
        banner(stream, f"decision for {step.branch} ({step.title}); the PR comment is {step.report}")
        for line in render(step.outcome.result, color=color):
            stream.write(printable(line) + "\n")
    banner(stream, "summary")
    for step in result.steps:
        ok = "as designed" if step.outcome.verdict == step.expected else f"UNEXPECTED (expected {step.expected})"
        stream.write(f"{step.branch:<20} verdict {step.outcome.verdict.upper():<5} {ok}\n")
        for line in render(step.outcome.result)[1:2]:
            stream.write(f"{'':<20} {line}\n")
    store = result.tracking_uri
    stream.write(
        f"\nMLflow store: {store}\n"
        f"browse it:    mlflow ui --backend-store-uri {store}\n"
        f"reports:      {result.directory}/report-*.md (and each one's result-*.json)\n"
        f"demo took {result.seconds:.1f}s; the demo {'behaved as designed' if result.as_designed else 'did NOT behave as designed'}\n"
    )
    stream.flush()

"""`mlflow-ci demo`: the whole story on an embedded project, offline, in a temporary folder.

1. A git repo with a small scikit-learn project (bundled breast cancer dataset) on ``main``.
2. ``check`` on main, twice (two commits: the trend the PRs are drawn against); the second model is
   registered and aliased ``champion``.
3. Branch ``pr/fewer-features`` regresses the model; ``check`` fails the gate.
4. Branch ``pr/tune-c`` improves it; ``check`` passes.
Exit 0 when the first PR failed and the second passed, as designed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci.commands.check import do_check
from mlflow_ci.commands.session import Options, make_session
from mlflow_ci.commands.stages import CheckResult
from mlflow_ci.config.loader import load_config
from mlflow_ci.errors import MlflowCiError, UsageError, printable
from mlflow_ci.terminal import color_wanted, render

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


def _git(repo: Path, env: Mapping[str, str], *args: str) -> None:
    proc = subprocess.run(["git", *args], cwd=repo, env=dict(env), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UsageError(f"demo: git {' '.join(args)} failed: {proc.stderr.strip()}")


def _edit(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(pattern, replacement, text, count=1, flags=re.MULTILINE), encoding="utf-8")


def _check(repo: Path, env: Mapping[str, str], stream: TextIO) -> CheckResult:
    cfg = load_config(repo / "mlflow-ci.yml")
    session = make_session(cfg, env, repo, stream)
    return do_check(session, Options(out_dir=repo / ".mlflow-ci", base_branch="main"))


def _banner(stream: TextIO, text: str) -> None:
    stream.write(f"\n{'=' * 100}\n{text}\n{'=' * 100}\n")
    stream.flush()


def run_demo(directory: Path | None, *, env: Mapping[str, str], stream: TextIO) -> DemoResult:
    started = time.monotonic()
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="mlflow-ci-demo-"))
    repo = root / "model-repo"
    if repo.exists() and any(repo.iterdir()):
        raise UsageError(f"demo: {repo} already exists and is not empty; pass another --dir")
    repo.mkdir(parents=True, exist_ok=True)
    denv = demo_env(env)
    denv["MLFLOW_TRACKING_URI"] = f"sqlite:///{(root / 'mlflow.db').resolve()}"
    for name in ("train.py", "data.py", "params.yaml", "mlflow-ci.yml"):
        shutil.copy(PROJECT / name, repo / name)
    (repo / ".gitignore").write_text(".mlflow-ci/\nmlartifacts/\n", encoding="utf-8")

    _banner(stream, f"mlflow-ci demo in {root}\n1/3 main: two commits, each checked (the trend), the second registered as champion")
    _git(repo, denv, "init", "-q", "-b", "main")
    _edit(repo / "params.yaml", r"^C: .*$", "C: 0.01")
    _git(repo, denv, "add", "-A")
    _git(repo, denv, "commit", "-q", "-m", "First model: logistic regression, C=0.01")
    for commit in ("first", "second"):
        if commit == "second":
            _edit(repo / "params.yaml", r"^C: .*$", "C: 0.02")
            _git(repo, denv, "commit", "-q", "-am", "Baseline model: C=0.02")
        base = _check(repo, denv, stream)
        if base.verdict == "fail":
            raise MlflowCiError(f"demo: the {commit} commit on main failed its gate; the demo project is broken")
    version = _register_champion(denv["MLFLOW_TRACKING_URI"], repo, base)
    stream.write(f"registered demo-breast-cancer version {version} as @champion\n")

    steps = []
    plan = (
        (REGRESS_BRANCH, "PR 1: use only the ten 'mean' features (regresses)", "fail",
         r"^features: .*$", "features: [mean radius, mean texture, mean perimeter, mean area, mean smoothness, "
         "mean compactness, mean concavity, mean concave points, mean symmetry, mean fractal dimension]"),
        (IMPROVE_BRANCH, "PR 2: weaker regularisation, C=0.3 (improves)", "pass", r"^C: .*$", "C: 0.3"),
    )
    for number, (branch, title, expected, pattern, replacement) in enumerate(plan, start=2):
        _banner(stream, f"{number}/3 {branch}: {title}")
        _git(repo, denv, "checkout", "-q", "main")
        _git(repo, denv, "checkout", "-q", "-b", branch)
        _edit(repo / "params.yaml", pattern, replacement)
        _git(repo, denv, "commit", "-q", "-am", title)
        outcome = _check(repo, denv, stream)
        kept = root / f"report-{branch.replace('/', '-')}.md"
        shutil.copy(outcome.report_path, kept)
        shutil.copy(outcome.result_path, root / f"result-{branch.replace('/', '-')}.json")
        steps.append(DemoStep(branch, title, expected, outcome, kept))

    result = DemoResult(root, denv["MLFLOW_TRACKING_URI"], version, tuple(steps), time.monotonic() - started)
    _print_summary(result, stream, env)
    return result


def _register_champion(tracking_uri: str, repo: Path, base: CheckResult) -> str:
    from mlflow_ci.tracking import MlflowTracker

    cfg = load_config(repo / "mlflow-ci.yml")
    tracker = MlflowTracker(tracking_uri)
    run_id = base.result.candidate.run_id
    version = tracker.register(run_id, cfg.model, tags={"mlflow_ci.commit": base.result.candidate.commit or ""})
    tracker.set_alias(cfg.model, cfg.baseline.alias, version)
    return version


def _print_summary(result: DemoResult, stream: TextIO, env: Mapping[str, str]) -> None:
    color = color_wanted(env, stream)
    for step in result.steps:
        _banner(stream, f"decision for {step.branch} ({step.title}); the PR comment is {step.report}")
        for line in render(step.outcome.result, color=color):
            stream.write(printable(line) + "\n")
    _banner(stream, "summary")
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

"""``mlflow-ci check --all``: a repository of several model projects, one ``mlflow-ci.yml`` per folder.

Only the projects whose files changed since the PR's base are checked, each into ``OUT/<scope>/`` (see ``scope``)
as a single check would; ``OUT/projects.json`` lists every project and ``OUT/report.md`` is the one
PR comment, a section per model, failing first, the unchanged ones said to be unchanged. Publishing
writes that comment once and a check run per project (an unchanged one succeeds), so branch
protection can require each model's check.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci import gitctx
from mlflow_ci.commands.check import Progress, check_failed, clear_outputs, do_check
from mlflow_ci.commands.session import Options, make_session
from mlflow_ci.commands.stages import CheckResult
from mlflow_ci.config.loader import load_config
from mlflow_ci.errors import MlflowCiError, UsageError
from mlflow_ci.fingerprint import input_files
from mlflow_ci.report import VERDICT_ICON, md

CONFIG_NAME = "mlflow-ci.yml"
INDEX = "projects.json"
MARKER = "<!-- mlflow-ci:report:projects -->"
ORDER = ("error", "fail", "warn", "pass", "unchanged")


@dataclass(frozen=True)
class Project:
    folder: str  # relative to the repository root, "." for the root
    config: Path
    experiment: str
    check_name: str
    changed: bool
    outcome: CheckResult | None = None

    @property
    def verdict(self) -> str:
        return self.outcome.verdict if self.outcome else "unchanged"

    @property
    def slug(self) -> str:
        return scope(self.folder)


def scope(folder: str) -> str:
    """A project's name in artifact names and output folders: its folder made safe ("root" for "."),
    byte by byte, and the first 8 hex digits of the folder's SHA-256, so that folders the readable part
    confuses (``models/churn``, ``models_churn``) never share an artifact. The PR workflow's "Which store"
    step computes the same in shell (``tr -c 'A-Za-z0-9._-' '_'``, ``sha256sum``)."""
    readable = re.sub(rb"[^A-Za-z0-9_.-]", b"_", ("root" if folder == "." else folder).encode()).decode()
    return f"{readable}-{hashlib.sha256(folder.encode()).hexdigest()[:8]}"


def find_configs(root: Path) -> list[Path]:
    """Every ``mlflow-ci.yml`` git tracks (or, outside git, every one under ``root``), sorted."""
    listed = gitctx.git_names(["ls-files", "-z", "--", CONFIG_NAME, f"*/{CONFIG_NAME}"], root)
    if listed is not None:
        return sorted(root / rel for rel in listed)
    return sorted(p for p in root.rglob(CONFIG_NAME) if ".git" not in p.parts)


def changed_paths(root: Path, base_commit: str | None) -> set[str] | None:
    """Paths changed since ``base_commit`` (committed, staged, modified or untracked); None when the
    base is unknown (then every project counts as changed)."""
    if not base_commit:
        return None
    committed = gitctx.git_names(["diff", "--name-only", "-z", base_commit, "HEAD"], root)
    if committed is None:
        return None
    local = gitctx.git_names(["ls-files", "-z", "--modified", "--deleted", "--others", "--exclude-standard"], root) or []
    staged = gitctx.git_names(["diff", "--name-only", "-z", "--cached"], root) or []
    return {*committed, *local, *staged}


def touched(cfg, root: Path, changed: set[str] | None) -> bool:
    """A project changed when a changed path is in its folder or is one of its training inputs."""
    if changed is None:
        return True
    folder = cfg.root.resolve().relative_to(root.resolve()).as_posix()
    prefix = "" if folder == "." else folder + "/"
    if any(path.startswith(prefix) for path in changed):
        return True
    top = root.resolve()
    files = [(cfg.root / rel).resolve() for rel in input_files(cfg)]
    return bool({f.relative_to(top).as_posix() for f in files if f.is_relative_to(top)} & changed)


SAFE_FOLDER = re.compile(r"^(\.|[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*)$")


DEFAULT_BASE_BRANCH = "main"


def list_projects(root: Path, env: Mapping[str, str], base_branch: str | None) -> tuple[list[Project], str | None]:
    """Every project of the repository at ``root`` and whether it changed since the merge-base with the base
    branch — ``GITHUB_BASE_REF``, else ``base_branch``, else ``main``, as ``check`` defaults it — (every one,
    when that base is unknown); and that merge-base."""
    ctx = gitctx.detect(root, env, default_base_branch=base_branch or DEFAULT_BASE_BRANCH)
    top = ctx.repo_root or root
    base = gitctx.merge_base(ctx, top)
    return projects_at(top, changed_paths(top, base)), base


def projects_at(top: Path, changed: set[str] | None = None) -> list[Project]:
    """The projects of the repository at ``top`` (``changed``: paths changed since the base, None: all)."""
    configs = find_configs(top)
    if not configs:
        raise UsageError(f"no {CONFIG_NAME} in {top} (git ls-files finds none)")
    projects = []
    for path in configs:
        folder = path.parent.resolve().relative_to(top.resolve()).as_posix()
        if not SAFE_FOLDER.match(folder):
            raise UsageError(f"{folder}/{CONFIG_NAME}: a model project's folder may hold only letters, digits, '.', '_', '-' and '/'")
        cfg = load_config(path)
        projects.append(Project(folder, path, cfg.experiment, cfg.publish.check_name or f"mlflow-ci / {cfg.experiment}",
                                touched(cfg, top, changed)))
    return projects


def check_all(root: Path, env: Mapping[str, str], stream: TextIO, opts: Options) -> list[Project]:
    """Check the changed projects of the repository at ``root``; write the index and the combined report."""
    listed, base = list_projects(root, env, opts.base_branch)
    projects = [replace(p, outcome=_check_one(p.config, env, stream, opts, p.slug)) if p.changed else p for p in listed]
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    write_index(opts.out_dir, projects, base)
    (opts.out_dir / "report.md").write_text(combined_markdown(projects, base), encoding="utf-8")
    return projects


def _check_one(config: Path, env: Mapping[str, str], stream: TextIO, opts: Options, slug: str) -> CheckResult:
    """One project's check into ``OUT/<slug>/``; a failure leaves its error result, as ``check`` does."""
    own = replace(opts, out_dir=opts.out_dir / slug)
    clear_outputs(own.out_dir)
    progress, session = Progress(), None
    stream.write(f"\n== {config}\n")
    try:
        session = make_session(load_config(config), env, config.parent, stream)
        return do_check(session, own, progress)
    except MlflowCiError as exc:
        return check_failed(session, own, progress, exc, config)


def write_index(out_dir: Path, projects: list[Project], base: str | None) -> Path:
    path = out_dir / INDEX
    path.write_text(json.dumps({"base_commit": base, "projects": [
        {"folder": p.folder, "experiment": p.experiment, "check_name": p.check_name, "changed": p.changed,
         "verdict": p.verdict, "out": p.slug if p.outcome else None} for p in projects]}, indent=2) + "\n", encoding="utf-8")
    return path


def overall(projects: list[Project]) -> str:
    """The verdict of the repository: the worst checked project's, ``pass`` when nothing was checked."""
    checked = [p.verdict for p in projects if p.outcome]
    return min(checked, key=ORDER.index) if checked else "pass"


def combined_markdown(projects: list[Project], base: str | None) -> str:
    """The one PR comment: a summary table, then a section per model, failing first (open), the rest
    collapsed; unchanged ones say so."""
    ordered = sorted(projects, key=lambda p: ORDER.index(p.verdict))
    checked = [p for p in projects if p.outcome]
    verdict = overall(projects)
    headline = {"pass": "passed", "warn": "passed with warnings", "fail": "failed", "error": "could not decide"}[verdict]
    lines = [MARKER, f"## {VERDICT_ICON[verdict]} mlflow-ci · {len(projects)} models: {headline}", ""]
    if not checked:
        lines += [f"Nothing to check: no model's files changed since the base commit {(base or '')[:12]}.", ""]
    else:
        lines += [f"{len(checked)} of {len(projects)} models changed since the base commit {(base or 'unknown')[:12]} and were checked.", ""]
    lines += ["| Model | Folder | Verdict |", "|---|---|---|"]
    for p in ordered:
        icon = VERDICT_ICON.get(p.verdict, "➖")
        lines.append(f"| {md(p.experiment)} | {md(p.folder)} | {icon} {p.verdict} |")
    lines.append("")
    for p in ordered:
        opened = " open" if p.verdict in ("fail", "error") else ""
        lines += [f"<details{opened}><summary>{VERDICT_ICON.get(p.verdict, '➖')} {md(p.experiment)} ({md(p.folder)}): {p.verdict}</summary>", ""]
        if p.outcome is None:
            lines += ["No file of this model changed since the base commit: nothing to check; its check passes.", ""]
        else:
            lines += [decision_part(p.outcome.report_path.read_text(encoding="utf-8"), p.check_name), ""]
        lines += ["</details>", ""]
    return "\n".join(lines)


PASSED_ROW = re.compile(r"^\| (✅|➖)&nbsp;")


def kept_rows(lines: list[str]) -> int:
    return sum(1 for line in lines if line.startswith("| ") and not line.startswith(("| Metric |", "|---|")))


def decision_part(report: str, check_name: str) -> str:
    """A model's section of the combined comment: its report down to the first collapsed section,
    headings one level down, and of the decision table only the rows that failed or warned (ten
    models of fifty metrics stay far inside a comment); the whole report is in the model's check run."""
    kept, hidden = [], 0
    for line in report.split("\n<details", 1)[0].splitlines():
        if line.startswith("<!-- mlflow-ci:report:"):
            continue
        if PASSED_ROW.match(line):
            hidden += 1
            continue
        kept.append(re.sub(r"^## ", "### ", line))
    if hidden and kept_rows(kept) == 0:  # nothing failed: no empty table, no legend of it
        kept = [line for line in kept if not line.startswith(("| Metric |", "|---|", "<sub>Δ"))]
    if hidden:
        kept.append(f"\n{hidden} passing metric{'' if hidden == 1 else 's'} not listed; the check run "
                    f"{md(check_name)} has the whole report.")
    return "\n".join(kept).strip()

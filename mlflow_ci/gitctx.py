"""Where the code under test comes from: commit, branch, base branch and commit, PR number.

Values come from, in order: explicit options, the CI environment (GitHub Actions variables passed in
as a mapping), and the local git repository. Nothing here reads ``os.environ`` itself.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, Mapping


@dataclass(frozen=True)
class GitContext:
    commit: str | None = None  # HEAD as checked out (for a pull_request run: the merge commit)
    head_sha: str | None = None  # the PR's head commit, when a GitHub event says
    branch: str | None = None
    base_branch: str | None = None
    base_commit: str | None = None
    pr_number: int | None = None
    run_url: str | None = None
    repo_url: str | None = None
    repo_root: Path | None = None
    dirty: bool = False

    def with_overrides(self, **values) -> "GitContext":
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def git(args: list[str], cwd: Path) -> str | None:
    """Run git and return its stripped stdout, or None when it fails (no repo, no such ref...)."""
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip()


NOT_FETCHED = "is the history fetched? actions/checkout: fetch-depth: 0"


@contextlib.contextmanager
def detached_worktree(root: Path, sha: str, *, prefix: str) -> Iterator[Path | None]:
    """A throw-away worktree of commit ``sha`` of the repository at ``root``, removed afterwards; None
    when git cannot check the commit out (typically a shallow clone: :data:`NOT_FETCHED`)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        worktree = Path(tmp) / "base"
        if git(["worktree", "add", "--detach", str(worktree), sha], root) is None:
            yield None
            return
        try:
            yield worktree
        finally:
            git(["worktree", "remove", "--force", str(worktree)], root)


def tree_id(root: Path, folder: Path, commit: str | None = None, *, outputs: Iterable[Path] = ()) -> str | None:
    """Git's id of the tree ``folder`` (relative to the repository ``root``) at ``commit``: the same id
    whenever its content is the same. Without ``commit``, the checkout's, and only when git tracks every
    change under ``folder`` (nothing modified or untracked, the tool's own ``outputs`` aside: files, or
    names that start so, such as a store and its journal); None otherwise."""
    spec = "" if str(folder) in ("", ".") else folder.as_posix()
    if commit is None:
        top = root.resolve()
        skipped = [f":(exclude){p.resolve().relative_to(top).as_posix()}*" for p in outputs if p.resolve().is_relative_to(top)]
        status = git(["status", "--porcelain", "--", spec or ".", *skipped], root)
        if status is None or status:
            return None
        commit = "HEAD"
    return git(["rev-parse", "--verify", "--quiet", f"{commit}:{spec}" if spec else f"{commit}^{{tree}}"], root) or None


def git_names(args: list[str], cwd: Path) -> list[str] | None:
    """Run a git command that prints NUL-separated paths (``-z``) and return them, or None when it
    fails. Bytes, not stripped text: a path may start with a space or hold bytes that are not UTF-8."""
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return [name for name in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if name]


def _pr_from_ref(ref: str | None) -> int | None:
    match = re.fullmatch(r"refs/pull/(\d+)/(?:merge|head)", ref or "")
    return int(match.group(1)) if match else None


def detect(
    cwd: Path,
    env: Mapping[str, str],
    *,
    default_base_branch: str | None = None,
) -> GitContext:
    """Build the context for the working tree at ``cwd``."""
    root = git(["rev-parse", "--show-toplevel"], cwd)
    root_path = Path(root) if root else None
    commit = git(["rev-parse", "HEAD"], cwd) if root else None
    branch = env.get("GITHUB_HEAD_REF") or None
    if not branch and root:
        name = git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
        branch = name if name and name != "HEAD" else None
    if not branch and env.get("GITHUB_REF_NAME") and env.get("GITHUB_REF_TYPE", "branch") == "branch":
        if not _pr_from_ref(env.get("GITHUB_REF")):
            branch = env["GITHUB_REF_NAME"]
    base_branch = env.get("GITHUB_BASE_REF") or default_base_branch or None
    dirty = bool(git(["status", "--porcelain", "--untracked-files=no"], cwd)) if root else False
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    repo = env.get("GITHUB_REPOSITORY")
    run_id = env.get("GITHUB_RUN_ID")
    return GitContext(
        commit=commit,
        branch=branch,
        base_branch=base_branch,
        base_commit=None,
        pr_number=_pr_from_ref(env.get("GITHUB_REF")),
        run_url=f"{server}/{repo}/actions/runs/{run_id}" if repo and run_id else None,
        repo_url=f"{server}/{repo}" if repo else None,
        repo_root=root_path,
        dirty=dirty,
    )


def merge_base(ctx: GitContext, cwd: Path) -> str | None:
    """The commit the PR branched from: merge-base of HEAD and the base branch (remote first)."""
    if not ctx.base_branch or not ctx.repo_root:
        return None
    for ref in (f"origin/{ctx.base_branch}", ctx.base_branch):
        found = git(["merge-base", "HEAD", ref], cwd)
        if found:
            return found
    return None

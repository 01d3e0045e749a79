"""Which commit of mlflow-ci this is: what ``mlflow-ci init`` pins the workflows it writes to, so that CI runs
the mlflow-ci the user ran.

A wheel built from a git checkout carries ``BUILD_COMMIT`` (written by ``hatch_build.py``: the commit, and the
tag when the commit is one); an editable install or a run from source asks git in the source folder. None when
neither can tell (an sdist build): ``init`` then keeps the commit its packaged templates pin.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Source:
    commit: str
    tag: str | None  # the tag at that commit (v0.2.0), when it has one

    def label(self, version: str) -> str:
        """The comment beside a pin: the release tag, or the version and that it is no release."""
        return self.tag or f"mlflow-ci {version}, untagged commit"


def built_from(here: Path = HERE) -> Source | None:
    recorded = here / "BUILD_COMMIT"
    if recorded.is_file():
        try:
            facts = json.loads(recorded.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        commit, tag = facts.get("commit"), facts.get("tag")
        return Source(commit, tag if isinstance(tag, str) and tag else None) if isinstance(commit, str) and SHA.match(commit) else None
    if not (here.parent / "pyproject.toml").is_file():
        return None
    commit = _git(here.parent, "rev-parse", "HEAD")
    if commit is None or not SHA.match(commit) or _git(here.parent, "rev-parse", "--show-toplevel") != str(here.parent):
        return None
    return Source(commit, _git(here.parent, "describe", "--tags", "--exact-match", "HEAD"))


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None

"""Build hook: record the commit mlflow-ci is built from, as ``mlflow_ci/BUILD_COMMIT`` in the wheel, so that
``mlflow-ci init`` pins the workflows it writes to the mlflow-ci that wrote them (``mlflow_ci/source.py``).

It never fails a build: outside a git checkout (an sdist, a tarball) nothing is recorded, and ``init`` falls
back to the commit the packaged templates pin. An editable install records nothing either: there the source
folder is a git checkout, which ``mlflow_ci.source`` asks directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _git(root: str, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


class SourceCommitHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if version == "editable":
            return
        commit = _git(self.root, "rev-parse", "HEAD")
        if commit is None or len(commit) != 40:
            return
        facts = {"commit": commit, "tag": _git(self.root, "describe", "--tags", "--exact-match", "HEAD")}
        handle, path = tempfile.mkstemp(prefix="mlflow-ci-build-", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(facts, out)
        build_data["force_include"][path] = "mlflow_ci/BUILD_COMMIT"

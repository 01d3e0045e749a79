"""The release pipeline's own pieces: the version agrees everywhere, and the notes come from CHANGELOG.md."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import tomllib
from conftest import ROOT

from mlflow_ci import __version__

SCRIPT = ROOT / ".github" / "scripts" / "release_notes.py"
spec = importlib.util.spec_from_file_location("release_notes", SCRIPT)
release_notes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(release_notes)

CHANGELOG = """# Changelog

## Unreleased
- next

## [0.2.0] - 2026-12-01
### Added
- schema

## 0.1.0

First.
"""


def test_sections_by_tag():
    assert release_notes.section(CHANGELOG, "v0.2.0") == "### Added\n- schema"
    assert release_notes.section(CHANGELOG, "v0.1.0") == "First."
    assert release_notes.section(CHANGELOG, "v0.1") is None
    assert release_notes.section(CHANGELOG, "v0.3.0") is None


def test_a_tag_without_notes_does_not_release(tmp_path):
    path = tmp_path / "CHANGELOG.md"
    path.write_text(CHANGELOG)
    ok = subprocess.run([sys.executable, str(SCRIPT), "v0.1.0", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == "First.\n"
    missing = subprocess.run([sys.executable, str(SCRIPT), "v9.9.9", str(path)], capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr.startswith("::error title=release::")


def test_the_version_agrees_everywhere_and_has_notes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == __version__
    assert release_notes.section((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), f"v{__version__}")

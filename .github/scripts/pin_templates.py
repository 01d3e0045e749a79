"""Pin the workflow templates to a commit of mlflow-ci: ``uses: mlflow-ci/mlflow-ci/...@<sha> # v<version>``.

The templates (``workflow-templates/`` for organisations, ``mlflow_ci/templates/workflows/`` for
``mlflow-ci init``) are copied into users' repositories, where a tag reference would need a
``zizmor: ignore[unpinned-uses]``. A commit cannot name its own SHA, so a release is two commits:
the release commit, then one made by this script that pins the templates to it; the tag goes on the
second. ``--check REF`` verifies that the pinned commit is an ancestor of REF and that everything a
called workflow runs (``.github/workflows/``, ``actions/``, ``mlflow_ci/`` apart from the templates)
is identical at both, so the pinned commit is the release.

    python .github/scripts/pin_templates.py --sha "$(git rev-parse HEAD)"   # then commit, then tag
    python .github/scripts/pin_templates.py --check HEAD                      # in the release workflow
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIRS = (ROOT / "workflow-templates", ROOT / "mlflow_ci" / "templates" / "workflows")
USES = re.compile(r"(uses: mlflow-ci/mlflow-ci/\.github/workflows/[\w.-]+\.yml)@\S+(?: #.*)?$", re.MULTILINE)
PINNED = re.compile(r"uses: mlflow-ci/mlflow-ci/\.github/workflows/([\w.-]+\.yml)@([0-9a-f]{40}) # v(\S+)$", re.MULTILINE)
RUNS = (".github/workflows", "actions", "mlflow_ci", ":(exclude)mlflow_ci/templates")


def templates() -> list[Path]:
    return sorted(p for folder in TEMPLATE_DIRS for p in folder.glob("*.yml"))


def version() -> str:
    text = (ROOT / "mlflow_ci" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE).group(1)


def pin(sha: str) -> list[Path]:
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise SystemExit(f"--sha must be a full commit SHA, not {sha!r}")
    changed = []
    for path in templates():
        text = path.read_text(encoding="utf-8")
        pinned = USES.sub(lambda m: f"{m.group(1)}@{sha} # v{version()}", text)
        if pinned != text:
            path.write_text(pinned, encoding="utf-8")
            changed.append(path)
    return changed


def pins() -> dict[Path, list[tuple[str, str, str]]]:
    return {path: PINNED.findall(path.read_text(encoding="utf-8")) for path in templates()}


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def check(ref: str) -> list[str]:
    problems = []
    shas = {sha for found in pins().values() for _, sha, _ in found}
    if len(shas) != 1:
        return [f"the templates pin {len(shas)} different commits; expected one: {sorted(shas)}"]
    sha = shas.pop()
    if git("merge-base", "--is-ancestor", sha, ref).returncode != 0:
        problems.append(f"{sha} is not an ancestor of {ref}")
    elif git("diff", "--quiet", sha, ref, "--", *RUNS).returncode != 0:
        problems.append(f"what a called workflow runs differs between {sha[:12]} and {ref}: pin again with --sha")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--sha", help="pin every template to this commit")
    group.add_argument("--check", metavar="REF", help="verify the pins against REF (e.g. the release tag)")
    args = parser.parse_args(argv)
    if args.sha:
        for path in pin(args.sha):
            print(f"pinned {path.relative_to(ROOT)}")
        return 0
    problems = check(args.check)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

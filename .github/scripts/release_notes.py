"""Print the CHANGELOG.md section of one release (the GitHub release's notes); exit 1 when it is missing.

    python .github/scripts/release_notes.py v0.2.0 [CHANGELOG.md]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def section(changelog: str, tag: str) -> str | None:
    """The body under ``## [X.Y.Z]`` or ``## X.Y.Z`` (tag ``vX.Y.Z``), up to the next ``## `` heading."""
    version = re.escape(tag.removeprefix("v"))
    match = re.search(rf"^## \[?v?{version}\]?(?:[ \t][^\n]*)?\n(.*?)(?=^## |\Z)", changelog, re.M | re.S)
    return match.group(1).strip() if match and match.group(1).strip() else None


def main(argv: list[str]) -> int:
    tag = argv[0]
    path = Path(argv[1] if len(argv) > 1 else "CHANGELOG.md")
    body = section(path.read_text(encoding="utf-8"), tag)
    if body is None:
        print(f"::error title=release::{path} has no section for {tag}; add '## {tag.removeprefix('v')}' before tagging", file=sys.stderr)
        return 1
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

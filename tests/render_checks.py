"""Structure checks of a report as GitHub renders it: GFM through cmark-gfm (GitHub's own parser, via
cmarkgfm), Mermaid blocks through Mermaid's own parser in Node (docs/render)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

RENDER = Path(__file__).resolve().parent.parent / "docs" / "render"
# What our templates write, and what Markdown itself produces; anything else came from somewhere else.
ALLOWED_TAGS = {"h2", "h3", "p", "strong", "em", "code", "pre", "table", "thead", "tbody", "tr", "th", "td",
                "details", "summary", "sub", "br", "a", "ul", "li", "ol", "del"}


def to_html(markdown: str) -> str:
    import cmarkgfm
    from cmarkgfm.cmark import Options

    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE | Options.CMARK_OPT_GITHUB_PRE_LANG)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.comments: list[str] = []
        self.cells: list[list[int]] = []  # per table: cells of each row

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.cells.append([])
        elif tag == "tr":
            self.cells[-1].append(0)
        elif tag in ("td", "th"):
            self.cells[-1][-1] += 1

    def handle_comment(self, data):
        self.comments.append(data)


def parsed(markdown: str) -> _Tags:
    tags = _Tags()
    tags.feed(to_html(markdown))
    return tags


def table_problems(markdown: str) -> list[str]:
    """Source rows whose cell count differs from their table's header (cmark-gfm would silently pad
    or drop cells), and tables whose rendered rows differ."""
    problems = []
    for block in re.split(r"\n\s*\n", markdown):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if len(rows) >= 2 and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", rows[1].replace(" ", "")):
            width = _cells(rows[0])
            problems += [f"{width} header cells, {_cells(row)} in: {row[:80]}" for row in rows[2:] if _cells(row) != width]
    for table in parsed(markdown).cells:
        if len(set(table)) > 1:
            problems.append(f"rendered table with rows of {sorted(set(table))} cells")
    return problems


def _cells(row: str) -> int:
    return len(re.sub(r"\\\|", "", row).strip().strip("|").split("|"))


def mermaid_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```mermaid\n(.*?)^```$", markdown, flags=re.S | re.M)


def mermaid_problems(blocks: list[str]) -> list[str]:
    """Parse each block with Mermaid's own parser (Node; `npm ci` in docs/render on first use)."""
    if not blocks:
        return []
    node = shutil.which("node")
    assert node, "Node.js is needed to parse Mermaid blocks (the machine's node)"
    if not (RENDER / "node_modules" / "mermaid").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=RENDER, check=True, timeout=600)
    proc = subprocess.run([node, str(RENDER / "mermaid_parse.mjs")], input=json.dumps(blocks), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [f"block {i + 1}: {r['error']}" for i, r in enumerate(json.loads(proc.stdout)) if not r["ok"]]

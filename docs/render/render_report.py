"""Render a report.md the way a pull request shows it, to PNG: GitHub's own Markdown (cmark-gfm, via
cmarkgfm), GitHub's Markdown stylesheet and Mermaid from npm, in Debian's headless Chromium.

    cd docs/render && npm ci && cd ../..
    python docs/render/render_report.py REPORT.md [REPORT.md ...] --out-dir docs/img [--full-page]

Each REPORT.md becomes REPORT.png (the first 1280 × 800 screen, or the whole comment with
--full-page) and the script prints, per report, where the first collapsed section starts (in pixels from
the top of the screen), tables wider than the comment, and any Mermaid block that failed to draw. Exit 1
when a diagram failed or a table overflows.

Needs: `apt-get install chromium` (or CHROMIUM=/path/to/chrome), `npm ci` in this folder, and cmarkgfm
(in the project's test extra).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = HERE / "node_modules"
WIDTH, HEIGHT = 1280, 800
# A pull request's comment box at a 1280-pixel window: GitHub's layout gives the body about 830 pixels.
FRAME = """<!doctype html>
<html><head><meta charset="utf-8">
<link rel="stylesheet" href="{css}">
<style>
  body {{ margin: 0; background: #f6f8fa; }}
  .comment {{ width: 830px; margin: 16px auto; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; }}
  .comment header {{ padding: 8px 16px; border-bottom: 1px solid #d0d7de; background: #f6f8fa; color: #59636e;
                     font: 14px -apple-system, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif; }}
  .markdown-body {{ padding: 16px; }}
</style>
<script src="{mermaid}"></script>
</head><body>
<div class="comment"><header><b>github-actions</b> bot commented</header>
<article class="markdown-body">{body}</article></div>
<script>
(async () => {{
  const blocks = [...document.querySelectorAll("pre.mermaid")];
  const sources = blocks.map(b => b.textContent);
  const failures = [];
  mermaid.initialize({{ startOnLoad: false, theme: "default" }});
  for (const [i, text] of sources.entries()) {{
    try {{ await mermaid.parse(text); }} catch (e) {{ failures.push({{ block: i + 1, error: String(e.message || e).split("\\n")[0] }}); }}
  }}
  try {{ await mermaid.run({{ nodes: blocks }}); }} catch (e) {{ }}
  const fold = document.querySelector(".markdown-body details");
  const out = document.createElement("script");
  out.type = "application/json";
  out.id = "measured";
  out.textContent = JSON.stringify({{
    first_details_top: fold ? Math.round(fold.getBoundingClientRect().top + window.scrollY) : null,
    height: Math.ceil(document.documentElement.scrollHeight),
    diagrams: sources.length, failures,
    overflowing_tables: [...document.querySelectorAll(".markdown-body table")].filter(t => t.scrollWidth > t.clientWidth + 1).length,
  }});
  document.body.appendChild(out);
}})();
</script>
</body></html>
"""


def to_html(markdown: str) -> str:
    """report.md as GitHub turns it into HTML: cmark-gfm with its extensions and tag filter; Mermaid
    blocks handed to Mermaid."""
    import cmarkgfm
    from cmarkgfm.cmark import Options

    body = cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE | Options.CMARK_OPT_GITHUB_PRE_LANG)
    return re.sub(r'<pre lang="mermaid"><code>(.*?)</code></pre>',
                  lambda m: f'<pre class="mermaid">{m.group(1)}</pre>', body, flags=re.S)


def chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        sys.exit("render_report: Chromium not found: apt-get install chromium, or set CHROMIUM")
    return found


def _browser(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--allow-file-access-from-files", f"--user-data-dir={profile}",
             "--virtual-time-budget=15000"]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=120, check=False)


def render(report: Path, png: Path, *, full_page: bool = False) -> dict:
    """Write ``png`` for ``report``; return what the page measured (first collapsed section, height,
    Mermaid failures)."""
    if not (MODULES / "mermaid").is_dir():
        sys.exit(f"render_report: run `npm ci` in {HERE} first")
    page = FRAME.format(css=(MODULES / "github-markdown-css/github-markdown-light.css").as_uri(),
                        mermaid=(MODULES / "mermaid/dist/mermaid.min.js").as_uri(),
                        body=to_html(report.read_text(encoding="utf-8")))
    with tempfile.TemporaryDirectory(prefix="render-report-") as tmp:
        path = Path(tmp) / "page.html"
        path.write_text(page, encoding="utf-8")
        dumped = _browser([f"--window-size={WIDTH},{HEIGHT}", "--dump-dom", path.as_uri()], Path(tmp) / "a")
        found = re.search(r'<script type="application/json" id="measured">(.*?)</script>', dumped.stdout, re.S)
        if not found:
            sys.exit(f"render_report: the page did not finish rendering {report}: {dumped.stderr.strip()[-300:]}")
        measured = json.loads(html.unescape(found.group(1)))
        height = max(HEIGHT, measured["height"]) if full_page else HEIGHT
        png.parent.mkdir(parents=True, exist_ok=True)
        shot = _browser([f"--window-size={WIDTH},{height}", f"--screenshot={png.resolve()}", path.as_uri()], Path(tmp) / "b")
        if shot.returncode != 0 or not png.is_file():
            sys.exit(f"render_report: Chromium made no screenshot of {report}: {shot.stderr.strip()[-300:]}")
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--out-dir", type=Path, default=Path("."))
    parser.add_argument("--full-page", action="store_true", help="the whole comment, not the first screen")
    args = parser.parse_args(argv)
    failed = False
    for report in args.reports:
        png = args.out_dir / (report.stem + ".png")
        measured = render(report, png, full_page=args.full_page)
        fold = measured["first_details_top"]
        print(f"{png}: first collapsed section at {fold}px of a {HEIGHT}px screen "
              f"({'fits' if fold is not None and fold <= HEIGHT else 'does NOT fit'}); "
              f"{measured['diagrams']} Mermaid diagram(s), {len(measured['failures'])} failed; "
              f"{measured['overflowing_tables']} table(s) wider than the comment")
        for failure in measured["failures"]:
            print(f"  diagram {failure['block']}: {failure['error']}")
        failed = failed or bool(measured["failures"]) or bool(measured["overflowing_tables"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

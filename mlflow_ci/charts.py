"""The report's pictures, drawn from numbers only: a Δ-against-its-limit text plot and a sparkline for
the gated table, and a Mermaid line chart of each gated metric's trend on the base branch.

Names reach a chart only when they match :data:`CHART_NAME` (letters, digits, ``_ . -``): nothing a pull
request writes can close a Mermaid string or a code span.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

CHART_NAME = re.compile(r"[A-Za-z0-9_.-]{1,60}")
PLOT_WIDTH = 13
SPARKS = "▁▂▃▄▅▆▇█"
RELATIVE = ("max_drop", "max_drop_pct")


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def allowed_change(rule: str, limit: float | None, baseline: float | None) -> float | None:
    """How far a metric may move the wrong way under a relative rule, in the metric's units (≥ 0)."""
    if not _finite(limit, baseline) or rule not in RELATIVE:
        return None
    return limit if rule == "max_drop" else limit / 100 * abs(baseline)


@dataclass(frozen=True)
class Span:
    """A value range mapped onto ``width`` character cells."""
    low: float
    high: float
    width: int = PLOT_WIDTH

    @classmethod
    def around(cls, values: list[float], width: int = PLOT_WIDTH) -> "Span":
        low, high = min(values), max(values)
        pad = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
        return cls(low - pad, high + pad, width)

    def rounded(self) -> "Span":
        """Outward to a round step (a tenth of the span's order of magnitude), for an axis."""
        step = 10 ** (math.floor(math.log10(self.high - self.low)) - 1)
        return Span(math.floor(self.low / step) * step, math.ceil(self.high / step) * step, self.width)

    def cell(self, value: float) -> int:
        return min(self.width - 1, max(0, round((value - self.low) / (self.high - self.low) * (self.width - 1))))


def delta_plot(delta: float | None, low: float | None, high: float | None, allowed: float | None, direction: str) -> str:
    """``··┊··│···├──●─┤····``: the change (●) and its interval (├─┤) against no change (│) and the
    allowed limit (┊), oriented so that better is to the right. Empty when there is no change to draw."""
    if not _finite(delta):
        return ""
    sign = 1 if direction == "higher" else -1
    point = sign * delta
    interval = sorted((sign * low, sign * high)) if _finite(low, high) else None
    limit = -allowed if _finite(allowed) else None
    span = Span.around([0.0, point, *(interval or []), *([limit] if limit is not None else [])])
    cells = ["·"] * span.width
    if interval:
        a, b = span.cell(interval[0]), span.cell(interval[1])
        for i in range(a, b + 1):
            cells[i] = "─"
        cells[a], cells[b] = "├", "┤"
    cells[span.cell(0.0)] = "│"
    if limit is not None and limit != 0:
        cells[span.cell(limit)] = "┊"
    cells[span.cell(point)] = "●"
    return "".join(cells)


def sparkline(history: list[float], candidate: float | None) -> str:
    """``▃▃▄▃▂▃→▁``: the base branch's recent values, then the candidate's, on one scale."""
    values = [v for v in history if _finite(v)]
    if not values:
        return ""
    scale = values + ([candidate] if _finite(candidate) else [])
    low, high = min(scale), max(scale)

    def spark(v: float) -> str:
        return SPARKS[3] if high == low else SPARKS[round((v - low) / (high - low) * (len(SPARKS) - 1))]

    line = "".join(spark(v) for v in values)
    return f"{line}→{spark(candidate)}" if _finite(candidate) else line


def _number(value: float) -> str:
    return f"{value:.6g}" if value else "0"


def trend_chart(name: str, branch: str, commits: list[str | None], history: list[float], candidate: float | None,
                limit: float | None) -> str | None:
    """A Mermaid line chart: the metric on the last gated runs of ``branch``, then this PR's candidate,
    and the limit the gate allows as a second, flat line. The y-axis is fitted to the values and the
    limit (and says so in the title); None when the name is not chartable or nothing was measured."""
    if not CHART_NAME.fullmatch(name) or not history or not _finite(candidate):
        return None
    values = [*history, candidate]
    span = Span.around(values + ([limit] if _finite(limit) else [])).rounded()
    labels = [re.sub(r"[^0-9a-f]", "", (c or "")[:7]) or "run" for c in commits] + ["this PR"]
    lines = [
        INIT,
        "xychart-beta",
        f'    title "{name}: last {_runs(len(history))} on {_branch(branch)}, then this PR (y from {_number(span.low)})"',
        "    x-axis [" + ", ".join(f'"{label}"' for label in labels) + "]",
        f'    y-axis "{name}" {_number(span.low)} --> {_number(span.high)}',
        "    line [" + ", ".join(_number(v) for v in values) + "]",
    ]
    if _finite(limit):
        lines.append("    line [" + ", ".join([_number(limit)] * len(values)) + "]")
    return "\n".join(lines)


# A short chart; the metric in blue, the limit in red (GitHub's palette).
INIT = ('%%{init: {"xyChart": {"width": 720, "height": 260}, '
        '"themeVariables": {"xyChart": {"plotColorPalette": "#0969da, #cf222e"}}}}%%')


def _runs(n: int) -> str:
    return "gated run" if n == 1 else f"{n} gated runs"


def _branch(branch: str) -> str:
    return branch if CHART_NAME.fullmatch(branch) else "the base branch"

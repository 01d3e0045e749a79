"""The decision as plain text for a terminal: what report.md says first, without Markdown or HTML
entities, columns aligned, colours only on a terminal that wants them (a TTY, ``NO_COLOR`` unset,
``TERM`` not ``dumb``; see no-color.org)."""

from __future__ import annotations

import unicodedata
from typing import Mapping, TextIO

from mlflow_ci.result import Result

COLORS = {"pass": "32", "warn": "33", "fail": "31", "FAIL": "31", "error": "31", "skip": "2"}


def color_wanted(env: Mapping[str, str], stream: TextIO) -> bool:
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, key: str, color: bool) -> str:
    code = COLORS.get(key)
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def plain(value) -> str:
    """Untrusted text for a terminal: no control or format characters (no escape sequences of its own)."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in str(value))


def baseline_line(base) -> str:
    """``<description>, from <origin>, trained <age>``: what the baseline is, where it came from, how old."""
    where = base.where()
    return plain(base.description) + (f", {plain(where)}" if where else "")


def render(result: Result, *, color: bool = False) -> list[str]:
    """The lines: verdict, baseline, candidate, then one aligned row per rule (failing first)."""
    verdict = paint(result.verdict.upper(), result.verdict, color)
    lines = [f"verdict: {verdict} ({plain(result.experiment)})"]
    if result.error is not None:
        return [*lines, f"stage: {result.error.stage}: {plain(result.error.reason)}"]
    base = result.baseline
    lines.append(f"baseline: {baseline_line(base)}" if base else "baseline: none")
    lines += [plain(note) for note in result.notes if note.startswith(("warning:", "no usable baseline"))]
    cand = result.candidate
    lines.append(f"candidate: run {cand.run_id}" + (" (reused, not retrained)" if cand.cached else ""))
    checks = sorted(result.checks, key=lambda c: {False: 0, None: 2}.get(c.passed, 1))  # failing first
    if not checks:
        names = sorted(cand.metrics)
        return [*lines, "gate: no rules: nothing is gated — add rules under gate:"
                + (f" (this run's metrics: {plain(', '.join(names[:8]))}{', …' if len(names) > 8 else ''})" if names else "")]
    width_metric = min(max(len(plain(c.metric)) for c in checks), 40)
    width_rule = max(len(c.rule) for c in checks)
    for check in checks:
        mark = {True: "pass", False: "FAIL", None: "skip"}[check.passed]
        if check.passed is False and not check.blocking:
            mark = "warn"
        status = paint(f"[{mark}]", mark, color)
        suffix = "" if check.blocking else " (warn only)"
        lines.append(f"  {status} {plain(check.metric):<{width_metric}}  {check.rule:<{width_rule}}  {plain(check.message)}{suffix}")
    return lines

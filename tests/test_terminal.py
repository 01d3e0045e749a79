"""The decision in a terminal: plain text, aligned, failing first, colours only where wanted."""

from __future__ import annotations

import io

from mlflow_ci.result import Result
from mlflow_ci.terminal import color_wanted, render


def result(**extra) -> Result:
    return Result.build({
        "schema": 1, "verdict": "fail", "experiment": "churn",
        "candidate": {"run_id": "a" * 32, "cached": True},
        "baseline": {"run_id": "b" * 32, "source": "alias:champion", "description": "registered model churn version 1 (@champion)"},
        "checks": [
            {"metric": "accuracy", "rule": "min", "limit": 0.8, "value": 0.9, "passed": True, "blocking": True, "message": "0.9 ≥ min 0.8"},
            {"metric": "eval.log_loss", "rule": "max_drop", "limit": 0, "value": 0.2, "passed": False, "blocking": True,
             "message": "Δ 0.02 → significant regression"},
            {"metric": "f1\x1b[31m", "rule": "threshold", "limit": 0.9, "value": 0.5, "passed": False, "blocking": False, "message": "0.5 < 0.9"},
        ],
        **extra,
    })


def test_plain_aligned_failing_first_without_entities():
    lines = render(result())
    assert lines[:3] == ["verdict: FAIL (churn)", "baseline: registered model churn version 1 (@champion)",
                         f"candidate: run {'a' * 32} (reused, not retrained)"]
    assert lines[3] == "  [FAIL] eval.log_loss  max_drop   Δ 0.02 → significant regression"
    assert lines[4] == "  [warn] f1 [31m        threshold  0.5 < 0.9 (warn only)"  # no escape sequence of its own
    assert lines[5] == "  [pass] accuracy       min        0.9 ≥ min 0.8"
    assert not any("&#" in line or "\\@" in line for line in lines)


def test_colours_only_on_a_terminal_that_wants_them():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert color_wanted({}, Tty()) and not color_wanted({}, io.StringIO())
    assert not color_wanted({"NO_COLOR": "1"}, Tty()) and not color_wanted({"TERM": "dumb"}, Tty())
    coloured = render(result(), color=True)
    assert coloured[0] == "verdict: \x1b[31mFAIL\x1b[0m (churn)" and "\x1b[32m[pass]\x1b[0m" in coloured[5]


def test_the_first_screen_says_what_is_gated_and_what_to_worry_about():
    """Issue #27, item 7: with gate: {} the terminal and the report name the metrics nothing gates; a warning
    (an unseeded training, an old baseline) is on the first screen, not only in a collapsed list."""
    from pathlib import Path

    from mlflow_ci.config.models import ReportConfig
    from mlflow_ci.report import render_markdown

    ungated = result(verdict="pass", checks=[], candidate={"run_id": "a" * 32, "metrics": {"rmse": 4.0, "accuracy": 0.9}},
                     notes=["warning: two trainings of the same inputs disagree (accuracy 0.9 vs 0.91 in run abc): seed the training"])
    lines = render(ungated)
    assert lines[-1] == "gate: no rules: nothing is gated — add rules under gate: (this run's metrics: accuracy, rmse)"
    assert "warning: two trainings of the same inputs disagree (accuracy 0.9 vs 0.91 in run abc): seed the training" in lines
    markdown = render_markdown(ungated, ReportConfig(), Path("."))
    head = markdown.split("<details", 1)[0]
    assert "**PASS**: no rules: nothing is gated — add rules under `gate:` (this run's metrics: accuracy, rmse)." in head
    assert "⚠️ two trainings of the same inputs disagree" in head

"""Candidate and baseline app on the same rows: every scorer's verdict per row for both, each scorer's
pass rate as a ``genai.<scorer>`` metric with the paired bootstrap interval of its change (so
``significance:`` rules work as for models), and the rows whose verdict changed — the ones that passed
before and fail now first — with the input, both outputs and the scorer's reason, for the report.

Outputs and rationales are the app's and the judge's text: untrusted. They are kept as plain strings,
cut to a bounded length here; the report escapes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping

from mlflow_ci.config.models import GENAI_PREFIX
from mlflow_ci.genai.judge import Judge
from mlflow_ci.genai.mlflow_scorers import MlflowScorers
from mlflow_ci.genai.runner import DataRow, Output
from mlflow_ci.genai.scorers import Row, Score, Scorer

SHOWN_CHARS = 500  # of an input, an output or a reason, per changed row
SHOWN_ROWS = 20  # changed rows kept per scorer


@dataclass(frozen=True)
class ChangedRow:
    scorer: str
    row: int
    change: str  # "regressed" (passed before, fails now) or "fixed"
    inputs: str
    candidate_output: str
    baseline_output: str
    reason: str  # the scorer's reason for the candidate's verdict


@dataclass(frozen=True)
class GenaiComparison:
    rows: int
    candidate: dict[str, float]  # genai.<scorer> -> pass rate
    baseline: dict[str, float] | None
    intervals: dict  # genai.<scorer> -> Interval of the change (paired), when there is a baseline
    changed: tuple[ChangedRow, ...]
    regressed: dict[str, int]  # per scorer: rows that passed before and fail now
    fixed: dict[str, int]
    errors: dict[str, int]  # per side: rows where the app raised
    judge: dict = field(default_factory=dict)  # calls, tokens, flipped rows per judge scorer


class JudgeScorer:
    """A scorer asking an LLM judge about one row; counts the rows whose repeats disagreed."""

    def __init__(self, judge: Judge, instructions: str) -> None:
        self.judge, self.instructions, self.flipped = judge, instructions, 0

    def __call__(self, row: Row) -> Score:
        question = (f"Inputs:\n{_cut(json.dumps(dict(row.inputs), ensure_ascii=False), 4000)}\n\n"
                    f"Answer:\n{_cut(row.output, 8000)}")
        if row.expectations:
            question += f"\n\nExpectations:\n{_cut(json.dumps(dict(row.expectations), ensure_ascii=False), 4000)}"
        judged = self.judge.judge(self.instructions, question)
        self.flipped += judged.flipped
        return Score(judged.passed, judged.rationale)


def score_rows(scorers: Mapping[str, Scorer], rows: list[DataRow], outputs: list[Output]) -> dict[str, list[Score | None]]:
    """Every scorer's verdict on every row; a row where the app raised fails every scorer."""
    if len(outputs) != len(rows):
        raise ValueError(f"the app answered {len(outputs)} of {len(rows)} rows")
    scored = {}
    for name, scorer in scorers.items():
        verdicts = []
        for data, out in zip(rows, outputs):
            if out.error is not None:
                verdicts.append(Score(False, f"the app raised: {out.error}"))
            else:
                verdicts.append(scorer(Row(data.inputs, out.text, data.expectations, out.latency_ms)))
        scored[name] = verdicts
    return scored


def compare_apps(rows: list[DataRow], candidate: dict[str, list[Score | None]], cand_outputs: list[Output],
                 baseline: dict[str, list[Score | None]] | None, base_outputs: list[Output] | None, *,
                 resamples: int = 1000, seed: int = 0, confidence: float = 0.95, judge: dict | None = None) -> GenaiComparison:
    import numpy as np

    from mlflow_ci.evaluate.metrics import paired_metrics, scored_value

    def rates(scored: dict[str, list[Score | None]]) -> dict:
        return {GENAI_PREFIX + name: np.array([np.nan if s is None else s.points for s in verdicts], dtype=np.float64)
                for name, verdicts in scored.items()}

    cand_metrics = rates(candidate)
    errors = {"candidate": sum(o.error is not None for o in cand_outputs)}
    if baseline is None or base_outputs is None:
        points = {name: scored_value(values) for name, values in cand_metrics.items()}
        return GenaiComparison(len(rows), points, None, {}, (), {}, {}, errors, judge or {})
    errors["baseline"] = sum(o.error is not None for o in base_outputs)
    paired = paired_metrics(cand_metrics, rates(baseline), len(rows), resamples=resamples, seed=seed,
                            confidence=confidence)
    changed, regressed, fixed = [], {}, {}
    for name in candidate:
        flips = [(i, c, b) for i, (c, b) in enumerate(zip(candidate[name], baseline[name]))
                 if c is not None and b is not None and c.passed != b.passed]
        regressed[name] = sum(1 for _, c, _ in flips if not c.passed)
        fixed[name] = len(flips) - regressed[name]
        for i, c, _ in sorted(flips, key=lambda f: (f[1].passed, f[0]))[:SHOWN_ROWS]:  # regressions first
            changed.append(ChangedRow(name, i, "fixed" if c.passed else "regressed",
                                      _cut(json.dumps(dict(rows[i].inputs), ensure_ascii=False, default=str), SHOWN_CHARS),
                                      _cut(cand_outputs[i].text, SHOWN_CHARS), _cut(base_outputs[i].text, SHOWN_CHARS),
                                      _cut(c.rationale, SHOWN_CHARS)))
    return GenaiComparison(len(rows), paired.candidate, paired.baseline, paired.intervals, tuple(changed),
                           regressed, fixed, errors, judge or {})


@dataclass
class ScorerSet:
    """Every scorer of a check, in the config's order: those called row by row in this process, and
    MLflow's built-in ones, run a side at a time in a child Python. They share one judge, hence one budget."""
    row_scorers: dict[str, Scorer]
    order: tuple[str, ...]
    mlflow: MlflowScorers | None = None
    judge: Judge | None = None

    def score(self, rows: list[DataRow], outputs: list[Output], side: str) -> dict[str, list[Score | None]]:
        scored = score_rows(self.row_scorers, rows, outputs)
        if self.mlflow is not None:
            scored.update(self.mlflow.score(rows, outputs, side))
        return {name: scored[name] for name in self.order}

    def judge_summary(self) -> dict:
        """What the judges cost and how steady they were: requests and tokens spent (retries and repeats
        included, one budget per check) and, per scorer that asks the judge, the rows whose repeats disagreed."""
        if self.judge is None:
            return {}
        flipped = {name: s.flipped for name, s in self.row_scorers.items() if isinstance(s, JudgeScorer)}
        if self.mlflow is not None:
            flipped.update({spec.metric: self.mlflow.flipped.get(spec.metric, 0) for spec in self.mlflow.specs if spec.llm})
        budget = self.judge.budget
        return {"calls": budget.calls, "tokens": budget.tokens, "max_calls": budget.max_calls,
                "flipped": {name: flipped[name] for name in self.order if name in flipped}}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

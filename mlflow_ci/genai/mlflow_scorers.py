"""MLflow's built-in scorers (``{mlflow: Correctness}``) on one side's rows.

They run in a child Python (:mod:`mlflow_ci.tracking.scoring`, the wing that imports MLflow), a side
at a time. Those that ask an LLM reach it only through the check's :class:`~.proxy.JudgeProxy` on
loopback, so MLflow's judges use the pinned model and spend from the same budget as mlflow-ci's own
judge scorers; the child never holds the key. ``repeats`` asks each LLM scorer k times per row and
aggregates as the judge does; rows whose repeats disagreed are counted.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci.errors import ServiceError, UsageError
from mlflow_ci.genai.judge import Judge, aggregate
from mlflow_ci.genai.proxy import JudgeProxy
from mlflow_ci.genai.runner import DataRow, Output
from mlflow_ci.genai.scorers import Score, as_score

PASSING = {"yes": True, "no": False, "pass": True, "fail": False, "true": True, "false": False}


@dataclass(frozen=True)
class MlflowScorerSpec:
    metric: str  # genai.<metric>
    cls: str  # the class in mlflow.genai.scorers
    arguments: Mapping
    llm: bool  # asks the judge
    at: str  # where the config names it, for errors: "genai.scorers[2].mlflow"


@dataclass
class MlflowScorers:
    specs: tuple[MlflowScorerSpec, ...]
    judge: Judge | None
    env: Mapping[str, str]
    work: Path  # where requests, answers and logs go
    timeout: float
    stream: TextIO
    config_path: str = "mlflow-ci.yml"
    flipped: dict[str, int] = field(default_factory=dict)

    def score(self, rows: list[DataRow], outputs: list[Output], side: str) -> dict[str, list[Score | None]]:
        """Every MLflow scorer's verdict on every row of one side; a row where the app raised fails them all."""
        from mlflow_ci.errors import TrainingError
        from mlflow_ci.process import run_logged
        from mlflow_ci.tracking.scoring import BAD_ARGUMENTS, SCORING

        work = self.work.resolve()
        work.mkdir(parents=True, exist_ok=True)
        request, answer, log = (work / f"genai-mlflow-{side}.{suffix}" for suffix in ("request.json", "answers.json", "log"))
        llm = any(spec.llm for spec in self.specs)
        request.write_text(json.dumps({
            "scorers": [{"metric": s.metric, "class": s.cls, "arguments": dict(s.arguments), "llm": s.llm} for s in self.specs],
            "model": f"openai:/{self.judge.settings.model}" if llm and self.judge else None,
            "repeats": self.judge.settings.repeats if self.judge else 1,
            "rows": [None if out.error is not None else {"inputs": dict(row.inputs), "outputs": out.text,
                                                          "expectations": dict(row.expectations)}
                     for row, out in zip(rows, outputs)]}, default=str), encoding="utf-8")
        answer.unlink(missing_ok=True)
        command = " ".join(shlex.quote(p) for p in (sys.executable, "-m", SCORING, "--request", str(request), "--out", str(answer)))
        with JudgeProxy(self.judge) if llm and self.judge else _NoProxy() as proxy:
            code, timed_out = run_logged(command, work, self._environment(proxy), self.timeout, log, self.stream)
        if proxy is not None and proxy.error is not None:
            raise proxy.error
        if timed_out:
            raise ServiceError(f"MLflow's scorers did not finish within {self.timeout:g}s", hint=f"their output is in {log}")
        given = json.loads(answer.read_text(encoding="utf-8")) if answer.is_file() else {}
        if code == BAD_ARGUMENTS and "refused" in given:
            spec = next(s for s in self.specs if s.metric == given["refused"])
            raise UsageError(f"{self.config_path}: {spec.at}: MLflow's {spec.cls} refused its arguments: {given['error']}")
        if code != 0 or "answers" not in given:
            raise TrainingError(f"MLflow's scorers could not run (exit code {code})",
                                hint=f"their output is in {log}; they need NumPy and pandas (pip install 'mlflow-ci[genai]')")
        verdicts = {}
        for spec in self.specs:
            verdicts[spec.metric] = [Score(False, f"the app raised: {out.error}") if out.error is not None
                                     else self._verdict(spec.metric, repeats)
                                     for repeats, out in zip(given["answers"][spec.metric], outputs)]
        return verdicts

    def _environment(self, proxy: "JudgeProxy | None") -> dict[str, str]:
        from mlflow_ci.tracking.base import child_environment

        env = {k: v for k, v in self.env.items() if k not in ("OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL")}
        if self.judge is not None and self.judge.settings.api_key_env:
            env.pop(self.judge.settings.api_key_env, None)  # the key stays with the proxy
        # No traffic beyond the judge: MLflow's telemetry off, and its model catalog (fetched from GitHub to
        # price a judge's tokens) read from the bundled copy unless the user points it somewhere.
        extra = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_MODEL_CATALOG_URI": env.get("MLFLOW_MODEL_CATALOG_URI", "")}
        if proxy is not None:
            extra.update(OPENAI_API_BASE=proxy.url, OPENAI_API_KEY=proxy.token)
        return child_environment(env, extra)

    def _verdict(self, metric: str, repeats: list[dict]) -> Score:
        """One row's verdict from its repeats: majority or mean as the judge aggregates; a disagreement counted."""
        scores = [_as_verdict(answer) for answer in repeats]
        if len(scores) == 1:
            return scores[0]
        _, passed, chosen, flipped = aggregate(scores, self.judge.settings.aggregate if self.judge else "majority")
        if flipped:
            self.flipped[metric] = self.flipped.get(metric, 0) + 1
        graded = [s.value for s in scores if s.value is not None]
        return Score(passed, chosen.rationale, sum(graded) / len(graded) if len(graded) == len(scores) else None)


class _NoProxy:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def _as_verdict(answer: dict) -> Score:
    """An MLflow Feedback (as plain values) as a verdict: yes/no ratings, bools and numbers in [0, 1]."""
    if answer.get("error"):
        return Score(False, f"the scorer failed: {str(answer['error'])[:300]}")
    value = answer.get("value")
    if isinstance(value, str) and value.strip().lower() in PASSING:
        return Score(PASSING[value.strip().lower()], answer.get("rationale") or "")
    return as_score((value, answer.get("rationale") or ""))

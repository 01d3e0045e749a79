"""The answers a deferred check hands to the trusted publish job: the rows, each side's outputs, and which
``genai.<scorer>`` metrics still wait for the judge (``check --defer-judging``).

The file is written by the job that runs the pull request's code and read by the job that holds the judge's
key, so it is data from an untrusted source: size-limited, validated as declared, every string bounded, and
nothing in it is executed or used as a path. A field that is wrong is named with the file and where.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from mlflow_ci.declared import Says, dotted, problems
from mlflow_ci.errors import UsageError
from mlflow_ci.genai.runner import DataRow, Output

ANSWERS_FILE = "genai-answers.json"  # beside result.json in the check's output folder (and its artifact)
ANSWERS_LIMIT = 64 * 1024 * 1024
MAX_ROWS = 100_000
TEXT_LIMIT = 100_000  # characters of one output or error kept; the judge sees at most 8,000 of an answer

Text = Annotated[StrictStr, Field(max_length=TEXT_LIMIT), Says(f"a string of at most {TEXT_LIMIT:,} characters")]


class _Declared(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Row(_Declared):
    inputs: dict[str, Any]
    expectations: dict[str, Any] = {}


class _Output(_Declared):
    text: Text
    latency_ms: Annotated[StrictFloat | StrictInt, Field(ge=0), Says("a number of milliseconds")]
    error: Text | None = None


class _File(_Declared):
    schema_: Literal[1] = Field(alias="schema")
    rows: Annotated[list[_Row], Field(min_length=1, max_length=MAX_ROWS), Says(f"a list of 1 to {MAX_ROWS:,} rows")]
    candidate: list[_Output]
    baseline: list[_Output] | None = None
    pending: Annotated[list[Annotated[StrictStr, Field(pattern=r"^genai\.[A-Za-z0-9_.-]{1,60}$")]],
                       Field(min_length=1, max_length=50), Says("a list of genai.<scorer> names")]


@dataclass(frozen=True)
class Answers:
    rows: list[DataRow]
    candidate: list[Output]
    baseline: list[Output] | None  # None: no baseline answered (a first pull request)
    pending: tuple[str, ...]  # the genai.<scorer> metrics the judge has yet to score


def write_answers(path: Path, answers: Answers) -> Path:
    def outputs(items: list[Output] | None):
        return None if items is None else [{"text": o.text, "latency_ms": o.latency_ms, "error": o.error} for o in items]

    path.write_text(json.dumps({
        "schema": 1,
        "rows": [{"inputs": dict(r.inputs), "expectations": dict(r.expectations)} for r in answers.rows],
        "candidate": outputs(answers.candidate),
        "baseline": outputs(answers.baseline),
        "pending": list(answers.pending),
    }, ensure_ascii=False, default=str), encoding="utf-8")
    return path


def read_answers(path: Path) -> Answers:
    """The answers of an untrusted check job; UsageError (exit 2) naming the file and the field."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the check's answers ({exc.strerror}): the check job wrote none") from None
    if size > ANSWERS_LIMIT:
        raise UsageError(f"{path}: {size} bytes is over the {ANSWERS_LIMIT} byte limit for the check's answers")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{path}: not valid JSON ({type(exc).__name__})") from None
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        first = problems(exc, _File, data)[0]
        says = {"custom": first.message, "unknown_key": "unknown key", "missing": "missing"}.get(first.kind) or first.expected
        raise UsageError(f"{path}: {dotted(first.path)}: {says or 'unexpected value'}") from None
    for side in ("candidate", "baseline"):
        given = getattr(parsed, side)
        if given is not None and len(given) != len(parsed.rows):
            raise UsageError(f"{path}: {side}: {len(given)} answers for {len(parsed.rows)} rows")
    return Answers([DataRow(r.inputs, r.expectations) for r in parsed.rows], _outputs(parsed.candidate),
                   _outputs(parsed.baseline), tuple(parsed.pending))


def _outputs(items: list[_Output] | None) -> list[Output] | None:
    return None if items is None else [Output(o.text, float(o.latency_ms), o.error) for o in items]

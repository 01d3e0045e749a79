"""``result.json`` (schema 1) as a declared model: what ``check`` writes, what ``publish`` reads back,
and what the fork-safe path accepts from an untrusted artifact.

Our own results are built with :meth:`Result.build` and passed around typed. An artifact is read with
:func:`load_untrusted`: size-limited, then validated with ``untrusted=True``, which adds what a hostile
file needs on top of the types: formats for ids, SHAs, URLs and paths, limits on every list and
string (long text is cut, not refused), and it drops what only our own checks may say (the candidate's
fan-out name, the evaluation details, intervals of metrics we did not compute). ``result["key"]``
gives a field's JSON value, as the file holds it, for scripts and templates written against the file.
docs/result-json.md describes every field.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from mlflow_ci.config import LIMIT_RULES
from mlflow_ci.declared import Says, dotted, problems
from mlflow_ci.errors import UsageError

RESULT_SCHEMA = 1
ARTIFACT_LIMIT = 2 * 1024 * 1024
VERDICTS = ("pass", "warn", "fail")
RESULT_VERDICTS = (*VERDICTS, "error")  # error: the check could not decide (``error`` says where and why)
STAGES = ("config", "train", "compare", "evaluate", "gate", "report")
RULES = (*LIMIT_RULES, "significance", "data_columns", "data_psi", "data_missing", "baseline_required", "deterministic")
STATUSES = ("better", "worse", "same", "new", "removed", "invalid", "n/a")
CHARTED = re.compile(r"eval\.[a-z0-9_]{1,40}")  # only our own evaluate: names get intervals (and charts)
_RUN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_URL = re.compile(r"^https?://[^\s()<>\[\]\"'`]{1,500}$")
_SAFE_PATH = re.compile(r"^(?!/)(?!.*\.\.)[A-Za-z0-9_./-]{1,200}$")


def _untrusted(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("untrusted"))


def cut(limit: int):
    """Untrusted text longer than ``limit`` is cut to it."""
    return AfterValidator(lambda v, info: v[:limit] if _untrusted(info) and isinstance(v, str) else v)


def fmt(pattern: re.Pattern):
    """Untrusted text must have this format."""
    def check(value, info: ValidationInfo):
        if _untrusted(info) and value is not None and not pattern.match(value):
            raise ValueError("unexpected format")
        return value
    return AfterValidator(check)


def at_most(limit: int):
    """An untrusted list or mapping may hold at most ``limit`` entries."""
    def check(value, info: ValidationInfo):
        if _untrusted(info) and len(value) > limit:
            raise ValueError("too long")
        return value
    return AfterValidator(check)


def _number_in(value: Any) -> Any:
    """JSON has no NaN or infinity: result.json writes them as the strings Python prints."""
    return float(value) if isinstance(value, str) and value in ("nan", "inf", "-inf") else value


def _number_out(value: float | None) -> float | str | None:
    return value if value is None or math.isfinite(value) else str(value)


def _json_safe(value: Any) -> Any:
    """Free-form details (``evaluation``), with non-finite numbers as strings, like every number here."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _text_of(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else str(value)


Num = Annotated[StrictFloat | None, BeforeValidator(_number_in), PlainSerializer(_number_out), Says("expected a number")]
Text = Annotated[StrictStr, Says("expected a string")]
Coerced = Annotated[str, BeforeValidator(_text_of)]  # names and values that were always shown as text
RunId = Annotated[StrictStr | None, fmt(_RUN_ID), Says("unexpected format")]
Sha = Annotated[StrictStr | None, fmt(_SHA), Says("unexpected format")]
Url = Annotated[StrictStr | None, fmt(_URL), Says("unexpected format")]
Direction = Annotated[Literal["higher", "lower"], Says("expected higher or lower")]
Metrics = Annotated[dict[Annotated[str, cut(250)], Num], at_most(2000), Says("expected an object")]


class Part(BaseModel):
    """A part of result.json: unknown fields are dropped, values are frozen."""
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, serialize_by_alias=True)

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def __getitem__(self, key: str) -> Any:
        """The JSON value of a field, as result.json holds it."""
        return self.as_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_json().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.as_json()


class CheckRow(Part):
    metric: Annotated[Text, cut(250)]
    rule: Annotated[Literal[RULES], Says("unknown rule")]
    limit: Num = None
    value: Num = None
    baseline: Num = None
    bound: Num = None
    passed: Annotated[StrictBool | None, Says("expected true, false or null")]
    blocking: bool = True
    direction: Direction = "higher"
    message: Annotated[Text, cut(500)] = ""
    line: Annotated[StrictInt | None, Field(gt=0, lt=100_000), Says("expected a line number")] = None


class MetricRow(Part):
    name: Annotated[Text, cut(250)]
    baseline: Num = None
    candidate: Num = None
    delta: Num = None
    delta_pct: Num = None
    direction: Direction = "higher"
    status: Annotated[Literal[STATUSES], Says("unknown status")]
    ci_low: Num = None  # paired bootstrap interval of the delta (evaluate: metrics)
    ci_high: Num = None

    @model_validator(mode="after")
    def _intervals_only_for_our_metrics(self, info: ValidationInfo) -> "MetricRow":
        if _untrusted(info) and not CHARTED.fullmatch(self.name) and (self.ci_low, self.ci_high) != (None, None):
            return self.model_copy(update={"ci_low": None, "ci_high": None})
        return self


class ParamRow(Part):
    name: Annotated[Coerced, cut(250)]
    baseline: Annotated[Coerced | None, cut(500)] = None
    candidate: Annotated[Coerced | None, cut(500)] = None
    status: Annotated[Literal["changed", "added", "removed"], Says("unknown status")]


class Candidate(Part):
    run_id: RunId = None
    experiment_id: RunId = None
    commit: Sha = None
    branch: Annotated[Text | None, cut(250)] = None
    metrics: Metrics = {}
    params: Annotated[dict[Annotated[str, cut(250)], Annotated[Coerced, cut(500)]], Says("expected an object")] = {}
    cached: bool = False
    fingerprint: Annotated[Text | None, cut(100)] = None
    name: str | None = None  # fan-out candidate name: only our own checks have one
    url: Url = None
    train_seconds: Num = None  # how long training ran (for a reused run: when it was trained)

    @model_validator(mode="after")
    def _no_name_or_link_from_artifacts(self, info: ValidationInfo) -> "Candidate":
        return self.model_copy(update={"name": None, "url": None}) if _untrusted(info) else self


class BaselineRef(Part):
    run_id: RunId = None
    source: Annotated[Text, cut(300)] = "unknown"
    description: Annotated[Text, cut(300)] = "baseline"
    origin: Annotated[Text | None, cut(300)] = None
    age_days: Num = None
    commit: Sha = None
    branch: Annotated[Text | None, cut(250)] = None
    metrics: Metrics = {}
    url: Url = None
    train_seconds: Num = None

    def where(self) -> str:
        """``from <origin>, trained <age>``: where the baseline came from and how old it is ("" unknown)."""
        parts = [f"from {self.origin}"] if self.origin else []
        if self.age_days is not None:
            parts.append(f"trained {age(self.age_days * 86400)}")
        return ", ".join(parts)

    @model_validator(mode="after")
    def _no_link_from_artifacts(self, info: ValidationInfo) -> "BaselineRef":
        return self.model_copy(update={"url": None}) if _untrusted(info) else self


def age(seconds: float) -> str:
    """``just now``, ``5 minutes ago``, ``3 hours ago``, ``2 days ago``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


class Tool(Part):
    name: Literal["mlflow-ci"] = "mlflow-ci"
    version: Annotated[Text, cut(40)] = "?"

    @model_validator(mode="before")
    @classmethod
    def _ours(cls, data: Any) -> Any:
        return {**data, "name": "mlflow-ci"} if isinstance(data, dict) else data


class LeaderboardEntry(Part):
    candidate: str | None
    run_id: str
    verdict: Literal[VERDICTS]
    selected: bool
    metrics: Metrics = {}


def _first_notes(value: Any, info: ValidationInfo) -> Any:
    """An untrusted list of notes: at most 5,000 (refused beyond, as every list here), of which the first
    20 are kept, each cut to 300 characters."""
    if _untrusted(info) and isinstance(value, list):
        if len(value) > 5000:
            raise ValueError("too long")
        return [("" if n is None else str(n))[:300] for n in value[:20]]
    return value


class TrendRun(Part):
    run_id: RunId = None
    commit: Sha = None
    metrics: Annotated[dict[Annotated[str, cut(250)], Num], at_most(200), Says("expected an object")] = {}


class TrendInfo(Part):
    """The last gated runs of the base branch, oldest first, with their gated metrics."""
    branch: Annotated[Text, cut(250)]
    runs: Annotated[list[TrendRun], at_most(100), Says("expected a list of at most 100")] = []


class ErrorInfo(Part):
    """Why a check could not decide: the stage that failed, its exit code, the message and what to do."""
    stage: Annotated[Literal[STAGES], Says("expected one of " + ", ".join(STAGES))]
    exit_code: Annotated[Literal[2, 3, 4], Says("expected 2, 3 or 4")]
    reason: Annotated[Text, cut(1000)]
    hint: Annotated[Text | None, cut(500)] = None


class GenaiChangedRow(Part):
    """A row whose verdict changed: the app's and the scorer's text, untrusted (cut here, escaped by the report)."""
    scorer: Annotated[StrictStr, cut(60)]
    row: Annotated[StrictInt, Field(ge=0), Says("expected a row number")]
    change: Annotated[Literal["regressed", "fixed"], Says("expected regressed or fixed")]
    inputs: Annotated[StrictStr, cut(500)] = ""
    candidate_output: Annotated[StrictStr, cut(500)] = ""
    baseline_output: Annotated[StrictStr, cut(500)] = ""
    reason: Annotated[StrictStr, cut(500)] = ""


Counts = Annotated[dict[Annotated[str, cut(60)], Annotated[StrictInt, Field(ge=0)]], at_most(50), Says("expected an object of counts")]


class GenaiJudge(Part):
    calls: Annotated[StrictInt, Field(ge=0)] = 0
    tokens: Annotated[StrictInt, Field(ge=0)] = 0
    max_calls: Annotated[StrictInt, Field(ge=0)] = 0
    flipped: Counts = {}


class GenaiInfo(Part):
    """``genai:`` details: validated as data, so the trusted publisher can show a fork's changed rows."""
    data: Annotated[StrictStr, cut(250)]
    rows: Annotated[StrictInt, Field(ge=0), Says("expected a row count")]
    predict_fn: Annotated[StrictStr, cut(250)]
    baseline: Annotated[StrictStr, cut(250)]
    scorers: Annotated[list[Annotated[StrictStr, cut(60)]], at_most(50), Says("expected a list of at most 50")]
    errors: Counts = {}
    regressed: Counts = {}
    fixed: Counts = {}
    changed: Annotated[list[GenaiChangedRow], at_most(1000), Says("expected a list of at most 1000")] = []
    judge: GenaiJudge | None = None
    reused: Annotated[dict[Literal["candidate", "baseline"], RunId], Says("expected an object of run ids")] | None = None  # side -> the run whose answers were reused
    # check --defer-judging: the judge's metrics, scored by the trusted publish job (empty once it has, or when not deferred)
    pending: Annotated[list[Annotated[StrictStr, Field(pattern=r"^genai\.[A-Za-z0-9_.-]{1,60}$"), Says("expected a genai.<scorer> name")]], at_most(50),
                       Says("expected a list of genai.<scorer> names")] = []
    judged_by: Literal["check", "publisher"] | None = None  # who ran the judge: this check's job, or the trusted publisher

    @model_validator(mode="after")
    def _only_we_say_we_judged(self, info: ValidationInfo) -> "GenaiInfo":
        """An artifact cannot say the trusted publisher judged it: only the publisher that did sets that."""
        if _untrusted(info) and self.judged_by == "publisher":
            return self.model_copy(update={"judged_by": None})
        return self


OPTIONAL = ("evaluation", "genai", "leaderboard", "trend", "error")


class Result(Part):
    """result.json, schema 1: the same fields, names and meaning as docs/result-json.md says."""
    schema_: Annotated[Literal[1], Says("expected 1")] = Field(RESULT_SCHEMA, alias="schema")
    verdict: Annotated[Literal[RESULT_VERDICTS], Says("expected pass, warn, fail or error")]
    experiment: Annotated[Text, cut(250)]
    model: Annotated[Text | None, cut(250)] = None
    pr: Annotated[StrictInt | None, Field(gt=0), Says("expected a positive integer")] = None
    candidate: Annotated[Candidate, Says("expected an object")]
    baseline: Annotated[BaselineRef | None, Says("expected an object or null")] = None
    checks: Annotated[list[CheckRow], at_most(1000), Says("expected a list of at most 1000")]
    metrics: Annotated[list[MetricRow], at_most(5000), Says("expected a list of at most 5000")] = []
    params_diff: Annotated[list[ParamRow], at_most(5000), Says("expected a list of at most 5000")] = []
    notes: Annotated[list[Coerced], BeforeValidator(_first_notes), Says("expected a list of at most 5000")] = []
    config_path: Annotated[StrictStr | None, fmt(_SAFE_PATH), Says("unexpected format")] = None
    head_sha: Sha = None
    ci_run_url: Url = None
    tool: Annotated[Tool, Says("expected an object")] = Tool()
    evaluation: Annotated[dict[str, Any] | None, PlainSerializer(_json_safe)] = None  # evaluate: details (rows, data checks, confusion matrices)
    genai: Annotated[GenaiInfo | None, Says("expected an object or null")] = None  # genai: details (rows, changed rows, judges)
    leaderboard: list[LeaderboardEntry] | None = None  # fan-in: every candidate of the PR
    trend: Annotated[TrendInfo | None, Says("expected an object or null")] = None  # the base branch's recent runs
    error: Annotated[ErrorInfo | None, Says("expected an object or null")] = None  # only with verdict "error"
    # the metrics the trusted publisher recomputed itself (code-free model formats); never taken from an artifact
    recomputed: Annotated[list[Annotated[Text, cut(250)]], at_most(1000), Says("expected a list of metric names")] = []

    @model_validator(mode="after")
    def _error_goes_with_its_verdict(self) -> "Result":
        if (self.verdict == "error") != (self.error is not None):
            raise ValueError("verdict 'error' and the 'error' object go together")
        return self

    @model_validator(mode="after")
    def _only_ours_evaluate(self, info: ValidationInfo) -> "Result":
        """An artifact's evaluation details, leaderboard and run link are dropped: only our own are shown
        (a link from an artifact would be a live link in the comment, pointing wherever the PR chose)."""
        if _untrusted(info) and (self.evaluation is not None or self.leaderboard is not None or self.ci_run_url or self.recomputed):
            return self.model_copy(update={"evaluation": None, "leaderboard": None, "ci_run_url": None, "recomputed": []})
        return self

    @classmethod
    def build(cls, data: dict[str, Any]) -> "Result":
        """Our own result, from the values a check computed."""
        return cls.model_validate(data)

    @classmethod
    def coerce(cls, value: "Result | dict[str, Any]") -> "Result":
        return value if isinstance(value, Result) else cls.build(value)

    def as_json(self) -> dict[str, Any]:
        """The file's content; ``evaluation``, ``leaderboard``, ``trend`` and ``error`` appear only when a check has them."""
        return self.model_dump(mode="json", exclude={k for k in OPTIONAL if getattr(self, k) is None})

    def text(self) -> str:
        return json.dumps(self.as_json(), indent=2) + "\n"

    @property
    def failed(self) -> list[CheckRow]:
        return [c for c in self.checks if c.passed is False]


def validate_untrusted(data: Any) -> Result:
    """Validate a result.json from outside (an artifact, a file on disk); raise UsageError naming the bad field."""
    if not isinstance(data, dict):
        raise UsageError("result.json artifact rejected: top level: expected an object")
    try:
        return Result.model_validate(data, context={"untrusted": True})
    except ValidationError as exc:
        found = problems(exc, Result, data)
        first = min(found, key=lambda p: p.kind == "missing")  # a wrong value says more than a missing one
        where = dotted(tuple(_printable(part) for part in first.path))
        says = first.message if first.kind == "custom" else first.expected or "unexpected value"
        raise UsageError(f"result.json artifact rejected: {where}: {says}") from None


def _printable(part: str | int) -> str | int:
    """A path element from the artifact, safe to print: no control characters, at most 40 characters."""
    return part if isinstance(part, int) else re.sub(r"[\x00-\x1f\x7f-\x9f]", "?", str(part))[:40]


def load_untrusted(path: Path, flag: str = "--from") -> Result:
    """Read and validate an untrusted result.json (size-limited)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot read it ({exc.strerror})") from None
    if size > ARTIFACT_LIMIT:
        raise UsageError(f"{flag} {path}: {size} bytes is over the {ARTIFACT_LIMIT} byte limit for a result.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise UsageError(f"{flag} {path}: not valid JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
    return validate_untrusted(data)

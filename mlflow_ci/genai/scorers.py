"""Deterministic scorers for GenAI outputs, where MLflow has none: each looks at one row (the inputs, the
app's output, the row's expectations and how long the app took) and returns a :class:`Score`: passed
or not, and a short reason the report can show next to a row that regressed.

Every scorer is built from its config entry by :func:`build`; a scorer that needs an expectation the
row lacks scores nothing for that row (``None``), so a dataset can mix rows with and without answers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from mlflow_ci.errors import UsageError


@dataclass(frozen=True)
class Row:
    """One evaluated row: what the app was asked, what it answered, what was expected, how long it took."""
    inputs: Mapping[str, Any]
    output: str
    expectations: Mapping[str, Any]
    latency_ms: float | None = None


@dataclass(frozen=True)
class Score:
    passed: bool
    rationale: str
    value: float | None = None  # a graded score in [0, 1] (a user scorer's number); None: 1.0 if passed else 0.0

    @property
    def points(self) -> float:
        return float(self.passed) if self.value is None else self.value


Scorer = Callable[[Row], "Score | None"]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _expected(row: Row, key: str) -> Any:
    return row.expectations.get(key)


def exact_match(row: Row) -> Score | None:
    """The output equals ``expectations.expected_response`` (surrounding whitespace aside)."""
    expected = _expected(row, "expected_response")
    if expected is None:
        return None
    same = row.output.strip() == _text(expected).strip()
    return Score(same, "matches the expected response" if same else "differs from the expected response")


def contains(row: Row) -> Score | None:
    """Every one of ``expectations.expected_facts`` (a string or a list) appears in the output, ignoring case."""
    facts = _expected(row, "expected_facts")
    if facts is None or facts in ("", []):  # nothing expected: the row is not scored (never a free pass)
        return None
    facts = [facts] if isinstance(facts, str) else [_text(f) for f in facts]
    missing = [fact for fact in facts if fact.casefold() not in row.output.casefold()]
    if missing:
        return Score(False, f"missing {len(missing)} of {len(facts)} expected facts: " + "; ".join(missing[:3]))
    return Score(True, f"contains all {len(facts)} expected facts")


def regex(pattern: str) -> Scorer:
    """The output matches ``pattern`` somewhere (Python regular expression)."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"genai scorer regex: {pattern!r} is not a regular expression: {exc}") from None

    def score(row: Row) -> Score:
        found = compiled.search(row.output) is not None
        return Score(found, f"matches /{pattern}/" if found else f"does not match /{pattern}/")

    return score


def json_valid(schema: Mapping[str, Any] | None = None) -> Scorer:
    """The output is a JSON document (and, with ``schema``, valid against that JSON Schema)."""
    validator = _validator(schema) if schema is not None else None

    def score(row: Row) -> Score:
        try:
            document = json.loads(row.output)
        except ValueError as exc:
            return Score(False, f"not JSON: {exc}")
        if validator is not None:
            error = next(iter(validator.iter_errors(document)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "the document"
                return Score(False, f"JSON, but {where}: {error.message}")
        return Score(True, "valid JSON" + (" matching the schema" if validator is not None else ""))

    return score


def _validator(schema: Mapping[str, Any]):
    try:
        import jsonschema
    except ModuleNotFoundError:
        raise UsageError("genai scorer json_valid with a schema needs jsonschema: pip install 'mlflow-ci[genai]'") from None
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise UsageError(f"genai scorer json_valid: the schema is not a JSON Schema: {exc.message}") from None
    return cls(schema)


def max_length(limit: int) -> Scorer:
    """The output has at most ``limit`` characters."""
    def score(row: Row) -> Score:
        size = len(row.output)
        return Score(size <= limit, f"{size} characters ({'within' if size <= limit else 'over'} {limit})")

    return score


def max_latency_ms(limit: float) -> Scorer:
    """The app answered the row within ``limit`` milliseconds."""
    def score(row: Row) -> Score | None:
        if row.latency_ms is None:
            return None
        fast = row.latency_ms <= limit
        return Score(fast, f"{row.latency_ms:.0f} ms ({'within' if fast else 'over'} {limit:g} ms)")

    return score


PLAIN: dict[str, Scorer] = {"exact_match": exact_match, "contains": contains}
WITH_ARGUMENT: dict[str, Callable[[Any], Scorer]] = {
    "regex": regex, "json_valid": json_valid, "max_length": max_length, "max_latency_ms": max_latency_ms,
}
NAMES = (*PLAIN, *WITH_ARGUMENT)


USER_ARGUMENTS = ("inputs", "outputs", "expectations", "latency_ms")


def user_scorer(spec: str, root) -> Scorer:
    """The repository's own scorer ``module:function`` (from the config's folder), called as MLflow calls
    an ``@scorer``: with the keyword arguments it declares among ``inputs``, ``outputs`` (the app's
    answer), ``expectations`` and ``latency_ms``. It returns a bool, a number in [0, 1] (passes at 0.5),
    a ``(value, rationale)`` pair, or an object with ``value`` and ``rationale`` (MLflow's Feedback)."""
    import importlib
    import inspect
    import sys

    module_name, _, func_name = spec.partition(":")
    sys.path.insert(0, str(root))
    try:
        function = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise UsageError(f"genai scorer {spec!r}: cannot import it ({type(exc).__name__}: {exc})") from None
    finally:
        sys.path.remove(str(root))
    try:
        declared = inspect.signature(function).parameters
    except (TypeError, ValueError):
        declared = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in declared.values())
    wanted = [name for name in USER_ARGUMENTS if takes_all or name in declared]

    def score(row: Row) -> Score:
        given = {"inputs": dict(row.inputs), "outputs": row.output, "expectations": dict(row.expectations),
                 "latency_ms": row.latency_ms}
        try:
            return as_score(function(**{name: given[name] for name in wanted}))
        except Exception as exc:  # noqa: BLE001 - the scorer's failure on a row fails that row, with why
            return Score(False, f"the scorer raised {type(exc).__name__}: {exc}")

    return score


def as_score(result: Any) -> Score:
    rationale = ""
    if isinstance(result, tuple) and len(result) == 2:
        result, rationale = result
    elif hasattr(result, "value") and not isinstance(result, (bool, int, float)):
        rationale = getattr(result, "rationale", "") or ""
        result = result.value
    if isinstance(result, bool):
        return Score(result, str(rationale))
    if isinstance(result, (int, float)) and 0 <= result <= 1:
        return Score(result >= 0.5, str(rationale), float(result))
    return Score(False, f"the scorer returned {type(result).__name__} {str(result)[:80]!r}, not a bool or a number in [0, 1]")


def build(name: str, argument: Any = None) -> Scorer:
    """The scorer ``name`` (``json_valid`` takes an optional schema, the others in ``WITH_ARGUMENT`` their limit)."""
    if name in PLAIN:
        if argument is not None:
            raise UsageError(f"genai scorer {name} takes no argument")
        return PLAIN[name]
    if name in WITH_ARGUMENT:
        if argument is None and name != "json_valid":
            raise UsageError(f"genai scorer {name} needs an argument")
        return WITH_ARGUMENT[name](argument)
    raise UsageError(f"unknown genai scorer {name!r} (expected one of: {', '.join(NAMES)})")


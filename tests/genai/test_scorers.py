"""The deterministic GenAI scorers, row by row."""

from __future__ import annotations

import pytest

from mlflow_ci.errors import UsageError
from mlflow_ci.genai.scorers import Row, build


def row(output: str, latency_ms: float | None = None, **expectations) -> Row:
    return Row({"question": "q"}, output, expectations, latency_ms)


def test_exact_match_and_contains_use_the_rows_expectations():
    exact, contains = build("exact_match"), build("contains")
    assert exact(row(" Paris\n", expected_response="Paris")).passed
    assert not exact(row("paris", expected_response="Paris")).passed
    assert exact(row("no expectation")) is None and contains(row("no expectation")) is None
    got = contains(row("Refunds take 14 days by card.", expected_facts=["14 days", "bank transfer", "CARD"]))
    assert not got.passed and got.rationale == "missing 1 of 3 expected facts: bank transfer"
    assert contains(row("Open 9 to 5", expected_facts="9 TO 5")).passed
    assert contains(row("anything", expected_facts=[])) is None and contains(row("anything", expected_facts="")) is None  # not a pass


def test_regex_json_and_budgets():
    assert build("regex", r"\bREF-\d{4}\b")(row("see REF-2041")).passed
    assert not build("regex", r"^\d+$")(row("12a")).passed
    assert build("json_valid")(row('{"a": 1}')).passed
    assert build("json_valid")(row("{a: 1}")).rationale.startswith("not JSON")
    schema = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}
    typed = build("json_valid", schema)
    assert typed(row('{"answer": "yes"}')).passed
    bad = typed(row('{"answer": 3}'))
    assert not bad.passed and bad.rationale.startswith("JSON, but answer: 3 is not of type 'string'")
    assert build("max_length", 5)(row("12345")).passed and not build("max_length", 5)(row("123456")).passed
    slow = build("max_latency_ms", 200)
    assert slow(row("x", 150)).passed and not slow(row("x", 250)).passed and slow(row("x")) is None


@pytest.mark.parametrize("name,argument,message", [
    ("nope", None, "unknown genai scorer 'nope'"),
    ("regex", "(", "is not a regular expression"),
    ("max_length", None, "needs an argument"),
    ("exact_match", 3, "takes no argument"),
    ("json_valid", {"type": 12}, "the schema is not a JSON Schema"),
])
def test_bad_scorer_config_is_a_usage_error(name, argument, message):
    with pytest.raises(UsageError, match=message):
        build(name, argument)


def test_the_config_knows_every_scorer_by_the_same_name():
    from mlflow_ci.config import GENAI_SCORERS, GENAI_SCORERS_WITH_ARGUMENT
    from mlflow_ci.genai.scorers import PLAIN, WITH_ARGUMENT

    assert set(PLAIN) == set(GENAI_SCORERS) and set(WITH_ARGUMENT) == set(GENAI_SCORERS_WITH_ARGUMENT)


USER_SCORERS = '''
from types import SimpleNamespace

def cites_days(outputs):
    return "days" in outputs

def graded(outputs, expectations):
    return min(1.0, len(outputs) / expectations["min_chars"]), f"{len(outputs)} characters"

def feedback(**kwargs):
    return SimpleNamespace(value=kwargs["latency_ms"] < 100, rationale="fast enough")

def broken(inputs):
    raise KeyError(inputs["missing"])

def wrong_type(outputs):
    return "yes"
'''


def test_the_repositorys_own_scorers_get_the_arguments_they_declare(tmp_path):
    from mlflow_ci.genai.scorers import user_scorer

    (tmp_path / "my_scorers.py").write_text(USER_SCORERS)
    r = Row({"q": "refund?"}, "Refunds take 14 days", {"min_chars": 40}, 12.0)
    assert user_scorer("my_scorers:cites_days", tmp_path)(r).passed
    graded = user_scorer("my_scorers:graded", tmp_path)(r)
    assert (graded.passed, graded.points, graded.rationale) == (True, 0.5, "20 characters")
    fast = user_scorer("my_scorers:feedback", tmp_path)(r)
    assert fast.passed and fast.rationale == "fast enough" and fast.points == 1.0
    broken = user_scorer("my_scorers:broken", tmp_path)(r)
    assert not broken.passed and broken.rationale == "the scorer raised KeyError: 'missing'"
    assert user_scorer("my_scorers:wrong_type", tmp_path)(r).rationale.startswith("the scorer returned str 'yes'")
    with pytest.raises(UsageError, match="genai scorer 'my_scorers:nope': cannot import it"):
        user_scorer("my_scorers:nope", tmp_path)

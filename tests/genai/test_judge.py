"""The LLM judge against an OpenAI-compatible server on 127.0.0.1: the budget is checked before every
request (retries and repeats included), failures are retried with backoff, repeats aggregate and
report flips, and the key only travels in the Authorization header."""

from __future__ import annotations

import json

import pytest
from fakellm import Cue, FakeLLM

from mlflow_ci.errors import EXIT_SERVICE, ServiceError, UsageError
from mlflow_ci.genai.judge import Budget, Judge, JudgeBudgetError, JudgeSettings, parse_verdict

KEY = {"JUDGE_KEY": "sk-test-not-a-real-key"}


def settings(llm: FakeLLM, **overrides) -> JudgeSettings:
    return JudgeSettings(**{"model": "judge-1", "base_url": llm.url, "api_key_env": "JUDGE_KEY", **overrides})


def judge(llm: FakeLLM, waits: list[float] | None = None, **overrides) -> Judge:
    return Judge(settings(llm, **overrides), KEY, sleep=(waits if waits is not None else []).append)


def test_a_verdict_pinned_model_temperature_zero_key_in_the_header_only():
    with FakeLLM() as llm:
        verdict = judge(llm).ask("Is the answer polite?", "Q: hi\nA: hello")
    assert verdict.passed and verdict.rationale == "fine"
    (request,) = llm.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test-not-a-real-key"
    body = request["body"]
    assert body["model"] == "judge-1" and body["temperature"] == 0 and body["max_tokens"] == 300
    assert "sk-test" not in json.dumps(body)
    assert body["messages"][1]["content"] == "Q: hi\nA: hello"


@pytest.mark.parametrize("max_calls,repeats,failures", [(5, 1, 0), (7, 3, 0), (6, 2, 3), (10, 3, 4)])
def test_the_budget_is_never_exceeded_with_repeats_and_retries(max_calls, repeats, failures):
    with FakeLLM(cues=[Cue(429, "0")] * failures) as llm:
        j = judge(llm, max_calls=max_calls, repeats=repeats)
        judged = 0
        with pytest.raises(JudgeBudgetError) as stopped:
            for row in range(100):
                j.judge("Is it right?", f"row {row}")
                judged += 1
    assert len(llm.requests) == max_calls == j.budget.calls  # every request counted, none sent beyond
    assert judged == (max_calls - failures) // repeats  # whole rows judged before the stop
    assert stopped.value.exit_code == EXIT_SERVICE
    assert f"{max_calls} of max_calls {max_calls}" in stopped.value.message and "no further request" in stopped.value.message


def test_the_token_budget_counts_the_next_request_before_sending_it():
    with FakeLLM(usage=100) as llm:
        j = judge(llm, max_tokens=1000, max_response_tokens=300, max_calls=100)
        with pytest.raises(JudgeBudgetError, match="max_tokens 1000"):
            for row in range(100):
                j.ask("Is it right?", f"row {row}")
    # each request may take ~320 tokens and really takes 100: the check stops while the next could overspend
    assert j.budget.tokens <= 1000 and len(llm.requests) == 7


def test_retries_back_off_honour_retry_after_and_survive_dropped_connections():
    waits: list[float] = []
    with FakeLLM(cues=[Cue(503), Cue(0), Cue(429, "7")]) as llm:
        verdict = judge(llm, waits).ask("Is it right?", "row")
    assert verdict.passed and len(llm.requests) == 4
    assert waits == [0.5, 1.0, 7.0]  # exponential, then what the server asked


def test_a_judge_that_keeps_failing_is_a_service_error_after_its_retries():
    with FakeLLM(cues=[Cue(500)] * 10) as llm:
        with pytest.raises(ServiceError, match="did not answer after 3 attempts \\(last: HTTP 500\\)"):
            judge(llm, retries=2).ask("Is it right?", "row")
    assert len(llm.requests) == 3


def test_a_refusal_is_not_retried():
    with FakeLLM(cues=[Cue(401)]) as llm:
        with pytest.raises(ServiceError, match="HTTP 401: cued 401"):
            judge(llm).ask("Is it right?", "row")
    assert len(llm.requests) == 1


def test_repeats_aggregate_and_say_when_the_judge_flipped():
    answers = iter(['{"verdict": "pass", "rationale": "a"}', '{"verdict": "fail", "rationale": "b"}',
                    '{"verdict": "pass", "rationale": "c"}'] * 2)
    with FakeLLM(answer=lambda body: next(answers)) as llm:
        majority = judge(llm, repeats=3).judge("Is it right?", "row")
        mean = judge(llm, repeats=3, aggregate="mean").judge("Is it right?", "row")
    assert (majority.passed, majority.flipped, majority.rationale) == (True, True, "a")
    assert majority.score == pytest.approx(2 / 3) and mean.score == pytest.approx(2 / 3) and mean.passed
    with FakeLLM() as steady:
        same = judge(steady, repeats=3).judge("Is it right?", "row")
    assert same.passed and not same.flipped and same.score == 1.0


def test_the_key_comes_from_the_environment_only():
    with FakeLLM() as llm:
        with pytest.raises(UsageError, match="JUDGE_KEY"):
            Judge(settings(llm), {})
        local = Judge(settings(llm, api_key_env=None), {})  # a local server without a key
        assert local.ask("q", "a").passed and llm.requests[-1]["auth"] is None
        # the reusable workflow's judge-api-key secret, when the configured variable is not set
        Judge(settings(llm), {"MLFLOW_CI_JUDGE_API_KEY": "sk-from-the-workflow"}).ask("q", "a")
        assert llm.requests[-1]["auth"] == "Bearer sk-from-the-workflow"
        Judge(settings(llm), {**KEY, "MLFLOW_CI_JUDGE_API_KEY": "sk-from-the-workflow"}).ask("q", "a")
        assert llm.requests[-1]["auth"] == "Bearer sk-test-not-a-real-key"  # the configured variable wins
    with pytest.raises(UsageError, match="nor MLFLOW_CI_JUDGE_API_KEY"):
        Judge(JudgeSettings(model="m", base_url="http://127.0.0.1:9/v1", api_key_env="JUDGE_KEY"), {})


def test_budgets_are_shared_by_the_judges_of_one_check():
    shared = Budget(max_calls=3)
    with FakeLLM() as llm:
        first, second = (Judge(settings(llm), KEY, budget=shared) for _ in range(2))
        first.ask("q", "1"), second.ask("q", "2"), first.ask("q", "3")
        with pytest.raises(JudgeBudgetError):
            second.ask("q", "4")
    assert len(llm.requests) == 3


@pytest.mark.parametrize("text,passed", [
    ('{"verdict": "pass", "rationale": "ok"}', True),
    ('Sure! ```json\n{"verdict": "FAIL", "rationale": "wrong year"}\n```', False),
    ("PASS - the answer is right", True),
    ("no, it is wrong", False),
    ("I cannot tell", False),
    ('{"verdict": "maybe"}', False),
])
def test_answers_are_read_as_best_they_can_be_and_an_unreadable_one_fails(text, passed):
    assert parse_verdict(text).passed is passed

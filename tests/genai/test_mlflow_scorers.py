"""MLflow's own built-in scorers on a check's rows, for real (mlflow.genai.scorers in a child Python): the
deterministic ones as they are, the LLM judges only through the budgeted proxy on loopback — pinned
model, the key never in the child, the budget never exceeded with repeats and retries."""

from __future__ import annotations

import io
import json

import pytest
from fakellm import Cue, FakeLLM

from mlflow_ci.errors import UsageError
from mlflow_ci.genai.judge import Judge, JudgeBudgetError, JudgeSettings
from mlflow_ci.genai.mlflow_scorers import MlflowScorers, MlflowScorerSpec
from mlflow_ci.genai.runner import DataRow, Output

KEY = "sk-test-judge-key"
ROWS = [DataRow({"question": f"What is {n} + {n}?"}, {"expected_response": str(2 * n)}) for n in range(6)]
OUTPUTS = [Output(str(2 * n) if n != 4 else "I am not sure, let me think about it", 5.0) for n in range(5)] + [
    Output("", 1.0, "RuntimeError: the app fell over")]


def scorers(tmp_path, specs, judge=None, env=None):
    base = {"PATH": "/usr/bin:/bin", "JUDGE_KEY": KEY, "OPENAI_API_KEY": "sk-the-apps-own-key", **(env or {})}
    return MlflowScorers(tuple(specs), judge, base, tmp_path, 120, io.StringIO(), "mlflow-ci.yml")


def spec(metric, cls, llm=False, **arguments):
    return MlflowScorerSpec(metric, cls, arguments, llm, "genai.scorers[0].mlflow")


def test_mlflows_deterministic_scorers_run_for_real(tmp_path):
    run = scorers(tmp_path, [spec("response_length", "ResponseLength", max_length=5), spec("digits", "RegexMatch", pattern=r"^\d+$")])
    verdicts = run.score(ROWS, OUTPUTS, "candidate")
    assert [v.passed for v in verdicts["response_length"]] == [True, True, True, True, False, False]
    assert [v.passed for v in verdicts["digits"]] == [True, True, True, True, False, False]
    assert "exceeds the maximum" in verdicts["response_length"][4].rationale
    assert verdicts["digits"][5].rationale == "the app raised: RuntimeError: the app fell over"


def correctness_answer(body):
    """MLflow's Correctness prompt carries the expected answer as the claim and the output as the document."""
    text = body["messages"][-1]["content"]
    right = "not sure" not in text
    return json.dumps({"result": "yes" if right else "no", "rationale": "supported" if right else "the claim is missing"})


def test_mlflows_judges_go_through_the_budgeted_proxy_with_the_pinned_model(tmp_path):
    with FakeLLM(answer=correctness_answer) as llm:
        judge = Judge(JudgeSettings(model="judge-1", base_url=llm.url, api_key_env="JUDGE_KEY", max_calls=20), {"JUDGE_KEY": KEY})
        run = scorers(tmp_path, [spec("correctness", "Correctness", llm=True)], judge)
        verdicts = run.score(ROWS, OUTPUTS, "candidate")["correctness"]
    assert [v.passed for v in verdicts] == [True, True, True, True, False, False]
    assert verdicts[4].rationale == "the claim is missing"
    assert len(llm.requests) == 5 == judge.budget.calls  # the row where the app raised asks nobody
    for request in llm.requests:
        assert request["auth"] == f"Bearer {KEY}"  # the proxy's key, not the placeholder the child had
        assert (request["body"]["model"], request["body"]["temperature"], request["body"]["max_tokens"]) == ("judge-1", 0, 300)
    request = json.loads((tmp_path / "genai-mlflow-candidate.request.json").read_text())
    assert request["model"] == "openai:/judge-1" and KEY not in json.dumps(request)


def test_the_child_never_holds_the_judges_key(tmp_path):
    with FakeLLM() as llm:
        judge = Judge(JudgeSettings(model="judge-1", base_url=llm.url, api_key_env="JUDGE_KEY"), {"JUDGE_KEY": KEY})
        run = scorers(tmp_path, [spec("correctness", "Correctness", llm=True)], judge)
        from mlflow_ci.genai.proxy import JudgeProxy

        with JudgeProxy(judge) as proxy, JudgeProxy(judge) as other:
            env = run._environment(proxy)
            assert proxy.token != other.token  # one per check
    assert "JUDGE_KEY" not in env and KEY not in env.values() and "sk-the-apps-own-key" not in env.values()
    assert env["OPENAI_API_KEY"] == proxy.token and env["OPENAI_API_BASE"].startswith("http://127.0.0.1:")
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["MLFLOW_MODEL_CATALOG_URI"] == ""  # nothing fetched from GitHub


@pytest.mark.parametrize("max_calls,repeats,failures", [(4, 1, 0), (7, 3, 2)])
def test_mlflows_judges_never_exceed_the_budget_with_repeats_and_retries(tmp_path, max_calls, repeats, failures):
    with FakeLLM(answer=correctness_answer, cues=[Cue(503, "0")] * failures) as llm:
        judge = Judge(JudgeSettings(model="judge-1", base_url=llm.url, api_key_env=None, max_calls=max_calls, repeats=repeats),
                      {}, sleep=lambda s: None)
        run = scorers(tmp_path, [spec("correctness", "Correctness", llm=True)], judge)
        with pytest.raises(JudgeBudgetError, match=f"of max_calls {max_calls}"):
            run.score(ROWS, OUTPUTS, "candidate")
    assert len(llm.requests) == max_calls == judge.budget.calls


def test_repeats_aggregate_and_flips_are_counted(tmp_path):
    answers = iter(["yes", "no", "yes"] * 10)
    with FakeLLM(answer=lambda body: json.dumps({"result": next(answers), "rationale": "hm"})) as llm:
        judge = Judge(JudgeSettings(model="judge-1", base_url=llm.url, api_key_env=None, repeats=3), {})
        run = scorers(tmp_path, [spec("safety", "Safety", llm=True)], judge)
        verdicts = run.score(ROWS[:2], OUTPUTS[:2], "candidate")["safety"]
    assert [v.passed for v in verdicts] == [True, True] and run.flipped == {"safety": 2} and len(llm.requests) == 6


def test_a_scorer_that_refuses_its_arguments_is_a_config_error(tmp_path):
    run = scorers(tmp_path, [spec("response_length", "ResponseLength")])  # neither min_length nor max_length
    with pytest.raises(UsageError, match=r"^mlflow-ci.yml: genai.scorers\[0\].mlflow: MLflow's ResponseLength refused its arguments"):
        run.score(ROWS, OUTPUTS, "candidate")


def test_the_proxy_serves_only_callers_holding_its_token(tmp_path):
    """A process the PR's app left running can find the proxy's port; without this check's token it gets a 401,
    and the judge is never asked."""
    import urllib.error
    import urllib.request

    from mlflow_ci.genai.proxy import JudgeProxy

    with FakeLLM(answer=correctness_answer) as llm:
        judge = Judge(JudgeSettings(model="judge-1", base_url=llm.url, api_key_env="JUDGE_KEY"), {"JUDGE_KEY": KEY})
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
        with JudgeProxy(judge) as proxy:
            def ask(key: str | None) -> int:
                headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
                try:
                    with urllib.request.urlopen(urllib.request.Request(f"{proxy.url}/chat/completions", body, headers)) as r:
                        return r.status
                except urllib.error.HTTPError as exc:
                    return exc.code
            assert [ask(None), ask("mlflow-ci-judge-proxy"), ask(KEY)] == [401, 401, 401]
            assert llm.requests == [] and judge.budget.calls == 0
            assert ask(proxy.token) == 200 and len(llm.requests) == 1

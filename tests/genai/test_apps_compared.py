"""A GenAI app's candidate and baseline on the same rows: pass rates with paired intervals, the rows that
regressed with both outputs, and LLM judges' cost and flips."""

from __future__ import annotations

import io
import json
import textwrap

from fakellm import FakeLLM

from mlflow_ci.genai.compare import JudgeScorer, ScorerSet, compare_apps, score_rows
from mlflow_ci.genai.judge import Judge, JudgeSettings
from mlflow_ci.genai.runner import DataRow, run_app
from mlflow_ci.genai.scorers import build

FAQ = {"hours": "We are open 9 to 5.", "refund": "Refunds take 14 days.", "shipping": "Shipping is free over 50 EUR.",
       "returns": "Returns within 30 days."}
APP = textwrap.dedent("""
    FAQ = {faq}
    TEMPLATE = {template!r}

    def answer(topic, n):
        if topic == "crash":
            raise RuntimeError("no such topic")
        return TEMPLATE.format(text=FAQ[topic], n=n)
""")


def app_tree(tmp_path, name: str, template: str):
    root = tmp_path / name
    root.mkdir()
    (root / "faq_app.py").write_text(APP.format(faq=repr(FAQ), template=template))
    return root


def dataset():
    rows = []
    for n in range(60):
        topic = list(FAQ)[n % 4]
        fact = FAQ[topic].split()[-2] if topic != "hours" else "9 to 5"
        rows.append(DataRow({"topic": topic, "n": n}, {"expected_facts": [fact]}))
    rows.append(DataRow({"topic": "crash", "n": 60}, {"expected_facts": ["x"]}))
    return rows


def outputs(root, rows):
    return run_app("faq_app:answer", rows, root, {"PATH": "/usr/bin:/bin"}, timeout=60,
                   log_path=root.parent / f"{root.name}.log", stream=io.StringIO())


def test_a_template_that_drops_the_facts_is_a_significant_regression_with_its_rows(tmp_path):
    rows = dataset()
    base_out = outputs(app_tree(tmp_path, "base", "{text} (#{n})"), rows)
    # the candidate's template truncates every answer to 12 characters: most facts are lost
    cand_out = outputs(app_tree(tmp_path, "pr", "{text:.12} (#{n})"), rows)
    scorers = {"contains": build("contains"), "max_length": build("max_length", 25)}
    result = compare_apps(rows, score_rows(scorers, rows, cand_out), cand_out, score_rows(scorers, rows, base_out), base_out,
                          resamples=500, seed=1)
    assert result.rows == 61 and result.errors == {"candidate": 1, "baseline": 1}
    assert result.baseline["genai.contains"] == 60 / 61 and result.candidate["genai.contains"] < 0.5
    interval = result.intervals["genai.contains"]
    assert interval.high < 0 and interval.low < interval.delta < interval.high  # significant: excludes no change
    assert result.regressed["contains"] > 20 and result.fixed["contains"] == 0
    first = result.changed[0]
    assert first.change == "regressed" and first.scorer == "contains"
    assert (first.row, first.baseline_output, first.candidate_output) == (0, "We are open 9 to 5. (#0)", "We are open  (#0)")
    assert first.reason == "missing 1 of 1 expected facts: 9 to 5" and json.loads(first.inputs) == {"topic": "hours", "n": 0}
    assert result.candidate["genai.max_length"] > result.baseline["genai.max_length"]  # shorter answers: fixed rows
    assert result.fixed["max_length"] > 0 and any(c.change == "fixed" for c in result.changed)


def test_without_a_baseline_only_the_candidates_rates(tmp_path):
    rows = dataset()[:8]
    cand_out = outputs(app_tree(tmp_path, "pr", "{text}"), rows)
    result = compare_apps(rows, score_rows({"contains": build("contains")}, rows, cand_out), cand_out, None, None)
    assert result.candidate == {"genai.contains": 1.0} and result.baseline is None and result.intervals == {}


def test_a_judge_scores_rows_and_its_cost_and_flips_are_reported(tmp_path):
    rows = dataset()[:12]
    cand_out = outputs(app_tree(tmp_path, "pr", "{text}"), rows)
    seen = []

    def answer(body):  # polite unless it talks about refunds; on refunds the judge cannot make up its mind
        question = body["messages"][1]["content"]
        seen.append(question)
        if "Refunds" in question:
            return '{"verdict": "%s", "rationale": "unsure"}' % ("pass" if len(seen) % 2 else "fail")
        return '{"verdict": "pass", "rationale": "polite"}'

    with FakeLLM(answer=answer) as llm:
        judge = Judge(JudgeSettings(model="judge-1", base_url=llm.url, api_key_env=None, repeats=3, max_calls=36), {})
        scorers = ScorerSet({"polite": JudgeScorer(judge, "Is the answer polite?")}, ("polite",), judge=judge)
        scored = scorers.score(rows, cand_out, "candidate")
        result = compare_apps(rows, scored, cand_out, None, None, judge=scorers.judge_summary())
    assert len(llm.requests) == 36 == result.judge["calls"]
    assert result.judge["flipped"] == {"polite": 3} and result.judge["tokens"] > 0
    assert '"topic": "refund"' in seen[3] and "Answer:\nRefunds take 14 days." in seen[3]
    assert "Expectations:" in seen[0]

"""A GenAI app run row by row in a child Python, in the tree of its own commit."""

from __future__ import annotations

import io
import json
import textwrap

import pytest

from mlflow_ci.errors import EXIT_TRAINING, EXIT_USAGE, TrainingError, UsageError
from mlflow_ci.genai.runner import DataRow, load_rows, run_app

APP = textwrap.dedent("""
    import os, time
    TEMPLATE = "Answer: {q}"

    def answer(question, style="plain"):
        if question == "boom":
            raise ValueError("cannot answer boom")
        if question == "slow":
            time.sleep(30)
        if question == "token?":
            return {"token": os.environ.get("GITHUB_TOKEN"), "runtime": os.environ.get("ACTIONS_RUNTIME_TOKEN")}
        return TEMPLATE.format(q=question.upper() if style == "loud" else question)
""")


def tree(tmp_path, name="pr", template=None):
    root = tmp_path / name
    root.mkdir()
    (root / "app.py").write_text(APP if template is None else APP.replace('"Answer: {q}"', template))
    return root


def run(root, rows, env=None, timeout=60):
    return run_app("app:answer", rows, root, env or {"PATH": "/usr/bin:/bin"}, timeout=timeout,
                   log_path=root.parent / f"{root.name}-app.log", stream=io.StringIO())


def test_each_tree_answers_with_its_own_code_and_a_failing_row_is_recorded(tmp_path):
    rows = [DataRow({"question": "hi"}, {}), DataRow({"question": "hey", "style": "loud"}, {}),
            DataRow({"question": "boom"}, {})]
    candidate = run(tree(tmp_path, "pr"), rows)
    baseline = run(tree(tmp_path, "base", '"A: {q}"'), rows)
    assert [o.text for o in candidate] == ["Answer: hi", "Answer: HEY", ""]
    assert [o.text for o in baseline] == ["A: hi", "A: HEY", ""]
    assert candidate[2].error == "ValueError: cannot answer boom" and candidate[0].error is None
    assert all(o.latency_ms >= 0 for o in candidate)


def test_the_app_never_sees_github_or_runner_credentials(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GITHUB_TOKEN": "ghs_x", "ACTIONS_RUNTIME_TOKEN": "rt"}
    (out,) = run(tree(tmp_path), [DataRow({"question": "token?"}, {})], env)
    assert json.loads(out.text) == {"token": None, "runtime": None}


def test_an_app_that_cannot_load_or_answer_in_time_stops_the_check(tmp_path):
    root = tree(tmp_path)
    with pytest.raises(TrainingError, match="could not run") as missing:
        run_app("nope:answer", [DataRow({"question": "hi"}, {})], root, {"PATH": "/usr/bin:/bin"}, timeout=60,
                log_path=tmp_path / "x.log", stream=io.StringIO())
    assert missing.value.exit_code == EXIT_TRAINING
    assert "cannot load the app nope:answer: ModuleNotFoundError" in (tmp_path / "x.log").read_text()
    with pytest.raises(TrainingError, match="did not answer all 1 rows within 1s"):
        run(root, [DataRow({"question": "slow"}, {})], timeout=1)


def test_rows_from_jsonl_and_csv_and_bad_lines_named(tmp_path):
    jsonl = tmp_path / "faq.jsonl"
    jsonl.write_text('{"inputs": {"question": "hours?"}, "expectations": {"expected_facts": ["9", "5"]}}\n\n'
                     '{"inputs": {"question": "refund?"}}\n')
    assert load_rows(jsonl) == [DataRow({"question": "hours?"}, {"expected_facts": ["9", "5"]}),
                                DataRow({"question": "refund?"}, {})]
    table = tmp_path / "faq.csv"
    table.write_text("question,expected_response\nhours?,9 to 5\nrefund?,\n")
    assert load_rows(table) == [DataRow({"question": "hours?"}, {"expected_response": "9 to 5"}),
                                DataRow({"question": "refund?"}, {})]
    jsonl.write_text('{"inputs": {"question": "ok"}}\n{"question": "flat"}\n')
    with pytest.raises(UsageError, match=r"faq.jsonl:2: expected an object with \"inputs\"") as bad:
        load_rows(jsonl)
    assert bad.value.exit_code == EXIT_USAGE
    jsonl.write_text("{not json\n")
    with pytest.raises(UsageError, match=r"faq.jsonl:1: not a JSON object"):
        load_rows(jsonl)
    with pytest.raises(UsageError, match="does not exist"):
        load_rows(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("name, content, message", [
    ("faq.csv", b"question,expected_response\nhours?,9 to 5,extra,more\n", r"faq.csv:2: 2 more values than the header's 2 columns"),
    ("faq.jsonl", b'{"inputs": {"question": "caf\xe9"}}\n', r"genai.data: .*faq.jsonl: not UTF-8 text \(byte 28\)"),
    ("faq.csv", b"question\ncaf\xe9\n", r"genai.data: .*faq.csv: not UTF-8 text"),
    ("faq.jsonl", b'{"inputs": ' + b"[" * 100_000 + b"\n", r"faq.jsonl:1: not a JSON object \(nested too deep\)"),
])
def test_unreadable_rows_are_usage_errors_not_crashes(tmp_path, name, content, message):
    """#24 item 9: these raised raw exceptions (an unexpected failure, exit 4)."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message) as bad:
        load_rows(path)
    assert bad.value.exit_code == EXIT_USAGE

from __future__ import annotations

import io

from mlflow_ci.github.actions import SUMMARY_LIMIT, ActionsIO, Annotation, truncate_chars, truncate_utf8


def test_outputs_are_multiline_safe(tmp_path):
    out = tmp_path / "out"
    aio = ActionsIO({"GITHUB_OUTPUT": str(out)}, io.StringIO())
    aio.set_outputs({"verdict": "pass", "tricky": "line1\nEOF\nline3"})
    lines = out.read_text().splitlines()
    assert lines[0].startswith("verdict<<ghadelimiter_") and lines[1] == "pass"
    delim = lines[3].split("<<")[1]
    assert lines[4:7] == ["line1", "EOF", "line3"] and lines[7] == delim


def test_annotations_escape_data_and_properties():
    stream = io.StringIO()
    aio = ActionsIO({"GITHUB_ACTIONS": "true"}, stream)
    aio.annotate(Annotation("error", "50% worse\nsee: log", title="a:b,c", file="x.yml", line=3))
    assert stream.getvalue() == "::error file=x.yml,line=3,title=a%3Ab%2Cc::50%25 worse%0Asee: log\n"
    aio.mask("s3cr%t")
    assert stream.getvalue().endswith("::add-mask::s3cr%25t\n")


def test_nothing_is_written_outside_actions():
    stream = io.StringIO()
    aio = ActionsIO({}, stream)
    aio.annotate(Annotation("error", "x"))
    aio.mask("secret")
    assert stream.getvalue() == "" and aio.set_outputs({"a": "b"}) is False and aio.add_summary("x") is False


def test_summary_stays_under_one_mib(tmp_path):
    path = tmp_path / "summary"
    path.write_text("p" * 1000)
    aio = ActionsIO({"GITHUB_STEP_SUMMARY": str(path)}, io.StringIO())
    aio.add_summary("é" * 2_000_000, full_report_hint="See report.md.")
    data = path.read_bytes()
    assert len(data) <= SUMMARY_LIMIT + 1
    assert data.decode("utf-8").rstrip().endswith("See report.md._")


def test_truncation_helpers():
    assert truncate_utf8("abc", 10, note="!") == "abc"
    assert truncate_utf8("ééé", 4, note="!") == "é!"
    text = "row1\nrow2\nrow3\n"
    assert truncate_chars(text, 12, note="~") == "row1\nrow2\n~"

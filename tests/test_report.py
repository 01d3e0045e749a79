from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mlflow_ci.compare import Baseline, Comparison, diff_metrics, diff_params
from mlflow_ci.config.loader import parse_config
from mlflow_ci.errors import UsageError
from mlflow_ci.gate import evaluate
from mlflow_ci.report import build_result, code, md, render_markdown, sticky_marker, write_outputs
from mlflow_ci.tracking import RunSnapshot

GOLDEN = Path(__file__).parent / "fixtures" / "report-hostile.md"
HOSTILE = "acc|<img src=x onerror=alert(1)> @admin #12 [x](http://evil) `tick` <!-- hide"

CONFIG = f"""
experiment: churn
train: {{command: python train.py}}
gate:
  accuracy: {{min: 0.8, max_drop: 0.02}}
  rmse: {{max: 10, direction: lower, mode: warn}}
  "{HOSTILE}": {{min: 0.5}}
report:
  ui_url: https://mlflow.example.com
"""


def make_result(tmp_path, *, template: str | None = None):
    text = CONFIG + (f"  template: {template}\n" if template else "")
    cfg = parse_config(text, tmp_path / "mlflow-ci.yml")
    cand = RunSnapshot(
        "c" * 32, "1", "FINISHED",
        metrics={"accuracy": 0.85, "rmse": 12.5, HOSTILE: 0.4, "new_metric": 1.0},
        params={"C": "0.3", "evil|param": "@team <b>", "n": "10"},
        tags={"mlflow.source.git.commit": "a" * 40, "mlflow.source.git.branch": "feat/`rm -rf`|@org/team"},
    )
    base_run = RunSnapshot(
        "b" * 32, "1", "FINISHED",
        metrics={"accuracy": 0.9, "rmse": 10.0, HOSTILE: 0.6, "old_metric": 2.0},
        params={"C": "0.02", "n": "10", "gone": "x"},
        tags={"mlflow.source.git.commit": "b" * 40, "mlflow.source.git.branch": "main"},
    )
    baseline = Baseline(base_run, "alias:champion", "registered model churn version 3 (@champion)")
    comparison = Comparison(
        cand, baseline, diff_metrics(cfg, dict(cand.metrics), dict(base_run.metrics)),
        diff_params(dict(cand.params), dict(base_run.params)), ("note with @mention",),
    )
    gate = evaluate(cfg.gate, dict(cand.metrics), dict(base_run.metrics))
    result = build_result(cfg, comparison, gate, cached=False, fingerprint=None, tracking_uri="sqlite:///x.db", pr_number=7)
    return cfg, result


def test_md_escapes_everything_that_could_break_a_comment():
    out = md(HOSTILE)
    assert "<" not in out and ">" not in out.replace("&gt;", "")
    assert "\\|" in out
    assert "@&#8203;admin" in out
    assert "\\#&#8203;12" in out
    assert "\\[x\\]" in out
    assert "http:&#8203;//" in out
    assert "\n" not in md("a\nb\r\nc")
    assert md("x" * 500).endswith("…") and len(md("x" * 500)) == 120


def test_code_cannot_be_broken_out_of():
    assert code("a`b|c") == "`a b|c`"
    assert code(None) == ""


def test_report_matches_golden_file(tmp_path):
    cfg, result = make_result(tmp_path)
    markdown = render_markdown(result, cfg.report, cfg.root)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(markdown, encoding="utf-8")
    assert markdown == GOLDEN.read_text(encoding="utf-8")


def test_report_structure(tmp_path):
    cfg, result = make_result(tmp_path)
    markdown = render_markdown(result, cfg.report, cfg.root)
    assert markdown.startswith(sticky_marker("churn"))
    assert "## ❌" in markdown
    # no raw HTML from untrusted text survives; the only tags are our own details/summary/sub
    for tag in ("<img", "<b>", "<!-- hide"):
        assert tag not in markdown
    # every table row has the same number of cells as its header
    for block in markdown.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            widths = {len(row.replace("\\|", "").split("|")) for row in rows}
            assert len(widths) == 1, block
    assert "https://mlflow.example.com/#/experiments/1/runs/" + "c" * 32 in markdown


def test_result_json_schema_1_fields(tmp_path):
    cfg, result = make_result(tmp_path)
    assert result["schema"] == 1
    assert result["verdict"] == "fail"
    assert result["experiment"] == "churn"
    assert set(result["candidate"]) >= {"run_id", "commit", "metrics", "params", "cached"}
    assert result["baseline"]["source"] == "alias:champion"
    assert set(result["baseline"]) >= {"run_id", "source", "metrics"}
    check = result["checks"][0]
    assert set(check) >= {"metric", "rule", "limit", "value", "passed", "blocking", "message"}
    assert (check["metric"], check["rule"], check["limit"], check["value"], check["passed"]) == ("accuracy", "min", 0.8, 0.85, True)
    statuses = {m["name"]: m["status"] for m in result["metrics"]}
    assert statuses == {"accuracy": "worse", "rmse": "worse", HOSTILE: "worse", "new_metric": "new", "old_metric": "removed"}
    assert {p["name"]: p["status"] for p in result["params_diff"]} == {"C": "changed", "evil|param": "added", "gone": "removed"}


def test_non_finite_numbers_stay_valid_json(tmp_path):
    cfg = parse_config("experiment: e\ntrain: {command: x}\ngate:\n  acc: {min: 0.5}\n", tmp_path / "mlflow-ci.yml")
    cand = RunSnapshot("c" * 32, "1", "FINISHED", metrics={"acc": float("nan")})
    comparison = Comparison(cand, None, diff_metrics(cfg, dict(cand.metrics), None), (), ())
    result = build_result(cfg, comparison, evaluate(cfg.gate, dict(cand.metrics), None), cached=False, fingerprint=None, tracking_uri="x")
    report_path, result_path = write_outputs(tmp_path / "out", render_markdown(result, cfg.report, cfg.root), result)
    data = json.loads(result_path.read_text(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert data["candidate"]["metrics"]["acc"] == "nan"
    assert data["verdict"] == "fail" and data["baseline"] is None
    assert "Baseline: none found" in report_path.read_text()


def test_user_template(tmp_path):
    (tmp_path / "my.md.j2").write_text("{{ marker }}\nVerdict {{ r.verdict }} for {{ r.experiment | md }}\n")
    cfg, result = make_result(tmp_path, template="my.md.j2")
    assert render_markdown(result, cfg.report, cfg.root).endswith("Verdict fail for churn\n")


def test_broken_user_template_is_a_usage_error(tmp_path):
    (tmp_path / "bad.md.j2").write_text("line one\n{% if %}\n")
    cfg, result = make_result(tmp_path, template="bad.md.j2")
    with pytest.raises(UsageError, match=r"report template .*bad.md.j2:2: "):
        render_markdown(result, cfg.report, cfg.root)
    cfg, result = make_result(tmp_path, template="missing.md.j2")
    with pytest.raises(UsageError, match="report.template: file not found"):
        render_markdown(result, cfg.report, cfg.root)


def test_no_html_from_untrusted_text_survives_githubs_parser(tmp_path):
    """The hostile report through cmark-gfm: only the tags our template writes, no link but ours,
    no comment but our marker, and every table whole."""
    from render_checks import ALLOWED_TAGS, parsed, table_problems

    cfg, result = make_result(tmp_path)
    markdown = render_markdown(result, cfg.report, cfg.root)
    page = parsed(markdown)
    assert {tag for tag, _ in page.tags} <= ALLOWED_TAGS
    assert {attrs.get("href", "").split("/#/")[0] for tag, attrs in page.tags if tag == "a"} <= {"https://mlflow.example.com"}
    assert page.comments == [sticky_marker("churn")[4:-3]]
    assert not table_problems(markdown)

"""result.json as a declared model: our own results round-trip; untrusted ones are validated as data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mlflow_ci.errors import UsageError
from mlflow_ci.result import Result, load_untrusted, validate_untrusted

SHA = "a" * 40


def ours(**extra) -> dict:
    return {
        "schema": 1, "verdict": "fail", "experiment": "churn", "model": "churn", "pr": 7,
        "candidate": {"run_id": "c" * 32, "experiment_id": "1", "commit": SHA, "branch": "feature",
                      "metrics": {"acc": 0.85, "loss": float("nan")}, "params": {"C": "1"}, "cached": False,
                      "fingerprint": "f" * 64, "name": "wide", "url": None},
        "baseline": {"run_id": "b" * 32, "source": "alias:champion", "description": "champion v3",
                     "commit": SHA, "branch": "main", "metrics": {"acc": 0.9}, "url": None},
        "checks": [{"metric": "acc", "rule": "min", "limit": 0.9, "value": 0.85, "baseline": 0.9, "bound": 0.9,
                    "passed": False, "blocking": True, "direction": "higher", "message": "0.85 < min 0.9", "line": 5}],
        "metrics": [{"name": "eval.acc", "baseline": 0.9, "candidate": 0.85, "delta": -0.05, "delta_pct": -5.5,
                     "direction": "higher", "status": "worse", "ci_low": -0.07, "ci_high": -0.03},
                    {"name": "acc/region:north", "baseline": 0.9, "candidate": 0.8, "delta": -0.1, "delta_pct": None,
                     "direction": "higher", "status": "worse", "ci_low": -0.2, "ci_high": 0.1}],
        "params_diff": [], "notes": ["n"], "config_path": "models/churn/mlflow-ci.yml", "head_sha": SHA,
        "ci_run_url": "https://github.test/o/r/actions/runs/1", "tool": {"name": "mlflow-ci", "version": "0.1.0"},
        **extra,
    }


def test_our_result_round_trips_through_the_file(tmp_path):
    result = Result.build(ours(evaluation={"rows": 10, "psi": float("inf")}))
    path = tmp_path / "result.json"
    path.write_text(result.text())
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert data["candidate"]["metrics"]["loss"] == "nan" and data["evaluation"]["psi"] == "inf"
    assert list(data) == ["schema", "verdict", "experiment", "model", "pr", "candidate", "baseline", "checks", "metrics",
                          "params_diff", "notes", "config_path", "head_sha", "ci_run_url", "tool", "evaluation", "recomputed"]
    again = load_untrusted(path)
    assert math.isnan(again.candidate.metrics["loss"])
    assert again.checks == result.checks and again.baseline == result.baseline
    # what only our own checks may say does not survive the trip through an artifact
    assert again.candidate.name is None and again.evaluation is None
    assert [(m.ci_low, m.ci_high) for m in again.metrics] == [(-0.07, -0.03), (None, None)]


def test_fields_read_as_the_file_holds_them():
    result = Result.build(ours())
    assert result["verdict"] == "fail" and result["candidate"]["metrics"]["loss"] == "nan"
    assert "leaderboard" not in result.as_json() and "evaluation" not in result.as_json()
    assert result.get("missing", 3) == 3 and "checks" in result
    assert [c.metric for c in result.failed] == ["acc"]


def test_untrusted_text_is_cut_not_refused():
    long = validate_untrusted(ours(experiment="e" * 1000, notes=[f"note {i}" for i in range(50)]))
    assert len(long.experiment) == 250 and len(long.notes) == 20
    assert Result.build(ours(experiment="e" * 1000)).experiment == "e" * 1000  # our own are kept whole


@pytest.mark.parametrize("override, message", [
    ({"candidate": {"run_id": "../../x"}}, "candidate.run_id: unexpected format"),
    ({"candidate": {"metrics": {"acc": "0.9"}}}, "candidate.metrics.acc: expected a number"),
    ({"candidate": {"metrics": {"evil\n::error::x": "0.9"}}}, "candidate.metrics.evil?::error::x: expected a number"),
    ({"checks": [{"metric": "a", "rule": "min", "passed": "yes"}]}, "checks[0].passed: expected true, false or null"),
    ({"metrics": [{"name": "a", "status": "great"}]}, "metrics[0].status: unknown status"),
    ({"checks": [{"metric": "a", "rule": "min", "passed": True}] * 1001}, "checks: expected a list of at most 1000"),
    ({"experiment": None}, "experiment: expected a string"),
])
def test_untrusted_refusals_name_the_field(override, message):
    with pytest.raises(UsageError) as info:
        validate_untrusted({**ours(), **override})
    assert info.value.message == f"result.json artifact rejected: {message}"
    assert "\n" not in info.value.message


def test_unknown_fields_of_a_newer_version_are_ignored():
    assert validate_untrusted(ours(future_field={"x": 1})).verdict == "fail"


def test_an_untrusted_list_of_notes_is_bounded_like_every_list():
    assert len(validate_untrusted(ours(notes=["n"] * 5000)).notes) == 20
    with pytest.raises(UsageError, match="notes: expected a list of at most 5000"):
        validate_untrusted(ours(notes=["n"] * 5001))


def test_genai_details_from_an_artifact_are_kept_as_bounded_data():
    """A fork's changed rows reach the trusted publisher's comment: validated, cut, never trusted."""
    hostile = "@maintainers see <img src=x onerror=alert(1)> " + "A" * 10_000
    genai = {"data": "faq.jsonl", "rows": 40, "predict_fn": "faq_app:answer", "baseline": "the app at base commit 8a33e2deef94",
             "scorers": ["contains"], "errors": {"candidate": 0}, "regressed": {"contains": 1}, "fixed": {"contains": 0},
             "changed": [{"scorer": "contains", "row": 3, "change": "regressed", "inputs": "{}", "candidate_output": hostile,
                          "baseline_output": "ok", "reason": "missing", "extra": "dropped"}],
             "judge": {"calls": 10, "tokens": 900, "max_calls": 20, "flipped": {"polite": 2}}}
    result = validate_untrusted(ours(genai=genai))
    row = result.genai.changed[0]
    assert len(row.candidate_output) == 500 and row.candidate_output.startswith("@maintainers")  # cut; escaped when rendered
    assert result.genai.judge.flipped == {"polite": 2} and result.as_json()["genai"]["regressed"] == {"contains": 1}
    from mlflow_ci.config.models import ReportConfig
    from mlflow_ci.report import render_markdown

    markdown = render_markdown(result, ReportConfig(), Path("."))
    assert "<details open><summary>GenAI:" in markdown and "| ❌ | contains |" in markdown
    assert "<img" not in markdown and "@&#8203;maintainers" in markdown  # escaped as every untrusted cell
    assert "Judges: 10 of 20 requests and 900 tokens spent; polite: 2 rows where repeats disagreed." in markdown
    with pytest.raises(UsageError, match=r"genai.changed\[0\].change: expected regressed or fixed"):
        validate_untrusted(ours(genai={**genai, "changed": [{**genai["changed"][0], "change": "worse"}]}))


def test_an_artifact_cannot_claim_what_only_the_trusted_publisher_did():
    """``recomputed`` and ``genai.judged_by: publisher`` say the trusted job computed part of the verdict: an
    artifact (the PR's job) saying so is read as if it had not; our own result keeps them."""
    genai = {"data": "faq.jsonl", "rows": 4, "predict_fn": "app:answer", "baseline": "base", "scorers": ["polite"],
             "pending": [], "judged_by": "publisher"}
    claimed = validate_untrusted(ours(recomputed=["eval.acc"], genai=genai))
    assert claimed.recomputed == [] and claimed.genai.judged_by is None
    assert validate_untrusted(ours(genai={**genai, "judged_by": "check"})).genai.judged_by == "check"
    kept = Result.build(ours(recomputed=["eval.acc"], genai=genai))
    assert kept.recomputed == ["eval.acc"] and kept.genai.judged_by == "publisher"
    from mlflow_ci.github.publish import computed_where

    assert computed_where(claimed) == "_Verdict computed in the PR's job: as trustworthy as the PR's code review._\n\n"
    assert computed_where(kept).startswith("_Verdict recomputed by the trusted job where it is safe: eval.acc recomputed")
    with pytest.raises(UsageError, match=r"genai.pending\[0\]: expected a genai.<scorer> name"):
        validate_untrusted(ours(genai={**genai, "pending": ["not a metric"]}))

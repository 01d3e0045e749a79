"""Baseline resolution in the documented order, on a real git repo and a real SQLite store."""

from __future__ import annotations

import io

from conftest import git

from mlflow_ci.commands.check import do_check
from mlflow_ci.commands.session import Options, make_session
from mlflow_ci.compare import _metric_row, diff_params
from mlflow_ci.config.loader import load_config
from mlflow_ci.tracking import MlflowTracker


def check(project, **opts):
    cfg = load_config(project.root / "mlflow-ci.yml")
    s = make_session(cfg, project.env(), project.root, io.StringIO())
    return do_check(s, Options(out_dir=project.root / ".mlflow-ci", use_cache=False, **opts))


def test_resolution_order(project):
    on_main = check(project)
    assert on_main.result["baseline"] is None
    assert "no baseline found" in on_main.result["notes"][-1]
    base_a = on_main.result["candidate"]["run_id"]
    commit_a = git(project.root, "rev-parse", "HEAD")

    # main moves on after the PR branched: the PR compares with its base commit, not main's tip
    project.branch("feature")
    project.set_metrics(accuracy=0.95, rmse=4.0)
    project.commit("feature work")
    project.branch("main", "main")
    project.set_metrics(accuracy=0.92, rmse=4.5)
    project.commit("main moves on")
    main_c = check(project).result["candidate"]["run_id"]
    git(project.root, "checkout", "-q", "feature")

    pr = check(project)
    assert pr.result["baseline"]["run_id"] == base_a
    assert pr.result["baseline"]["source"] == f"base_commit:{commit_a}"
    assert pr.result["notes"] == ["models:/churn-model@champion does not exist"]

    # a registered champion comes first
    tracker = MlflowTracker(project.uri)
    version = tracker.register(main_c, "churn-model")
    tracker.set_alias("churn-model", "champion", version)
    pr = check(project)
    assert pr.result["baseline"]["run_id"] == main_c
    assert pr.result["baseline"]["source"] == "alias:champion"
    assert pr.result["baseline"]["description"] == "registered model churn-model version 1 (@champion)"

    # an explicit baseline beats everything
    pr = check(project, baseline=base_a)
    assert pr.result["baseline"]["source"] == f"explicit:{base_a}"
    pr = check(project, baseline="models:/churn-model/1")
    assert pr.result["baseline"]["run_id"] == main_c

    # the configured sources decide the order: base branch only -> latest run on main
    text = (project.root / "mlflow-ci.yml").read_text() + "baseline:\n  sources: [base_branch]\n"
    project.write("mlflow-ci.yml", text)
    pr = check(project)
    assert pr.result["baseline"] == {**pr.result["baseline"], "run_id": main_c, "source": "base_branch:main"}


def test_base_commit_skips_runs_that_failed_their_gate(project):
    good = check(project).result["candidate"]["run_id"]
    project.set_metrics(accuracy=0.1, rmse=50.0)  # uncommitted edit: same commit, failing run
    assert check(project).verdict == "fail"
    git(project.root, "checkout", "--", "params.json")
    project.branch("feature")
    project.commit("empty change")
    pr = check(project)
    assert pr.result["baseline"]["run_id"] == good


def test_only_gated_runs_are_baselines_and_the_report_says_which_were_passed_over(project):
    gated = check(project).result["candidate"]["run_id"]
    ungated = project.cli("train", "--no-cache")  # trained, never gated: no verdict
    assert ungated.returncode == 0, ungated.stderr
    project.set_metrics(accuracy=0.1, rmse=50.0)
    failed = check(project)  # same commit, a failing gate
    assert failed.verdict == "fail"
    git(project.root, "checkout", "--", "params.json")
    project.branch("feature")
    project.commit("empty change")
    pr = check(project)
    assert pr.result["baseline"]["run_id"] == gated
    [note] = [n for n in pr.result["notes"] if n.startswith("passed over at base commit")]
    assert note.endswith("only runs gated with at least one rule that passed, never rolled back, are baselines")
    assert f"{failed.result['candidate']['run_id'][:12]} (gate failed)" in note and "(no verdict)" in note
    report = (project.root / ".mlflow-ci" / "report.md").read_text()
    assert "passed over at base commit" in report


def test_base_branch_option_and_missing_branch(project):
    project.branch("feature")
    project.commit("x")
    pr = check(project, base_branch="develop")
    assert pr.result["baseline"] is None
    assert pr.result["notes"][1:] == [
        "base commit unknown (no base branch or no merge-base)",
        "no finished run on base branch develop",
        "no baseline found (a first model: nothing was ever gated for it): rules that need one are not evaluated",
    ]
    skipped = [c for c in pr.result["checks"] if c["passed"] is None]
    assert [c["rule"] for c in skipped] == ["max_drop"]
    assert pr.verdict == "pass"


def test_metric_rows():
    assert _metric_row("acc", 0.9, 0.8, "higher", True).status == "better"
    assert _metric_row("rmse", 0.9, 0.8, "lower", True).status == "worse"
    row = _metric_row("acc", 0.8, 0.8, "higher", True)
    assert (row.status, row.delta, row.delta_pct) == ("same", 0.0, 0.0)
    assert _metric_row("acc", 1.0, 0.0, "higher", True).delta_pct is None
    assert _metric_row("acc", float("nan"), 0.8, "higher", True).status == "invalid"
    assert _metric_row("acc", 0.5, None, "higher", False).status == "n/a"


def test_param_diff_only_lists_changes():
    rows = diff_params({"a": "1", "b": "2", "new": "x"}, {"a": "1", "b": "3", "old": "y"})
    assert [(p.name, p.status) for p in rows] == [("b", "changed"), ("new", "added"), ("old", "removed")]
    assert diff_params({"a": "1"}, None) == ()


def test_trend_is_the_last_gated_runs_of_the_base_branch_oldest_first(tmp_path):
    from mlflow_ci.compare import trend
    from mlflow_ci.gitctx import GitContext
    from mlflow_ci.tracking import TAG_BRANCH, TAG_VERDICT, RunSnapshot

    day = 86_400_000
    now = 1_800_000_000_000

    def run(i, verdict, **metrics):  # run i started i * 30 days after run 0; run 9 (the candidate) is now
        return RunSnapshot(run_id=f"r{i}", experiment_id="1", status="FINISHED", metrics=metrics, params={},
                           start_time=now - (9 - i) * 30 * day,
                           tags={TAG_VERDICT: verdict, TAG_BRANCH: "main", "mlflow_ci.commit": f"{i:040x}"} if verdict else {TAG_BRANCH: "main"})

    newest_first = [run(5, "pass", acc=0.9), run(4, "fail", acc=0.1), run(3, None, acc=0.2), run(2, "warn", acc=0.8, loss=1.0),
                    run(1, "pass", acc=float("nan")), run(0, "pass", acc=0.7)]
    seen = {}

    class Tracker:
        def search_runs(self, experiment_id, *, tags, limit, since_ms=None):
            seen.update(tags=tags, limit=limit)
            seen.setdefault("windows", []).append(None if since_ms is None else (now - since_ms) // day)
            return [r for r in newest_first if since_ms is None or r.start_time >= since_ms][:limit]

    def load_config_text(text):
        (tmp_path / "mlflow-ci.yml").write_text(text)
        return load_config(tmp_path / "mlflow-ci.yml")

    cfg = load_config_text("experiment: e\ntrain: {command: python t.py}\ngate:\n  acc: {min: 0}\nreport: {trend: 3}\n")
    candidate = run(9, None, acc=1.0)
    got = trend(Tracker(), cfg, GitContext(base_branch="main", branch="pr"), candidate)
    assert seen == {"tags": {TAG_BRANCH: "main"}, "limit": 10, "windows": [14, 112, 896, None]}  # widened until all
    assert got.branch == "main"
    assert [p.run_id for p in got.points] == ["r1", "r2", "r5"]  # oldest first; failed and ungated runs left out
    assert [dict(p.metrics) for p in got.points] == [{}, {"acc": 0.8}, {"acc": 0.9}]  # gated metrics only, finite only
    seen.clear()
    few = load_config_text("experiment: e\ntrain: {command: python t.py}\ngate:\n  acc: {min: 0}\nreport: {trend: 1}\n")
    assert [p.run_id for p in trend(Tracker(), few, GitContext(base_branch="main"), candidate).points] == ["r5"]
    assert seen["windows"] == [14, 112, 896]  # the four runs one point needs are within 896 days: no unbounded search
    off = load_config_text("experiment: e\ntrain: {command: python t.py}\ngate:\n  acc: {min: 0}\nreport: {trend: 0}\n")
    assert trend(Tracker(), off, GitContext(base_branch="main"), candidate) is None
    assert trend(Tracker(), cfg, GitContext(), candidate) is None  # no branch known: no trend


def test_an_exploratory_run_is_never_a_baseline_nor_promoted(project):
    """#24 item 2: a run checked with `gate: {}` (what init writes) counted as "gated, pass", became the
    baseline of the first real check, and only deleting the store recovered."""
    rules = (project.root / "mlflow-ci.yml").read_text()
    project.write("mlflow-ci.yml", rules.split("gate:")[0] + "gate: {}\n")
    project.set_metrics(accuracy=0.99, rmse=1.0)  # an exploratory run that would make any real PR look bad
    project.commit("exploring")
    explored = check(project)
    assert explored.verdict == "pass"
    run = MlflowTracker(project.uri).get_run(explored.result["candidate"]["run_id"])
    assert run.tags["mlflow_ci.gate_rules"] == "0"

    project.write("mlflow-ci.yml", rules)
    project.set_metrics(accuracy=0.9, rmse=5.0)
    project.commit("real rules on main")
    project.branch("feature")
    project.set_metrics(accuracy=0.91, rmse=5.0)
    project.commit("a PR")
    pr = check(project, base_branch="main")
    assert pr.result["baseline"] is None and pr.verdict == "pass"  # a first model: nothing gated with rules yet
    assert any("gated with no rule (an exploratory run: gate: {})" in n for n in pr.result["notes"])

    refused = project.cli("promote", "--run", run.run_id)
    assert refused.returncode == 1 and "gated with no rule" in refused.stderr and "Traceback" not in refused.stderr


def test_the_baseline_says_where_it_came_from_and_warns_when_old(project):
    import dataclasses
    import time

    from mlflow_ci.terminal import render

    check(project)  # main's run
    project.branch("feature")
    project.commit("a PR")
    cfg = load_config(project.root / "mlflow-ci.yml")
    later = time.time() + 40 * 86400
    s = dataclasses.replace(make_session(cfg, project.env(), project.root, io.StringIO()), clock=lambda: later)
    pr = do_check(s, Options(out_dir=project.root / ".mlflow-ci", use_cache=False, base_branch="main"))
    baseline = pr.result["baseline"]
    assert baseline["origin"] == f"the local store {project.store}" and 39.9 < baseline["age_days"] < 40.1
    [warning] = [n for n in pr.result["notes"] if n.startswith("warning: the baseline run is ")]
    assert warning.startswith("warning: the baseline run is 40 days old, older than baseline.max_age (30 days)")
    lines = render(pr.result)
    assert lines[1].startswith("baseline: latest gated run at base commit ") and lines[1].endswith(
        f", from the local store {project.store}, trained 40 days ago")
    assert warning in lines
    project.write("mlflow-ci.yml", (project.root / "mlflow-ci.yml").read_text() + "baseline:\n  max_age: false\n")
    cfg = load_config(project.root / "mlflow-ci.yml")
    s = dataclasses.replace(make_session(cfg, project.env(), project.root, io.StringIO()), clock=lambda: later)
    quiet = do_check(s, Options(out_dir=project.root / ".mlflow-ci", use_cache=False, base_branch="main"))
    assert not any(n.startswith("warning: the baseline run") for n in quiet.result["notes"])

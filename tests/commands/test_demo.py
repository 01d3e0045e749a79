"""`mlflow-ci demo` end to end, as a subprocess, exactly as the README runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import clean_env, git
from render_checks import mermaid_blocks, mermaid_problems, table_problems


def test_demo_tells_the_whole_story(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow_ci", "demo", "--dir", str(tmp_path)],
        capture_output=True, text=True, env=clean_env(), timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "registered demo-breast-cancer version 1 as @champion" in out
    assert "pr/fewer-features    verdict FAIL  as designed" in out
    assert "pr/tune-c            verdict PASS  as designed" in out
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert f"browse it:    mlflow ui --backend-store-uri {store}" in out
    assert "the demo behaved as designed" in out
    # both reports are printed and kept
    regress = (tmp_path / "report-pr-fewer-features.md").read_text()
    improve = (tmp_path / "report-pr-tune-c.md").read_text()
    # the terminal gets the decision as plain text; the Markdown (the PR comment) is in the report files
    assert regress not in out and "&#8203;" not in out and "verdict: FAIL (demo-breast-cancer)" in out
    assert "  [FAIL] eval.log_loss" in out and "baseline: registered model demo-breast-cancer version 1 (@champion)" in out
    assert "## ❌" in regress and "## ✅" in improve
    assert "registered model demo-breast-cancer version 1 (@&#8203;champion)" in regress
    # champion and candidate scored on the same rows: the regression is significant, the improvement passes
    row = re.search(r"^\| ❌&nbsp;eval\.log\\_loss \| 0\.1363 → 0\.2075 \| \+0\.0711 \[\+(0\.\d+), \+(0\.\d+)\] \|", regress, re.M)
    assert row and 0 < float(row.group(1)) < 0.0711 < float(row.group(2))  # significant: the interval excludes 0
    assert "→ significant regression (level 0.05)" in regress
    first_fold = regress.index("<details")
    assert regress.index("| ❌&nbsp;") < regress.index("| ✅&nbsp;") < first_fold  # the decision first, failing first
    assert "| Trend |" in regress[:first_fold] and "→" in regress[:first_fold]  # the trend column sits in the decision table
    assert regress.index("Why each rule decided") < regress.index("Trends on main") < regress.index("All metrics")
    assert "one-sided 95 % lower bound" in regress and "→ no significant regression (level 0.05)" in improve
    assert "the 90 % interval shown ends at the one-sided 95 % bounds the gate uses" in regress
    assert "Model card: scikit-learn" in regress and "mean radius: double" in regress
    for report in (regress, improve):  # as GitHub parses it: tables whole, every chart drawable
        assert not table_problems(report)
        charts = mermaid_blocks(report)
        assert len(charts) == 5 and not mermaid_problems(charts)
    assert "30 of 30 features unchanged (PSI ≤ 0.1, missing rate within 1 percentage point, same dtype)." in improve
    assert "| Feature | Missing | PSI |" not in improve  # nothing changed: no table of zeros
    assert "**Confusion matrix, candidate**" in improve and "**Data checks** against the baseline's evaluation data: rows 171 → 171" in improve
    result = json.loads((tmp_path / "model-repo" / ".mlflow-ci" / "result.json").read_text())
    assert result["verdict"] == "pass" and result["baseline"]["source"] == "alias:champion"
    # the four models trained side by side, each run tagged as if trained where it is checked
    assert "four models trained side by side in" in out and out.count("trained in") == 4
    repo = tmp_path / "model-repo"
    assert result["candidate"]["commit"] == git(repo, "rev-parse", "pr/tune-c") and not result["candidate"]["cached"]
    assert [p["commit"] for p in result["trend"]["runs"]] == [git(repo, "rev-parse", "main~1"), git(repo, "rev-parse", "main")]
    assert git(repo, "worktree", "list").count("\n") == 0  # the worktrees are gone
    # the demo never touches the caller's working directory or a default store
    assert "Traceback" not in proc.stderr


def test_demo_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "model-repo").mkdir()
    (tmp_path / "model-repo" / "keep.txt").write_text("mine")
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow_ci", "demo", "--dir", str(tmp_path)],
        capture_output=True, text=True, env=clean_env(), timeout=60,
    )
    assert proc.returncode == 2
    assert "already exists and is not empty" in proc.stderr


def test_the_genai_demo_fails_the_breaking_prompt_and_passes_the_better_retrieval(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mlflow_ci", "demo", "--genai", "--dir", str(tmp_path)],
                          capture_output=True, text=True, env=clean_env(), timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "pr/shorter-answers   verdict FAIL  as designed" in out and "pr/better-retrieval  verdict PASS  as designed" in out
    assert "genai.contains    max_drop  Δ -0.55" in out and "significant regression (level 0.05)" in out
    broken = (tmp_path / "report-pr-shorter-answers.md").read_text()
    assert "<details open><summary>GenAI: faq\\_app:answer on 40 rows of faq.jsonl: 22 row verdicts regressed" in broken
    assert "| ❌ | contains | {\"question\": \"When are you open?\"} | Our shop is open Monday to Friday, 9:00 |" in broken
    assert not table_problems(broken)
    better = json.loads((tmp_path / "result-pr-better-retrieval.json").read_text())
    assert better["genai"]["fixed"]["contains"] == 3 and better["genai"]["regressed"]["contains"] == 0
    # the verdict matrix's GenAI row (#24): both PRs compared with the base commit's app, named in result.json
    broken_result = json.loads((tmp_path / "result-pr-shorter-answers.json").read_text())
    for result, verdict in ((broken_result, "fail"), (better, "pass")):
        assert result["verdict"] == verdict and result["baseline"]["source"].startswith("base_commit:")
        assert result["genai"]["baseline"].startswith("the app at base commit ")
    assert "Traceback" not in proc.stderr


def test_runs_trained_side_by_side_are_created_in_commit_order_and_a_failure_holds_nobody():
    import threading

    from mlflow_ci.commands.demo import InTurn

    created = []

    class Tracker:
        def start_run(self, *args, **kwargs):
            created.append(kwargs["name"])
            return kwargs["name"]

    turns = InTurn()

    def worker(index: int):
        if index == 1:
            turns.finish(1)  # its training failed before it started a run
            return
        turns.tracker(Tracker(), index).start_run(name=f"run{index}")
        turns.finish(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in (3, 2, 1, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads) and created == ["run0", "run2", "run3"]

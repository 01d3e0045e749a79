"""The judge, run by the trusted publisher on a deferred check's answers (``check --defer-judging``).

The job that runs the pull request's code never holds the judge's key: it answers the rows with both apps,
scores what needs no judge, and writes the answers beside result.json (:mod:`mlflow_ci.genai.answers`). The
publish job, which runs no code of the PR and holds the key, reads those answers as data, asks the judge
with the *base commit's* ``genai:`` settings (scorers, instructions, model, budget), computes each judged
metric's pass rate and paired interval, decides the base commit's rules on them, and publishes the result
completed. When it cannot judge (no answers, no judge configured at the base commit, the judge failing), the
pending rules fail and say why: a check is never passed over a judge that did not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci import compare as cmp
from mlflow_ci.config.models import Config
from mlflow_ci.errors import MlflowCiError, printable
from mlflow_ci.gate import evaluate
from mlflow_ci.genai.answers import ANSWERS_FILE, read_answers
from mlflow_ci.result import Result


def judge_deferred(cfg: Config | None, env: Mapping[str, str], stream: TextIO, result: Result, folder: Path,
                   work: Path) -> Result:
    """An untrusted ``result`` whose judge metrics — those the base commit's configuration (``cfg``) judges, and
    any the check left pending — are scored here from ``folder``'s answers; or whose rules on them fail, saying
    why not. A verdict the check's job reports for a judge is never taken: the judge runs here or fails."""
    judged = set(cfg.genai.judged_metrics()) if cfg is not None and cfg.genai is not None and cfg.genai.judge else set()
    pending = set(result.genai.pending) if result.genai is not None else set()
    if result.error is not None or not (judged or pending):
        return result
    if not judged:
        return not_judged(result, "the base commit's configuration has no genai.judge, so nothing trusted says how to "
                                  "judge (the PR's own judge settings are never used with the key)")
    try:
        answers = read_answers(folder / ANSWERS_FILE)
        return _judged(cfg, env, stream, result, answers, work)
    except MlflowCiError as exc:
        return not_judged(result, exc.message, cfg)


def _judged(cfg: Config, env, stream, result: Result, answers, work: Path) -> Result:
    from mlflow_ci.commands.genai import scorer_set
    from mlflow_ci.genai.compare import compare_apps

    g = cfg.genai
    scorers = scorer_set(cfg, env, work, stream, judges=True)
    candidate = scorers.score(answers.rows, answers.candidate, "candidate")
    baseline = scorers.score(answers.rows, answers.baseline, "baseline") if answers.baseline is not None else None
    scored = compare_apps(answers.rows, candidate, answers.candidate, baseline, answers.baseline, resamples=g.resamples,
                          seed=g.seed, confidence=g.confidence, judge=scorers.judge_summary())
    judged = set(g.judged_metrics())
    had_baseline = result.baseline is not None
    base_metrics = scored.baseline if had_baseline else None
    rules = tuple(rule for rule in cfg.gate if rule.metric in judged)
    gate = evaluate(rules, scored.candidate, base_metrics, scored.intervals)
    data = result.as_json()
    data["checks"] = [*kept_checks(data["checks"], judged),
                      *({**c.as_dict(), "line": cfg.rule_line(c.metric)} for c in gate.checks)]
    data["metrics"] = [*(m for m in data["metrics"] if m["name"] not in judged),
                       *(metric_row(m) for m in cmp.diff_with_intervals(cfg, scored.candidate, base_metrics, scored.intervals))]
    data["candidate"]["metrics"].update(scored.candidate)
    if had_baseline and base_metrics:
        data["baseline"]["metrics"].update(base_metrics)
    info = data["genai"]
    info.update(pending=[], judged_by="publisher", judge=scored.judge or None,
                regressed={**info["regressed"], **scored.regressed}, fixed={**info["fixed"], **scored.fixed},
                changed=[*info["changed"], *({**vars(c)} for c in scored.changed)])
    data["notes"].append(f"GenAI: {', '.join(sorted(judged))} judged by the trusted publish job on the answers the "
                         "check's job gave, with the base commit's judge settings; the key never reached the PR's code")
    data["verdict"] = verdict_of(data["checks"])
    stream.write(f"mlflow-ci: judged {len(answers.rows):,} rows for {', '.join(sorted(judged))}: verdict {data['verdict']}\n")
    return Result.build(data)


def not_judged(result: Result, why: str, cfg: Config | None = None) -> Result:
    """``result`` whose judge rules fail (blocking: the check fails closed), each saying why: its pending
    rows, and the base commit's rules (``cfg``) on judged metrics the check did not leave pending (a PR whose
    own configuration dropped the judge)."""
    pending = set(result.genai.pending) if result.genai is not None else set()
    judged = set(cfg.genai.judged_metrics()) if cfg is not None and cfg.genai is not None else set()
    if not (pending or judged):
        return result
    data = result.as_json()
    reason = f"not judged: {printable(why)[:400]}"
    data["checks"] = [{**c, "passed": False, "message": reason} if _is_pending(c, pending) else c
                      for c in kept_checks(data["checks"], judged)]
    missing = judged - {c["metric"] for c in data["checks"]}
    base_rules = tuple(rule for rule in cfg.gate if rule.metric in missing) if cfg is not None else ()
    data["checks"] += [{**c.as_dict(), "passed": False, "message": reason, "line": cfg.rule_line(c.metric)}
                       for c in evaluate(base_rules, {}, None).checks]
    data["verdict"] = verdict_of(data["checks"])
    data["notes"].append(f"warning: GenAI: {', '.join(sorted(pending | judged))} {reason}")
    return Result.build(data)


def _is_pending(check: dict, metrics: set[str]) -> bool:
    return check["metric"] in metrics and check["passed"] is None and str(check.get("message", "")).startswith("pending: ")


def kept_checks(checks: list[dict], judged: set[str]) -> list[dict]:
    """The check job's rows, without its pending ones (and any other row about a judged metric: the judge decides those)."""
    return [c for c in checks if c["metric"] not in judged or c["rule"] == "baseline_required"]


def metric_row(m: cmp.MetricDiff) -> dict:
    return {"name": m.name, "baseline": m.baseline, "candidate": m.candidate, "delta": m.delta, "delta_pct": m.delta_pct,
            "direction": m.direction, "status": m.status, "ci_low": m.ci_low, "ci_high": m.ci_high}


def verdict_of(checks: list[dict]) -> str:
    """fail when a blocking rule failed, warn when only warn-mode ones did, else pass (as the gate decides)."""
    failed = [c for c in checks if c["passed"] is False]
    return "fail" if any(c.get("blocking", True) for c in failed) else "warn" if failed else "pass"

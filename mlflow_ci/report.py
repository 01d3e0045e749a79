"""`report.md` (Jinja2, overridable) and `result.json` (schema 1) from a comparison and a gate.

Everything that can come from a pull request (metric and parameter names and values, branch names,
run names) is untrusted: the ``md`` filter escapes it so it cannot break a table, inject HTML, hide
text in a comment, or @-mention people and link issues.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from mlflow_ci import __version__, charts
from mlflow_ci.compare import Comparison
from mlflow_ci.config.models import Config, ReportConfig
from mlflow_ci.errors import UsageError, first_line
from mlflow_ci.gate import GateResult, fmt
from mlflow_ci.result import CHARTED, CheckRow, MetricRow, Result
from mlflow_ci.tracking.base import TAG_TRAIN_SECONDS

CELL_LIMIT = 120
VERDICT_ICON = {"pass": "✅", "warn": "⚠️", "fail": "❌", "error": "⛔"}
STAGE_ADVICE = {
    "config": "fix mlflow-ci.yml (mlflow-ci validate shows every problem with its line)",
    "train": "the training command failed or wrote unusable metrics: its output is in train.log",
    "compare": "the baseline could not be read: check the tracking store and the baseline settings",
    "evaluate": "a model could not be loaded or scored on the evaluation rows",
    "gate": "the gate could not be evaluated on these metrics",
    "report": "the report could not be rendered: check report.template",
}
STATUS_ICON = {"better": "🟢", "worse": "🔴", "same": "⚪", "new": "🆕", "removed": "➖", "invalid": "⛔", "n/a": ""}
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~<>])")


def md(value: Any, limit: int = CELL_LIMIT) -> str:
    """Escape untrusted text for one Markdown table cell or inline position.

    Beyond Markdown and HTML: no @mentions, no issue or pull-request references (``#12``, ``GH-12``),
    no autolinks (``://``, ``www.``), no control, format or bidi characters (U+202E reverses text).
    """
    text = "" if value is None else str(value)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("&", "&amp;")
    text = _MD_SPECIAL.sub(lambda m: {"<": "&lt;", ">": "&gt;"}.get(m.group(1), "\\" + m.group(1)), text)
    # Zero-width space after '@', '#' digits and '://' defeats mentions, issue links and autolinks.
    text = text.replace("@", "@&#8203;")
    text = re.sub(r"(\\#)(?=\d)", r"\1&#8203;", text)
    text = re.sub(r"(?i)\b(gh)-(?=\d)", r"\1&#8203;-", text)
    text = re.sub(r"(?i)\b(www)\.", r"\1&#8203;.", text)
    return text.replace("://", ":&#8203;//")


def code(value: Any, limit: int = CELL_LIMIT) -> str:
    """Untrusted text shown as inline code (backticks cannot be escaped inside code, so drop them)."""
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") or c == "`" else c
                   for c in ("" if value is None else str(value)))
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"`{text}`" if text else ""


def signed(value: float | str | None, precision: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, str):  # non-finite numbers arrive as strings from result.json
        return md(value)
    if not math.isfinite(value):
        return fmt(value)
    if value == 0:
        return "0"
    return f"{value:+.{precision}g}"


def number(value: float | str | None, precision: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return md(value)
    if not math.isfinite(value):
        return fmt(value)
    if value == int(value) and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.{precision}g}" if abs(value) >= 1e-3 else f"{value:.{precision}e}"


def sticky_marker(experiment: str) -> str:
    """The hidden marker that identifies this experiment's comment (hash: no untrusted text)."""
    digest = hashlib.sha256(experiment.encode()).hexdigest()[:16]
    return f"<!-- mlflow-ci:report:{digest} -->"


def ui_base(cfg: Config, tracking_uri: str) -> str | None:
    """The MLflow UI: the configured ``report.ui_url``, else the tracking server's address without
    credentials, query or fragment; None for local stores."""
    base = public_url(cfg.report.ui_url) if cfg.report.ui_url else None
    if not base and re.match(r"^https?://", tracking_uri):
        base = public_url(tracking_uri)
    return base


def run_url(cfg: Config, tracking_uri: str, experiment_id: str | None, run_id: str | None) -> str | None:
    """A link to the run in the MLflow UI (:func:`ui_base`), or None."""
    base = ui_base(cfg, tracking_uri)
    if not base or not run_id or not experiment_id:
        return None
    return f"{base}/#/experiments/{quote(experiment_id, safe='')}/runs/{quote(run_id, safe='')}"


def model_version_url(cfg: Config, tracking_uri: str, model: str, version: str) -> str | None:
    """A link to a registered model version in the MLflow UI (:func:`ui_base`), or None."""
    base = ui_base(cfg, tracking_uri)
    return f"{base}/#/models/{quote(model, safe='')}/versions/{quote(version, safe='')}" if base else None


def public_url(url: str) -> str | None:
    """``scheme://host[:port]/path`` of an http(s) URL: user, password, query and fragment dropped."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}".rstrip("/")


def build_result(
    cfg: Config,
    comparison: Comparison,
    gate: GateResult,
    *,
    cached: bool,
    fingerprint: str | None,
    tracking_uri: str,
    pr_number: int | None = None,
    head_sha: str | None = None,
    ci_run_url: str | None = None,
    config_path: str | None = None,
    evaluation: dict | None = None,
    genai: dict | None = None,
) -> Result:
    cand = comparison.candidate
    base = comparison.baseline
    result = {
        "schema": 1,
        "verdict": gate.verdict,
        "experiment": cfg.experiment,
        "model": cfg.model,
        "pr": pr_number,
        "candidate": {
            "run_id": cand.run_id,
            "experiment_id": cand.experiment_id,
            "commit": cand.commit,
            "branch": cand.branch,
            "metrics": dict(cand.metrics),
            "params": dict(cand.params),
            "cached": cached,
            "fingerprint": fingerprint,
            "name": cand.tags.get("mlflow_ci.candidate"),
            "url": run_url(cfg, tracking_uri, cand.experiment_id, cand.run_id),
            "train_seconds": _seconds(cand.tags.get(TAG_TRAIN_SECONDS)),
        },
        "baseline": None,
        "checks": [{**c.as_dict(), "line": cfg.rule_line(c.metric)} for c in gate.checks],
        "metrics": [
            {"name": m.name, "baseline": m.baseline, "candidate": m.candidate, "delta": m.delta,
             "delta_pct": m.delta_pct, "direction": m.direction, "status": m.status,
             "ci_low": m.ci_low, "ci_high": m.ci_high}
            for m in comparison.metrics
        ],
        "params_diff": [
            {"name": p.name, "baseline": p.baseline, "candidate": p.candidate, "status": p.status}
            for p in comparison.params
        ],
        "notes": list(comparison.notes),
        "config_path": config_path or cfg.path.name,
        "head_sha": head_sha or cand.commit,
        "ci_run_url": ci_run_url,
        "tool": {"name": "mlflow-ci", "version": __version__},
        "evaluation": evaluation,
        "genai": genai,
        "trend": _trend(comparison.trend),
    }
    if base is not None:
        result["baseline"] = {
            "run_id": base.run.run_id or None,  # None: no run, only the GenAI app's baseline
            "source": base.source,
            "description": base.description,
            "origin": base.origin,
            "age_days": round(base.age_seconds / 86400, 2) if base.age_seconds is not None else None,
            "commit": base.run.commit,
            "branch": base.run.branch,
            "metrics": dict(base.run.metrics),
            "url": run_url(cfg, tracking_uri, base.run.experiment_id, base.run.run_id) if base.run.run_id else None,
            "train_seconds": _seconds(base.run.tags.get(TAG_TRAIN_SECONDS)),
        }
    return Result.build(result)


def _seconds(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _trend(trend) -> dict | None:
    if trend is None:
        return None
    return {"branch": trend.branch,
            "runs": [{"run_id": p.run_id, "commit": p.commit, "metrics": dict(p.metrics)} for p in trend.points]}


def _environment(search_path: Path):
    """A sandboxed Jinja2 environment: a template (ours, or a repository's own) can format the result,
    never reach Python objects, files or the process environment."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(search_path)),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(md=md, code=code, signed=signed, num=number, fmt=fmt)
    return env


def _outcome(checks: list[CheckRow]) -> str:
    if any(c.passed is False and c.blocking for c in checks):
        return "fail"
    if any(c.passed is False for c in checks):
        return "warn"
    return "pass" if any(c.passed for c in checks) else "n/a"


OUTCOME_ICON = {"fail": "❌", "warn": "⚠️", "pass": "✅", "n/a": "➖"}
OUTCOME_ORDER = ("fail", "warn", "pass", "n/a")
STATUS_ORDER = ("invalid", "worse", "removed", "new", "better", "same", "n/a")


def _rule_first(c: CheckRow) -> int:
    return 0 if c.passed is False and c.blocking else 1 if c.passed is False else 2 if c.passed else 3


def gated_rows(result: Result) -> list[dict[str, Any]]:
    """The decision table: one row per gated metric, failing first, with its rules (failing first), the
    change and its interval, the change drawn against the allowed limit, and the base branch's trend."""
    metrics = {m.name: m for m in result.metrics}
    by_metric: dict[str, list[CheckRow]] = {}
    for c in result.checks:
        by_metric.setdefault(c.metric, []).append(c)
    trend = result.trend
    rows = []
    for name, checks in by_metric.items():
        checks = sorted(checks, key=_rule_first)
        first = checks[0]
        m = metrics.get(name) or MetricRow(name=name, status="n/a", candidate=first.value, baseline=first.baseline,
                                           direction=first.direction)
        allowed = next((a for c in checks if (a := charts.allowed_change(c.rule, c.limit, c.baseline)) is not None), None)
        history = [r.metrics[name] for r in trend.runs if name in r.metrics] if trend else []
        commits = [r.commit for r in trend.runs if name in r.metrics] if trend else []
        rows.append({
            "metric": name,
            "outcome": _outcome(checks),
            "icon": OUTCOME_ICON[_outcome(checks)],
            "same_rows": bool(CHARTED.fullmatch(name)),
            "baseline": m.baseline if m.baseline is not None else first.baseline,
            "candidate": m.candidate if m.candidate is not None else first.value,
            "delta": m.delta, "ci_low": m.ci_low, "ci_high": m.ci_high,
            "checks": [c.as_json() for c in checks],
            "plot": charts.delta_plot(m.delta, m.ci_low, m.ci_high, allowed, m.direction),
            "spark": charts.sparkline(history, m.candidate),
            "chart": charts.trend_chart(name, trend.branch if trend else "", commits, history, m.candidate,
                                        _limit_line(first, allowed, m)),
        })
    return sorted(rows, key=lambda row: OUTCOME_ORDER.index(row["outcome"]))


def _limit_line(check: CheckRow, allowed: float | None, m: MetricRow) -> float | None:
    """The value the gate lets the candidate reach: baseline minus the allowed change, or an absolute limit."""
    if allowed is not None and m.baseline is not None:
        return m.baseline - allowed if m.direction == "higher" else m.baseline + allowed
    return check.limit if check.rule in ("min", "max", "threshold") else None


def metric_rows(result: Result, decision: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every metric once: gated ones first (in the order of ``decision``, :func:`gated_rows`), then the rest, worse first.
    A metric logged by training with the same values as its same-rows twin (``accuracy`` and
    ``eval.accuracy``) is one row, the gated one (or the same-rows one), naming its twin."""
    gated = [row["metric"] for row in decision]
    metrics = {m.name: m for m in result.metrics}
    twins: dict[str, str] = {}
    dropped: set[str] = set()
    for name, m in metrics.items():
        plain = name[len("eval."):]
        other = metrics.get(plain) if CHARTED.fullmatch(name) else None
        if other is None or not (_close(other.baseline, m.baseline) and _close(other.candidate, m.candidate)):
            continue
        keep, drop = (plain, name) if plain in gated and name not in gated else (name, plain)
        twins[keep] = drop
        if drop not in gated:
            dropped.add(drop)
        else:
            twins[drop] = keep
    rows = [{**m.as_json(), "gated": m.name in gated, "twin": twins.get(m.name)}
            for m in result.metrics if m.name not in dropped]
    return sorted(rows, key=lambda r: (gated.index(r["name"]) if r["gated"] else len(gated),
                                       0 if r["gated"] else STATUS_ORDER.index(r["status"]), r["name"]))


def _close(a: float | None, b: float | None) -> bool:
    return a is None and b is None or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))


def render_markdown(result: Result, settings: ReportConfig, root: Path) -> str:
    """Render ``report.md`` from a result (ours, or a validated untrusted one).

    The template sees result.json as the file holds it (``r``), so templates are written against
    the documented file, not against our classes.
    """
    import jinja2

    if result.error is not None:  # a check that could not decide: our own page, whatever the template
        return error_markdown(result, settings)
    if settings.template:
        template_path = (root / settings.template).resolve()
        if not template_path.is_file():
            raise UsageError(f"report.template: file not found: {template_path}")
        env = _environment(template_path.parent)
        name = template_path.name
    else:
        env = _environment(Path(__file__).parent / "templates")
        name = "report.md.j2"
    decision = gated_rows(result)
    context = {
        "r": result.as_json(),
        "title": settings.title or f"mlflow-ci · {result.experiment}",
        "precision": settings.precision,
        "marker": sticky_marker(result.experiment),
        "decision": decision,
        "baseline_where": result.baseline.where() if result.baseline else "",
        "fails_closed": any(c.rule == "baseline_required" for c in result.checks),
        "all_metrics": metric_rows(result, decision),
        "verdict_icon": VERDICT_ICON,
        "status_icon": STATUS_ICON,
    }
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"report template {exc.filename or name}:{exc.lineno}: {exc.message}") from None
    except jinja2.TemplateError as exc:  # SecurityError (the sandbox said no) is one of them
        raise UsageError(f"report template {name}: {first_line(str(exc))}") from None


def error_markdown(result: Result, settings: ReportConfig) -> str:
    """report.md for ``verdict: error``: which stage failed, why, and what to do."""
    error = result.error
    assert error is not None
    title = settings.title or f"mlflow-ci · {result.experiment}"
    lines = [
        sticky_marker(result.experiment),
        f"## ⛔ {md(title)}: the check could not decide",
        "",
        f"**ERROR** in stage `{error.stage}` (exit code {error.exit_code}): {md(error.reason, 1000)}",
        "",
        f"What to do: {md(error.hint, 500) if error.hint else STAGE_ADVICE[error.stage]}.",
    ]
    if result.candidate.run_id:
        lines += ["", f"Candidate run: {code(result.candidate.run_id)}" + (" (reused, not retrained)" if result.candidate.cached else "") + "."]
    if result.ci_run_url:
        lines += ["", f"The job's log has the details: [workflow run]({result.ci_run_url})."]
    lines += ["", f"<sub>mlflow-ci {md(result.tool.version, 40)}; this result is not a verdict on the model, so it fails the check.</sub>"]
    return "\n".join(lines) + "\n"


def write_outputs(out_dir: Path, markdown: str, result: Result) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / "report.md"
    result_path = out_dir / "result.json"
    report_path.write_text(markdown, encoding="utf-8")
    result_path.write_text(result.text(), encoding="utf-8")
    return report_path, result_path

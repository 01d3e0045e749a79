"""The trusted publisher recomputes a check's ``eval.*`` verdict itself, where that is safe.

The check job's verdict, metrics and model all come from the job that ran the pull request's code. For a
model whose format executes no code when loaded (:mod:`mlflow_ci.evaluate.code_free`), the publish job —
mlflow-ci from its own commit, the base commit's configuration, no code of the repository run — scores the
candidate (the model the check exported, whose digest it records) and the champion (its release copy,
verified against the digest promote recorded) on the base commit's evaluation data, with the same paired
bootstrap, and decides the base commit's rules on those numbers. The check run then says "verdict
recomputed by the trusted job"; for any other format it says the verdict was computed in the PR's job.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci import compare as cmp
from mlflow_ci.commands.judging import kept_checks, metric_row, verdict_of
from mlflow_ci.commands.verify import as_promoted
from mlflow_ci.config.models import Config
from mlflow_ci.errors import MlflowCiError, printable
from mlflow_ci.gate import evaluate
from mlflow_ci.provenance import model_digest
from mlflow_ci.result import Result
from mlflow_ci.tracking import MlflowTracker, resolve_tracking_uri


def recompute(cfg: Config | None, env: Mapping[str, str], stream: TextIO, result: Result, model_dir: Path | None) -> Result:
    """``result`` with its ``eval.*`` metrics and their rules recomputed by this (trusted) job, or as it was
    with a note saying why not."""
    if cfg is None or cfg.evaluate is None or result.error is not None or model_dir is None:
        return result
    try:  # a model or data this job cannot score, or a library it lacks: said in the notes, never fatal
        why_not, recomputed = _recomputed(cfg, env, result, model_dir)
    except MlflowCiError as exc:
        why_not, recomputed = exc.message, None
    except ImportError as exc:
        why_not, recomputed = (f"this job lacks {exc.name or 'a library'} to open the model (the base commit's "
                               "requirements are installed as wheels only)"), None
    except (ValueError, OSError) as exc:
        why_not, recomputed = str(exc), None
    if recomputed is None:
        data = result.as_json()
        data["notes"].append(f"eval.* computed in the PR's job, not recomputed by the trusted job: {printable(str(why_not))[:400]}")
        stream.write(f"mlflow-ci: eval.* not recomputed: {printable(str(why_not))[:400]}\n")
        return Result.build(data)
    stream.write(f"mlflow-ci: eval.* recomputed by the trusted job: verdict {recomputed.verdict}\n")
    return recomputed


def _recomputed(cfg: Config, env, result: Result, model_dir: Path) -> tuple[str | None, Result | None]:
    import numpy as np

    from mlflow_ci.evaluate import metrics as ev
    from mlflow_ci.evaluate.code_free import open_code_free
    from mlflow_ci.evaluate.dataset import is_partitioned
    from mlflow_ci.evaluate.same_rows import scores

    ecfg = cfg.evaluate
    builtin = tuple(m for m in ecfg.metrics if ":" not in m)
    if ":" in ecfg.data and not cfg.resolve(ecfg.data).exists():
        return "evaluate.data is a module:function (code), which the trusted job does not run", None
    if ecfg.engine != "local" or is_partitioned(ecfg.data):
        return f"the rows were scored partition by partition (evaluate.engine: {ecfg.engine}); this job does not score them again", None
    if not builtin:
        return "every evaluate.metrics entry is a module:function (code)", None
    candidate, what = open_code_free(model_dir)
    if candidate is None:
        return f"the candidate's model: {what}", None
    champion, version = _champion(cfg, env)
    if champion is None and version is not None:
        return f"the champion's model: {version}", None
    X, y = ev.load_dataset(ecfg.data, ecfg.target, cfg.root, where=cfg.at("evaluate.data"))
    y = np.asarray(y)
    labels = np.unique(y) if ecfg.task == "classification" else None
    cand_out = candidate.output(X, ecfg.task, labels)
    base_out = champion.output(X, ecfg.task, labels) if champion is not None else None
    cand, base, intervals = scores(ecfg.model_copy(update={"metrics": builtin}), y, cand_out, base_out, labels)
    names = {k: f"eval.{ev.metric_label(k)}" for k in builtin}
    cand = {names[k]: v for k, v in cand.items()}
    base = {names[k]: v for k, v in base.items()} if base_out is not None else None
    intervals = {names[k]: v for k, v in intervals.items()}
    return None, _merged(cfg, result, cand, base, intervals, len(y), f"{candidate.format} vs {version or 'no champion'}")


def _champion(cfg: Config, env) -> tuple[object | None, str | None]:
    """(the champion's code-free model, its version) from its release copy, verified against the digest promote
    recorded; (None, None) without a champion; (None, why) when its format runs code."""
    from mlflow_ci.evaluate.code_free import open_code_free

    uri = resolve_tracking_uri(cfg.tracking_uri, env, cfg.root)
    if not uri.startswith(("http://", "https://")):
        raise ValueError("no tracking server in this job to read the champion from (the store of the zero-server mode "
                         "stays with the check job)")
    registry = MlflowTracker(uri)
    version = registry.alias_version(cfg.model, cfg.champion_alias)
    if version is None:
        return None, None
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-champion-") as tmp:
        local = registry.download_version(version.model, version.version, Path(tmp))
        as_promoted(version, model_digest(local))
        model, what = open_code_free(local)
    return (model, f"{cfg.model} version {version.version} ({what})") if model else (None, what)


def _merged(cfg: Config, result: Result, cand: dict, base: dict | None, intervals: dict, rows: int, what: str) -> Result:
    names = set(cand)
    gate = evaluate(tuple(rule for rule in cfg.gate if rule.metric in names), cand, base, intervals)
    data = result.as_json()
    data["checks"] = [*kept_checks(data["checks"], names),
                      *({**c.as_dict(), "line": cfg.rule_line(c.metric)} for c in gate.checks)]
    data["metrics"] = [*(m for m in data["metrics"] if m["name"] not in names),
                       *(metric_row(m) for m in cmp.diff_with_intervals(cfg, cand, base, intervals))]
    data["candidate"]["metrics"].update(cand)
    if base is not None and data["baseline"] is not None:
        data["baseline"]["metrics"].update(base)
    data["recomputed"] = sorted(names)
    data["notes"].append(f"{', '.join(sorted(names))} recomputed by the trusted job on {rows:,} rows of the base commit's "
                         f"{cfg.evaluate.data} ({what}), with the base commit's rules")
    data["verdict"] = verdict_of(data["checks"])
    return Result.build(data)

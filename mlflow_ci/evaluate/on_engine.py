"""``evaluate:`` on Parquet data scored partition by partition: on Spark, on Ray, or on this machine one
row group at a time (``evaluate.engine: local`` with a folder or glob of Parquet files).

The runner plans the data (file footers only), loads and verifies both models as a local check does,
ships their folders to the engine with :func:`reduce_rows` (:mod:`.partitioned`), and adds up the
partial statistics as they come back; the result is assembled exactly as the local engine's
(:func:`.same_rows.assemble`), so the report, the gate and result.json do not know where the rows were
scored. Timings (``perf``), the determinism probe and kept model outputs need the rows here: the
configuration refuses them with an engine.
"""

from __future__ import annotations

import functools
import re
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from mlflow_ci import compare as cmp
from mlflow_ci.config.models import Config
from mlflow_ci.errors import MlflowCiError, ServiceError, UsageError
from mlflow_ci.evaluate import datachecks, dataset, partitioned
from mlflow_ci.evaluate import metrics as ev
from mlflow_ci.evaluate import partial as pt
from mlflow_ci.evaluate.kept import Evaluated
from mlflow_ci.evaluate.same_rows import Scored, Scoring, add_slices, assemble, base_profile, shown_slices

WHERE = {"spark": ", scored on Spark", "ray": ", scored on Ray", "local": ", scored here one row group at a time"}
_LOADED: dict[tuple, object] = {}  # on a worker: the models of a job, loaded once per process


def reduce_with_models(work: partitioned.Work, frame, ids, paths: Mapping[str, str]):
    """What each partition runs: load the models once per worker process, then reduce the rows."""
    key = (tuple(sorted(work.roles.items())), tuple(sorted(paths.items())))
    if key not in _LOADED:
        _LOADED.clear()  # one job's models at a time
        _LOADED[key] = partitioned.load_models(work, paths)
    models = _LOADED[key]
    if isinstance(models, partitioned.Failure):
        return models
    return partitioned.reduce_rows(work, frame, ids, models)


def evaluate_on_engine(cfg: Config, tracker, registry, comparison: cmp.Comparison, *, keep: bool,
                       env: Mapping[str, str]) -> Evaluated:
    from mlflow_ci.engines import Job, open_engine

    ecfg = cfg.evaluate
    data = dataset.plan(ecfg.data, cfg.root, where=cfg.at("evaluate.data"))
    for where, column in [("evaluate.target", ecfg.target), *(("evaluate.slices", c) for c in ecfg.slices)]:
        if column not in data.columns:
            raise UsageError(f"{cfg.at(where)}: column {column!r} is not in {ecfg.data} (columns: {', '.join(data.columns[:20])})")
    cand, base = comparison.candidate, comparison.baseline
    runs = {"candidate": cand.run_id, **({"baseline": base.run.run_id} if base is not None else {})}
    before = base_profile(tracker, base)
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-eval-") as tmp:
        scoring = Scoring(cfg, tracker, registry, None, None, None, Path(tmp), cand.run_id if keep else None)
        models = {role: scoring.model(role, run) for role, run in runs.items()}  # downloaded and verified here
        classes = _classes(cfg, models["candidate"])
        work = partitioned.Work(ecfg.task, ecfg.target, tuple(ecfg.metrics), ecfg.resamples if base is not None else 0, ecfg.seed,
                                {role: (run, models[role].flavor_label) for role, run in runs.items()}, ecfg.engine,
                                ecfg.output, None if classes is None else tuple(classes.tolist()), tuple(ecfg.slices), before)
        job = Job(functools.partial(reduce_with_models, work), partitioned.pack, dataset.read_unit, data.units, data.files,
                  data.offsets, {role: model.path for role, model in models.items()})
        summed = _run(open_engine(ecfg.engine, env), job)
        cards = {role: scoring.card(role, run) for role, run in runs.items()}
        cards.setdefault("baseline", None)
    if summed is None or summed.metrics.rows == 0:
        raise UsageError(f"{cfg.at('evaluate.data')}: {ecfg.data} has no rows")
    scored = _scored(cfg, summed, base is not None, classes, cards)
    scored.profile, scored.data_report = datachecks.finish_report(before, summed.profile)
    scored.where = WHERE[ecfg.engine]
    return assemble(cfg, tracker, comparison, scored, keep=keep, paired=base is not None)


def _run(engine, job) -> partitioned.PartitionResult | None:
    try:
        return partitioned.total(partitioned.unpack(packed) for packed in engine.run(job))
    except MlflowCiError:  # a worker's own verdict on the input or the model (exit 2 or 3)
        raise
    except Exception as exc:  # noqa: BLE001 - Spark's and Ray's own errors: the engine failed, not the input
        raise ServiceError(f"evaluate.engine {engine.name}: the evaluation failed on the engine ({_cause(exc)})") from None
    finally:
        try:
            engine.close()
        except Exception:  # noqa: BLE001 - an engine that already went down: what failed is said above
            pass


def _cause(exc: Exception) -> str:
    """The Python error a worker raised, out of the engine's wrapping (a JVM stack, a Ray task error)."""
    lines = [line.strip() for line in str(exc).splitlines()]
    raised = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b:", line)]
    return (raised[-1] if raised else f"{type(exc).__name__}: {lines[0] if lines else ''}")[:300]


def _classes(cfg: Config, model) -> np.ndarray | None:
    """The classes the probabilities are read in: evaluate.classes, else the candidate model's own."""
    from mlflow_ci.evaluate.predict import _classes_of

    ecfg = cfg.evaluate
    if ecfg.task != "classification":
        return None
    if ecfg.classes:
        return np.asarray(ecfg.classes)
    own = _classes_of(model.native)
    if own is None:
        raise UsageError(f"{cfg.at('evaluate.classes')}: with evaluate.engine {ecfg.engine}, name the classes the "
                         f"probability columns stand for (the candidate model, {model.flavor_label}, does not say)")
    return np.sort(np.asarray(own))


def _scored(cfg: Config, summed: partitioned.PartitionResult, paired: bool, classes, cards) -> Scored:
    ecfg = cfg.evaluate
    specs = {name: ev.spec_of(name, ecfg.task, classes) for name in ecfg.metrics}

    def triple(total: pt.Partial):
        if not paired:
            return {name: pt.values(spec, "candidate", total).point for name, spec in specs.items()}, {}, {}
        result = ev.summarize(specs, total, resamples=ecfg.resamples, seed=ecfg.seed, confidence=ecfg.confidence)
        return result.candidate, result.baseline, result.intervals

    scored = Scored.named(summed.metrics.rows, *triple(summed.metrics), cards)
    per_column = {}
    for column in ecfg.slices:
        counts = {label: part.rows for (col, label), part in summed.slices.items() if col == column}
        per_column[column] = {}
        for label in shown_slices(counts):
            per_column[column][label] = triple(summed.slices[(column, label)])
    scored.slice_rules = add_slices(ecfg, per_column, scored.candidate, scored.baseline, scored.intervals)
    if summed.confusion and classes is not None:
        scored.confusion = {"classes": [str(c) for c in classes], "candidate": summed.confusion["candidate"].tolist(),
                            "baseline": summed.confusion["baseline"].tolist() if "baseline" in summed.confusion else None}
    return scored

"""``evaluate:``: load the candidate and the baseline model, score both on the same rows, and turn
the scores into ``eval.<metric>`` values with paired bootstrap intervals, per-slice metrics, data
checks and confusion matrices. The arithmetic is in :mod:`.metrics` and :mod:`.datachecks`; this
module only orchestrates it around the two runs."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlflow_ci import compare as cmp
from mlflow_ci.config.models import Config, EvaluateConfig
from mlflow_ci.errors import UsageError
from mlflow_ci.evaluate import datachecks, kept, perf, predict
from mlflow_ci.evaluate.kept import Evaluated
from mlflow_ci.evaluate import metrics as ev
from mlflow_ci.provenance import file_sha256

SLICE_LIMIT = 20  # most frequent values per column
SLICE_MIN_ROWS = 30


def slice_metric(metric: str, column: str, value: str) -> str:
    """``eval.accuracy/region:north``: MLflow metric names allow only [A-Za-z0-9_-. :/]."""
    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_\-. ]", "_", text)[:80]

    return f"eval.{metric}/{clean(column)}:{clean(value)}"


def evaluate_same_rows(cfg: Config, tracker, registry, comparison: cmp.Comparison, *, keep: bool = True) -> Evaluated:
    """Score candidate and baseline models on the same rows; paired bootstrap intervals.

    ``tracker`` logs the candidate's ``eval.<metric>`` values to its run and keeps both models' outputs
    with it (:class:`Scoring`); nothing is ever written to the baseline's run (a PR's check does not
    rewrite the champion's history). ``keep=False`` writes nothing at all: the candidate is a run trained
    for another commit (a reused champion). ``registry`` (MLflow's client, or a callable that builds it)
    loads the models, only when their outputs on this data are not kept yet.
    """
    import numpy as np

    ecfg = cfg.evaluate
    assert ecfg is not None
    X, y = ev.load_dataset(ecfg.data, ecfg.target, cfg.root, where=cfg.at("evaluate.data"))
    y = np.asarray(y)
    ev.register_user_metrics(ecfg.metrics, cfg.root)
    cand, base = comparison.candidate, comparison.baseline
    data_digest = _data_digest(cfg, X, y)
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-eval-") as tmp:
        scoring = Scoring(cfg, tracker, registry, X, y, data_digest, Path(tmp), cand.run_id if keep else None)
        cand_out, classes = scoring.outputs("candidate", cand.run_id, None)
        same = base is not None and base.run.run_id == cand.run_id
        base_out = (cand_out if same else scoring.outputs("baseline", base.run.run_id, classes)[0]) if base else None
        timed = _perf(scoring, cand.run_id, base.run.run_id if base else None) if ecfg.perf else None
        cards = {"candidate": scoring.card("candidate", cand.run_id),
                 "baseline": scoring.card("baseline", base.run.run_id) if base else None}
    try:
        cand_eval, base_eval, intervals = scores(ecfg, y, cand_out, base_out, classes)
    except ValueError as exc:
        raise UsageError(f"evaluate: {exc}") from None
    scored = Scored.named(int(len(y)), cand_eval, base_eval, intervals, cards)
    per_column = {column: _slices(ecfg, X, y, column, cand_out, base_out, classes) for column in ecfg.slices}
    scored.slice_rules = add_slices(ecfg, per_column, scored.candidate, scored.baseline, scored.intervals)
    before = base_profile(tracker, base)
    scored.profile, scored.data_report = datachecks.profile_and_compare(before, X)
    scored.confusion = _confusion(ecfg.task, y, cand_out, base_out, classes)
    scored.timed, scored.data_digest = timed, data_digest
    paired = base_out is not None
    scored.repeat = {role: diff for role, diff in scoring.repeat_diff.items() if role == "candidate" or paired}
    return assemble(cfg, tracker, comparison, scored, keep=keep, paired=paired)


@dataclass
class Scored:
    """What scoring both models gave, however it ran: ``eval.*`` values (slices included) and intervals,
    the data profile and its report, confusion counts, and what only the local engine measures."""
    rows: int
    candidate: dict
    baseline: dict
    intervals: dict
    cards: dict
    slice_rules: list = field(default_factory=list)
    profile: dict | None = None
    data_report: Any = None
    confusion: dict | None = None
    timed: dict | None = None
    data_digest: str | None = None
    repeat: dict | None = None  # role -> largest difference of two predictions (None: not measured)
    where: str = ""  # ", scored on Spark": where the rows were scored, when not here

    @classmethod
    def named(cls, rows: int, cand_eval: dict, base_eval: dict, intervals: dict, cards: dict) -> "Scored":
        short = ev.metric_label  # module:function -> function
        return cls(rows, {f"eval.{short(k)}": v for k, v in cand_eval.items()}, {f"eval.{short(k)}": v for k, v in base_eval.items()},
                   {f"eval.{short(k)}": v for k, v in intervals.items()}, cards)


def assemble(cfg: Config, tracker, comparison: cmp.Comparison, scored: Scored, *, keep: bool, paired: bool) -> Evaluated:
    """The check's view of the scores: metrics merged into both runs, the diff, notes, summary, data checks."""
    ecfg = cfg.evaluate
    cand, base = comparison.candidate, comparison.baseline
    cand_metrics, base_metrics, intervals, timed = scored.candidate, scored.baseline, scored.intervals, scored.timed
    if keep:
        tracker.log_metrics(cand.run_id, {**cand_metrics, **(timed["candidate"] if timed else {})})
        _keep_profile(tracker, cand.run_id, scored.profile)
    if timed:  # this machine's figures, now: logged with the candidate only, compared within this check
        cand_metrics.update(timed["candidate"])
        base_metrics = {**base_metrics, **timed.get("baseline", {})} if base is not None else base_metrics
    cand = replace(cand, metrics={**cand.metrics, **cand_metrics})
    if base is not None:
        base = replace(base, run=replace(base.run, metrics={**base.run.metrics, **base_metrics}))
    rows = cmp.diff_with_intervals(cfg, dict(cand.metrics), dict(base.run.metrics) if base else None, intervals)
    decided = {rule.metric: rule.significance for rule in cfg.gate if rule.significance}
    note = (f"evaluated {'both models' if paired else 'the candidate'} on the same {scored.rows:,} rows of "
            f"{ecfg.data}{scored.where}" + (f"; {ecfg.resamples:,} paired bootstrap resamples (seed {ecfg.seed}), "
                                             f"{ecfg.confidence:.0%} intervals" if paired else ""))
    level_notes = tuple(f"{name}: the {(1 - 2 * a) * 100:g} % interval shown ends at the one-sided {(1 - a) * 100:g} % bounds the gate uses"
                        for name, a in sorted(decided.items()) if paired and name in intervals)
    data_report = scored.data_report
    summary = {"data": ecfg.data, "rows": scored.rows, "task": ecfg.task, "metrics": list(ecfg.metrics),
               "resamples": ecfg.resamples if paired else 0, "seed": ecfg.seed, "confidence": ecfg.confidence,
               "decision_confidence": {name: 1 - 2 * a for name, a in decided.items() if name in intervals},
               "perf": perf.summary(timed, ecfg.perf, scored.rows) if timed else None,
               "models": scored.cards, "data_digest": scored.data_digest, "engine": ecfg.engine,
               "data_checks": data_report.as_dict(psi_shown=min(ecfg.data_checks.max_psi or datachecks.SHOWN_PSI, datachecks.SHOWN_PSI)),
               "confusion": scored.confusion}
    checks = ecfg.data_checks
    data_gate = datachecks.checks(data_report, max_psi=checks.max_psi, max_missing=checks.max_missing,
                                  fail_on_removed_columns=checks.fail_on_removed_columns)
    if scored.repeat is not None:
        repeat = scored.repeat
        summary["determinism"] = {"rows": min(DETERMINISM_ROWS, scored.rows), "max_abs_diff": repeat}
        unstable = {role: diff for role, diff in repeat.items() if diff is not None and diff > REPEAT_TOLERANCE}
        level_notes += tuple(f"warning: the {role} model's predictions differ between two calls on the same "
                             f"{summary['determinism']['rows']} rows (largest difference {diff:.3g}): dropout or sampling left on "
                             "at inference? Its scores change from check to check" for role, diff in sorted(unstable.items()))
        if ecfg.deterministic == "required":
            data_gate = [*data_gate, _determinism_check("candidate", repeat.get("candidate"))]  # the model this PR ships
    updated = replace(comparison, candidate=cand, baseline=base, metrics=rows,
                      notes=(*comparison.notes, note, *level_notes))
    result = Evaluated(updated, intervals, summary, tuple(scored.slice_rules), tuple(data_gate))
    if keep:
        kept.keep(cfg, tracker, result, data_digest=scored.data_digest, candidate=cand_metrics, baseline=base_metrics if base is not None else None,
                  notes=(note, *level_notes))
    return result


DETERMINISM_ROWS = 64  # rows each model predicts twice to see whether its outputs are reproducible
SCORES = "mlflow_ci/scores"  # where a run keeps its model's outputs on evaluation data, by key
CARD = "mlflow_ci/model_card.json"  # the model's flavor, signature and size, kept with its run
CARD_FIELDS = 12  # signature entries kept in a card
SCORES_VERSION = 1


@dataclass
class Scoring:
    """Each model's outputs on the evaluation rows: read back when they were computed on the same data
    with the same settings before (a cached check then loads no model) — kept with the scored run when
    it was itself a candidate, or with this check's candidate — else computed and kept with the
    candidate (``mlflow_ci/scores/<key>.npz``, the key naming the scored run); ``owner`` None keeps
    nothing."""
    cfg: Config
    tracker: Any
    registry: Any  # MLflow's client, or a callable that builds it (models are loaded only on a miss)
    X: Any
    y: Any
    data_digest: str | None
    work: Path
    owner: str | None = None  # the candidate's run: the only run this check writes to
    loaded: dict = field(default_factory=dict)  # role -> the loaded model
    repeat_diff: dict = field(default_factory=dict)  # role -> largest |difference| of two predictions of the same rows

    def outputs(self, role: str, run_id: str, classes):
        key = self._key(run_id)
        cached = None
        for holder in dict.fromkeys(h for h in (run_id, self.owner) if h):
            cached = self._read(holder, key) if key else None
            if cached is not None:
                break
        if cached is None:
            out, own = self._compute(role, run_id)
            self.repeat_diff[role] = self._repeat_diff(role, run_id)
            if key and self.owner:
                self._write(self.owner, key, out, own, self.repeat_diff[role])
        else:
            out, own, self.repeat_diff[role] = cached
        if own is None or classes is None:
            return out, own
        return predict.align(out, own, classes), classes

    def _key(self, run_id: str) -> str | None:
        if self.data_digest is None:
            return None  # data from module:function: no digest, no reuse
        ecfg = self.cfg.evaluate
        spec = {"v": SCORES_VERSION, "run": run_id, "data": self.data_digest, "target": ecfg.target, "task": ecfg.task,
                "output": ecfg.output, "classes": list(ecfg.classes) if ecfg.classes else None,
                "model_path": self.cfg.promote.model_path}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def _read(self, run_id: str, key: str):
        import numpy as np

        data = self.tracker.read_artifact(run_id, f"{SCORES}/{key}.npz", self.work / "cache")
        if data is None:
            return None
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as saved:
                out = saved["out"]
                own = saved["classes"] if "classes" in saved.files else None
                diff = float(saved["repeat_diff"]) if "repeat_diff" in saved.files else None
        except (ValueError, KeyError, OSError):
            return None  # unreadable: computed again (and rewritten)
        return (out, own, diff) if len(out) == len(self.y) else None

    def _write(self, run_id: str, key: str, out, own, diff: float | None) -> None:
        import numpy as np

        if own is not None and np.asarray(own).dtype == object:
            return  # classes of mixed types do not round-trip without pickle: not kept
        path = self.work / f"{key}.npz"
        np.savez_compressed(path, out=out, **({"classes": np.asarray(own)} if own is not None else {}),
                            **({"repeat_diff": np.float64(diff)} if diff is not None else {}))
        self.tracker.log_artifact(run_id, path, SCORES)

    def _repeat_diff(self, role: str, run_id: str) -> float | None:
        """The largest difference between two predictions of the same first rows (0.0: reproducible); None
        when the outputs cannot be compared (not numbers)."""
        import numpy as np

        rows = slice(0, min(DETERMINISM_ROWS, len(self.y)))
        predict_rows = self.predictor(role, run_id)
        first, second = predict_rows(rows)[0], predict_rows(rows)[0]
        try:
            a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if a.shape != b.shape:
            return float("inf")
        both_nan = np.isnan(a) & np.isnan(b)
        return float(np.max(np.where(both_nan, 0.0, np.abs(a - b)), initial=0.0))

    def model(self, role: str, run_id: str):
        """The run's model, loaded once (only when outputs or timings need it)."""
        if role not in self.loaded:
            registry = self.registry() if callable(self.registry) else self.registry
            try:
                self.loaded[role] = registry.load_for_scoring(run_id, self.cfg.promote.model_path, self.work / role,
                                                              registered_as=self.cfg.model if role == "baseline" else None)
            except UsageError as exc:
                raise UsageError(f"evaluate: the {role} model: {exc.message}", hint=exc.hint) from None
        return self.loaded[role]

    def card(self, role: str, run_id: str) -> dict | None:
        """The model's flavor, signature and size: from the model when it was loaded (kept with the
        candidate's run), else as kept by the run's own earlier check; None when neither."""
        model = self.loaded.get(role)
        if model is None:
            text = self.tracker.read_artifact_text(run_id, CARD, self.work / "card")
            try:
                card = json.loads(text) if text else None
            except ValueError:
                return None
            return card if isinstance(card, dict) else None
        card = {"flavor": model.flavor_label, "inputs": list(model.inputs[:CARD_FIELDS]), "inputs_total": len(model.inputs),
                "outputs": list(model.outputs[:CARD_FIELDS]), "size_mb": perf.folder_mb(model.path)}
        if role == "candidate" and self.owner == run_id:
            folder, name = CARD.rsplit("/", 1)
            path = self.work / f"card-{role}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(card), encoding="utf-8")
            self.tracker.log_artifact(run_id, path, folder)
        return card

    def predictor(self, role: str, run_id: str):
        """A function of evaluation rows (a slice) giving the model's outputs on them, as the check computes them."""
        import numpy as np

        model = self.model(role, run_id)
        who = predict.Who(role, run_id, model.flavor_label)
        ecfg = self.cfg.evaluate
        # a few rows (timing) may not show every class: they are named after all the rows', once, not per call
        every_class = ecfg.classes or (tuple(np.unique(self.y).tolist()) if ecfg.task == "classification" else None)

        def outputs(rows: slice = slice(None)):
            X = self.X.iloc[rows] if hasattr(self.X, "iloc") else self.X[rows]
            if ecfg.task == "regression":
                return predict.regression(model, X, who), None
            classes = ecfg.classes if rows == slice(None) else every_class
            return predict.probabilities(model, X, self.y[rows], who, output=ecfg.output, classes=classes)
        return outputs

    def _compute(self, role: str, run_id: str):
        return self.predictor(role, run_id)()


REPEAT_TOLERANCE = 1e-9  # outputs of two calls further apart than this are not reproducible


def _determinism_check(role: str, diff: float | None):
    """evaluate.deterministic: required — the gate check that the model predicts the same twice."""
    from mlflow_ci.gate import Check

    ok = diff is not None and diff <= REPEAT_TOLERANCE
    message = ("not known: its outputs were not numbers" if diff is None else
               f"two calls on the same rows differ by up to {diff:.3g}" if not ok else "two calls on the same rows agree")
    return Check(metric=f"determinism:{role}", rule="deterministic", limit=REPEAT_TOLERANCE, value=diff, baseline=None,
                 bound=REPEAT_TOLERANCE, passed=ok, blocking=True, direction="lower", message=message)


def _perf(scoring: Scoring, cand_run: str, base_run: str | None) -> dict[str, dict[str, float]]:
    """perf.* of both models, measured now, interleaved (models are loaded even when outputs were cached)."""
    subjects = [perf.Subject(role, scoring.predictor(role, run), scoring.model(role, run).path)
                for role, run in (("candidate", cand_run), ("baseline", base_run)) if run]
    return perf.measure(subjects, len(scoring.y), scoring.cfg.evaluate.perf)


def _data_digest(cfg: Config, X, y) -> str | None:
    """sha256 of the evaluation file; for data produced by module:function, of the frame it returned (its
    columns, dtypes, index and every value), so a model's outputs on it are kept and reused like a file's."""
    path = cfg.root / cfg.evaluate.data
    if path.is_file():
        return file_sha256(path)
    return frame_digest(X, y)


def frame_digest(X, y) -> str | None:
    """``frame:<sha256>`` of a feature frame and its labels; None when they cannot be hashed as data."""
    import numpy as np
    import pandas as pd

    digest = hashlib.sha256(b"mlflow-ci frame v1")
    try:
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))
        labels = pd.Series(np.asarray(y))
        digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
        digest.update(str(labels.dtype).encode() + pd.util.hash_pandas_object(labels, index=False).to_numpy().tobytes())
    except (TypeError, ValueError):
        return None  # e.g. unhashable cells (lists, dicts): outputs are computed each time
    return "frame:" + digest.hexdigest()


def scores(ecfg: EvaluateConfig, y, cand_out, base_out, classes, ids=None) -> tuple[dict, dict, dict]:
    """Candidate metrics, baseline metrics and paired intervals (the last two empty without a baseline);
    ``ids``: the rows' stable ids (default: their positions)."""
    if base_out is None:
        return {k: float(ev.build_metric(k, ecfg.task, y, cand_out, classes).value(None)) for k in ecfg.metrics}, {}, {}
    paired = ev.paired_bootstrap(ecfg.metrics, ecfg.task, y, cand_out, base_out, classes=classes,
                                 resamples=ecfg.resamples, seed=ecfg.seed, confidence=ecfg.confidence, ids=ids)
    return paired.candidate, paired.baseline, paired.intervals


def add_slices(ecfg: EvaluateConfig, per_column: dict, cand_metrics, base_metrics, intervals) -> list:
    """Per-slice metrics (column -> value -> (candidate, baseline, intervals)) merged into the three dicts;
    returns the slice_gate rules, one per slice."""
    short = ev.metric_label
    rules = []
    for column in ecfg.slices:
        for label, (c_vals, b_vals, ivs) in per_column[column].items():
            for metric, value in c_vals.items():
                name = slice_metric(short(metric), column, label)
                cand_metrics[name] = value
                if metric in b_vals:
                    base_metrics[name] = b_vals[metric]
                if metric in ivs:
                    intervals[name] = ivs[metric]
            rules += [rule.model_copy(update={"metric": slice_metric(short(rule.metric), column, label)})
                      for rule in ecfg.slice_gate]
    return rules


def _slices(ecfg: EvaluateConfig, X, y, column: str, cand_out, base_out, classes) -> dict:
    """Per value of ``column``: candidate metrics, baseline metrics, intervals (paired, same rows)."""
    import numpy as np

    if not hasattr(X, "columns") or column not in X.columns:
        raise UsageError(f"evaluate.slices: column {column!r} is not in the evaluation data")
    values = X[column].astype(str).to_numpy()
    labels, counts = np.unique(values, return_counts=True)
    out = {}
    for label in shown_slices(dict(zip(labels.tolist(), counts.tolist()))):
        mask = values == label
        try:
            out[label] = scores(ecfg, y[mask], cand_out[mask], base_out[mask] if base_out is not None else None, classes,
                                ids=np.flatnonzero(mask))
        except ValueError:
            continue  # e.g. ROC AUC on a slice with one class only
    return out


def shown_slices(counts: dict[str, int]) -> list[str]:
    """The values of a slice column that get metrics: the SLICE_LIMIT most frequent (ties by value), of
    at least SLICE_MIN_ROWS rows."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:SLICE_LIMIT]
    return [str(label) for label, count in ranked if count >= SLICE_MIN_ROWS]


def base_profile(tracker, base) -> dict | None:
    """The profile of the data the baseline was checked on (kept with its run), if any."""
    if base is None:
        return None
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-profile-") as tmp:
        text = tracker.read_artifact_text(base.run.run_id, datachecks.PROFILE_ARTIFACT, Path(tmp))
    try:
        before = json.loads(text) if text else None
    except ValueError:
        return None
    return before if isinstance(before, dict) else None


def _keep_profile(tracker, run_id: str, current: dict | None) -> None:
    """Keep this check's data profile with the candidate's run: the next PR compares its data with it."""
    if current is None:
        return
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-profile-") as tmp:
        path = Path(tmp) / "data_profile.json"
        path.write_text(json.dumps(current), encoding="utf-8")
        tracker.log_artifact(run_id, path, "mlflow_ci")


def _confusion(task: str, y, cand_out, base_out, classes) -> dict | None:
    """Confusion matrices (rows: true class, columns: predicted) for both models."""
    import numpy as np

    if task != "classification" or classes is None or len(classes) > 10:
        return None
    idx = np.searchsorted(classes, y)

    def matrix(out):
        pred = out.argmax(axis=1)
        counts = np.zeros((len(classes), len(classes)), dtype=int)
        np.add.at(counts, (idx, pred), 1)
        return counts.tolist()

    return {"classes": [str(c) for c in classes], "candidate": matrix(cand_out),
            "baseline": matrix(base_out) if base_out is not None else None}

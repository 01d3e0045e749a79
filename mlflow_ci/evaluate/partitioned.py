"""What every engine runs on a partition of the evaluation rows, and how the partitions add up.

A worker gets rows (a DataFrame with the target column) and their stable ids, scores both models on
them with the same code the local engine uses (:mod:`.predict`, each model loaded once per worker), and
reduces the outputs to a :class:`PartitionResult`: the metrics' partial statistics (:mod:`.partial`),
the same per slice value, the data profile's (:mod:`.datachecks`) and the confusion counts. Only that
comes back to the runner, which adds the results up as they arrive: its memory does not grow with the
rows. A problem a worker can name (a model whose flavor needs a package the workers lack, labels the
model was not trained on) comes back as a :class:`Failure`, never as a worker's traceback.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from mlflow_ci.engines.base import add_up
from mlflow_ci.errors import TrainingError, UsageError, first_line
from mlflow_ci.evaluate import datachecks
from mlflow_ci.evaluate import partial as pt

SLICE_VALUES_CAP = 1_000  # distinct values of a slice column one partition may hold
CONFUSION_CLASSES = 10
ROW_ID = "__mlflow_ci_row_id"


@dataclass(frozen=True)
class Work:
    """Everything a worker needs besides the rows and the model files (small, sent with every task)."""
    task: str
    target: str
    metrics: tuple[str, ...]
    resamples: int
    seed: int
    roles: dict[str, tuple[str, str]]  # role -> (run id, flavor label), for messages
    engine: str
    output: str | None = None
    classes: tuple | None = None
    slices: tuple[str, ...] = ()
    base_profile: dict | None = None

    def specs(self) -> list[pt.Spec]:
        from mlflow_ci.evaluate.metrics import spec_of

        return [spec_of(name, self.task, self.class_array()) for name in self.metrics]

    def class_array(self) -> np.ndarray | None:
        return None if self.classes is None else np.asarray(self.classes)


@dataclass
class PartitionResult:
    metrics: pt.Partial
    slices: dict[tuple[str, str], pt.Partial]
    profile: datachecks.ProfilePartial
    confusion: dict[str, np.ndarray] = field(default_factory=dict)

    def __add__(self, other: "PartitionResult | Failure") -> "PartitionResult | Failure":
        if isinstance(other, Failure):
            return other
        slices = dict(self.slices)
        for key, part in other.slices.items():
            slices[key] = slices[key] + part if key in slices else part
        confusion = {role: m + other.confusion[role] for role, m in self.confusion.items()}
        return PartitionResult(self.metrics + other.metrics, slices, self.profile + other.profile, confusion)


@dataclass(frozen=True)
class Failure:
    kind: str  # usage | training
    message: str

    def __add__(self, other) -> "Failure":  # the first failure stands for the sum
        return self

    def raise_it(self):
        raise (UsageError if self.kind == "usage" else TrainingError)(self.message)


def load_models(work: Work, paths: Mapping[str, str | Path]) -> dict[str, Any] | Failure:
    """Each model, loaded from its folder (on a worker: once per worker), or why it cannot be."""
    from mlflow_ci.tracking.loading import load_for_scoring

    models = {}
    for role, path in paths.items():
        run_id, flavor = work.roles[role]
        try:
            models[role] = load_for_scoring(Path(path))
            if models[role].native is None:
                models[role].pyfunc()  # a pyfunc-only model loads here, once, not at its first rows
        except ImportError as exc:
            missing = exc.name or first_line(str(exc))
            return Failure("usage", f"evaluate.engine {work.engine}: the {role} model (run {run_id[:12]}, {flavor}) needs "
                                    f"the package {missing}, which the {work.engine} workers lack: install it on the cluster "
                                    "(or in the job's environment) as on the machine that trained it")
        except Exception as exc:  # noqa: BLE001 - a model folder that does not load is the model's problem
            return Failure("training", f"evaluate: the {role} model (run {run_id[:12]}, {flavor}) does not load on the "
                                       f"{work.engine} workers: {type(exc).__name__}: {first_line(str(exc))}")
    return models


def reduce_rows(work: Work, frame, ids: np.ndarray, models: Mapping[str, Any]) -> PartitionResult | Failure:
    """Score both models on these rows and reduce everything the check needs from them."""
    from mlflow_ci.evaluate import predict

    if work.target not in frame.columns:
        return Failure("usage", f"evaluate.target: column {work.target!r} is not in the evaluation data")
    y = np.asarray(frame[work.target])
    X = frame.drop(columns=[c for c in (work.target, ROW_ID) if c in frame.columns])
    classes = work.class_array()
    outputs = {}
    try:
        for role, model in models.items():
            who = predict.Who(role, work.roles[role][0], model.flavor_label)
            if work.task == "regression":
                outputs[role] = predict.regression(model, X, who)
            else:
                proba, own = predict.probabilities(model, X, y, who, output=work.output, classes=work.classes)
                outputs[role] = predict.align(proba, np.asarray(own), classes) if own is not None else proba
        specs = work.specs()
        sides = {role: _side(work, specs, y, out) for role, out in outputs.items()}
    except (UsageError, TrainingError) as exc:
        return Failure("usage" if isinstance(exc, UsageError) else "training", exc.message)
    except ValueError as exc:
        return Failure("usage", f"evaluate: {exc}")
    result = PartitionResult(pt.partial(sides, ids, resamples=work.resamples, seed=work.seed), {},
                             datachecks.profile_partial(X, ids, work.base_profile))
    for column in work.slices:
        if column not in X.columns:
            return Failure("usage", f"evaluate.slices: column {column!r} is not in the evaluation data")
        values = X[column].astype(str).to_numpy()
        labels = np.unique(values)
        if len(labels) > SLICE_VALUES_CAP:
            return Failure("usage", f"evaluate.slices: column {column!r} has over {SLICE_VALUES_CAP:,} distinct values "
                                    "in one partition: slice by a column of categories")
        for label in labels:
            mask = values == label
            picked = {role: side.select(mask) for role, side in sides.items()}
            result.slices[(column, str(label))] = pt.partial(picked, ids[mask], resamples=work.resamples, seed=work.seed)
    if work.task == "classification" and classes is not None and len(classes) <= CONFUSION_CLASSES:
        result.confusion = {role: confusion(y, out, classes) for role, out in outputs.items()}
    return result


def _side(work: Work, specs, y, out) -> pt.Side:
    from mlflow_ci.evaluate.metrics import side_of

    return side_of(specs, work.task, y, out, work.class_array())


def confusion(y: np.ndarray, out: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Counts by (true class, predicted class)."""
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(counts, (np.searchsorted(classes, y), out.argmax(axis=1)), 1)
    return counts


def pack(result: PartitionResult | Failure) -> bytes:
    return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(data: bytes) -> PartitionResult | Failure:
    return pickle.loads(data)  # noqa: S301 - produced by this module on the team's own cluster


def total(results: Iterable[PartitionResult | Failure]) -> PartitionResult | None:
    """The sum of the partitions' results as they arrive (a failure stops the sum: it is raised)."""
    def checked():
        for result in results:
            if isinstance(result, Failure):
                result.raise_it()
            yield result

    return add_up(checked())

"""Prediction cost of both models, measured in the same process, interleaved, so that what the runner
is doing at the time weighs on both alike: batch time per 1,000 rows, single-row latency, size on disk
and the memory a batch prediction allocates.

Timing is fresh on every check (never read from a cache: the numbers belong to this machine and this
moment), and it is the ratio between the two models that carries information; gate them with
``max_drop_pct``. docs/evaluate.md says how noisy each figure is on a shared runner.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from mlflow_ci.config.models import PERF_PREFIX, PerfConfig

Predict = Callable[[slice], Any]  # the evaluation rows to predict -> predictions
Clock = Callable[[], float]  # seconds

NAMES = {
    "batch_p50": "batch_ms_per_1k_p50", "batch_p95": "batch_ms_per_1k_p95",
    "latency_p50": "latency_p50_ms", "latency_p95": "latency_p95_ms",
    "size": "model_size_mb", "memory": "predict_memory_mb",
}


@dataclass(frozen=True)
class Subject:
    """One model to measure: how to predict, and where its files are."""
    role: str
    predict: Predict
    path: Path | None


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def folder_mb(path: Path | None) -> float | None:
    """Bytes of every file under ``path``, in MB (10^6 bytes)."""
    if path is None or not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def _interleaved(subjects: list[Subject], rounds: int, call: Callable[[Subject, int], float]) -> dict[str, list[float]]:
    """``rounds`` timings per subject, the order alternating each round (A B, B A, ...)."""
    times: dict[str, list[float]] = {s.role: [] for s in subjects}
    for i in range(rounds):
        for subject in subjects if i % 2 == 0 else subjects[::-1]:
            times[subject.role].append(call(subject, i))
    return times


def measure(subjects: list[Subject], n: int, settings: PerfConfig, *, clock: Clock = time.perf_counter) -> dict[str, dict[str, float]]:
    """``perf.*`` metrics per role, over the first rows of ``n`` evaluation rows. Each model predicts
    once untimed first (lazy initialisation, caches)."""
    rows = min(settings.batch_rows, n)
    batch = slice(0, rows)

    def timed(fn: Callable[[], Any]) -> float:
        start = clock()
        fn()
        return clock() - start

    for subject in subjects:
        subject.predict(batch)
    batches = _interleaved(subjects, settings.repeats, lambda s, i: timed(lambda: s.predict(batch)) * 1000 * 1000 / rows)
    singles = _interleaved(subjects, settings.single_rows, lambda s, i: timed(lambda: s.predict(slice(i % n, i % n + 1))) * 1000)
    out = {}
    for subject in subjects:
        values = {
            NAMES["batch_p50"]: percentile(batches[subject.role], 50),
            NAMES["batch_p95"]: percentile(batches[subject.role], 95),
            NAMES["latency_p50"]: percentile(singles[subject.role], 50),
            NAMES["latency_p95"]: percentile(singles[subject.role], 95),
            NAMES["memory"]: _peak_mb(subject.predict, batch),
        }
        size = folder_mb(subject.path)
        if size is not None:
            values[NAMES["size"]] = size
        out[subject.role] = {PERF_PREFIX + k: v for k, v in values.items()}
    return out


def _peak_mb(predict: Predict, batch: slice) -> float:
    """Peak of the memory one batch prediction allocates through Python's allocators (NumPy's and
    pandas' arrays included; a native library's own allocator is not seen)."""
    ours = not tracemalloc.is_tracing()  # someone else's tracing is left running
    if ours:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        predict(batch)
        return max(0, tracemalloc.get_traced_memory()[1] - base) / 1e6
    finally:
        if ours:
            tracemalloc.stop()


def summary(measured: Mapping[str, Mapping[str, float]], settings: PerfConfig, rows: int) -> dict[str, Any]:
    """result.json's ``evaluation.perf``: the settings and the figures per role."""
    return {"repeats": settings.repeats, "batch_rows": min(settings.batch_rows, rows),
            "single_rows": settings.single_rows, **{role: dict(values) for role, values in measured.items()}}

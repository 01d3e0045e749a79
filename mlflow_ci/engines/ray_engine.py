"""``evaluate.engine: ray``: Ray Data runs the partitions on the cluster's workers.

The row groups are grouped into tasks of about :data:`TASK_ROWS` rows; ``map_batches`` hands each task
to an actor of a pool, which read its row groups where the cluster sees the files, scores them with both
models (each actor loads each model once, from the verified folder this job put in the object store)
and sums them to one packed result, which is all that comes back. This job connects as a Ray driver to
``RAY_ADDRESS`` (``ray://head:10001`` through Ray Client, or ``host:6379`` on the cluster's network);
mlflow-ci's own code travels with the job (``py_modules``), the models' libraries must be on the workers.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

from mlflow_ci.engines.base import Job, reduce_units
from mlflow_ci.errors import ServiceError, UsageError

ADDRESS_VARIABLE = "RAY_ADDRESS"
TASK_ROWS = 1_000_000


def _tar(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(folder), arcname="model")
    return buffer.getvalue()


class _Scorer:
    """One actor of the pool: the models unpacked and loaded once, then any number of tasks."""

    def __init__(self, reduce, pack, read_unit, models: Mapping[str, object]) -> None:
        import ray

        self.reduce, self.pack, self.read_unit = reduce, pack, read_unit
        self.folder = tempfile.mkdtemp(prefix="mlflow-ci-ray-")
        self.paths = {}
        for role, ref in models.items():
            with tarfile.open(fileobj=io.BytesIO(ray.get(ref)), mode="r") as tar:
                tar.extractall(Path(self.folder) / role, filter="data")
            self.paths[role] = str(Path(self.folder) / role / "model")

    def __call__(self, batch):
        import numpy as np

        out = [self.pack(reduce_units(self.reduce, self.read_unit, units, self.paths)) for units in batch["units"]]
        return {"result": np.array(out, dtype=object)}


class RayEngine:
    name = "ray"

    def __init__(self, owned: bool) -> None:
        self.owned = owned

    @classmethod
    def connect(cls, env: Mapping[str, str]) -> "RayEngine":
        address = env.get(ADDRESS_VARIABLE, "").strip()
        if not address:
            raise UsageError(f"evaluate.engine: ray needs the cluster's address in {ADDRESS_VARIABLE} "
                             "(ray://head:10001, or host:6379 on the cluster's network)", hint="docs/engines.md")
        if address.startswith(("http://", "https://")):
            raise UsageError(f"evaluate.engine: ray connects as a Ray driver: {ADDRESS_VARIABLE} must be ray://head:10001 "
                             f"or host:6379, not the dashboard ({address}); the Jobs API of train.engine: ray takes either")
        try:
            import ray
        except ImportError:
            raise UsageError("evaluate.engine: ray needs Ray: pip install 'mlflow-ci[ray]'") from None
        import mlflow_ci

        owned = not ray.is_initialized()
        if owned:
            try:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                         runtime_env={"py_modules": [str(Path(mlflow_ci.__file__).parent)]})
            except Exception as exc:  # noqa: BLE001 - ConnectionError, a version mismatch, ...
                raise ServiceError(f"Ray cluster at {address}: cannot connect ({type(exc).__name__}: {str(exc)[:200]})") from None
        return cls(owned)

    def run(self, job: Job) -> Iterator[bytes]:
        import ray
        import ray.data

        tasks, current, rows = [], [], 0
        for unit in job.units:
            current.append(unit)
            rows += unit.rows
            if rows >= TASK_ROWS:
                tasks.append(current)
                current, rows = [], 0
        if current:
            tasks.append(current)
        if not tasks:
            return
        models = {role: ray.put(_tar(Path(folder))) for role, folder in job.models.items()}
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        dataset = ray.data.from_items([{"units": units} for units in tasks], override_num_blocks=len(tasks))
        scored = dataset.map_batches(_Scorer, batch_size=1, concurrency=min(cpus, len(tasks)), num_cpus=1,
                                     fn_constructor_kwargs={"reduce": job.reduce, "pack": job.pack,
                                                            "read_unit": job.read_unit, "models": models})
        for row in scored.iter_rows():
            yield bytes(row["result"])

    def close(self) -> None:
        if self.owned:
            import ray

            ray.shutdown()

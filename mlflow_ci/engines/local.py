"""The local engine: the partitions run one after another in this process, row group by row group, so
memory holds one row group at a time whatever the size of the data."""

from __future__ import annotations

from typing import Iterator

from mlflow_ci.engines.base import Job


class LocalEngine:
    name = "local"

    def run(self, job: Job) -> Iterator[bytes]:
        paths = {role: str(path) for role, path in job.models.items()}
        summed = None
        for unit in job.units:
            frame, ids = job.read_unit(unit)
            result = job.reduce(frame, ids, paths)
            summed = result if summed is None else summed + result
        if summed is not None:
            yield job.pack(summed)

    def close(self) -> None:
        pass

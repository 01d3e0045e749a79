"""The local engine: the partitions run one after another in this process, row group by row group, so
memory holds one row group at a time whatever the size of the data."""

from __future__ import annotations

from typing import Iterator

from mlflow_ci.engines.base import Job, reduce_units


class LocalEngine:
    name = "local"

    def run(self, job: Job) -> Iterator[bytes]:
        paths = {role: str(path) for role, path in job.models.items()}
        summed = reduce_units(job.reduce, job.read_unit, job.units, paths)
        if summed is not None:
            yield job.pack(summed)

    def close(self) -> None:
        pass

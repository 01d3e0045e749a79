"""Parquet evaluation data as the engines read it: a file, a folder (``data/``) or a glob (``data/*.parquet``).

Files are taken in sorted order; a row's stable id is its position in that order (the rows of the
first file, then the second's, …), read off the files' footers without reading any row. Every engine
derives the same id for the same row — Spark from ``_metadata.file_path`` and ``_metadata.row_index``,
Ray and the local engine from the row group a task reads — and the paired bootstrap's weights are
drawn from it, so the partitioning never changes a resample. Paths are local, or any URI PyArrow's
file systems read (``s3://``, ``gs://``, ``hdfs://``); the cluster must see the same path.
"""

from __future__ import annotations

import glob as globbing
from dataclasses import dataclass
from pathlib import Path
from mlflow_ci.errors import UsageError

PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class Unit:
    """A row group: the smallest piece a task reads (``first``: the stable id of its first row)."""
    path: str
    row_group: int
    first: int
    rows: int


@dataclass(frozen=True)
class Dataset:
    spec: str
    files: tuple[str, ...]  # as PyArrow opens them
    offsets: tuple[int, ...]  # the stable id of each file's first row
    rows: int
    columns: tuple[str, ...]
    units: tuple[Unit, ...]


def is_partitioned(spec: str) -> bool:
    """Data given as a folder or a glob: read partition by partition."""
    return spec.endswith("/") or any(c in spec for c in "*?[")


def open_parquet(path: str):
    """A Parquet file to read footers and row groups from, local or at a URI."""
    import pyarrow.parquet as pq

    if "://" in path:
        import pyarrow.fs as pafs

        fs, inner = pafs.FileSystem.from_uri(path)
        return pq.ParquetFile(fs.open_input_file(inner))
    return pq.ParquetFile(path)


def read_unit(unit: Unit):
    """The rows of one unit as a DataFrame, and their stable ids."""
    import numpy as np

    frame = open_parquet(unit.path).read_row_group(unit.row_group).to_pandas()
    return frame, np.arange(unit.first, unit.first + len(frame), dtype=np.int64)


def plan(spec: str, root: Path, where: str = "evaluate.data") -> Dataset:
    """List the files of ``spec`` (relative to the config's folder) and read their footers."""
    files = _list(spec, root, where)
    offsets, units, total, columns = [], [], 0, None
    for path in files:
        try:
            parquet = open_parquet(path)
            meta, schema = parquet.metadata, parquet.schema_arrow
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem to the user
            raise UsageError(f"{where}: {path} is not a readable Parquet file ({type(exc).__name__})") from None
        names = tuple(schema.names)
        if columns is None:
            columns = names
        elif set(names) != set(columns):
            raise UsageError(f"{where}: {path} has other columns than {files[0]} (expected: {', '.join(columns[:20])})")
        offsets.append(total)
        first = total
        for group in range(meta.num_row_groups):
            count = meta.row_group(group).num_rows
            if count:
                units.append(Unit(path, group, first, count))
            first += count
        total += meta.num_rows
    return Dataset(spec, tuple(files), tuple(offsets), total, columns or (), tuple(units))


def _list(spec: str, root: Path, where: str) -> list[str]:
    if "://" in spec:
        found = _list_remote(spec)
    else:
        target = root / spec
        if spec.endswith("/"):
            found = sorted(str(p) for p in target.rglob("*") if p.is_file() and p.suffix in PARQUET_SUFFIXES)
        elif is_partitioned(spec):
            found = sorted(p for p in globbing.glob(str(target), recursive=True) if Path(p).is_file())
        else:
            found = [str(target)] if target.is_file() else []
    if not found:
        raise UsageError(f"{where}: no Parquet files in {spec!r}" if is_partitioned(spec) or "://" in spec
                         else f"{where}: file not found: {root / spec}")
    return found


def _list_remote(spec: str) -> list[str]:
    """The Parquet files a URI names, through PyArrow's file system for its scheme."""
    import fnmatch

    import pyarrow.fs as pafs

    scheme, _, rest = spec.partition("://")
    wild = is_partitioned(spec) and not spec.endswith("/")
    base = rest.split("*", 1)[0].rsplit("/", 1)[0] if wild else rest.rstrip("/")
    fs, base = pafs.FileSystem.from_uri(f"{scheme}://{base}")
    if spec.endswith("/") or wild:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    else:
        infos = [fs.get_file_info(base)]
    return sorted(f"{scheme}://{info.path}" for info in infos if info.type == pafs.FileType.File
                  and info.path.endswith(PARQUET_SUFFIXES) and (not wild or fnmatch.fnmatch(info.path, rest)))

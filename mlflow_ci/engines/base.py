"""The engines' interface: a job, an engine, and the key that tells a data file by its path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class Job:
    """``reduce(frame, ids, model_paths)``: the function every partition runs (picklable), whose results
    add up with ``+`` and travel as ``pack(result)`` (bytes);
    ``units``: the row groups (objects with ``path``, ``row_group``, ``first``) for engines that read
    them one by one; ``files``/``offsets``: the same data as files, for engines that read it themselves
    (a row's stable id: its file's offset plus its index in the file); ``models``: role -> local model
    folder, shipped to the workers as is."""
    reduce: Callable[[Any, Any, Mapping[str, str]], Any]
    pack: Callable[[Any], bytes]
    read_unit: Callable[[Any], tuple[Any, Any]]
    units: Sequence[Any]
    files: Sequence[str]
    offsets: Sequence[int]
    models: Mapping[str, Path]


def add_up(results: Iterable[Any]) -> Any | None:
    """The sum of a partition's results as they come (None for none), holding one result at a time."""
    summed = None
    for result in results:
        summed = result if summed is None else summed + result
    return summed


def reduce_units(reduce: Callable[[Any, Any, Mapping[str, str]], Any], read_unit: Callable[[Any], tuple[Any, Any]],
                 units: Iterable[Any], paths: Mapping[str, str]) -> Any | None:
    """Read the units one after another and add up what ``reduce`` makes of each."""
    return add_up(reduce(*read_unit(unit), paths) for unit in units)


class Engine(Protocol):
    name: str

    def run(self, job: Job) -> Iterator[bytes]:
        """Each partition's packed result, as it arrives."""
        ...

    def close(self) -> None:
        ...


def path_key(path: str) -> str:
    """A file's path without its scheme (``file:/a/b`` and ``/a/b`` agree; ``s3a://b/k`` and ``b/k`` too)."""
    if "://" in path or path.startswith("file:"):
        parsed = urlparse(path)
        return unquote(parsed.path if parsed.scheme in ("file", "") else parsed.netloc + parsed.path)
    return str(Path(path).resolve())

"""The suite leaves nothing running: every server a fixture starts is recorded by process group, and the
controlling pytest process, when the session ends — also after a failed test, a worker that died, or
SIGTERM from a CI timeout — stops whatever is still alive and fails the run naming it."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

REGISTRY_ENV = "MLFLOW_CI_TEST_PROCESSES"


def registry() -> Path | None:
    folder = os.environ.get(REGISTRY_ENV)
    return Path(folder) if folder else None


def track(pgid: int, what: str) -> None:
    """Record a process group a fixture started (its leader's PID, from ``start_new_session=True``)."""
    folder = registry()
    if folder is not None:
        (folder / str(pgid)).write_text(what, encoding="utf-8")


def untrack(pgid: int) -> None:
    folder = registry()
    if folder is not None:
        (folder / str(pgid)).unlink(missing_ok=True)


def alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def leftovers(folder: Path) -> list[tuple[int, str]]:
    """The recorded groups still running, each stopped (SIGKILL) before it is returned."""
    found = []
    for entry in sorted(folder.iterdir()):
        pgid = int(entry.name)
        if alive(pgid):
            found.append((pgid, entry.read_text(encoding="utf-8")))
            os.killpg(pgid, signal.SIGKILL)
        entry.unlink()
    return found


def start_registry() -> Path:
    """In the controlling process: a fresh registry the workers inherit, and SIGTERM turned into an
    interrupt so that teardown and the final check still run."""
    folder = Path(tempfile.mkdtemp(prefix="mlflow-ci-test-processes-"))
    os.environ[REGISTRY_ENV] = str(folder)

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    return folder

"""Running a user command (training, deploy hook): shell, live output tee'd to a log, timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci.errors import TrainingError


def run_logged(
    command: str,
    workdir: Path,
    env: Mapping[str, str],
    timeout: float,
    log_path: Path,
    stream: TextIO,
) -> tuple[int, bool]:
    """Run ``command`` in a shell, tee its output to ``stream`` and ``log_path``; enforce ``timeout``.

    Returns (exit code, whether it timed out). The whole process group is killed on timeout.
    """
    if not workdir.is_dir():
        raise TrainingError(f"working directory {workdir} does not exist")
    with log_path.open("w", encoding="utf-8", errors="replace") as log:
        try:
            proc = subprocess.Popen(
                command,
                shell=True,
                cwd=workdir,
                env=dict(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise TrainingError(f"cannot start the command: {exc}") from None
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            _kill_group(proc)

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace")
                stream.write(line)
                stream.flush()
                log.write(line)
            code = proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            timer.cancel()
    return code, timed_out.is_set()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

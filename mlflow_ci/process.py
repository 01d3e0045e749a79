"""Running a user command (training, deploy hook): shell, live output tee'd to a log, timeout.

The command runs in a process group of its own, killed whole on timeout. A process may leave the group
(``setsid``, a daemon) and keep the output pipe open, which would keep mlflow-ci reading. Every process
the command starts inherits ``MLFLOW_CI_PROCESS_TAG``, a random value: on timeout, and when the output is
still held a short grace after the command exited, the processes carrying that tag are killed, and the
output is no longer read. A process that detached cleanly (its output elsewhere) is left running, as a
deploy hook may mean it to; one that removed the tag from its environment is only no longer waited for.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO, Iterator, Mapping, TextIO

from mlflow_ci.errors import TrainingError

PROCESS_TAG = "MLFLOW_CI_PROCESS_TAG"
OUTPUT_GRACE = 2.0  # seconds the output is still read once the command has exited


def run_logged(
    command: str,
    workdir: Path,
    env: Mapping[str, str],
    timeout: float,
    log_path: Path,
    stream: TextIO,
) -> tuple[int, bool]:
    """Run ``command`` in a shell, tee its output to ``stream`` and ``log_path``; enforce ``timeout``.

    Returns (exit code, whether it timed out). On timeout the whole process group and whatever carries the
    command's tag are killed; nothing the command left running holds mlflow-ci past its end.
    """
    if not workdir.is_dir():
        raise TrainingError(f"working directory {workdir} does not exist")
    tag = secrets.token_hex(16)
    with log_path.open("w", encoding="utf-8", errors="replace") as log:
        try:
            proc = subprocess.Popen(
                command,
                shell=True,
                cwd=workdir,
                env={**env, PROCESS_TAG: tag},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise TrainingError(f"cannot start the command: {exc}") from None
        done = threading.Event()  # set when mlflow-ci stops reading: later output is dropped
        assert proc.stdout is not None
        reader = threading.Thread(target=_tee, args=(proc.stdout, stream, log, done), daemon=True)
        reader.start()
        timed_out = False
        try:
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                kill_tagged(tag)
                code = proc.wait()
            reader.join(OUTPUT_GRACE)
            if reader.is_alive():  # something the command started left its group and holds the output
                kill_tagged(tag)
                reader.join(OUTPUT_GRACE)
        except BaseException:
            _kill_group(proc)
            kill_tagged(tag)
            raise
        finally:
            done.set()
    return code, timed_out


def _tee(pipe: IO[bytes], stream: TextIO, log: TextIO, done: threading.Event) -> None:
    try:
        for raw in iter(pipe.readline, b""):
            if done.is_set():
                return
            line = raw.decode("utf-8", errors="replace")
            stream.write(line)
            stream.flush()
            log.write(line)
    except (OSError, ValueError):  # the log was closed after mlflow-ci stopped waiting
        return


def kill_tagged(tag: str, proc_root: Path = Path("/proc")) -> list[int]:
    """SIGKILL every process of this user whose initial environment holds ``PROCESS_TAG=tag``; their pids."""
    marker = f"{PROCESS_TAG}={tag}".encode()
    killed = []
    try:
        entries = [p for p in proc_root.iterdir() if p.name.isdigit()]
    except OSError:
        return killed
    for entry in entries:
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
        except (OSError, ValueError):  # gone, or not ours to read
            continue
    return killed


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Cancelled(BaseException):
    """SIGTERM or SIGINT arrived while mlflow-ci waited for work it started elsewhere (a BaseException,
    like KeyboardInterrupt, so nothing on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal_name = signal.Signals(signum).name


@contextlib.contextmanager
def cancellable() -> Iterator[None]:
    """Within: SIGTERM and SIGINT raise :class:`Cancelled` in the main thread, so what was started can be
    stopped before mlflow-ci exits (Actions sends them when a newer push cancels the run). Outside the
    main thread (where handlers cannot be set), nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def cancel(signum, _frame):
        raise Cancelled(signum)

    before = {sig: signal.signal(sig, cancel) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)

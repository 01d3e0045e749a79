"""mlflow_ci.process: a command's output, timeout and what it leaves running."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from mlflow_ci.process import PROCESS_TAG, run_logged


def _run_guarded(command: str, tmp_path: Path, timeout: float = 60) -> tuple[int, bool, str]:
    """run_logged in a thread; a run still going after 120 s fails the test (it would hold the suite)."""
    out, result = io.StringIO(), []
    worker = threading.Thread(target=lambda: result.append(
        run_logged(command, tmp_path, dict(os.environ), timeout, tmp_path / "train.log", out)), daemon=True)
    worker.start()
    worker.join(120)
    if worker.is_alive():
        pytest.fail("run_logged waited for a process the command left running")
    return (*result[0], out.getvalue())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_process_that_leaves_the_group_and_holds_the_output_is_killed_not_waited_for(tmp_path):
    """`setsid` takes a grandchild out of the process group; it keeps stdout open. mlflow-ci kills it by its tag."""
    code, timed_out, out = _run_guarded(f"setsid sh -c 'echo $$ > {tmp_path}/pid; exec sleep 300' & sleep 1; echo trained", tmp_path)
    pid = int((tmp_path / "pid").read_text())
    try:
        assert (code, timed_out) == (0, False) and "trained" in out
        for _ in range(100):  # SIGKILL is delivered asynchronously
            if not _alive(pid):
                break
            time.sleep(0.05)
        assert not _alive(pid), "the escaped process is still running"
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_process_that_drops_its_tag_is_no_longer_waited_for(tmp_path):
    command = f"env -u {PROCESS_TAG} setsid sh -c 'echo $$ > {tmp_path}/pid; exec sleep 300' & sleep 1; echo trained"
    code, timed_out, out = _run_guarded(command, tmp_path)
    pid = int((tmp_path / "pid").read_text())
    try:
        assert (code, timed_out) == (0, False) and "trained" in out
    finally:
        os.kill(pid, signal.SIGKILL)


def test_the_timeout_kills_the_group_and_says_so(tmp_path):
    code, timed_out, _ = _run_guarded(f"echo $$ > {tmp_path}/pid; sleep 300", tmp_path, timeout=1)
    assert timed_out and code != 0
    assert not _alive(int((tmp_path / "pid").read_text()))


def test_output_is_teed_to_the_stream_and_the_log_in_order(tmp_path):
    code, _, out = _run_guarded("for i in 1 2 3; do echo line $i; done; echo err >&2; exit 4", tmp_path)
    assert code == 4 and out == "line 1\nline 2\nline 3\nerr\n"
    assert (tmp_path / "train.log").read_text() == out


def test_a_process_that_detached_cleanly_is_left_running(tmp_path):
    """A deploy hook may start a server on purpose: with its output elsewhere it holds nothing, and lives on."""
    command = f"setsid sh -c 'echo $$ > {tmp_path}/pid; exec sleep 300' > /dev/null 2>&1 & sleep 1; echo started"
    code, timed_out, out = _run_guarded(command, tmp_path)
    pid = int((tmp_path / "pid").read_text())
    try:
        assert (code, timed_out) == (0, False) and "started" in out and _alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)

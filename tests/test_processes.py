"""The suite's own guard: a server a fixture left running fails the run, is named, and is stopped."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from processes import alive

HERE = Path(__file__).resolve().parent


def test_a_server_left_running_fails_the_session_and_is_stopped(tmp_path):
    (tmp_path / "test_leak.py").write_text(textwrap.dedent("""
        import subprocess, sys
        from processes import track

        def test_starts_and_forgets(tmp_path):
            proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
            (tmp_path.parent.parent / "leaked.pid").write_text(str(proc.pid))
            track(proc.pid, "a forgotten sleeper")
    """))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                          f"--basetemp={tmp_path / 'base'}", str(tmp_path / "test_leak.py")],
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(HERE), "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=120)
    pid = int((tmp_path / "leaked.pid").read_text())
    assert out.returncode == 1, out.stdout + out.stderr  # the test passed, the session did not
    assert f"process group {pid} (a forgotten sleeper)" in out.stderr
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:  # killed; its reaping by init may lag a moment
        time.sleep(0.1)
    assert not alive(pid) or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return False

"""Proof that nothing leaves loopback: a ``sitecustomize`` put first on PYTHONPATH installs an audit hook
(PEP 578) in every Python process the command starts — mlflow-ci, the app's child, MLflow's scorers,
the training command — that writes each connection to a host other than 127.0.0.1 / ::1 / localhost,
and each name resolution of another host, to a file the test reads."""

from __future__ import annotations

from pathlib import Path

HOOK = '''
import os, socket, sys

_LOG = {log!r}
_LOCAL = {{"127.0.0.1", "::1", "localhost", "", None, socket.gethostname()}}


def _note(what):
    with open(_LOG, "a", encoding="utf-8") as handle:
        handle.write(f"{{os.getpid()}} {{what}}\\n")


def _audit(event, args):
    if event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL:
            _note(f"connect {{address[0]}}:{{address[1]}}")
    elif event == "socket.getaddrinfo":
        host = args[0].decode() if isinstance(args[0], bytes) else args[0]
        if host not in _LOCAL and not str(host).startswith("127."):
            _note(f"resolve {{host}}")


sys.addaudithook(_audit)
'''


def audited(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """``env`` with the hook on PYTHONPATH, and the file it writes to."""
    folder = tmp_path / "netaudit"
    folder.mkdir()
    log = folder / "connections.log"
    log.write_text("")
    (folder / "sitecustomize.py").write_text(HOOK.format(log=str(log)))
    path = ":".join(p for p in (str(folder), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path}, log

"""An HTTP server on 127.0.0.1 in a thread of this process: mlflow-ci's judge proxy, and the test
suite's fake services. A context manager: entering starts it on a free port; leaving stops it, closes
its socket and waits for its thread, so nothing outlives the block."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping


class LoopbackServer:
    """A base for a service on loopback: ``_serve(handler)`` in the constructor; ``with`` starts and stops it."""
    _server: ThreadingHTTPServer
    _thread: threading.Thread

    def _serve(self, handler: type[BaseHTTPRequestHandler], *, name: str = "loopback-http") -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
    """Answer the request ``handler`` serves with ``payload`` as JSON (and any extra ``headers``)."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)

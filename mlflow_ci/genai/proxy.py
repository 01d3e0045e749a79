"""A loopback door to the judge for code that calls an LLM its own way (MLflow's built-in judges).

It listens on 127.0.0.1, speaks the OpenAI chat-completions API, and passes every request on through
:meth:`Judge.complete`: the pinned model, temperature and response cap replace what the caller asked
for, the budget is checked before anything is sent, retries follow the judge's policy. The real key
stays in this process. The caller is given a random token of this proxy instead, and a request without
it is refused (401): another process on the machine (one the PR's app left behind) cannot spend the
budget with the real key by finding the port. When the budget is spent or the endpoint
fails for good, the caller gets HTTP 400 (which MLflow does not retry) and the proxy keeps the error,
so the check stops with it once the caller is done.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler

from mlflow_ci.errors import ServiceError
from mlflow_ci.genai.judge import Judge, JudgeBudgetError
from mlflow_ci.loopback import LoopbackServer, send_json

class JudgeProxy(LoopbackServer):
    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.token = "mlflow-ci-" + secrets.token_urlsafe(32)  # the caller's key: this proxy, this check only
        self.error: ServiceError | None = None  # the first budget stop or lasting failure; raised by the check
        self._lock = threading.Lock()
        self._serve(_handler(self), name="judge-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def answer(self, body: object) -> tuple[int, dict]:
        """(status, JSON body) for one request the caller made."""
        if self.error is not None:
            return 400, _error(f"mlflow-ci stopped judging: {self.error}")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return 400, _error("expected a chat-completions request with messages")
        try:
            return 200, self.judge.complete(body)
        except ServiceError as exc:  # the budget's stop (JudgeBudgetError) or an endpoint that keeps failing
            with self._lock:
                if self.error is None or (isinstance(exc, JudgeBudgetError) and not isinstance(self.error, JudgeBudgetError)):
                    self.error = exc
            return 400, _error(f"mlflow-ci stopped judging: {exc}")


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error"}}


def _handler(proxy: JudgeProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # the check's log says what matters
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if not hmac.compare_digest(self.headers.get("Authorization") or "", f"Bearer {proxy.token}"):
                send_json(self, 401, _error("this judge proxy serves only the scorers of its own check"))
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                send_json(self, 404, _error("only POST /v1/chat/completions is served"))
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
            except ValueError:
                body = None
            send_json(self, *proxy.answer(body))

    return Handler

"""An OpenAI-compatible chat-completions server on 127.0.0.1 for the judge's tests: deterministic answers
(a function of the request), every request counted, and failures on cue (a status, a Retry-After, a
dropped connection) for the next N requests."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Callable

from mlflow_ci.loopback import LoopbackServer, send_json


@dataclass
class Cue:
    status: int  # 0: drop the connection without answering
    retry_after: str | None = None


@dataclass
class FakeLLM(LoopbackServer):
    """``answer(request_body) -> str`` decides each reply's content; ``usage`` tokens are reported per reply."""
    answer: Callable[[dict], str] = lambda body: '{"verdict": "pass", "rationale": "fine"}'
    usage: int = 50
    requests: list[dict] = field(default_factory=list)
    cues: list[Cue] = field(default_factory=list)

    def __post_init__(self) -> None:
        fake = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fake._lock:
                    fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                    cue = fake.cues.pop(0) if fake.cues else None
                if cue is not None and cue.status == 0:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if cue is not None:
                    send_json(self, cue.status, {"error": {"message": f"cued {cue.status}"}},
                              {"Retry-After": cue.retry_after} if cue.retry_after else {})
                    return
                if self.path != "/v1/chat/completions":
                    send_json(self, 404, {"error": {"message": "no such route"}})
                    return
                content = fake.answer(body)
                send_json(self, 200, {"id": "x", "object": "chat.completion", "created": 1_764_000_000, "model": body.get("model"),
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                              "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": fake.usage // 2, "completion_tokens": fake.usage - fake.usage // 2,
                                           "total_tokens": fake.usage}})

        self._serve(Handler, name="fake-llm")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

"""An LLM judge you can trust and afford: a pinned model behind an OpenAI-compatible endpoint
(``POST {base_url}/chat/completions``), temperature 0, the key only from the environment, and a hard
budget checked *before* every request — retries and repeats included — so a check stops (exit 4, with
what was spent) rather than overspend.

Noise is measured, not hidden: ``repeats: k`` asks the same question k times and aggregates (majority
or mean); how many rows flipped verdict between repeats is reported with the result.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Sequence, TypeVar

from mlflow_ci.config import WORKFLOW_JUDGE_KEY
from mlflow_ci.errors import ServiceError, UsageError

V = TypeVar("V")
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
# What the judge is told to answer; anything else is read as best it can be (a bare pass/fail word).
ANSWER_FORMAT = ('Answer with one JSON object and nothing else: {"verdict": "pass" or "fail", '
                 '"rationale": "one or two sentences"}.')


class JudgeBudgetError(ServiceError):
    """The next judge request would exceed the configured budget (exit 4, nothing more is sent)."""


@dataclass(frozen=True)
class JudgeSettings:
    model: str
    base_url: str
    api_key_env: str | None = "OPENAI_API_KEY"  # the variable holding the key; None: no key (a local server)
    temperature: float = 0.0
    max_calls: int = 200  # requests, retries included
    max_tokens: int | None = None  # prompt + completion tokens over the whole check (as the server reports them)
    max_response_tokens: int = 300  # per request, sent as max_tokens; counted in advance against max_tokens
    repeats: int = 1
    aggregate: Literal["majority", "mean"] = "majority"
    retries: int = 4
    timeout_s: float = 60.0


@dataclass
class Budget:
    """Calls and tokens spent, shared by every request of a check (thread-safe)."""
    max_calls: int
    max_tokens: int | None = None
    calls: int = 0
    tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve(self, estimated_tokens: int) -> None:
        """Count one request before it is sent, or refuse it."""
        with self._lock:
            if self.calls + 1 > self.max_calls:
                raise JudgeBudgetError(
                    f"judge budget spent: {self.calls} of max_calls {self.max_calls} requests made (retries included); "
                    "no further request was sent", hint="raise judge.max_calls, score fewer rows, or lower judge.repeats")
            if self.max_tokens is not None and self.tokens + estimated_tokens > self.max_tokens:
                raise JudgeBudgetError(
                    f"judge budget spent: {self.tokens} of max_tokens {self.max_tokens} tokens used, and the next request "
                    f"may take {estimated_tokens}; no further request was sent",
                    hint="raise judge.max_tokens or lower judge.max_response_tokens")
            self.calls += 1
            self.tokens += estimated_tokens

    def settle(self, estimated_tokens: int, used_tokens: int | None) -> None:
        """Replace a request's estimate by what the server says it used (an answer without usage keeps the estimate)."""
        if used_tokens is not None:
            with self._lock:
                self.tokens += used_tokens - estimated_tokens


@dataclass(frozen=True)
class Verdict:
    passed: bool
    rationale: str


@dataclass(frozen=True)
class Judgement:
    """One row's aggregated verdict over the repeats, and whether the repeats disagreed."""
    score: float  # share of repeats that passed
    passed: bool
    rationale: str
    flipped: bool


def aggregate(verdicts: Sequence[V], how: str) -> tuple[float, bool, V, bool]:
    """Repeated verdicts on one row (anything with ``passed``) as one: the share that passed; passed by
    ``majority`` (a tie fails) or ``mean`` (half or more); the first verdict that agrees with the
    outcome (its rationale is shown); and whether the verdicts disagreed."""
    share = sum(v.passed for v in verdicts) / len(verdicts)
    passed = share > 0.5 if how == "majority" else share >= 0.5
    chosen = next((v for v in verdicts if v.passed == passed), verdicts[0])
    return share, passed, chosen, len({v.passed for v in verdicts}) > 1


def estimate_tokens(text: str) -> int:
    """A generous token count for ``text`` (about four characters a token in English; rounded up)."""
    return math.ceil(len(text) / 3) + 8


class Judge:
    def __init__(self, settings: JudgeSettings, env: Mapping[str, str], *, session=None, budget: Budget | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not 0 <= settings.temperature <= 2:
            raise UsageError("judge.temperature must be between 0 and 2")
        key = None
        if settings.api_key_env:
            key = env.get(settings.api_key_env) or env.get(WORKFLOW_JUDGE_KEY)
            if not key:
                raise UsageError(f"the judge's API key is not set: {settings.api_key_env} (an environment variable; keys "
                                 f"never go in mlflow-ci.yml), nor {WORKFLOW_JUDGE_KEY} (the reusable workflow's judge-api-key secret)")
        if session is None:
            import requests

            session = requests.Session()
        self.settings = settings
        self.session = session
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        self.budget = budget or Budget(settings.max_calls, settings.max_tokens)
        self.sleep = sleep
        self.url = settings.base_url.rstrip("/") + "/chat/completions"

    def judge(self, instructions: str, question: str) -> Judgement:
        """``repeats`` verdicts on one row, aggregated."""
        verdicts = [self.ask(instructions, question) for _ in range(self.settings.repeats)]
        share, passed, chosen, flipped = aggregate(verdicts, self.settings.aggregate)
        return Judgement(share, passed, chosen.rationale, flipped)

    def ask(self, instructions: str, question: str) -> Verdict:
        """One verdict on one question."""
        messages = [{"role": "system", "content": f"{instructions}\n\n{ANSWER_FORMAT}"}, {"role": "user", "content": question}]
        return parse_verdict(_content(self.complete({"messages": messages})))

    def complete(self, body: Mapping) -> dict:
        """One chat completion as the judge is pinned: the configured model, temperature and response cap
        replace whatever ``body`` says; retried on 429, 5xx and dropped connections, every attempt paid for
        before it is sent. Returns the endpoint's JSON answer."""
        body = {key: value for key, value in body.items() if key not in ("max_completion_tokens", "n", "stream")}
        body.update(model=self.settings.model, temperature=self.settings.temperature,
                    max_tokens=self.settings.max_response_tokens)
        estimate = estimate_tokens(json.dumps(body.get("messages", ""), ensure_ascii=False)) + self.settings.max_response_tokens
        for attempt in range(self.settings.retries + 1):
            self.budget.reserve(estimate)
            status, payload, retry_after = self._post(body)
            if status == 200 and payload is not None:
                self.budget.settle(estimate, _usage(payload))
                return payload
            self.budget.settle(estimate, 0)  # nothing was generated
            if status not in RETRY_STATUS and status != 0:
                raise ServiceError(f"the judge at {self.settings.base_url} answered HTTP {status}: {_error_text(payload)}")
            if attempt < self.settings.retries:
                self.sleep(retry_after if retry_after is not None else min(30.0, 0.5 * 2 ** attempt))
        raise ServiceError(f"the judge at {self.settings.base_url} did not answer after {self.settings.retries + 1} attempts "
                           f"(last: {'no connection' if status == 0 else f'HTTP {status}'})")

    def _post(self, body: dict) -> tuple[int, dict | None, float | None]:
        """(status, JSON body or None, Retry-After seconds or None); status 0 when the connection failed."""
        import requests

        try:
            answer = self.session.post(self.url, json=body, headers=self.headers, timeout=self.settings.timeout_s)
        except requests.RequestException:
            return 0, None, None
        try:
            payload = answer.json()
        except ValueError:
            payload = None
        return answer.status_code, payload if isinstance(payload, dict) else None, _retry_after(answer.headers.get("Retry-After"))


def parse_verdict(text: str) -> Verdict:
    """The judge's answer: the JSON object asked for, else a leading pass/fail word; anything else fails
    (an answer nobody can read never passes a row)."""
    match = re.search(r"\{.*\}", text, re.S)
    if match:
        try:
            answer = json.loads(match.group(0))
        except ValueError:
            answer = None
        if isinstance(answer, dict) and str(answer.get("verdict", "")).lower() in ("pass", "fail"):
            return Verdict(str(answer["verdict"]).lower() == "pass", str(answer.get("rationale", ""))[:2000])
    word = re.match(r"\W*(pass|fail|yes|no)\b", text, re.I)
    if word:
        return Verdict(word.group(1).lower() in ("pass", "yes"), text.strip()[:2000])
    return Verdict(False, f"unreadable judge answer: {text.strip()[:200]}")


def _content(payload: dict) -> str:
    try:
        return str(payload["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        return ""


def _usage(payload: dict) -> int | None:
    usage = payload.get("usage")
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return int(total) if isinstance(total, (int, float)) and total >= 0 else None


def _retry_after(value: str | None) -> float | None:
    try:
        return min(60.0, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


def _error_text(payload: dict | None) -> str:
    error = (payload or {}).get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return str(message or "no error message")[:300]

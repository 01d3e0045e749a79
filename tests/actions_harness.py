"""Run a composite action's steps locally, the way the GitHub Actions runner does.

- Evaluates the ``${{ }}`` expressions the actions use: contexts ``inputs``, ``steps``, ``github``,
  ``env``, ``runner``; literals; ``! == != && || ( )``; the functions ``success() failure() always()
  cancelled() contains() startsWith() endsWith() format() toJSON() fromJSON()``.
- Provides ``GITHUB_OUTPUT``, ``GITHUB_ENV``, ``GITHUB_PATH``, ``GITHUB_STEP_SUMMARY``,
  ``GITHUB_EVENT_PATH`` and ``GITHUB_ACTION_PATH``; reads outputs (``name=value`` and heredoc form).
- Runs ``run:`` steps with the declared shell (``bash`` as ``bash --noprofile --norc -eo pipefail``).
- Treats ``uses:`` steps of setup actions (Python, uv) as already satisfied; any other ``uses:`` fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SATISFIED_USES = ("actions/setup-python@", "astral-sh/setup-uv@")
SHELLS = {"bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail"], "sh": ["sh", "-e"]}


class ExpressionError(Exception):
    pass


# --------------------------------------------------------------------------------------------------
# Expressions

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|<=|>=|&&|\|\||[!<>()\[\],.*])|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ExpressionError(f"cannot parse expression at {text[pos:]!r}")
        kind = match.lastgroup
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value != ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0 and value == value
    return bool(value) if value is not None else False


def to_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        try:
            return float(to_string(a) or 0) == float(to_string(b) or 0)
        except ValueError:
            return False
    return a == b


class _Parser:
    def __init__(self, text: str, ctx: dict, status: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.ctx = ctx
        self.status = status

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, value: str | None = None):
        tok = self.peek()
        if value is not None and tok[1] != value:
            raise ExpressionError(f"expected {value!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self):
        value = self.or_()
        if self.i != len(self.toks):
            raise ExpressionError(f"unexpected {self.peek()[1]!r}")
        return value

    def or_(self):
        left = self.and_()
        while self.peek()[1] == "||":
            self.take()
            right = self.and_()
            left = left if truthy(left) else right
        return left

    def and_(self):
        left = self.cmp()
        while self.peek()[1] == "&&":
            self.take()
            right = self.cmp()
            left = right if truthy(left) else left
        return left

    def cmp(self):
        left = self.unary()
        while self.peek()[1] in ("==", "!="):
            op = self.take()[1]
            right = self.unary()
            left = _equal(left, right) if op == "==" else not _equal(left, right)
        return left

    def unary(self):
        if self.peek()[1] == "!":
            self.take()
            return not truthy(self.unary())
        return self.postfix(self.primary())

    def primary(self):
        kind, value = self.take()
        if kind == "num":
            return float(value) if "." in value else int(value)
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if value == "(":
            inner = self.or_()
            self.take(")")
            return inner
        if kind == "name":
            if value in ("true", "false"):
                return value == "true"
            if value == "null":
                return None
            if self.peek()[1] == "(":
                return self.call(value)
            if value not in self.ctx:
                raise ExpressionError(f"unknown context {value!r}")
            return self.ctx[value]
        raise ExpressionError(f"unexpected {value!r}")

    def postfix(self, value):
        while self.peek()[1] in (".", "["):
            if self.take()[1] == ".":
                key = self.take()[1]
            else:
                key = to_string(self.or_())
                self.take("]")
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def call(self, name: str):
        self.take("(")
        args = []
        while self.peek()[1] != ")":
            args.append(self.or_())
            if self.peek()[1] == ",":
                self.take()
        self.take(")")
        lname = name.lower()
        if lname == "success":
            return self.status == "success"
        if lname == "failure":
            return self.status == "failure"
        if lname == "always":
            return True
        if lname == "cancelled":
            return False
        if lname == "contains":
            hay, needle = args
            if isinstance(hay, list):
                return any(_equal(x, needle) for x in hay)
            return to_string(needle).lower() in to_string(hay).lower()
        if lname == "startswith":
            return to_string(args[0]).lower().startswith(to_string(args[1]).lower())
        if lname == "endswith":
            return to_string(args[0]).lower().endswith(to_string(args[1]).lower())
        if lname == "format":
            text = to_string(args[0])
            for i, arg in enumerate(args[1:]):
                text = text.replace("{" + str(i) + "}", to_string(arg))
            return text
        if lname == "tojson":
            return json.dumps(args[0], indent=2)
        if lname == "fromjson":
            return json.loads(to_string(args[0]))
        raise ExpressionError(f"unsupported function {name}()")


def evaluate(expression: str, ctx: dict, status: str = "success") -> Any:
    return _Parser(expression, ctx, status).parse()


_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def interpolate(text: Any, ctx: dict, status: str = "success") -> str:
    if not isinstance(text, str):
        return to_string(text)
    return _TEMPLATE.sub(lambda m: to_string(evaluate(m.group(1), ctx, status)), text)


def condition(text: Any, ctx: dict, status: str) -> bool:
    if text is None:
        return status == "success"
    if isinstance(text, bool):
        return text
    expr = str(text).strip()
    match = re.fullmatch(r"\$\{\{(.*)\}\}", expr, re.S)
    expr = match.group(1) if match else expr
    uses_status = re.search(r"\b(success|failure|always|cancelled)\s*\(", expr)
    value = truthy(evaluate(expr, ctx, status))
    return value if uses_status else (value and status == "success")


# --------------------------------------------------------------------------------------------------
# Files the runner provides


def parse_file_commands(text: str) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIM`` heredocs, as in GITHUB_OUTPUT and GITHUB_ENV."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            body = []
            i += 1
            while i < len(lines) and lines[i] != delim:
                body.append(lines[i])
                i += 1
            out[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


@dataclass
class StepRecord:
    id: str | None
    name: str
    kind: str  # run | satisfied | skipped
    outcome: str  # success | failure | skipped
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    outputs: dict = field(default_factory=dict)


@dataclass
class ActionResult:
    outcome: str
    outputs: dict
    steps: list[StepRecord]
    summary: str
    env: dict

    def step(self, step_id: str) -> StepRecord:
        return next(s for s in self.steps if s.id == step_id)

    @property
    def log(self) -> str:
        return "\n".join(s.stdout + s.stderr for s in self.steps)


def run_action(
    action_dir: Path,
    *,
    inputs: dict[str, str],
    workspace: Path,
    env: dict[str, str],
    github: dict[str, Any] | None = None,
    event: dict | None = None,
    timeout: float = 600,
) -> ActionResult:
    """Execute the composite action in ``action_dir`` with ``inputs`` in ``workspace``."""
    spec = yaml.safe_load((action_dir / "action.yml").read_text(encoding="utf-8"))
    assert spec["runs"]["using"] == "composite", "only composite actions are supported"
    temp = Path(tempfile.mkdtemp(prefix="runner-temp-"))
    files = {name: temp / name.lower() for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")}
    for path in files.values():
        path.touch()
    event_path = temp / "event.json"
    event_path.write_text(json.dumps(event or {}))
    declared = spec.get("inputs") or {}
    unknown = set(inputs) - set(declared)
    if unknown:
        raise ExpressionError(f"inputs not declared by the action: {sorted(unknown)}")
    base_env = {
        **env,
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_ACTION_PATH": str(action_dir),
        "RUNNER_TEMP": str(temp),
        "RUNNER_OS": "Linux",
        **{name: str(path) for name, path in files.items() if name != "GITHUB_OUTPUT"},
    }
    ctx: dict[str, Any] = {
        "github": {"action_path": str(action_dir), "workspace": str(workspace), "token": env.get("GITHUB_TOKEN", ""),
                   "event": event or {}, "event_name": env.get("GITHUB_EVENT_NAME", ""),
                   "repository": env.get("GITHUB_REPOSITORY", ""), **(github or {})},
        "runner": {"temp": str(temp), "os": "Linux", "arch": "X64"},
        "env": dict(base_env),
        "steps": {},
    }
    # input defaults may themselves be expressions (e.g. ${{ github.token }})
    resolved = {}
    for name, meta in declared.items():
        if name in inputs:
            resolved[name] = inputs[name]
        else:
            resolved[name] = interpolate((meta or {}).get("default", ""), ctx)
    ctx["inputs"] = resolved
    status = "success"
    records: list[StepRecord] = []
    extra_env: dict[str, str] = {}
    extra_path: list[str] = []
    for index, step in enumerate(spec["runs"]["steps"]):
        step_id = step.get("id")
        name = step.get("name") or step_id or f"step {index}"
        ctx["env"] = {**base_env, **extra_env}
        if not condition(step.get("if"), ctx, status):
            records.append(StepRecord(step_id, name, "skipped", "skipped"))
            continue
        if "uses" in step:
            if not str(step["uses"]).startswith(SATISFIED_USES):
                raise ExpressionError(f"step {name!r}: the harness cannot run uses: {step['uses']}")
            records.append(StepRecord(step_id, name, "satisfied", "success"))
            continue
        script = step["run"]
        if "${{" in script:
            raise ExpressionError(f"step {name!r}: expression inside run: (pass it through env:)")
        step_env = {k: interpolate(v, ctx, status) for k, v in (step.get("env") or {}).items()}
        files["GITHUB_OUTPUT"].write_text("")
        full_env = {**base_env, **extra_env, **step_env, "GITHUB_OUTPUT": str(files["GITHUB_OUTPUT"])}
        if extra_path:
            full_env["PATH"] = os.pathsep.join([*reversed(extra_path), full_env.get("PATH", "")])
        cwd = workspace / interpolate(step.get("working-directory", "."), ctx, status)
        script_path = temp / f"step-{index}.sh"
        script_path.write_text(script)
        shell = SHELLS[step.get("shell", "bash")]
        proc = subprocess.run([*shell, str(script_path)], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
        outputs = parse_file_commands(files["GITHUB_OUTPUT"].read_text())
        extra_env.update(parse_file_commands(files["GITHUB_ENV"].read_text()))
        extra_path = [p for p in files["GITHUB_PATH"].read_text().splitlines() if p]
        outcome = "success" if proc.returncode == 0 else "failure"
        records.append(StepRecord(step_id, name, "run", outcome, proc.returncode, proc.stdout, proc.stderr, outputs))
        if step_id:
            ctx["steps"][step_id] = {"outputs": outputs, "outcome": outcome, "conclusion": outcome}
        if outcome == "failure" and not step.get("continue-on-error"):
            status = "failure"
    action_outputs = {name: interpolate(meta.get("value", ""), ctx, status) for name, meta in (spec.get("outputs") or {}).items()}
    return ActionResult(status, action_outputs, records, files["GITHUB_STEP_SUMMARY"].read_text(), {**base_env, **extra_env})

"""Run a composite action's steps locally, the way the GitHub Actions runner does.

- Evaluates the ``${{ }}`` expressions the actions use: contexts ``inputs``, ``steps``, ``github``,
  ``env``, ``runner``; literals; ``! == != && || ( )``; the functions ``success() failure() always()
  cancelled() contains() startsWith() endsWith() format() toJSON() fromJSON()``.
- Provides ``GITHUB_OUTPUT``, ``GITHUB_ENV``, ``GITHUB_PATH``, ``GITHUB_STEP_SUMMARY``,
  ``GITHUB_EVENT_PATH`` and ``GITHUB_ACTION_PATH``; reads outputs (``name=value`` and heredoc form).
- Runs ``run:`` steps with the declared shell (``bash`` as ``bash --noprofile --norc -eo pipefail``).
- Treats ``uses:`` steps of setup actions (Python, uv) as already satisfied; any other ``uses:`` fails,
  except in workflow jobs (:func:`run_job`), which also emulate ``actions/checkout`` of another
  repository (a local repository stands for it), ``actions/cache/restore`` and ``save`` with GitHub's
  scoping rules (:class:`ActionsCache`), and ``actions/upload-artifact``.
- Runs a job of a reusable workflow with the contexts ``github``, ``job``, ``inputs``, ``secrets``,
  ``matrix``, ``runner`` and ``steps``.

The workflows run end to end under a real engine, nektos/act (tests/test_act.py: the root action, PR check
and publish, the fork path, the merge, a monorepo PR). This emulator stays for the rules act does not model,
and follows GitHub's documentation where act cannot show them:

- **Permissions** (docs.github.com, "Controlling permissions for GITHUB_TOKEN"): act ignores ``permissions:``
  and gives every job the token it was given, so only here can a test run a job with the token its
  ``permissions:`` allow, or none (the untrusted check job).
- **Cache scopes** (docs.github.com, "Caching dependencies to speed up workflows", restrictions for accessing
  a cache): act's cache server is one flat store, so a PR's save is visible to main there; :class:`ActionsCache`
  keeps GitHub's scopes (a ref reads its own, its base branch's and the default branch's caches, writes its
  own) and eviction.
- **GitHub Enterprise Server**: ``job.workflow_repository`` / ``job.workflow_sha`` empty. act never sets them
  (so the act scenarios pass the inputs that stand in); here a job runs with them set, as on github.com, or
  empty, as on GHES, to show the error that names the inputs.
Where both run a scenario they must agree (tests/scenarios.py holds the shared expectation). Artifacts and
the cache version follow the actions' documented behaviour that act showed: a download pattern matching one
artifact is extracted straight into its path; a cache version is the paths as written.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
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


class StepFailed(Exception):
    """An emulated action failed the way the real one does (e.g. no such artifact)."""


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
    kind: str  # run | satisfied (a setup action the test environment stands for) | uses (an emulated action) | skipped
    outcome: str  # success | failure | skipped
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    outputs: dict = field(default_factory=dict)


@dataclass
class StepsResult:
    outcome: str
    steps: list[StepRecord]
    summary: str

    def step(self, step_id: str) -> StepRecord:
        return next(s for s in self.steps if s.id == step_id)

    @property
    def log(self) -> str:
        return "\n".join(f"--- {s.name} ({s.outcome})\n{s.stdout}{s.stderr}" for s in self.steps)


@dataclass
class ActionResult(StepsResult):
    outputs: dict
    env: dict


def _uses_setup(step, ctx, status, runner) -> dict | None:
    """Setup actions (Python, uv): the test's runner environment already provides what they would."""
    return {} if str(step["uses"]).startswith(SATISFIED_USES) else None


@dataclass
class _Runner:
    """Runs steps the way the runner does: conditions, env, outputs, GITHUB_ENV/GITHUB_PATH, status."""

    workspace: Path
    base_env: dict[str, str]
    ctx: dict[str, Any]
    temp: Path
    files: dict[str, Path]
    timeout: float
    handlers: tuple = (_uses_setup,)
    status: str = "success"
    records: list = field(default_factory=list)
    extra_env: dict = field(default_factory=dict)
    extra_path: list = field(default_factory=list)

    def run(self, steps: list[dict]) -> None:
        for index, step in enumerate(steps):
            self.step(index, step)

    def step(self, index: int, step: dict) -> None:
        step_id = step.get("id")
        name = step.get("name") or step_id or f"step {index}"
        self.ctx["env"] = {**self.base_env, **self.extra_env}
        if not condition(step.get("if"), self.ctx, self.status):
            self.records.append(StepRecord(step_id, name, "skipped", "skipped"))
            return
        if "uses" in step:
            kind = "satisfied" if str(step["uses"]).startswith(SATISFIED_USES) else "uses"
            try:
                outputs, outcome, message = self.uses(name, step), "success", ""
            except StepFailed as exc:
                outputs, outcome, message = {}, "failure", f"::error::{exc}\n"
            self.records.append(StepRecord(step_id, name, kind, outcome, stderr=message, outputs=outputs))
            self._finish(step, step_id, outputs, outcome)
            return
        record = self.shell(index, name, step)
        self.records.append(record)
        self._finish(step, step_id, record.outputs, record.outcome)

    def _finish(self, step: dict, step_id: str | None, outputs: dict, outcome: str) -> None:
        tolerated = bool(step.get("continue-on-error"))
        if step_id:
            conclusion = "success" if tolerated else outcome
            self.ctx["steps"][step_id] = {"outputs": outputs, "outcome": outcome, "conclusion": conclusion}
        if outcome == "failure" and not tolerated:
            self.status = "failure"

    def uses(self, name: str, step: dict) -> dict:
        resolved = {**step, "with": {k: interpolate(v, self.ctx, self.status) for k, v in (step.get("with") or {}).items()}}
        for handler in self.handlers:
            outputs = handler(resolved, self.ctx, self.status, self)
            if outputs is not None:
                return {k: to_string(v) for k, v in outputs.items()}
        raise ExpressionError(f"step {name!r}: the harness cannot run uses: {step['uses']}")

    def shell(self, index: int, name: str, step: dict) -> "StepRecord":
        script = step["run"]
        if "${{" in script:
            raise ExpressionError(f"step {name!r}: expression inside run: (pass it through env:)")
        step_env = {k: interpolate(v, self.ctx, self.status) for k, v in (step.get("env") or {}).items()}
        self.files["GITHUB_OUTPUT"].write_text("")
        full_env = {**self.base_env, **self.extra_env, **step_env, "GITHUB_OUTPUT": str(self.files["GITHUB_OUTPUT"])}
        if self.extra_path:
            full_env["PATH"] = os.pathsep.join([*reversed(self.extra_path), full_env.get("PATH", "")])
        cwd = self.workspace / interpolate(step.get("working-directory", "."), self.ctx, self.status)
        script_path = self.temp / f"step-{index}.sh"
        script_path.write_text(script)
        shell = SHELLS[step.get("shell", "bash")]
        proc = subprocess.run([*shell, str(script_path)], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=self.timeout)
        outputs = parse_file_commands(self.files["GITHUB_OUTPUT"].read_text())
        self.extra_env.update(parse_file_commands(self.files["GITHUB_ENV"].read_text()))
        self.extra_path = [p for p in self.files["GITHUB_PATH"].read_text().splitlines() if p]
        outcome = "success" if proc.returncode == 0 else "failure"
        return StepRecord(step.get("id"), name, "run", outcome, proc.returncode, proc.stdout, proc.stderr, outputs)


def _runner_files(temp: Path) -> dict[str, Path]:
    files = {name: temp / name.lower() for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")}
    for path in files.values():
        path.touch()
    return files


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
    files = _runner_files(temp)
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
    ctx["inputs"] = {name: inputs[name] if name in inputs else interpolate((meta or {}).get("default", ""), ctx)
                     for name, meta in declared.items()}
    runner = _Runner(workspace, base_env, ctx, temp, files, timeout)
    runner.run(spec["runs"]["steps"])
    action_outputs = {name: interpolate(meta.get("value", ""), ctx, runner.status) for name, meta in (spec.get("outputs") or {}).items()}
    return ActionResult(runner.status, runner.records, files["GITHUB_STEP_SUMMARY"].read_text(), action_outputs,
                        {**base_env, **runner.extra_env})


# --------------------------------------------------------------------------------------------------
# Workflow jobs: the GitHub context of an event, the Actions cache, checkouts of other repositories


@dataclass
class CacheEntry:
    scope: str  # the ref it was saved from: refs/heads/main, refs/pull/7/merge
    key: str
    version: str  # what actions/cache derives from the paths: a restore must name the same paths
    folder: Path
    created: int


class ActionsCache:
    """GitHub's Actions cache, with the documented rules
    (docs.github.com → "Caching dependencies to speed up workflows"):

    - a run reads the caches of its own ref, then (a pull request) of its base branch, then of the
      default branch; it writes only to its own ref;
    - in each scope: the exact key, then each restore key as a prefix, newest entry first;
    - an entry matches only a restore naming the same paths (the cache version);
    - keys are immutable: saving an existing key in the same scope saves nothing;
    - ``evict`` stands for GitHub removing entries unused for 7 days or over the size limit.
    """

    def __init__(self, root: Path, default_branch: str = "main") -> None:
        self.root = root
        self.default_branch = default_branch
        self.entries: list[CacheEntry] = []
        self.log: list[str] = []

    @staticmethod
    def version(paths: list[str]) -> str:
        """The cache version: actions/cache hashes the paths as written (before they are resolved), so a
        restore matches only a save that wrote the same strings: an absolute path under runner.temp differs
        between runners that keep their temp folder elsewhere (act, self-hosted)."""
        return "|".join(paths)

    def readable_scopes(self, ref: str, base_ref: str | None) -> list[str]:
        scopes = [ref]
        if base_ref:
            scopes.append(f"refs/heads/{base_ref}")
        scopes.append(f"refs/heads/{self.default_branch}")
        return list(dict.fromkeys(scopes))

    def find(self, ref: str, base_ref: str | None, paths: list[str], key: str, restore_keys: list[str]) -> CacheEntry | None:
        version = self.version(paths)
        for scope in self.readable_scopes(ref, base_ref):
            candidates = sorted((e for e in self.entries if e.scope == scope and e.version == version), key=lambda e: -e.created)
            exact = [e for e in candidates if e.key == key]
            if exact:
                return exact[0]
            for prefix in restore_keys:
                found = [e for e in candidates if e.key.startswith(prefix)]
                if found:
                    return found[0]
        return None

    def save(self, ref: str, paths: list[str], key: str, workspace: Path) -> bool:
        version = self.version(paths)
        if any(e.scope == ref and e.key == key and e.version == version for e in self.entries):
            self.log.append(f"save {key} in {ref}: already exists (keys are immutable)")
            return False
        folder = self.root / f"entry-{len(self.entries)}"
        for i, path in enumerate(paths):
            if (workspace / path).is_dir():  # a relative path is the workspace's, as actions/cache resolves it
                shutil.copytree(workspace / path, folder / str(i), symlinks=True)
        self.entries.append(CacheEntry(ref, key, version, folder, len(self.entries)))
        self.log.append(f"save {key} in {ref}")
        return True

    def restore(self, entry: CacheEntry, paths: list[str], workspace: Path) -> None:
        for i, path in enumerate(paths):
            if (entry.folder / str(i)).exists():
                shutil.copytree(entry.folder / str(i), workspace / path, symlinks=True, dirs_exist_ok=True)

    def evict(self) -> None:
        self.entries.clear()


def _lines(value: str) -> list[str]:
    return [line.strip() for line in str(value or "").splitlines() if line.strip()]


def _uses_cache(step, ctx, status, runner) -> dict | None:
    uses = str(step["uses"])
    if not uses.startswith(("actions/cache/restore@", "actions/cache/save@")):
        return None
    cache: ActionsCache = ctx["__cache__"]
    github = ctx["github"]
    paths, key = _lines(step["with"]["path"]), step["with"]["key"]
    if uses.startswith("actions/cache/save@"):
        cache.save(github["ref"], paths, key, Path(runner.workspace))
        return {}
    entry = cache.find(github["ref"], github.get("base_ref") or None, paths, key, _lines(step["with"].get("restore-keys", "")))
    if entry is None:
        cache.log.append(f"restore {key}: miss")
        return {"cache-hit": "false"}
    cache.restore(entry, paths, Path(runner.workspace))
    cache.log.append(f"restore {key}: {entry.key} from {entry.scope}")
    return {"cache-hit": str(entry.key == key).lower(), "cache-matched-key": entry.key}


def _uses_checkout(step, ctx, status, runner) -> dict | None:
    """actions/checkout: the job's own repository is the prepared workspace; another repository is
    cloned from the local bare repository standing for it, at the ref, sparse as asked."""
    if not str(step["uses"]).startswith("actions/checkout@"):
        return None
    options = step["with"]
    repository = options.get("repository") or ctx["github"]["repository"]
    if repository == ctx["github"]["repository"] and options.get("path", ".") in ("", "."):
        return {}  # the job's own repository: the workspace the test prepared
    source = ctx["__repositories__"].get(repository)
    if source is None:
        raise ExpressionError(f"checkout of {repository!r}: no local repository stands for it")
    dest = runner.workspace / options.get("path", ".")
    git = ["git", "-c", "advice.detachedHead=false"]
    subprocess.run([*git, "clone", "-q", "--no-checkout", str(source), str(dest)], check=True, capture_output=True)
    sparse = _lines(options.get("sparse-checkout", ""))
    if sparse:
        subprocess.run([*git, "-C", str(dest), "sparse-checkout", "set", *sparse], check=True, capture_output=True)
    subprocess.run([*git, "-C", str(dest), "checkout", "-q", options["ref"]], check=True, capture_output=True)
    return {"ref": options["ref"], "commit": options["ref"]}


def _braces(pattern: str) -> list[str]:
    """A glob's ``{a,b}`` alternatives expanded (one level, as the workflows write them)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    return [pattern[: match.start()] + alt + pattern[match.end():] for alt in match[1].split(",")]


def _uses_artifacts(step, ctx, status, runner) -> dict | None:
    """upload-artifact / download-artifact within one workflow run (the jobs of a test share ``artifacts``)."""
    uses = str(step["uses"])
    if not uses.startswith(("actions/upload-artifact@", "actions/download-artifact@")):
        return None
    options = step["with"]
    if uses.startswith("actions/download-artifact@") and "pattern" in options:
        # download-artifact documents (v5+): with a pattern and without merge-multiple, each matching artifact
        # lands in a folder of its own name under path, except when the pattern matches a single artifact,
        # which is extracted straight into path; patterns are minimatch globs ({a,b} alternatives included)
        dest = Path(options.get("path") or runner.workspace)
        held = sorted(ctx["__artifacts__"].iterdir()) if ctx["__artifacts__"].is_dir() else []
        found = [a for a in held if any(fnmatch.fnmatchcase(a.name, p) for p in _braces(options["pattern"]))]
        for artifact in found:
            shutil.copytree(artifact, dest if len(found) == 1 else dest / artifact.name, dirs_exist_ok=True)
        return {"download-path": str(dest)}
    store = ctx["__artifacts__"] / options["name"]
    if uses.startswith("actions/upload-artifact@"):
        # As upload-artifact documents: one search path is its own root (a file's folder); several
        # share their least common ancestor as the root, so relative layouts survive.
        paths = [runner.workspace / p for p in _lines(step["with"]["path"]) if not p.startswith("!")]
        root = (paths[0] if paths[0].is_dir() else paths[0].parent) if len(paths) == 1 else Path(os.path.commonpath(paths))
        for found in paths:
            if found.is_file():
                (store / found.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(found, store / found.relative_to(root))
            elif found.is_dir():
                shutil.copytree(found, store / found.relative_to(root), dirs_exist_ok=True)
        return {"artifact-id": "1"}
    if not store.is_dir():
        raise StepFailed(f"Unable to download artifact(s): Artifact not found for name: {step['with']['name']}")
    shutil.copytree(store, step["with"].get("path") or runner.workspace, dirs_exist_ok=True)
    return {"download-path": step["with"].get("path", "")}


@dataclass
class JobResult(StepsResult):
    temp: Path
    job_outputs: dict[str, str] = field(default_factory=dict)  # the job's outputs: (what needs.<job>.outputs gives)


def run_job(
    workflow: Path,
    job: str,
    *,
    workspace: Path,
    env: dict[str, str],
    github: dict[str, Any],
    job_context: dict[str, str],
    inputs: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    matrix: dict[str, Any] | None = None,
    needs: dict[str, Any] | None = None,
    cache: ActionsCache,
    repositories: dict[str, Path] | None = None,
    artifacts: Path | None = None,
    timeout: float = 600,
) -> JobResult:
    """Execute one job of a reusable workflow as called by a workflow on ``github['event_name']``.

    ``github`` holds the event's context (``event_name``, ``event``, ``ref``, ``base_ref``, ``sha``,
    ``repository``, ``run_id``, ``token``...); ``job_context`` is the job context
    (``workflow_repository``, ``workflow_sha``, empty on GitHub Enterprise Server).
    """
    spec = yaml.safe_load(workflow.read_text(encoding="utf-8"))
    call = (spec.get(True) or spec.get("on"))["workflow_call"]
    declared = call.get("inputs") or {}
    unknown = set(inputs or {}) - set(declared)
    if unknown:
        raise ExpressionError(f"inputs not declared by the workflow: {sorted(unknown)}")
    declared_matrix = set(((spec["jobs"][job].get("strategy") or {}).get("matrix") or {}))
    if declared_matrix - set(matrix or {}):  # the job's expressions would read an undefined matrix value
        raise ExpressionError(f"job {job} has a matrix of {sorted(declared_matrix)}: pass a value for each")
    temp = Path(tempfile.mkdtemp(prefix="runner-temp-"))
    files = _runner_files(temp)
    event_path = temp / "event.json"
    event_path.write_text(json.dumps(github.get("event") or {}))
    ref = github["ref"]
    base_env = {
        **env,
        "GITHUB_ACTIONS": "true", "CI": "true",
        "GITHUB_WORKSPACE": str(workspace), "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_EVENT_NAME": github["event_name"], "GITHUB_REF": ref, "GITHUB_REF_NAME": github.get("ref_name", ref.rsplit("/", 1)[-1]),
        "GITHUB_REF_TYPE": "branch", "GITHUB_BASE_REF": github.get("base_ref", ""), "GITHUB_HEAD_REF": github.get("head_ref", ""),
        "GITHUB_SHA": github["sha"], "GITHUB_REPOSITORY": github["repository"], "GITHUB_RUN_ID": str(github.get("run_id", "1")),
        "GITHUB_RUN_ATTEMPT": str(github.get("run_attempt", "1")), "RUNNER_TEMP": str(temp), "RUNNER_OS": "Linux",
        **{name: str(path) for name, path in files.items() if name != "GITHUB_OUTPUT"},
    }
    ctx: dict[str, Any] = {
        "github": {"workspace": str(workspace), "ref_name": base_env["GITHUB_REF_NAME"], "run_attempt": "1", **github},
        "job": dict(job_context),
        "runner": {"temp": str(temp), "os": "Linux", "arch": "X64"},
        "env": dict(base_env),
        "secrets": dict(secrets or {}),
        "matrix": dict(matrix or {}),
        "needs": dict(needs or {}),
        "steps": {},
        "__cache__": cache,
        "__repositories__": dict(repositories or {}),
        "__artifacts__": artifacts or temp / "artifacts",
    }
    ctx["inputs"] = {name: (inputs or {}).get(name, (meta or {}).get("default", "")) for name, meta in declared.items()}
    runner = _Runner(workspace, base_env, ctx, temp, files, timeout,
                     handlers=(_uses_setup, _uses_checkout, _uses_cache, _uses_artifacts))
    runner.run(spec["jobs"][job]["steps"])
    outputs = {name: interpolate(value, ctx) for name, value in (spec["jobs"][job].get("outputs") or {}).items()}
    return JobResult(runner.status, runner.records, files["GITHUB_STEP_SUMMARY"].read_text(), temp, outputs)

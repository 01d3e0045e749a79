"""Run a GenAI app on every row of a dataset, in a working tree of its own commit: the pull request's
checkout for the candidate, a worktree of the base commit for the baseline, so both are the code of
their commit, scored on the same rows in the same job.

The app is ``module:function`` in that tree, called with each row's inputs as keyword arguments; what
it returns becomes the row's output text (a string as is, anything else as JSON). It runs in a child
Python (``python -m mlflow_ci.genai.runner``, this module) with the tree first on ``sys.path``, without
GitHub or runner credentials, under a time limit; a row that raises is recorded as an error (it fails
every scorer), an app that cannot be imported stops the check (exit 3, as a model that cannot predict).
"""

from __future__ import annotations

import argparse
import csv
import io
import importlib
import json
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

# mlflow-ci's own modules are imported inside the parent-side functions: the child (this module run with
# `python -m`) starts with nothing but the standard library before it imports the app.
EXPECTATION_PREFIX = "expected_"  # CSV columns named expected_* are expectations, the others inputs
APP = __name__  # `python -m` target of the child


@dataclass(frozen=True)
class DataRow:
    inputs: Mapping[str, Any]
    expectations: Mapping[str, Any]


@dataclass(frozen=True)
class Output:
    text: str
    latency_ms: float
    error: str | None = None


def load_rows(path: Path) -> list[DataRow]:
    """JSONL (one ``{"inputs": {...}, "expectations": {...}}`` per line) or CSV (``expected_*`` columns are
    expectations, the rest inputs). Errors (exit 2) name the file and the line."""
    from mlflow_ci.errors import UsageError

    if not path.is_file():
        raise UsageError(f"genai.data: {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"genai.data: {path}: not UTF-8 text (byte {exc.start}): expected JSONL or CSV rows") from None
    rows = _csv_rows(path, text) if path.suffix.lower() == ".csv" else _jsonl_rows(path, text)
    if not rows:
        raise UsageError(f"genai.data: {path} has no rows")
    return rows


def _csv_rows(path: Path, text: str) -> list[DataRow]:
    from mlflow_ci.errors import UsageError

    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    try:
        for rec in reader:
            if None in rec:  # more values than the header has columns
                raise UsageError(f"{path}:{reader.line_num}: {len(rec[None])} more values than the header's "
                                 f"{len(reader.fieldnames or ())} columns")
            rows.append(DataRow({k: v for k, v in rec.items() if not k.startswith(EXPECTATION_PREFIX)},
                                {k: v for k, v in rec.items() if k.startswith(EXPECTATION_PREFIX) and v not in ("", None)}))
    except csv.Error as exc:
        raise UsageError(f"{path}:{reader.line_num}: not a CSV row ({exc})") from None
    return rows


def _jsonl_rows(path: Path, text: str) -> list[DataRow]:
    from mlflow_ci.errors import UsageError

    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: not a JSON object ({getattr(exc, 'msg', exc)})") from None
        except RecursionError:
            raise UsageError(f"{path}:{number}: not a JSON object (nested too deep)") from None
        if not isinstance(record, dict) or not isinstance(record.get("inputs"), dict):
            raise UsageError(f"{path}:{number}: expected an object with \"inputs\": {{...}} (and optionally \"expectations\")")
        expectations = record.get("expectations") or {}
        if not isinstance(expectations, dict):
            raise UsageError(f"{path}:{number}: \"expectations\" must be an object")
        rows.append(DataRow(record["inputs"], expectations))
    return rows


def run_app(function: str, rows: list[DataRow], workdir: Path, env: Mapping[str, str], *, timeout: float,
            log_path: Path, stream: TextIO) -> list[Output]:
    """The app ``function`` of the tree ``workdir`` on every row, in a child Python (see the module doc)."""
    from mlflow_ci.errors import TrainingError
    from mlflow_ci.process import run_logged
    from mlflow_ci.tracking.base import child_environment

    log_path = log_path.resolve()  # the child runs in another folder
    work = log_path.parent
    work.mkdir(parents=True, exist_ok=True)
    given, answers = work / f"{log_path.stem}.rows.json", work / f"{log_path.stem}.outputs.json"
    given.write_text(json.dumps([row.inputs for row in rows]), encoding="utf-8")
    answers.unlink(missing_ok=True)
    command = " ".join(shlex.quote(part) for part in (sys.executable, "-m", APP, "--function", function,
                                                       "--rows", str(given), "--out", str(answers)))
    path = os.pathsep.join(p for p in (str(workdir), env.get("PYTHONPATH", "")) if p)  # the app's tree first
    code, timed_out = run_logged(command, workdir, child_environment(env, {"PYTHONPATH": path}), timeout,
                                 log_path, stream)
    if timed_out:
        raise TrainingError(f"the app {function} did not answer all {len(rows)} rows within {timeout:g}s",
                            hint=f"its output is in {log_path}")
    if code != 0 or not answers.is_file():
        raise TrainingError(f"the app {function} could not run (exit code {code})", hint=f"its output is in {log_path}")
    produced = json.loads(answers.read_text(encoding="utf-8"))
    return [Output(str(item["text"]), float(item["latency_ms"]), item.get("error")) for item in produced]


def run_model(predict: Callable[[dict], Any], rows: list[DataRow]) -> list[Output]:
    """A logged app (the champion model's ``predict``) on every row, in this process: each row's inputs
    as one mapping, as MLflow's pyfunc takes them; a row that raises is that row's error."""
    outputs = []
    for row in rows:
        started = time.perf_counter()
        try:
            text, error = _as_text(_single(predict(dict(row.inputs)))), None
        except Exception as exc:  # noqa: BLE001 - the model's failure on one row is that row's result
            text, error = "", f"{type(exc).__name__}: {exc}"
        outputs.append(Output(text, (time.perf_counter() - started) * 1000, error))
    return outputs


def _single(answer: Any) -> Any:
    """One row's answer: a one-element list (or array, or Series) stands for its element."""
    if hasattr(answer, "tolist") and not isinstance(answer, (str, bytes)):
        answer = answer.tolist()
    return answer[0] if isinstance(answer, list) and len(answer) == 1 else answer


# --------------------------------------------------------------------------------------------------
# The child: only the standard library and the app's own imports.


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {APP}")
    parser.add_argument("--function", required=True)
    parser.add_argument("--rows", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    module_name, _, attribute = args.function.partition(":")
    sys.path.insert(0, ".")
    try:
        app = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, SyntaxError) as exc:
        print(f"cannot load the app {args.function}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    outputs = []
    for inputs in json.loads(args.rows.read_text(encoding="utf-8")):
        started = time.perf_counter()
        try:
            text, error = _as_text(app(**inputs)), None
        except Exception as exc:  # noqa: BLE001 - the app's failure on one row is that row's result
            text, error = "", f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        outputs.append({"text": text, "latency_ms": (time.perf_counter() - started) * 1000, "error": error})
    args.out.write_text(json.dumps(outputs), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

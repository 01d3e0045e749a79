"""MLflow's built-in GenAI scorers (``mlflow.genai.scorers``), run in a child Python:
``python -m mlflow_ci.tracking.scoring --request R --out O``.

The request names each scorer (its class and arguments), the judge model as MLflow's provider URI, the
number of repeats, and the rows (inputs, the app's output, expectations; ``null`` for a row where the
app raised). Each scorer is called as MLflow calls it, with the keyword arguments its ``__call__``
declares; the answer is written as plain values (``value``, ``rationale``, ``error``) per repeat, for
mlflow-ci's GenAI wing to turn into verdicts. The LLM judges reach the endpoint through the check's
budgeted proxy on loopback (``OPENAI_API_BASE``), never with the real key.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

SCORING = __name__  # `python -m` target
ARGUMENTS = ("inputs", "outputs", "expectations")
BAD_ARGUMENTS = 2  # exit code: a scorer refused its arguments (what it said is in the answer file)


def _plain(value: Any) -> Any:
    """A Feedback value as JSON: MLflow's yes/no ratings as their text, numbers and bools as they are."""
    value = getattr(value, "value", value)  # CategoricalRating is an Enum of strings
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _build(spec: dict, model: str | None) -> Any:
    from mlflow.genai import scorers

    cls = getattr(scorers, spec["class"])
    arguments = dict(spec.get("arguments") or {})
    if spec.get("llm"):
        arguments["model"] = model
    return cls(**arguments)


def _call(scorer: Any, row: dict) -> dict:
    declared = inspect.signature(scorer.__call__).parameters
    given = {"inputs": row["inputs"], "outputs": row["outputs"], "expectations": row.get("expectations") or {}}
    try:
        feedback = scorer(**{name: given[name] for name in ARGUMENTS if name in declared})
    except Exception as exc:  # noqa: BLE001 - one row's failure is that row's result
        return {"value": None, "rationale": "", "error": f"{type(exc).__name__}: {exc}"}
    error = getattr(feedback, "error", None)
    message = getattr(error, "error_message", None) or (str(error) if error else None)
    return {"value": _plain(getattr(feedback, "value", feedback)), "rationale": str(getattr(feedback, "rationale", "") or ""),
            "error": message}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {SCORING}")
    parser.add_argument("--request", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    request = json.loads(args.request.read_text(encoding="utf-8"))
    built = {}
    for spec in request["scorers"]:
        try:
            built[spec["metric"]] = _build(spec, request.get("model"))
        except Exception as exc:  # noqa: BLE001 - a scorer's own complaint about its arguments, for the config's error
            args.out.write_text(json.dumps({"refused": spec["metric"], "error": f"{type(exc).__name__}: {exc}"}), encoding="utf-8")
            return BAD_ARGUMENTS
    answers = {}
    for spec in request["scorers"]:
        repeats = int(request.get("repeats", 1)) if spec.get("llm") else 1
        answers[spec["metric"]] = [None if row is None else [_call(built[spec["metric"]], row) for _ in range(repeats)]
                                   for row in request["rows"]]
        print(f"mlflow scorer {spec['class']}: {len(request['rows'])} rows", file=sys.stderr)
    args.out.write_text(json.dumps({"answers": answers}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

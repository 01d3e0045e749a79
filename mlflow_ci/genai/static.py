"""What ``mlflow-ci validate`` can tell about ``genai:`` without running the app or asking a judge: the
rows read (every line of a JSONL file, the header of a CSV), and the app, the repository's own scorers
and the prompt templates exist where the config says. Nothing of the repository is imported."""

from __future__ import annotations

from pathlib import Path

from mlflow_ci.config import USER_METRIC
from mlflow_ci.config.loader import module_file
from mlflow_ci.errors import UsageError
from mlflow_ci.genai.runner import load_rows


def static_problems(g, root: Path) -> list[str]:
    problems = []
    if g.data is not None:
        try:
            load_rows(root / g.data)
        except UsageError as exc:
            problems.append(exc.message if exc.message.startswith("genai.data: ") else f"genai.data: {exc.message}")
    modules = [("genai.predict_fn", g.predict_fn)] + [
        (f"genai.scorers[{i}]", name) for i, (name, _) in enumerate(g.scorers) if USER_METRIC.fullmatch(name)]
    for where, spec in modules:
        module = spec.partition(":")[0]
        if module_file(root, module) is None:
            problems.append(f"{where}: no module {module} in {root} (looked for {module.replace('.', '/')}.py "
                            f"and {module.replace('.', '/')}/__init__.py)")
    for i, prompt in enumerate(g.prompts):
        if not (root / prompt.file).is_file():
            problems.append(f"genai.prompts[{i}].file: file not found: {root / prompt.file}")
    return problems

"""`mlflow-ci demo --genai`: the GenAI story offline, in a temporary folder.

1. A git repo with a FAQ answerer (a keyword retrieval and a prompt template; no model, no network) and
   40 questions, each with the facts its answer must give; ``check`` on ``main``.
2. Branch ``pr/shorter-answers`` cuts the template to 40 characters: answers lose their facts, the
   ``contains`` scorer's pass rate drops significantly on the same rows, ``check`` fails and lists them.
3. Branch ``pr/better-retrieval`` fixes two keywords: more answers give their facts, ``check`` passes.
Exit 0 when the first PR failed and the second passed, as designed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci.commands.demo import PROJECT, DemoResult, DemoStep, _banner, _check, _edit, _git, _print_summary, demo_env
from mlflow_ci.errors import MlflowCiError, UsageError

GENAI_PROJECT = PROJECT / "genai"
FILES = ("faq_app.py", "faq.json", "faq.jsonl", "train.py", "mlflow-ci.yml")


def _better_retrieval(repo: Path) -> None:
    """'when' no longer pulls every question to the opening hours; 'support' finds the contact entry."""
    path = repo / "faq.json"
    faq = json.loads(path.read_text(encoding="utf-8"))
    faq["hours"]["keywords"].remove("when")
    faq["contact"]["keywords"].append("support")
    path.write_text(json.dumps(faq, indent=2) + "\n", encoding="utf-8")


PLAN = (
    ("pr/shorter-answers", "PR 1: cut every answer to 40 characters (regresses)", "fail",
     lambda repo: _edit(repo / "faq_app.py", r'^TEMPLATE = .*$', 'TEMPLATE = "{answer:.40}"')),
    ("pr/better-retrieval", "PR 2: better keywords for two FAQ entries (improves)", "pass", _better_retrieval),
)


def run_genai_demo(directory: Path | None, *, env: Mapping[str, str], stream: TextIO) -> DemoResult:
    started = time.monotonic()
    root = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="mlflow-ci-demo-genai-"))
    repo = root / "faq-bot"
    if repo.exists() and any(repo.iterdir()):
        raise UsageError(f"demo: {repo} already exists and is not empty; pass another --dir")
    repo.mkdir(parents=True, exist_ok=True)
    denv = demo_env(env)
    denv["MLFLOW_TRACKING_URI"] = f"sqlite:///{(root / 'mlflow.db').resolve()}"
    for name in FILES:
        shutil.copy(GENAI_PROJECT / name, repo / name)
    (repo / ".gitignore").write_text(".mlflow-ci/\nmlartifacts/\nmetrics.json\n__pycache__/\n", encoding="utf-8")

    _banner(stream, f"mlflow-ci demo --genai in {root}\n1/3 main: the FAQ answerer, checked")
    _git(repo, denv, "init", "-q", "-b", "main")
    _git(repo, denv, "add", "-A")
    _git(repo, denv, "commit", "-q", "-m", "FAQ answerer: keyword retrieval and a prompt template")
    if _check(repo, denv, stream).verdict == "fail":
        raise MlflowCiError("demo: the FAQ answerer on main failed its gate; the demo project is broken")

    steps = []
    for number, (branch, title, expected, change) in enumerate(PLAN, start=2):
        _banner(stream, f"{number}/3 {branch}: {title}")
        _git(repo, denv, "checkout", "-q", "main")
        _git(repo, denv, "checkout", "-q", "-b", branch)
        change(repo)
        _git(repo, denv, "commit", "-q", "-am", title)
        outcome = _check(repo, denv, stream)
        kept = root / f"report-{branch.replace('/', '-')}.md"
        shutil.copy(outcome.report_path, kept)
        shutil.copy(outcome.result_path, root / f"result-{branch.replace('/', '-')}.json")
        steps.append(DemoStep(branch, title, expected, outcome, kept))

    result = DemoResult(root, denv["MLFLOW_TRACKING_URI"], "", tuple(steps), time.monotonic() - started)
    _print_summary(result, stream, env)
    return result

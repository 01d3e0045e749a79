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
import time
from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci.commands.demo import (
    PROJECT,
    DemoResult,
    DemoStep,
    banner,
    check_repo,
    edit_line,
    prepare,
    print_summary,
    run_git,
)
from mlflow_ci.errors import MlflowCiError

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
     lambda repo: edit_line(repo / "faq_app.py", r'^TEMPLATE = .*$', 'TEMPLATE = "{answer:.40}"')),
    ("pr/better-retrieval", "PR 2: better keywords for two FAQ entries (improves)", "pass", _better_retrieval),
)


def run_genai_demo(directory: Path | None, *, env: Mapping[str, str], stream: TextIO) -> DemoResult:
    started = time.monotonic()
    root, repo, denv = prepare(directory, env, repo_name="faq-bot", project=GENAI_PROJECT, files=FILES,
                               ignored=".mlflow-ci/\nmlartifacts/\nmetrics.json\n__pycache__/\n")

    banner(stream, f"mlflow-ci demo --genai in {root}\n1/3 main: the FAQ answerer, checked")
    run_git(repo, denv, "init", "-q", "-b", "main")
    run_git(repo, denv, "add", "-A")
    run_git(repo, denv, "commit", "-q", "-m", "FAQ answerer: keyword retrieval and a prompt template")
    if check_repo(repo, denv, stream).verdict == "fail":
        raise MlflowCiError("demo: the FAQ answerer on main failed its gate; the demo project is broken")

    steps = []
    for number, (branch, title, expected, change) in enumerate(PLAN, start=2):
        banner(stream, f"{number}/3 {branch}: {title}")
        run_git(repo, denv, "checkout", "-q", "main")
        run_git(repo, denv, "checkout", "-q", "-b", branch)
        change(repo)
        run_git(repo, denv, "commit", "-q", "-am", title)
        outcome = check_repo(repo, denv, stream)
        kept = root / f"report-{branch.replace('/', '-')}.md"
        shutil.copy(outcome.report_path, kept)
        shutil.copy(outcome.result_path, root / f"result-{branch.replace('/', '-')}.json")
        steps.append(DemoStep(branch, title, expected, outcome, kept))

    result = DemoResult(root, denv["MLFLOW_TRACKING_URI"], "", tuple(steps), time.monotonic() - started)
    print_summary(result, stream, env)
    return result

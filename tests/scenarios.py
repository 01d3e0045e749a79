"""Scenarios that both engines run — nektos/act (tests/test_act.py) and the emulator (tests/actions_harness.py,
driven by tests/test_workflow_jobs.py) — with the one outcome both must reach, as the fake GitHub received it."""

from __future__ import annotations

import json
from pathlib import Path

from fakegithub import FakeGitHub


# The iris model both engines train (tests/conftest.py's MODEL_SCRIPT reads params.json).
IRIS_CONFIG = """\
experiment: iris
model: iris
train:
  command: python train.py
  inputs: ["*.py", "params.json"]
gate:
  accuracy: {min: 0.8, max_drop: 0.05}
"""


def fraud_regresses(root: Path) -> None:
    """examples/monorepo: the fraud model's accuracy falls below its gate; churn and ranking are untouched."""
    (root / "models" / "fraud" / "params.json").write_text(json.dumps({"metrics": {"accuracy": 0.7}}))


# A monorepo PR with all-projects: a check run per model (the unchanged ones pass), one comment.
MONOREPO_PR = {
    "check_runs": {"mlflow-ci / churn": "success", "mlflow-ci / fraud": "failure", "mlflow-ci / ranking": "success"},
    "comments": 1,
    "unchanged_sections": 2,
    "fraud_fails_in_the_comment": True,
}


def monorepo_outcome(gh: FakeGitHub, pr: int, head: str) -> dict:
    """What the fake GitHub received for the monorepo PR, in MONOREPO_PR's terms (check runs on ``head`` only)."""
    bodies = [c["body"] for c in gh.comments.get(pr, [])]
    body = bodies[0] if bodies else ""
    return {
        "check_runs": {r["name"]: r["conclusion"] for r in gh.check_runs if r["head_sha"] == head},
        "comments": len(bodies),
        "unchanged_sections": body.count("nothing to check; its check passes"),
        "fraud_fails_in_the_comment": "<details open><summary>❌ fraud (models/fraud): fail" in body,
    }

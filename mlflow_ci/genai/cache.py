"""A side's answers and verdicts, kept in the tracking store so the same code on the same rows is run
and judged once: a base commit shared by many pull requests is scored by the first of them, and a
re-run of a check spends no judge calls.

The key is what decides the result: git's tree id of the config's folder at that commit (the same id
whenever the app's code is the same), the data's digest, the app function, the scorers (with the
digest of the repository's own scorer modules) and the judge's pinned settings, and mlflow-ci's
version. An entry is a JSON artifact ``mlflow_ci/genai/<key>.json`` on the candidate run of the
check that computed it, found by the tag ``mlflow_ci.genai_outputs.<key>``. A cache entry is as
trustworthy as the store it lives in (as the training run cache is); ``--no-cache`` recomputes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_ci.genai.runner import Output
from mlflow_ci.genai.scorers import Score

ARTIFACTS = "mlflow_ci/genai"
TAG_PREFIX = "mlflow_ci.genai_outputs."
VERSION = 1


@dataclass(frozen=True)
class Cached:
    outputs: list[Output]
    scores: dict[str, list[Score | None]]
    run_id: str  # the run that holds the entry


def side_key(tree: str | None, *, data: str, settings: dict[str, Any]) -> str | None:
    """The entry's key for the app at git tree ``tree`` (None: the code is not all committed, no key)."""
    if tree is None:
        return None
    from mlflow_ci import __version__

    spec = {"v": VERSION, "tree": tree, "data": data, "settings": settings,
            "mlflow_ci": __version__}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class OutputsCache:
    tracker: Any
    experiment_id: str
    work: Path

    def read(self, key: str | None, rows: int, metrics: tuple[str, ...]) -> Cached | None:
        if key is None:
            return None
        run = self.tracker.search(self.experiment_id, tags={TAG_PREFIX + key: "1"})
        if run is None:
            return None
        text = self.tracker.read_artifact_text(run.run_id, f"{ARTIFACTS}/{key}.json", self.work / "genai-cache")
        try:
            entry = json.loads(text) if text else None
            outputs = [Output(str(o["text"]), float(o["latency_ms"]), o.get("error")) for o in entry["outputs"]]
            scores = {name: [None if s is None else Score(bool(s["passed"]), str(s["rationale"]), s.get("value"))
                             for s in entry["scores"][name]] for name in metrics}
        except (ValueError, KeyError, TypeError):
            return None  # unreadable or from other scorers: computed again
        if len(outputs) != rows or any(len(v) != rows for v in scores.values()):
            return None
        return Cached(outputs, scores, run.run_id)

    def write(self, run_id: str, key: str | None, outputs: list[Output], scores: dict[str, list[Score | None]]) -> None:
        if key is None:
            return
        path = self.work / "genai-cache" / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "outputs": [{"text": o.text, "latency_ms": o.latency_ms, "error": o.error} for o in outputs],
            "scores": {name: [None if s is None else {"passed": s.passed, "rationale": s.rationale, "value": s.value}
                              for s in verdicts] for name, verdicts in scores.items()}}), encoding="utf-8")
        self.tracker.log_artifact(run_id, path, ARTIFACTS)
        self.tracker.set_tags(run_id, {TAG_PREFIX + key: "1"})

"""The bottom of the tracking wing: what every client shares, and imports none of them.

Run snapshots, mlflow-ci's tag names, tracking-URI resolution, the bounded search helpers and the
environment a training subprocess gets. The clients (MLflow's own in :mod:`.mlflow_client`, REST in
:mod:`.rest`, SQLite in :mod:`.sqlite`) sit above this module; the factory that picks one is the
package's ``__init__``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from mlflow_ci.config import WORKFLOW_JUDGE_KEY

__all__ = [  # what the wing's package re-exports
    "TAG_COMMIT",
    "TAG_BRANCH",
    "TAG_REPO_URL",
    "TAG_SOURCE_NAME",
    "TAG_SOURCE_TYPE",
    "TAG_RUN_NAME",
    "TAG_USER",
    "TAG_FINGERPRINT", "TAG_TRAIN_SECONDS",
    "TAG_VERDICT",
    "TAG_VERDICT_AT",
    "TAG_PR",
    "TAG_HEAD_SHA",
    "TAG_CANDIDATE",
    "TAG_CI_RUN_URL",
    "TAG_BASE_BRANCH",
    "TAG_BASELINE",
    "TAG_VERSION",
    "TAG_ROLE",
    "TAG_GATE_RULES",
    "TAG_ROLLED_BACK",
    "TAG_DATA_FINGERPRINT",
    "TAG_VALIDATED_RUN",
    "TAG_RELEASE_OF",
    "TAG_FORGOTTEN",
    "validated_run_of",
    "SEARCH_WINDOW",
    "RunSnapshot",
    "VersionInfo",
    "PromptInfo",
    "SearchMixin",
    "default_tracking_uri",
    "resolve_tracking_uri",
    "sqlite_path",
    "now_ms",
    "finished_with_tags",
    "first_match",
    "child_environment",
    "mlflow_env_for_run",
]

TAG_COMMIT = "mlflow.source.git.commit"
TAG_BRANCH = "mlflow.source.git.branch"
TAG_REPO_URL = "mlflow.source.git.repoURL"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_RUN_NAME = "mlflow.runName"
TAG_USER = "mlflow.user"
TAG_FINGERPRINT = "mlflow_ci.fingerprint"
TAG_TRAIN_SECONDS = "mlflow_ci.train_seconds"  # how long the training command ran
TAG_VERDICT = "mlflow_ci.verdict"
TAG_VERDICT_AT = "mlflow_ci.verdict_at."  # + a commit: a reused run's verdict for a head it was not trained at
TAG_PR = "mlflow_ci.pr"
TAG_HEAD_SHA = "mlflow_ci.head_sha"
TAG_CANDIDATE = "mlflow_ci.candidate"
TAG_CI_RUN_URL = "mlflow_ci.ci_run_url"
TAG_BASE_BRANCH = "mlflow_ci.base_branch"
TAG_BASELINE = "mlflow_ci.baseline_run_id"
TAG_VERSION = "mlflow_ci.version"
TAG_ROLE = "mlflow_ci.role"  # "base": trained in a PR's job as its baseline, not a candidate
TAG_GATE_RULES = "mlflow_ci.gate_rules"  # how many rules decided the verdict: 0 is an exploratory run, never a baseline
TAG_ROLLED_BACK = "mlflow_ci.rolled_back"  # when, by whom and why the run's model was rolled back ("" once restored)
TAG_DATA_FINGERPRINT = "mlflow_ci.data_fingerprint"  # the data the training read (train.data): its own metrics' rows
# A registered version holds a release copy of the model (a run of the release experiment, which PR credentials
# cannot write); this version tag names the run that was gated, whose metrics, tags and history stand for it.
TAG_VALIDATED_RUN = "mlflow_ci.run_id"
TAG_RELEASE_OF = "mlflow_ci.release_of"  # on a release run: the gated run its model was copied from
TAG_FORGOTTEN = "mlflow_ci.forgotten"  # when and by whom ``store reset`` took the run out of baselines and the run cache


def validated_run_of(run_id: str | None, version_tags: Mapping[str, str]) -> str | None:
    """The gated run a registered version stands for: the one promote named on it, else the run it was
    registered from (versions registered by hand, or before release copies)."""
    return version_tags.get(TAG_VALIDATED_RUN) or run_id or None

# How many recent candidates a baseline query looks at: a bounded query, never "list all runs".
SEARCH_WINDOW = 20


@dataclass(frozen=True)
class RunSnapshot:
    """What mlflow-ci needs to know about one MLflow run."""
    run_id: str
    experiment_id: str
    status: str
    start_time: int | None = None
    run_name: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def commit(self) -> str | None:
        return self.tags.get(TAG_COMMIT)

    @property
    def branch(self) -> str | None:
        return self.tags.get(TAG_BRANCH)


def default_tracking_uri(root: Path) -> str:
    """MLflow's own default (a SQLite file), anchored at the project root rather than the cwd."""
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def resolve_tracking_uri(configured: str | None, env: Mapping[str, str], root: Path) -> str:
    """MLFLOW_TRACKING_URI wins, then the config's tracking_uri, then ``sqlite:///<root>/mlflow.db``.

    Relative SQLite and file paths are made absolute so the training subprocess, which may run in
    another working directory, writes to the same store.
    """
    uri = env.get("MLFLOW_TRACKING_URI") or configured or default_tracking_uri(root)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///"):]
        if rel and not rel.startswith(":memory:"):
            uri = f"sqlite:///{(root / rel).resolve()}"
    elif "://" not in uri:
        uri = str((root / uri).resolve())
    return uri


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (options after ``?`` dropped), None for memory or other stores."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    rest = tracking_uri[len("sqlite:///"):].split("?", 1)[0]
    if not rest or rest.startswith(":memory:"):
        return None
    return Path(rest)


def now_ms() -> int:
    """Wall-clock milliseconds, MLflow's timestamp unit."""
    return int(time.time() * 1000)



@dataclass(frozen=True)
class VersionInfo:
    model: str
    version: str
    run_id: str | None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptInfo:
    """One version of a prompt in MLflow's Prompt Registry."""
    name: str
    version: str
    template: str
    tags: Mapping[str, str] = field(default_factory=dict)


class SearchMixin:
    """What every client derives from its primitives: ``search`` on top of its bounded ``search_runs``,
    ``read_artifact_text`` on top of its ``read_artifact``."""
    def read_artifact_text(self, run_id: str, artifact: str, dst: Path) -> str | None:
        """The text of a run's artifact, or None when it does not exist."""
        data = self.read_artifact(run_id, artifact, dst)
        return None if data is None else data.decode("utf-8")

    def search(
        self,
        experiment_id: str,
        *,
        tags: Mapping[str, str],
        exclude_run_id: str | None = None,
        skip_verdicts: tuple[str, ...] = (),
        require_tag: str | None = None,
    ) -> RunSnapshot | None:
        """The newest FINISHED run of the experiment whose tags equal ``tags``.

        A bounded query (``SEARCH_WINDOW`` runs, newest first) however large the experiment is.
        """
        return first_match(self.search_runs(experiment_id, tags=tags), exclude_run_id=exclude_run_id,
                           skip_verdicts=skip_verdicts, require_tag=require_tag)



def finished_with_tags(tags: Mapping[str, str], since_ms: int | None = None) -> str:
    """MLflow search filter: FINISHED runs whose tags equal ``tags`` (started at ``since_ms`` or later)."""
    clauses = [f"tags.`{k}` = '{quote_value(v)}'" for k, v in tags.items()]
    if since_ms is not None:
        clauses.append(f"attributes.start_time >= {int(since_ms)}")
    return " and ".join([*clauses, "attributes.status = 'FINISHED'"])


def first_match(runs, *, exclude_run_id=None, skip_verdicts=(), require_tag=None) -> RunSnapshot | None:
    """The first (newest) run that is not excluded, has no skipped verdict and has ``require_tag``."""
    for run in runs:
        if run.run_id == exclude_run_id or run.tags.get(TAG_VERDICT) in skip_verdicts:
            continue
        if require_tag and require_tag not in run.tags:
            continue
        return run
    return None


def quote_value(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def redact(uri: str) -> str:
    """Hide credentials embedded in a URI (``https://user:pass@host``)."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        if "@" in rest.split("/", 1)[0]:
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri



# What the code of a pull request must never hold: a GitHub token, the runner's own credentials
# (ACTIONS_RUNTIME_TOKEN, ACTIONS_ID_TOKEN_REQUEST_TOKEN, cache and results URLs...).
# The judge's key as the reusable workflow passes it is withheld too.
WITHHELD = ("GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN", WORKFLOW_JUDGE_KEY)
WITHHELD_PREFIXES = ("ACTIONS_",)


def child_environment(base: Mapping[str, str], extra: Mapping[str, str], *, trusted: bool = False) -> dict[str, str]:
    """The environment for a subprocess: ours plus ``extra`` (extra wins). The code of a pull request
    (``trusted=False``: training) gets no GitHub or runner credential (:data:`WITHHELD`); the deploy hook
    of merged code keeps them."""
    env = {k: v for k, v in base.items() if trusted or (k not in WITHHELD and not k.startswith(WITHHELD_PREFIXES))}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def mlflow_env_for_run(tracking_uri: str, experiment: str, experiment_id: str, run_id: str) -> dict[str, str]:
    """Variables that make ``mlflow.start_run()`` and autolog in the child attach to our run."""
    return {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        "MLFLOW_RUN_ID": run_id,
    }


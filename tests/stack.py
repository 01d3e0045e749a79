"""Real servers on 127.0.0.1 for the tests and the benchmarks: `mlflow server` (SQLite or PostgreSQL
behind it, a folder or an S3-compatible bucket for artifacts), PostgreSQL from Debian's packages and
moto's S3 server. Each is started in its own process group, recorded with `processes.track` and
stopped by that group's id, so nothing outlives the fixture that started it."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from processes import track, untrack

BIN = Path(sys.executable).parent
S3_KEYS = {"AWS_ACCESS_KEY_ID": "mlflow-ci-test", "AWS_SECRET_ACCESS_KEY": "mlflow-ci-test",
           "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    """This environment without CI, MLflow, AWS or proxy variables that would change what a server does."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "MLFLOW_", "GIT_", "AWS_")) and k.lower() not in ("http_proxy", "https_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update(extra)
    return env


@dataclass
class Process:
    """One server process, leader of its own process group."""

    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    log: Path | None = field(default=None, init=False, repr=False)
    name = "server"

    def spawn(self, cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path, what: str, **popen) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                         start_new_session=True, **popen)
        track(self.proc.pid, what)

    def wait_ready(self, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not up yet, whatever the client says
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout:g} s: {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log and self.log.exists() else ""

    def stop(self, first=signal.SIGTERM, grace: float = 20) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, first)
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        try:  # the leader is gone; anything left of its group goes too
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        untrack(self.proc.pid)
        self.proc = None


# --------------------------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The folder holding Debian's PostgreSQL server programs (initdb, postgres), if installed."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


@dataclass
class Postgres(Process):
    """A throw-away PostgreSQL cluster: initdb in a temp dir, the server on 127.0.0.1 (and a unix socket in
    that dir), trust authentication for loopback. As root, the cluster belongs to the `postgres` account
    (PostgreSQL refuses to run as root); the server is still started by, and stopped from, this process."""

    port: int = field(default_factory=free_port)
    user: str = "mlflow"
    name = "PostgreSQL"

    def __post_init__(self) -> None:
        self.dir: Path | None = None

    @property
    def run_as(self) -> dict:
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}

    def uri(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> "Postgres":
        pgbin = postgres_bin()
        if pgbin is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.dir = Path(tempfile.mkdtemp(prefix="mlflow-ci-pg-"))
        if self.run_as:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data, env = self.dir / "data", base_env(LC_ALL="C.UTF-8", TZ="UTC")
        try:
            subprocess.run([str(pgbin / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                            "--no-sync", "--locale=C.UTF-8"], cwd=self.dir, env=env, check=True, capture_output=True,
                           **self.run_as)
            log = self.dir / "postgres.log"  # opened by this process, so root may keep it in the cluster's folder
            self.spawn([str(pgbin / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(self.port),
                        "-k", str(self.dir), "-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off", "-c", "max_connections=200"],
                       cwd=self.dir, env=env, log=log, what=f"PostgreSQL on 127.0.0.1:{self.port}", **self.run_as)
            self.wait_ready(lambda: self.sql("postgres", "SELECT 1") is not None, timeout)
        except BaseException:
            self.stop()  # nothing half-started stays behind: the server by its group, the cluster's folder
            raise
        return self

    def sql(self, database: str, statement: str, *, autocommit: bool = True):
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=database, connect_timeout=3,
                             autocommit=autocommit) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        self.sql("postgres", f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def stop(self, first=signal.SIGINT, grace: float = 20) -> None:  # SIGINT: PostgreSQL's fast shutdown
        super().stop(first, grace)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


@dataclass
class S3(Process):
    """moto's S3-compatible server on 127.0.0.1, with one bucket."""

    root: Path
    bucket: str = "mlflow-artifacts"
    port: int = field(default_factory=free_port)
    name = "moto S3 server"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a client of this bucket needs: the endpoint and (dummy) keys."""
        return {**S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_ENDPOINT_URL_S3": self.endpoint}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    def start(self, timeout: float = 60) -> "S3":
        self.root.mkdir(parents=True, exist_ok=True)
        self.spawn([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], cwd=self.root,
                   env=base_env(), log=self.root / "moto.log", what=f"moto S3 server on 127.0.0.1:{self.port}")
        self.wait_ready(lambda: self.client().create_bucket(Bucket=self.bucket), timeout)
        return self

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@dataclass
class MlflowServer(Process):
    """`mlflow server --workers 1` on 127.0.0.1, proxying artifacts (clients never see the store behind it)."""

    root: Path
    port: int = field(default_factory=free_port)
    backend: str | None = None  # default: SQLite in root
    artifacts: str | None = None  # default: a folder in root
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    name = "mlflow server"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> "MlflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        backend = self.backend or f"sqlite:///{self.root / 'server.db'}"
        artifacts = self.artifacts or str(self.root / "artifacts")
        env = base_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **self.extra_env)
        self.spawn([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                    "--artifacts-destination", artifacts, "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", "1", *self.extra_args],
                   cwd=self.root, env=env, log=self.root / "server.log", what=f"mlflow server on 127.0.0.1:{self.port}")
        self.wait_ready(self._healthy, timeout)
        return self

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
            return answer.status == 200


# --------------------------------------------------------------------------------------------------


@dataclass
class RayHead(Process):
    """A Ray head on 127.0.0.1 only (`ray start --head --block`, its GCS, dashboard and Jobs API on
    loopback, as RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 and --node-ip-address make it). Every process it
    starts — workers, job supervisors, a job's own processes, which Ray puts in sessions of their own —
    inherits a random tag in its environment; stopping kills the group, then whatever carries the tag."""

    root: Path
    port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    cpus: int = 2
    name = "ray head"
    tag: str = field(default_factory=lambda: os.urandom(8).hex())

    @property
    def jobs_address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """What a client on this machine needs to reach the head on loopback only."""
        return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", **extra}

    def start(self, timeout: float = 120) -> "RayHead":
        from mlflow_ci.process import PROCESS_TAG

        self.root.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix="mcr-", dir="/tmp"))  # Ray's socket paths must stay short
        self.temp = temp
        env = base_env(**self.env(), **{PROCESS_TAG: self.tag})
        self.spawn([str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                    "--port", str(self.port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
                    "--include-dashboard", "true", "--num-cpus", str(self.cpus), "--object-store-memory", str(400 * 2**20),
                    "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                    "--temp-dir", str(temp), "--disable-usage-stats"],
                   cwd=self.root, env=env, log=self.root / "ray.log", what=f"ray head on 127.0.0.1:{self.port}")
        self.wait_ready(self._ready, timeout)
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.jobs_address}/api/jobs/", timeout=2) as answer:
            return answer.status == 200

    def jobs(self) -> list[dict]:
        """Every job the cluster knows, as its Jobs API lists them."""
        import json

        with urllib.request.urlopen(f"{self.jobs_address}/api/jobs/", timeout=10) as answer:
            return json.loads(answer.read())

    def stop(self, first=signal.SIGTERM, grace: float = 30) -> None:
        from mlflow_ci.process import kill_tagged

        super().stop(first, grace)
        kill_tagged(self.tag)
        shutil.rmtree(getattr(self, "temp", ""), ignore_errors=True)

"""mlflow-ci benchmarks: every figure is a ratio or difference against a reference measured in the
same run, on the same machine (machines are noisy; absolute numbers travel badly).

    python benchmarks/run.py                     # every row
    python benchmarks/run.py --quick             # fewer runs and repeats; no install or setup rows
    python benchmarks/run.py --only bootstrap,shared
    python benchmarks/run.py --readme            # and replace the README's table with this run's

What each row measures, against what, and its target: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent
sys.path.insert(0, str(ROOT / "tests"))  # the same real servers the tests start (tests/stack.py)

from stack import S3, MlflowServer, Postgres  # noqa: E402

from mlflow_ci.commands.demo import REGRESS_FEATURES  # noqa: E402 - the demo's regressing pull request


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLFLOW_"))}
    base.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@example.invalid",
                GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@example.invalid")
    base["PATH"] = os.pathsep.join([str(BIN), base.get("PATH", "")])
    base.update(extra)
    return base


def timed(cmd: list[str], cwd: Path, environ: dict[str, str], *, ok=(0,)) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed


def median(cmd, cwd, environ, repeat: int) -> float:
    return statistics.median(timed(cmd, cwd, environ) for _ in range(repeat))


def project(root: Path, command: str, *, inputs: bool = False) -> Path:
    root.mkdir(parents=True)
    (root / "make_metrics.py").write_text(textwrap.dedent("""
        import json, sys, time
        time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
        json.dump({"accuracy": 0.9}, open("metrics.json", "w"))
    """))
    config = f"experiment: bench\ntrain:\n  command: {command}\n  metrics_file: metrics.json\n"
    if inputs:
        config += '  inputs: ["*.py"]\n'
    config += "gate:\n  accuracy: {min: 0.5}\n"
    (root / "mlflow-ci.yml").write_text(config)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "bench"], cwd=root, check=True, env=env())
    return root


def bench_overhead(work: Path, repeat: int) -> list[dict]:
    rows = []
    proj = project(work / "overhead", "python make_metrics.py")
    alone = median([PY, "make_metrics.py"], proj, env(), repeat)
    store = f"sqlite:///{work / 'overhead.db'}"
    check = ["mlflow-ci", "check", "--no-cache", "--no-publish"]
    timed(check, proj, env(MLFLOW_TRACKING_URI=store))  # creates the store and experiment
    local = median(check, proj, env(MLFLOW_TRACKING_URI=store), repeat)
    rows.append(row("overhead, local SQLite store", local, alone, "difference", local - alone, 1.5, "s"))
    server = MlflowServer(work / "server").start()
    try:
        timed(check, proj, env(MLFLOW_TRACKING_URI=server.uri))
        remote = median(check, proj, env(MLFLOW_TRACKING_URI=server.uri), repeat)
    finally:
        server.stop()
    rows.append(row("overhead, local mlflow server", remote, alone, "difference", remote - alone, 1.5, "s"))
    return rows


def bench_cache(work: Path, seconds: float) -> list[dict]:
    rows = []
    check = ["mlflow-ci", "check", "--no-publish"]
    server = MlflowServer(work / "mlflow-server-cache").start()
    try:
        for label, uri in (("local SQLite", f"sqlite:///{work / 'cache.db'}"), ("mlflow server", server.uri)):
            proj = project(work / f"cache-{label.split()[-1].lower()}", f"python make_metrics.py {seconds}", inputs=True)
            environ = env(MLFLOW_TRACKING_URI=uri)
            first = timed(check, proj, environ)
            second = timed(check, proj, environ)
            rows.append(row(f"cache, unchanged inputs, {label} (training {seconds:g} s)", second, first, "ratio",
                            second / first, 0.15, ""))
    finally:
        server.stop()
    return rows


def seed_runs(uri: str, count: int) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.create_experiment("bench", artifact_location=tempfile.mkdtemp())
    for i in range(count):
        run = client.create_run(exp, tags={"mlflow.source.git.branch": "main", "mlflow.source.git.commit": f"{i:040x}",
                                           "mlflow_ci.verdict": "pass"})
        client.log_batch(run.info.run_id, metrics=[Metric("accuracy", 0.8 + i * 1e-6, 0, 0)])
        client.set_terminated(run.info.run_id)


def compare_seconds(uri: str, proj: Path, repeat: int) -> float:
    """Baseline lookup + compare, in process, with the client `check` would use for this store."""
    sys.path.insert(0, str(ROOT))
    from mlflow_ci.compare import compare
    from mlflow_ci.config.loader import load_config
    from mlflow_ci.gitctx import GitContext
    from mlflow_ci.tracking import open_tracker

    cfg = load_config(proj / "mlflow-ci.yml")
    tracker = open_tracker(uri, {})
    exp = tracker.experiment_id("bench", create=False)
    candidate = tracker.search(exp, tags={"mlflow.source.git.branch": "main"})
    ctx = GitContext(commit="f" * 40, branch="feature", base_branch="main", base_commit=f"{5:040x}")
    compare(tracker, cfg, ctx, candidate)  # warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = compare(tracker, cfg, ctx, candidate)
        times.append(time.perf_counter() - start)
        assert result.baseline is not None
    return statistics.median(times)


def bench_scale(work: Path, small: int, large: int, repeat: int) -> list[dict]:
    proj = project(work / "scale", "python make_metrics.py")
    in_process, command = {}, {}
    for count in (small, large):
        uri = f"sqlite:///{work / f'scale-{count}.db'}"
        seed_runs(uri, count)
        in_process[count] = compare_seconds(uri, proj, repeat)
        run_id = json.loads(subprocess.run(
            [PY, "-c", f"from mlflow.tracking import MlflowClient; c = MlflowClient({uri!r}); "
             "e = c.get_experiment_by_name('bench').experiment_id; "
             "print(__import__('json').dumps(c.search_runs([e], max_results=1)[0].info.run_id))"],
            capture_output=True, text=True, check=True).stdout)
        cmd = ["mlflow-ci", "compare", "--run", run_id, "--base-branch", "main"]
        command[count] = median(cmd, proj, env(MLFLOW_TRACKING_URI=uri), repeat)
    return [
        row(f"scale, baseline lookup + compare in process, {large:,} vs {small} runs", in_process[large], in_process[small],
            "ratio", in_process[large] / in_process[small], 1.5, ""),
        row(f"scale, `mlflow-ci compare` command, {large:,} vs {small} runs", command[large], command[small],
            "ratio", command[large] / command[small], 1.5, ""),
    ]


def seed_postgres(pg: Postgres, database: str, experiment_id: str, count: int) -> None:
    """``count`` finished, gated runs written straight into MLflow's tables (the REST API would take hours
    for 100,000): run i has commit ``{i:040x}`` on main, fingerprint ``md5('fp' || i)`` and one metric, and
    starts 30 minutes after run i - 1 (48 runs a day: 100,000 runs are 5.7 years of a busy project)."""
    run = "md5('{e}-' || i)".format(e=experiment_id)
    series = f"FROM generate_series(1, {count}) AS i"
    pg.sql(database, f"""
        INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time,
                          end_time, source_version, lifecycle_stage, artifact_uri, experiment_id)
        SELECT {run}, 'run-' || i, 'LOCAL', '', '', 'bench', 'FINISHED', 1600000000000 + i::bigint * 1800000,
               1600000000000 + i::bigint * 1800000 + 500, '', 'active', 'mlflow-artifacts:/bench/' || {run}, {experiment_id} {series};
        INSERT INTO tags (key, value, run_uuid)
        SELECT t.key, CASE t.key WHEN 'mlflow.source.git.commit' THEN lpad(to_hex(i), 40, '0')
                                 WHEN 'mlflow_ci.fingerprint' THEN md5('fp' || i) ELSE t.value END, {run}
        {series} CROSS JOIN (VALUES ('mlflow.source.git.branch', 'main'), ('mlflow.source.git.commit', ''),
                                    ('mlflow_ci.fingerprint', ''), ('mlflow_ci.verdict', 'pass')) AS t(key, value);
        INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
        SELECT 'accuracy', 0.8 + i * 1e-7, 1600000000000 + i::bigint * 1800000, {run}, 0, false {series};
        INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
        SELECT 'accuracy', 0.8 + i * 1e-7, 1600000000000 + i::bigint * 1800000, 0, false, {run} {series};
        ANALYZE;""")


# The index docs/shared-server.md adds to a PostgreSQL store (what mlflow-ci adds to a local SQLite store).
TAG_VALUE_INDEX_SQL = (ROOT / "docs" / "shared-server" / "tag-index.sql").read_text()


def lookup_seconds(uri: str, proj: Path, count: int, repeat: int) -> tuple[float, float]:
    """The two lookups a check makes against a tracking server, in process through mlflow-ci's REST client:
    the training cache (a run with this fingerprint, oldest run's: the worst case for a newest-first search)
    and the baseline of the base branch with the compare (the base commit is the oldest run's too)."""
    from mlflow_ci.compare import compare
    from mlflow_ci.config.loader import load_config
    from mlflow_ci.gitctx import GitContext
    from mlflow_ci.tracking import open_tracker
    from mlflow_ci.tracking.base import TAG_FINGERPRINT, TAG_VERDICT

    tracker = open_tracker(uri, {})
    exp = tracker.experiment_id("bench", create=False)
    cfg = load_config(proj / "mlflow-ci.yml")
    newest = tracker.search(exp, tags={"mlflow.source.git.commit": f"{count:040x}"})
    ctx = GitContext(commit="f" * 40, branch="feature", base_branch="main", base_commit=f"{1:040x}")
    oldest_fp = hashlib.md5(b"fp1").hexdigest()

    def cache() -> object:
        return tracker.search(exp, tags={TAG_FINGERPRINT: oldest_fp}, skip_verdicts=("error",), require_tag=TAG_VERDICT)

    def baseline() -> object:
        return compare(tracker, cfg, ctx, newest).baseline

    timings = []
    for lookup in (cache, baseline):
        assert lookup() is not None  # warm, and found
        timings.append(statistics.median(_seconds(lookup) for _ in range(repeat)))
    return timings[0], timings[1]


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def bench_shared(work: Path, small: int, large: int, repeat: int) -> list[dict]:
    """`mlflow server` on PostgreSQL with artifacts in an S3-compatible bucket (moto): the check's lookups
    with ``large`` runs in the experiment against ``small``."""
    proj = project(work / "shared-project", "python make_metrics.py")
    pg, s3 = Postgres().start(), None
    measured = {}
    try:
        s3 = S3(work / "s3").start()
        for count in (small, large):
            server = MlflowServer(work / f"shared-{count}", backend=pg.create_database(f"mlflow_{count}"),
                                  artifacts=f"s3://{s3.bucket}/{count}", extra_env=s3.env()).start()
            try:
                from mlflow_ci.tracking import open_tracker

                exp = open_tracker(server.uri, {}).experiment_id("bench", create=True)
                seed_postgres(pg, f"mlflow_{count}", exp, count)
                stock = lookup_seconds(server.uri, proj, count, repeat)
                pg.sql(f"mlflow_{count}", TAG_VALUE_INDEX_SQL + "; ANALYZE")
                measured[count] = (*stock, *lookup_seconds(server.uri, proj, count, repeat))
            finally:
                server.stop()
    finally:
        if s3 is not None:
            s3.stop()
        pg.stop()
    rows = []
    for i, what in enumerate(("training-cache lookup, MLflow's schema", "baseline lookup + compare, MLflow's schema",
                              "training-cache lookup, with the tag index", "baseline lookup + compare, with the tag index")):
        few, many = measured[small][i], measured[large][i]
        rows.append(row(f"PostgreSQL + S3 server, {what}, {large:,} vs {small} runs", many, few, "ratio", many / few, 1.5, ""))
    return rows


def bench_startup(repeat: int) -> list[dict]:
    here = Path.cwd()
    base = median([PY, "-c", "pass"], here, env(), repeat)
    helped = median([str(BIN / "mlflow-ci"), "--help"], here, env(), repeat)
    check = median([str(BIN / "mlflow-ci"), "check", "--help"], here, env(), repeat)
    return [row("start-up, mlflow-ci --help", helped, base, "difference", helped - base, 0.1, "s"),
            row("start-up, mlflow-ci check --help", check, base, "difference", check - base, 0.1, "s")]


def bench_store(work: Path, repeat: int) -> list[dict]:
    """A PR check with no store (base trained in-job) vs with main's store restored (`store restore`)."""
    source = work / "demo-origin"
    shutil.copytree(ROOT / "mlflow_ci" / "demo_project", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / ".gitignore").write_text(".mlflow-ci/\nmlflow.db\nmlartifacts/\nmlflow-ci-store.json\n")
    git = ["git", "-c", "advice.detachedHead=false"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=source, check=True)
    subprocess.run([*git, "add", "-A"], cwd=source, check=True)
    subprocess.run([*git, "commit", "-qm", "main"], cwd=source, check=True, env=env())
    ci = env(GITHUB_ACTIONS="true")
    cli = [str(BIN / "mlflow-ci")]
    timed([*cli, "check", "--no-publish"], source, env())  # main's run, as the deploy workflow gates it
    saved = work / "saved-store"
    timed([*cli, "store", "save", "--to", str(saved), "--keep", "0"], source, env())
    subprocess.run([*git, "checkout", "-q", "-b", "pr"], cwd=source, check=True)
    main = subprocess.run([*git, "rev-parse", "HEAD"], cwd=source, check=True, capture_output=True, text=True).stdout.strip()
    params = source / "params.yaml"  # the demo's regressing pull request: both paths must fail it
    params.write_text(re.sub(r"(?m)^features: .*$", REGRESS_FEATURES, params.read_text()))
    subprocess.run([*git, "commit", "-qam", "pr"], cwd=source, check=True, env=env())

    def runner(i: int, restore: bool) -> float:
        clone = work / f"runner-{i}-{restore}"
        subprocess.run([*git, "clone", "-q", "-b", "pr", str(source), str(clone)], check=True)
        subprocess.run([*git, "branch", "-q", "main", "origin/main"], cwd=clone, check=True)
        started = time.perf_counter()
        if restore:
            timed([*cli, "store", "restore", "--from", str(saved)], clone, ci)
        timed([*cli, "check", "--no-publish", "--base-branch", "main"], clone, ci, ok=(1,))  # the verdict timed: fail
        elapsed = time.perf_counter() - started
        result = json.loads((clone / ".mlflow-ci" / "result.json").read_text())
        expected = f"base_commit:{main}" if restore else f"base_trained:{main}"
        if result["verdict"] != "fail" or (result["baseline"] or {}).get("source") != expected:
            raise SystemExit(f"store benchmark: expected verdict fail against {expected}, got {result['verdict']} "
                             f"against {(result['baseline'] or {}).get('source')}")
        return elapsed

    restored = statistics.median(runner(i, True) for i in range(repeat))
    fresh = statistics.median(runner(i, False) for i in range(repeat))
    return [row("store, a regressing first PR with nothing restored (base trained and scored in-job) vs a restored store, "
                "demo project (both fail it)",
                fresh, restored, "ratio", fresh / restored, None, "")]


def bench_setup(work: Path) -> list[dict]:
    uv = shutil.which("uv") or str(BIN / "uv")
    results = {}
    for tool in ("pip", "uv"):
        venv = work / f"venv-{tool}"
        subprocess.run([PY, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        if tool == "pip":
            cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)]
        else:
            cmd = [uv, "pip", "install", "-q", "--python", str(python), str(ROOT)]
        results[tool] = timed(cmd, work, env())
    return [row("setup, fresh venv: uv vs pip", results["uv"], results["pip"], "ratio", results["uv"] / results["pip"], None, "")]


EVAL_SCRIPT = textwrap.dedent("""
    import mlflow, mlflow.sklearn, pandas as pd, sklearn
    from sklearn.linear_model import LogisticRegression
    data = pd.read_csv("train.csv")
    model = LogisticRegression(max_iter=500).fit(data.drop(columns=["label"]), data["label"])
    with mlflow.start_run():
        mlflow.sklearn.log_model(model, name="model", pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
""")


def eval_project(root: Path, evaluate: bool) -> Path:
    import numpy as np
    import pandas as pd

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train.csv", 5000), ("eval.csv", 20000)):
        X = rng.normal(size=(n, 8))
        frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
        frame["label"] = (X[:, 0] + X[:, 1] + rng.normal(0, 0.5, n) > 0).astype(int)
        frame.to_csv(root / name, index=False)
    (root / "train.py").write_text(EVAL_SCRIPT)
    config = "experiment: bench-eval\ntrain:\n  command: python train.py\ngate:\n"
    config += ("  eval.accuracy: {min: 0.5}\nevaluate:\n  data: eval.csv\n  target: label\n  task: classification\n"
               if evaluate else "  train_rows: {min: 0, required: false}\n")
    (root / "mlflow-ci.yml").write_text(config)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "bench"], cwd=root, check=True, env=env())
    return root


def bench_eval_cache(work: Path, repeat: int) -> list[dict]:
    """A cached check (unchanged inputs) with evaluate: against the same cached check without it: the
    models' outputs on unchanged data are read back from the runs, no model is loaded."""
    check = ["mlflow-ci", "check", "--no-publish"]
    seconds = {}
    for evaluate in (False, True):
        proj = eval_project(work / f"eval-cache-{evaluate}", evaluate)
        environ = env(MLFLOW_TRACKING_URI=f"sqlite:///{work / f'eval-cache-{evaluate}.db'}")
        timed(check, proj, environ)  # trains, evaluates, keeps the outputs
        seconds[evaluate] = median(check, proj, environ, repeat)
    return [row("cached check with evaluate: (20,000 rows) vs without", seconds[True], seconds[False], "ratio",
                seconds[True] / seconds[False], 1.5, "")]


GENAI_APP = """
import time
FAQ = {"hours": "We are open 9 to 5.", "refund": "Refunds take 14 days.", "shipping": "Free over 50 EUR."}
TEMPLATE = "{text}"

def answer(topic, n):
    time.sleep(0.03)  # an LLM call, roughly
    return TEMPLATE.format(text=FAQ[topic])
"""


def genai_project(root: Path, rows: int) -> Path:
    root.mkdir(parents=True)
    (root / "faq_app.py").write_text(GENAI_APP)
    (root / "make_metrics.py").write_text('import json\njson.dump({"ok": 1.0}, open("metrics.json", "w"))\n')
    facts = {"hours": "9 to 5", "refund": "14 days", "shipping": "50 EUR"}
    lines = [json.dumps({"inputs": {"topic": t, "n": n}, "expectations": {"expected_facts": [facts[t]]}})
             for n in range(rows) for t in [list(facts)[n % 3]]]
    (root / "faq.jsonl").write_text("\n".join(lines) + "\n")
    (root / ".gitignore").write_text(".mlflow-ci/\nmetrics.json\n")
    (root / "mlflow-ci.yml").write_text(
        "experiment: bench-genai\ntrain:\n  command: python make_metrics.py\n  metrics_file: metrics.json\n"
        "genai:\n  data: faq.jsonl\n  predict_fn: faq_app:answer\n  scorers: [contains]\n"
        "gate:\n  genai.contains: {min: 0.5}\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", *args], cwd=root, check=True, env=env())
    return root


def bench_genai_cache(work: Path, repeat: int, rows: int = 60) -> list[dict]:
    """GenAI checks on one base commit: the first pull request's check runs and scores both apps; a second
    pull request on the same base finds the base's answers and verdicts in the store and runs only its own
    app; a re-run of that check reuses both sides."""
    check = ["mlflow-ci", "check", "--no-publish", "--base-branch", "main"]
    first, second, rerun = [], [], []
    for i in range(repeat):
        proj = genai_project(work / f"genai-cache-{i}", rows)
        environ = env(MLFLOW_TRACKING_URI=f"sqlite:///{work / f'genai-cache-{i}.db'}")
        timed(["mlflow-ci", "train"], proj, environ)  # the store exists before anything is timed (no GenAI yet)
        for branch, template, times in (("pr-1", "{text} ", first), ("pr-2", "Hi. {text}", second)):
            subprocess.run(["git", "checkout", "-q", "-B", branch, "main"], cwd=proj, check=True)
            app = (proj / "faq_app.py").read_text().replace('TEMPLATE = "{text}"', f"TEMPLATE = {template!r}")
            (proj / "faq_app.py").write_text(app)
            subprocess.run(["git", "commit", "-qam", branch], cwd=proj, check=True, env=env())
            times.append(timed(check, proj, environ))
        rerun.append(timed(check, proj, environ))
    base = statistics.median(first)
    return [row(f"GenAI check, base commit already scored ({rows} rows, 30 ms/row) vs not", statistics.median(second), base,
                "ratio", statistics.median(second) / base, 0.8, ""),
            row("GenAI check re-run, both sides reused vs neither", statistics.median(rerun), base, "ratio",
                statistics.median(rerun) / base, 0.5, "")]


def bench_perf_noise(trials: int) -> list[dict]:
    """perf.* A/A: one scikit-learn model measured against a copy of itself, ``trials`` checks, with a
    busy process on the other core for half of them: how far the candidate/baseline ratio strays when
    nothing changed (what a max_drop_pct limit must stay above)."""
    import pickle

    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mlflow_ci.config.models import PerfConfig
    from mlflow_ci.evaluate import perf

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    twin = pickle.loads(pickle.dumps(model))
    subjects = [perf.Subject(role, lambda rows, m=m: m.predict_proba(X.iloc[rows]), None)
                for role, m in (("candidate", model), ("baseline", twin))]
    worst = {"perf.latency_p95_ms": 1.0, "perf.batch_ms_per_1k_p50": 1.0}
    seconds = []
    for i in range(trials):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if i % 2 else None
        try:
            start = time.perf_counter()
            got = perf.measure(subjects, len(X), PerfConfig())
            seconds.append(time.perf_counter() - start)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        for name in worst:
            ratio = got["candidate"][name] / got["baseline"][name]
            worst[name] = max(worst[name], ratio, 1 / ratio)
    mean = sum(seconds) / len(seconds)
    return [row(f"perf A/A, worst of {trials} checks: {name} ratio (identical models)", mean, mean, "ratio", worst[name], 2.0, "")
            for name in worst]


def bench_fingerprint(work: Path, gigabytes: float) -> list[dict]:
    """The run-cache fingerprint of a project with ``gigabytes`` of data files git tracks: the new path
    (blob ids from git's index) against hashing every byte as the fingerprint did before (sha256)."""
    from mlflow_ci.config.loader import parse_config
    from mlflow_ci.fingerprint import fingerprint, input_files
    from mlflow_ci.provenance import file_sha256

    root = work / "fingerprint"
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text("print('train')\n")
    files, chunk = 8, os.urandom(1 << 20)
    for i in range(files):
        with (root / "data" / f"part-{i}.bin").open("wb") as handle:
            for _ in range(int(gigabytes * 1024 / files)):
                handle.write(chunk)
    quiet = {"capture_output": True, "check": True}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, **quiet)
    subprocess.run(["git", "-c", "core.bigFileThreshold=1m", "add", "-A"], cwd=root, **quiet)
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "data"], cwd=root, **quiet)
    cfg = parse_config("experiment: e\ntrain: {command: python train.py}\n", root / "mlflow-ci.yml")
    start = time.perf_counter()
    for rel in input_files(cfg):
        file_sha256(root / rel)
    hashing = time.perf_counter() - start
    fingerprint(cfg)  # the first call may write its cache; time the steady state
    start = time.perf_counter()
    fingerprint(cfg)
    ours = time.perf_counter() - start
    return [row(f"fingerprint of {gigabytes:g} GB of tracked data files vs hashing every byte", ours, hashing, "ratio",
                ours / hashing, 0.01, "")]


def bench_bootstrap(rows: int, resamples: int) -> list[dict]:
    """The paired bootstrap of six metrics for two models, batched (mlflow-ci's) against the same
    statistics one resample at a time (multinomial weights, one product and one AUC pass each: the
    previous implementation's shape)."""
    import numpy as np

    from mlflow_ci.evaluate.metrics import build_metric, paired_bootstrap

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, rows)
    scores = [np.clip(y * a + rng.normal(b, 0.25, rows), 0.001, 0.999) for a, b in ((0.6, 0.2), (0.55, 0.22))]
    cand, base = (np.column_stack([1 - s, s]) for s in scores)
    names = ["accuracy", "f1", "precision", "recall", "log_loss", "roc_auc"]
    classes = np.array([0, 1])
    start = time.perf_counter()
    paired_bootstrap(names, "classification", y, cand, base, classes=classes, resamples=resamples, seed=0)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    metrics = [build_metric(name, "classification", y, out, classes) for name in names for out in (cand, base)]
    for _ in range(resamples):
        weights = np.bincount(rng.integers(0, rows, rows), minlength=rows)
        for metric in metrics:
            metric.value(weights)
    reference = time.perf_counter() - start
    return [row(f"paired bootstrap, {resamples:,} resamples of {rows:,} rows, 6 metrics x 2 models: batched vs one resample at a time",
                ours, reference, "ratio", ours / reference, 0.1, "")]


def engine_rows(folder: Path, rows: int, chunk: int = 1_000_000) -> None:
    """``rows`` generated binary-classification rows (5 features, the label) as Parquet files of ``chunk``
    rows, written a chunk at a time."""
    import numpy as np
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(rows)
    for index, first in enumerate(range(0, rows, chunk)):
        count = min(chunk, rows - first)
        frame = pd.DataFrame(rng.normal(size=(count, 5)), columns=[f"f{i}" for i in range(5)])
        frame["label"] = (frame.f0 + 0.5 * frame.f1 + rng.normal(size=count) > 0).astype(int)
        frame.to_parquet(folder / f"part-{index:04d}.parquet", row_group_size=250_000, index=False)


def bench_engines(work: Path, small: int, large: int, resamples: int) -> list[dict]:
    """Evaluation of generated Parquet rows on Spark local[2] and on a Ray head (127.0.0.1), against the
    local engine with every row in memory: wall time, and the runner process's peak memory from ``small``
    to ``large`` rows (each run in a process of its own, benchmarks/engines.py)."""
    from enginekit import saved_models
    from stack import RayHead

    models = saved_models(str(work / "engine-models"))
    for rows in (small, large):
        engine_rows(work / f"rows-{rows}", rows)
    head = RayHead(work / "ray-head").start()
    try:
        environ = env(**head.env(), RAY_ADDRESS=head.address, MLFLOW_CI_SPARK_MASTER="local[2]", SPARK_LOCAL_IP="127.0.0.1")
        got = {}
        for engine in ("memory", "spark", "ray"):
            for rows in (small, large):
                proc = subprocess.run([PY, str(ROOT / "benchmarks" / "engines.py"), engine, str(work / f"rows-{rows}"),
                                       str(models["candidate"].parent), str(resamples)], env=environ, capture_output=True,
                                      text=True, check=True)
                got[engine, rows] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        head.stop()
    out, scale = [], f"{large // 1_000_000} M"
    for engine, label in (("spark", "Spark local[2]"), ("ray", "Ray (2 CPUs)")):
        ours, ref = got[engine, large]["seconds"], got["memory", large]["seconds"]
        out.append(row(f"evaluate {scale} rows on {label} vs the local engine (in memory): wall time", ours, ref, "ratio",
                       ours / ref, None, ""))
    for engine, label, target in (("spark", "Spark", 1.25), ("ray", "Ray", 1.25), ("memory", "the local engine", None)):
        big, few = got[engine, large]["peak_mb"], got[engine, small]["peak_mb"]
        out.append(row(f"runner peak memory, {scale} vs {small // 1_000_000} M rows, {label} (MB)", big, few, "ratio",
                       big / few, target, "MB"))
    for engine, label in (("spark", "Spark"), ("ray", "Ray"), ("memory", "the local engine")):
        big, few = got[engine, large]["seconds"], got[engine, small]["seconds"]
        out.append(row(f"wall time, {scale} vs {small // 1_000_000} M rows, {label}", big, few, "ratio", big / few,
                       1.25 * large / small, ""))
    per_row = (got["memory", large]["peak_mb"] - got["memory", small]["peak_mb"]) / (large - small)
    fits = (8192 - got["memory", small]["peak_mb"]) / per_row + small
    print(f"engines: the local engine grows {per_row * 1e6:.0f} MB per million rows: about {fits / 1e6:.0f} M rows "
          f"of 5 features before 8 GB", file=sys.stderr)
    return out


def bench_install(work: Path) -> list[dict]:
    """Cold installs (fresh virtualenv, empty uv cache, packages from PyPI): mlflow-ci for the PR check
    against a tracking server (no extras), for a local store (`[local]`), and full MLflow alone."""
    uv = shutil.which("uv") or str(BIN / "uv")
    measured = {}
    for name, spec in (("server", str(ROOT)), ("local", f"{ROOT}[local]"), ("mlflow", "mlflow==3.17.2")):
        venv, cache = work / f"install-{name}", work / f"uv-cache-{name}"
        subprocess.run([uv, "venv", "-q", "--python", PY, str(venv)], check=True)
        start = time.perf_counter()
        subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), spec], check=True,
                       env={**os.environ, "UV_CACHE_DIR": str(cache)})
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6
        measured[name] = (seconds, size)
    (server_s, server_mb), (local_s, local_mb), (full_s, full_mb) = measured["server"], measured["local"], measured["mlflow"]
    return [row("cold install, mlflow-ci for a tracking server vs full MLflow alone (seconds)", server_s, full_s, "ratio",
                server_s / full_s, 0.5, ""),
            row(f"cold install size, mlflow-ci for a tracking server {server_mb:.0f} MB vs full MLflow {full_mb:.0f} MB",
                server_mb, full_mb, "ratio", server_mb / full_mb, 0.25, ""),
            row(f"cold install, mlflow-ci[local] ({local_mb:.0f} MB) vs full MLflow alone (seconds)", local_s, full_s, "ratio",
                local_s / full_s, None, "")]


def row(name, ours, reference, kind, value, target, unit) -> dict:
    ok = None if target is None else value < target
    return {"benchmark": name, "ours_s": float(f"{ours:.3g}"), "reference_s": float(f"{reference:.3g}"), "kind": kind,
            "value": round(value, 3), "target": target, "unit": unit, "ok": ok}


def table(rows: list[dict]) -> str:
    lines = ["| benchmark | ours (s) | reference (s) | figure | target | met |", "|---|---:|---:|---:|---:|:-:|"]
    for r in rows:
        figure = f"{r['value']:+.2f} s" if r["kind"] == "difference" else f"{r['value']:.3f}×"
        target = "" if r["target"] is None else (f"< {r['target']} s" if r["kind"] == "difference" else f"< {r['target']}×")
        met = {True: "yes", False: "NO", None: ""}[r["ok"]]
        # memory rows carry megabytes in the two measurement cells, and say so
        ours, ref = ((f"{r['ours_s']:.0f} MB", f"{r['reference_s']:.0f} MB") if r["unit"] == "MB"
                     else (f"{r['ours_s']:.3g}", f"{r['reference_s']:.3g}"))
        lines.append(f"| {r['benchmark']} | {ours} | {ref} | {figure} | {target} | {met} |")
    return "\n".join(lines)


def write_readme(rows: list[dict], command: str) -> None:
    """Put this run's table between the README's benchmark markers (the whole table, never a merge)."""
    text = README.read_text(encoding="utf-8")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    block = (f"Measured on {time.strftime('%Y-%m-%d')} on this project's {os.cpu_count()}-core machine, "
             f"one run of `{command}`:\n\n{table(rows)}\n")
    README.write_text(f"{head}{README_START}\n{block}{README_END}{tail}", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs and repeats, no setup row")
    parser.add_argument("--train-seconds", type=float, default=10.0, help="training time for the cache row")
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the large experiment of the scale row")
    parser.add_argument("--shared-runs", type=int, default=100_000,
                        help="runs in the large experiment of the PostgreSQL + S3 row")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--readme", action="store_true", help="replace the README's benchmark table with this run's")
    parser.add_argument("--fingerprint-gb", type=float, default=2.0, help="data size of the fingerprint row")
    parser.add_argument("--only", default="overhead,cache,evalcache,genaicache,perfnoise,fingerprint,bootstrap,engines,install,scale,shared,startup,setup,store",
                        help="comma-separated subset of: overhead, cache, evalcache, genaicache, perfnoise, fingerprint, bootstrap, engines, install, scale, shared, startup, setup, store")
    args = parser.parse_args()
    only = set(args.only.split(","))
    repeat = 3 if args.quick else 5
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-bench-") as tmp:
        work = Path(tmp)
        rows = []
        if "overhead" in only:
            rows += bench_overhead(work, repeat)
        if "cache" in only:
            rows += bench_cache(work, 3.0 if args.quick else args.train_seconds)
        if "evalcache" in only:
            rows += bench_eval_cache(work, repeat)
        if "genaicache" in only:
            rows += bench_genai_cache(work, repeat)
        if "perfnoise" in only:
            rows += bench_perf_noise(10 if args.quick else 20)
        if "fingerprint" in only:
            rows += bench_fingerprint(work, 0.25 if args.quick else args.fingerprint_gb)
        if "bootstrap" in only:
            rows += bench_bootstrap(100_000, 200 if args.quick else 1000)
        if "engines" in only:
            rows += bench_engines(work, 1_000_000, 2_000_000 if args.quick else 10_000_000, 200)
        if "install" in only and not args.quick:
            rows += bench_install(work)
        if "scale" in only:
            rows += bench_scale(work, 10, 1_000 if args.quick else args.runs, repeat)
        if "shared" in only:
            rows += bench_shared(work, 100, 10_000 if args.quick else args.shared_runs, repeat * 2)
        if "startup" in only:
            rows += bench_startup(repeat * 2)
        if "setup" in only and not args.quick:
            rows += bench_setup(work)
        if "store" in only:
            rows += bench_store(work, 1 if args.quick else 3)
    print(table(rows))
    if args.readme:
        write_readme(rows, "python benchmarks/run.py " + " ".join(sys.argv[1:]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

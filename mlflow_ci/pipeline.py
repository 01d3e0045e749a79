"""The commands as plain functions: each takes the config, the environment and a stream, and
returns a result. The click layer (cli.py) only parses options and maps results to exit codes.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, TextIO

from mlflow_ci import compare as cmp
from mlflow_ci import ghevent, gitctx, report
from mlflow_ci.config import Config
from mlflow_ci.errors import UsageError
from mlflow_ci.gate import GateResult, evaluate
from mlflow_ci.tracking import TAG_BASELINE, TAG_VERDICT, MlflowTracker, RunSnapshot, open_tracker, resolve_tracking_uri
from mlflow_ci.train import TrainResult, train

TRAIN_STATE = "train.json"


@dataclass(frozen=True)
class Options:
    """What the command line may override."""

    out_dir: Path
    baseline: str | None = None
    base_branch: str | None = None
    pr_number: int | None = None
    run_id: str | None = None
    use_cache: bool = True
    candidate: str | None = None  # fan-out: one of several candidates trained for the same PR


@dataclass(frozen=True)
class Session:
    """Everything a command needs besides its options, built once."""

    cfg: Config
    env: Mapping[str, str]
    cwd: Path
    stream: TextIO
    tracking_uri: str

    @functools.cached_property
    def _tracker(self):
        return open_tracker(self.tracking_uri, self.env)

    @functools.cached_property
    def _registry(self) -> MlflowTracker:
        return MlflowTracker(self.tracking_uri)

    def tracker(self):
        """One client per command: REST for http(s) servers, sqlite3 for a local store, else MLflow's."""
        return self._tracker

    def registry(self) -> MlflowTracker:
        """MLflow's own client, for registry writes (promote, rollback)."""
        return self._registry

    @functools.cached_property
    def event(self) -> ghevent.EventContext:
        return ghevent.from_env(self.env)

    @functools.cached_property
    def _contexts(self) -> dict:
        return {}

    def context(self, opts: Options) -> gitctx.GitContext:
        """Git facts, refined by the GitHub event (PR head/base) and then by explicit options.

        Computed once per command and options (each costs a few git subprocesses).
        """
        key = (opts.base_branch, opts.pr_number)
        if key not in self._contexts:
            self._contexts[key] = self._detect_context(opts)
        return self._contexts[key]

    def _detect_context(self, opts: Options) -> gitctx.GitContext:
        default_base = self.cfg.baseline.branch or "main"
        ctx = gitctx.detect(self.cfg.root, self.env, default_base_branch=default_base)
        ev = self.event
        if ev.event_name in ghevent.PR_EVENTS:
            ctx = ctx.with_overrides(
                branch=ev.head_ref, base_branch=ev.base_ref, pr_number=ev.pr_number,
                head_sha=ev.head_sha, base_commit=ev.base_sha,
            )
        elif ev.event_name == "workflow_dispatch" or ev.event_name == "push":
            ctx = ctx.with_overrides(head_sha=ev.head_sha)
        ctx = ctx.with_overrides(base_branch=opts.base_branch, pr_number=opts.pr_number)
        if ctx.base_commit is None:
            ctx = ctx.with_overrides(base_commit=gitctx.merge_base(ctx, self.cfg.root))
        return ctx

    def config_path(self) -> str:
        """The config file relative to the repository root (for annotations), else its name."""
        root = gitctx.git(["rev-parse", "--show-toplevel"], self.cfg.root)
        try:
            return self.cfg.path.relative_to(Path(root).resolve()).as_posix() if root else self.cfg.path.name
        except ValueError:
            return self.cfg.path.name


def make_session(cfg: Config, env: Mapping[str, str], cwd: Path, stream: TextIO) -> Session:
    return Session(cfg, env, cwd, stream, resolve_tracking_uri(cfg.tracking_uri, env, cfg.root))


@dataclass(frozen=True)
class CheckResult:
    verdict: str
    result: dict
    report_path: Path
    result_path: Path
    train: TrainResult | None


def do_train(s: Session, opts: Options, *, require_gated: bool = False) -> TrainResult:
    tracker = s.tracker()
    ctx = s.context(opts)
    result = train(
        s.cfg, tracker, ctx, s.env, out_dir=opts.out_dir, use_cache=opts.use_cache,
        require_gated=require_gated, stream=s.stream, candidate=opts.candidate,
    )
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    (opts.out_dir / TRAIN_STATE).write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
    return result


def candidate_run(s: Session, opts: Options, tracker: MlflowTracker) -> RunSnapshot:
    """The run named by --run, else the one the last `train` in this out dir produced."""
    run_id = opts.run_id
    if not run_id:
        state = opts.out_dir / TRAIN_STATE
        try:
            run_id = json.loads(state.read_text(encoding="utf-8"))["run_id"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UsageError(
                f"no candidate run: pass --run RUN_ID, or run 'mlflow-ci train' first (it writes {state})"
            ) from None
    run = tracker.get_run(run_id)
    if run is None:
        raise UsageError(f"run {run_id} does not exist in {s.tracking_uri}")
    return run


def do_compare(s: Session, opts: Options, tracker: MlflowTracker | None = None, run: RunSnapshot | None = None) -> cmp.Comparison:
    tracker = tracker or s.tracker()
    run = run or candidate_run(s, opts, tracker)
    return cmp.compare(tracker, s.cfg, s.context(opts), run, explicit_baseline=opts.baseline)


def do_gate(s: Session, comparison: cmp.Comparison, intervals: dict | None = None, extra_rules: tuple = ()) -> GateResult:
    """The configured rules (plus ``extra_rules``, e.g. the per-slice ones) on a comparison."""
    base = dict(comparison.baseline.run.metrics) if comparison.baseline else None
    return evaluate(s.cfg.gate + tuple(extra_rules), dict(comparison.candidate.metrics), base, intervals)


@dataclass(frozen=True)
class Evaluated:
    """What ``evaluate:`` adds to a check."""

    comparison: cmp.Comparison  # with eval.<metric> values merged in
    intervals: dict  # metric name -> paired bootstrap interval
    summary: dict  # result.json's "evaluation"
    rules: tuple  # the slice_gate rules, one per slice
    data_checks: tuple  # gate checks from the data checks


def _data_checks(s: Session, X, cand: RunSnapshot, base) -> "object":
    """Profile the evaluation data, keep it with the candidate run, compare with the baseline's."""
    import tempfile

    from mlflow_ci import datachecks

    current = datachecks.profile(X, None)
    before = None
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-profile-") as tmp:
        if base is not None:
            text = s.registry().read_artifact_text(base.run.run_id, datachecks.PROFILE_ARTIFACT, Path(tmp))
            before = json.loads(text) if text else None
        path = Path(tmp) / "data_profile.json"
        path.write_text(json.dumps(current), encoding="utf-8")
        s.tracker().log_artifact(cand.run_id, path, "mlflow_ci")
    return datachecks.compare_profiles(before, current, X)


def _confusion(task: str, y, cand_out, base_out, classes) -> dict | None:
    """Confusion matrices (rows: true class, columns: predicted) for both models."""
    import numpy as np

    if task != "classification" or classes is None or len(classes) > 10:
        return None
    idx = np.searchsorted(classes, y)

    def matrix(out):
        pred = out.argmax(axis=1)
        counts = np.zeros((len(classes), len(classes)), dtype=int)
        np.add.at(counts, (idx, pred), 1)
        return counts.tolist()

    return {"classes": [str(c) for c in classes], "candidate": matrix(cand_out),
            "baseline": matrix(base_out) if base_out is not None else None}


def do_evaluate(s: Session, comparison: cmp.Comparison) -> Evaluated:
    """Score candidate and baseline models on the same rows; paired bootstrap intervals.

    The ``eval.<metric>`` values are logged to both runs.
    """
    import tempfile
    from dataclasses import replace

    import numpy as np

    from mlflow_ci import evaluation as ev

    ecfg = s.cfg.evaluate
    assert ecfg is not None
    X, y = ev.load_dataset(ecfg.data, ecfg.target, s.cfg.root)
    y = np.asarray(y)
    ev.register_user_metrics(ecfg.metrics, s.cfg.root)
    registry, tracker = s.registry(), s.tracker()
    cand, base = comparison.candidate, comparison.baseline
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-eval-") as tmp:
        cand_model = registry.load_model(cand.run_id, s.cfg.promote.model_path, Path(tmp) / "candidate")
        base_model = registry.load_model(base.run.run_id, s.cfg.promote.model_path, Path(tmp) / "baseline") if base else None
    classes = np.asarray(cand_model.classes_) if ecfg.task == "classification" and hasattr(cand_model, "classes_") else None
    try:
        cand_out = ev.model_output(cand_model, X, ecfg.task, classes)
        if base_model is not None:
            base_out = ev.model_output(base_model, X, ecfg.task, classes)
            paired = ev.paired_bootstrap(ecfg.metrics, ecfg.task, y, cand_out, base_out, classes=classes,
                                         resamples=ecfg.resamples, seed=ecfg.seed, confidence=ecfg.confidence)
            cand_eval, base_eval = paired.candidate, paired.baseline
            intervals = {f"eval.{k}": v for k, v in paired.intervals.items()}
        else:
            cand_eval = {k: float(ev.build_metric(k, ecfg.task, y, cand_out, classes).value(None)) for k in ecfg.metrics}
            base_eval, intervals = {}, {}
    except ValueError as exc:
        raise UsageError(f"evaluate: {exc}") from None
    short = ev.metric_label  # module:function -> function
    intervals = {f"eval.{short(k[5:])}": v for k, v in intervals.items()}
    cand_metrics = {f"eval.{short(k)}": v for k, v in cand_eval.items()}
    base_metrics = {f"eval.{short(k)}": v for k, v in base_eval.items()}
    slice_rules = []
    for column in ecfg.slices:
        sliced = _slices(s, X, y, column, cand_out, base_out if base_model is not None else None, classes)
        for label, (c_vals, b_vals, ivs) in sliced.items():
            for metric, value in c_vals.items():
                name = slice_metric(short(metric), column, label)
                cand_metrics[name] = value
                if metric in b_vals:
                    base_metrics[name] = b_vals[metric]
                if metric in ivs:
                    intervals[name] = ivs[metric]
            slice_rules += [replace(rule, metric=slice_metric(short(rule.metric), column, label)) for rule in ecfg.slice_gate]
    tracker.log_metrics(cand.run_id, cand_metrics)
    if base is not None and base_metrics:
        tracker.log_metrics(base.run.run_id, base_metrics)
    cand = replace(cand, metrics={**cand.metrics, **cand_metrics})
    if base is not None:
        base = replace(base, run=replace(base.run, metrics={**base.run.metrics, **base_metrics}))
    rows = []
    for row in cmp.diff_metrics(s.cfg, dict(cand.metrics), dict(base.run.metrics) if base else None):
        interval = intervals.get(row.name)
        rows.append(replace(row, ci_low=interval.low, ci_high=interval.high) if interval is not None else row)
    data_report = _data_checks(s, X, cand, base)
    summary_confusion = _confusion(ecfg.task, y, cand_out, base_out if base_model is not None else None, classes)
    note = (f"evaluated {'both models' if base_model is not None else 'the candidate'} on the same {len(y):,} rows of "
            f"{ecfg.data}" + (f"; {ecfg.resamples:,} paired bootstrap resamples (seed {ecfg.seed}), "
                              f"{ecfg.confidence:.0%} intervals" if base_model is not None else ""))
    summary = {"data": ecfg.data, "rows": int(len(y)), "task": ecfg.task, "metrics": list(ecfg.metrics),
               "resamples": ecfg.resamples if base_model is not None else 0, "seed": ecfg.seed, "confidence": ecfg.confidence,
               "data_checks": data_report.as_dict(), "confusion": summary_confusion}
    from mlflow_ci import datachecks

    data_gate = datachecks.checks(data_report, max_psi=ecfg.max_psi, max_missing=ecfg.max_missing,
                                  fail_on_removed_columns=ecfg.fail_on_removed_columns)
    updated = cmp.Comparison(cand, base, tuple(rows), comparison.params, (*comparison.notes, note))
    return Evaluated(updated, intervals, summary, tuple(slice_rules), tuple(data_gate))


SLICE_LIMIT = 20  # most frequent values per column


def slice_metric(metric: str, column: str, value: str) -> str:
    """``eval.accuracy/region:north``: MLflow metric names allow only [A-Za-z0-9_-. :/]."""
    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_\-. ]", "_", text)[:80]

    return f"eval.{metric}/{clean(column)}:{clean(value)}"
SLICE_MIN_ROWS = 30


def _slices(s: Session, X, y, column: str, cand_out, base_out, classes) -> dict:
    """Per value of ``column``: candidate metrics, baseline metrics, intervals (paired, same rows)."""
    import numpy as np

    from mlflow_ci import evaluation as ev

    ecfg = s.cfg.evaluate
    if not hasattr(X, "columns") or column not in X.columns:
        raise UsageError(f"evaluate.slices: column {column!r} is not in the evaluation data")
    values = X[column].astype(str).to_numpy()
    labels, counts = np.unique(values, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:SLICE_LIMIT]
    out = {}
    for i in order:
        if counts[i] < SLICE_MIN_ROWS:
            continue
        mask = values == labels[i]
        try:
            if base_out is not None:
                paired = ev.paired_bootstrap(ecfg.metrics, ecfg.task, y[mask], cand_out[mask], base_out[mask], classes=classes,
                                             resamples=ecfg.resamples, seed=ecfg.seed, confidence=ecfg.confidence)
                out[str(labels[i])] = (paired.candidate, paired.baseline, paired.intervals)
            else:
                out[str(labels[i])] = ({m: float(ev.build_metric(m, ecfg.task, y[mask], cand_out[mask], classes).value(None))
                                        for m in ecfg.metrics}, {}, {})
        except ValueError:
            continue  # e.g. ROC AUC on a slice with one class only
    return out


def gate_from_result(s: Session, path: Path) -> GateResult:
    """Re-evaluate the gate on the metrics recorded in a result.json (no tracking store needed)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        candidate = _metrics(data["candidate"]["metrics"])
        baseline = _metrics(data["baseline"]["metrics"]) if data.get("baseline") else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a usable result.json ({exc.__class__.__name__}: {exc})") from None
    return evaluate(s.cfg.gate, candidate, baseline)


def _metrics(raw) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise TypeError("metrics must be an object")
    return {str(k): float(v) for k, v in raw.items() if not isinstance(v, bool) and isinstance(v, (int, float, str))}


def do_report(
    s: Session,
    opts: Options,
    comparison: cmp.Comparison,
    gate: GateResult,
    *,
    cached: bool,
    fingerprint: str | None,
    evaluation: dict | None = None,
) -> CheckResult:
    ctx = s.context(opts)
    cand = comparison.candidate
    result = report.build_result(
        s.cfg, comparison, gate, cached=cached, fingerprint=fingerprint,
        tracking_uri=s.tracking_uri, pr_number=ctx.pr_number or _pr_tag(cand),
        head_sha=ctx.head_sha or ctx.commit, ci_run_url=ctx.run_url, config_path=s.config_path(),
    )
    if evaluation is not None:
        result["evaluation"] = evaluation
    markdown = report.render_markdown(result, s.cfg.report, s.cfg.root)
    report_path, result_path = report.write_outputs(opts.out_dir, markdown, result)
    return CheckResult(gate.verdict, result, report_path, result_path, None)


def _pr_tag(run: RunSnapshot) -> int | None:
    value = run.tags.get("mlflow_ci.pr", "")
    return int(value) if value.isdigit() else None


def do_check(s: Session, opts: Options) -> CheckResult:
    """train → compare → gate → report; tags the candidate run with the verdict and baseline."""
    trained = do_train(s, opts, require_gated=True)
    tracker = s.tracker()
    comparison = do_compare(s, opts, tracker, trained.run)
    evaluated = do_evaluate(s, comparison) if s.cfg.evaluate is not None else None
    if evaluated is None:
        gate = do_gate(s, comparison)
    else:
        comparison = evaluated.comparison
        gate = do_gate(s, comparison, evaluated.intervals, evaluated.rules)
        gate = GateResult(gate.checks + evaluated.data_checks)
    outcome = do_report(s, opts, comparison, gate, cached=trained.cached, fingerprint=trained.fingerprint,
                        evaluation=evaluated.summary if evaluated else None)
    tags = {TAG_VERDICT: gate.verdict}
    if comparison.baseline:
        tags[TAG_BASELINE] = comparison.baseline.run.run_id
    tracker.set_tags(trained.run.run_id, tags)
    return CheckResult(outcome.verdict, outcome.result, outcome.report_path, outcome.result_path, trained)


# --------------------------------------------------------------------------------------------------
# Publishing


def github_client(env: Mapping[str, str], event: ghevent.EventContext, stream: TextIO):
    """A client for the run's repository, or None without a token. Masks the token in Actions."""
    from mlflow_ci.actions_io import ActionsIO
    from mlflow_ci.github import GitHubClient

    token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
    if not token:
        return None
    ActionsIO(env, stream).mask(token)
    if not event.repository:
        raise UsageError("GITHUB_REPOSITORY is not set: cannot tell which repository to publish to")
    return GitHubClient(
        token=token, repository=event.repository, api_url=event.api_url,
        log=lambda m: _say(stream, m), policy=retry_policy(env),
    )


def retry_policy(env: Mapping[str, str]):
    """GitHub retry bounds; MLFLOW_CI_GITHUB_MAX_ATTEMPTS and MLFLOW_CI_GITHUB_MAX_WAIT override them."""
    from mlflow_ci.github import RetryPolicy

    policy = RetryPolicy()
    try:
        if env.get("MLFLOW_CI_GITHUB_MAX_ATTEMPTS"):
            policy.max_attempts = max(int(env["MLFLOW_CI_GITHUB_MAX_ATTEMPTS"]), 1)
        if env.get("MLFLOW_CI_GITHUB_MAX_WAIT"):
            policy.max_total_wait = max(float(env["MLFLOW_CI_GITHUB_MAX_WAIT"]), 0.0)
    except ValueError:
        raise UsageError("MLFLOW_CI_GITHUB_MAX_ATTEMPTS must be a whole number and MLFLOW_CI_GITHUB_MAX_WAIT a number of seconds") from None
    return policy


def _say(stream: TextIO, message: str) -> None:
    stream.write(message + "\n")
    stream.flush()


def publish_result(
    env: Mapping[str, str],
    stream: TextIO,
    event: ghevent.EventContext,
    target,
    result: dict,
    markdown: str,
    *,
    report_path: Path,
    comment_mode: str,
    check_name: str | None,
    client=None,
):
    from mlflow_ci.actions_io import ActionsIO
    from mlflow_ci.errors import ServiceError
    from mlflow_ci.publish import Publisher

    client = client if client is not None else github_client(env, event, stream)
    publisher = Publisher(client, ActionsIO(env, stream), lambda m: _say(stream, m), comment_mode, check_name)
    try:
        return publisher.publish(target, result, markdown, report_path=str(report_path))
    except ServiceError as exc:
        exc.hint = (
            f"{exc.hint + '; ' if exc.hint else ''}the report is kept in {report_path} and "
            f"{report_path.parent / 'result.json'}; retry only the publishing with: mlflow-ci publish --out {report_path.parent}"
        )
        raise


def publish_check(s: Session, opts: Options, outcome: CheckResult, *, comment_mode: str | None = None):
    """Publish the result of ``check``/``report`` for this run's PR and commit."""
    from mlflow_ci.publish import Target

    ctx = s.context(opts)
    ev = s.event
    name = outcome.result["candidate"].get("name")
    check_name = s.cfg.publish.check_name or f"mlflow-ci / {s.cfg.experiment}"
    if name:  # a fan-out candidate: its own check run; the PR comment is the leaderboard's
        comment_mode, check_name = "never", f"{check_name} / {name}"
    target = Target(
        repository=ev.repository or "",
        pr_number=ctx.pr_number,
        head_sha=ctx.head_sha or ev.sha or ctx.commit,
        run_url=ev.run_url,
    )
    return publish_result(
        s.env, s.stream, ev, target, outcome.result, outcome.report_path.read_text(encoding="utf-8"),
        report_path=outcome.report_path, comment_mode=comment_mode or s.cfg.publish.comment,
        check_name=check_name,
    )


def publish_saved(env: Mapping[str, str], stream: TextIO, out_dir: Path, cfg: Config | None, *, comment_mode: str | None, from_file: Path | None):
    """``mlflow-ci publish``: from the out dir of an earlier check, or from an untrusted artifact."""
    from mlflow_ci import publish as pub
    from mlflow_ci.config import ReportConfig

    event = ghevent.from_env(env)
    if not (env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")):
        raise UsageError("publish needs a GitHub token: set GITHUB_TOKEN (in a workflow: env: GITHUB_TOKEN: ${{ github.token }})")
    settings = cfg.report if cfg else ReportConfig()
    root = cfg.root if cfg else Path.cwd()
    if from_file is not None:
        result = pub.load_artifact(from_file)
        client = github_client(env, event, stream)
        target = pub.fork_target(event, result, client)
    else:
        path = out_dir / "result.json"
        try:
            result = pub.sanitize_result(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: cannot read it ({exc}); run 'mlflow-ci check' first") from None
        client = github_client(env, event, stream)
        pr = event.pr_number or result.get("pr")
        target = pub.Target(event.repository or "", pr, event.head_sha or result.get("head_sha") or event.sha, event.run_url)
    markdown = report.render_markdown(result, settings, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path, _ = report.write_outputs(out_dir, markdown, result)
    return publish_result(
        env, stream, event, target, result, markdown, report_path=report_path,
        comment_mode=comment_mode or (cfg.publish.comment if cfg else "always"),
        check_name=cfg.publish.check_name if cfg else None, client=client,
    )


def do_promote(s: Session, out_dir: Path, *, commit=None, pr_number=None, run_id=None, deploy=True):
    """``promote`` with the GitHub API (when a token is there), job summary and step outputs."""
    from mlflow_ci.actions_io import ActionsIO
    from mlflow_ci.promote import PromoteOptions, promote

    client = github_client(s.env, s.event, s.stream) if s.event.repository else None
    opts = PromoteOptions(out_dir=out_dir, commit=commit, pr_number=pr_number, run_id=run_id, deploy=deploy)
    result = promote(s, opts, client=client)
    io = ActionsIO(s.env, s.stream)
    io.add_summary(result.summary_path.read_text(encoding="utf-8"))
    io.set_outputs({"version": result.version, "model-uri": result.model_uri})
    return result


def do_leaderboard(s: Session, opts: Options, pr: int, *, publish: bool):
    """Fan-in: the leaderboard of every candidate of PR ``pr``, written and optionally published."""
    from mlflow_ci import leaderboard

    board = leaderboard.build(s, pr, opts)
    result = leaderboard.as_result(board)
    markdown = leaderboard.render(board, s.cfg)
    report_path, result_path = report.write_outputs(opts.out_dir, markdown, result)
    (opts.out_dir / "leaderboard.json").write_text(json.dumps(result["leaderboard"], indent=2) + "\n", encoding="utf-8")
    outcome = CheckResult(board.verdict, result, report_path, result_path, None)
    published = None
    if publish:
        from mlflow_ci.publish import Target

        ev = s.event
        target = Target(ev.repository or "", pr, result.get("head_sha") or ev.head_sha, ev.run_url)
        published = publish_result(
            s.env, s.stream, ev, target, result, markdown, report_path=report_path,
            comment_mode=s.cfg.publish.comment, check_name=s.cfg.publish.check_name,
        )
    return outcome, published

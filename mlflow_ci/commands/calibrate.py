"""``mlflow-ci calibrate``: how much do the gated metrics move when nothing but the seed changes?

A stochastic training (random forests, boosting with subsampling, neural networks) gives a different
model for every seed. A ``max_drop`` margin smaller than that seed-to-seed spread fails PRs that
changed nothing; this command measures the spread and proposes margins.

1. Retrain the configured training ``runs`` times, each with ``MLFLOW_CI_SEED=1..runs`` in its
   environment (the script seeds its libraries from it) and ``mlflow_ci.role=calibration`` on the run
   (calibration runs have no verdict, so they are never baselines or promoted).
2. Per metric a ``max_drop``/``max_drop_pct``/``significance`` rule compares with a baseline:
   - ``eval.*`` metrics with ``significance: a``: each seed's model is scored against seed 1's on the
     evaluation rows (paired bootstrap); the margin is the largest distance by which the one-sided
     bound fell on the regression side (a fresh seed exceeds the largest of n with probability
     1/(n+1), so n ≥ 1/level - 1 runs keep false alarms under the level);
   - every other metric: all ordered pairs of seeds (one the champion, one the PR); the margin is the
     (1 - level) quantile of how far the "PR" regressed.
3. Print the table; ``--write`` raises each rule's ``max_drop`` (or ``max_drop_pct``) in mlflow-ci.yml
   to the proposed margin where it is lower (never lowers one), keeping every other line as it was. A summary run (``mlflow_ci.role=calibration-summary``) keeps the
   margins: ``check`` warns when a rule allows less than the calibrated noise.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow_ci import compare as cmp
from mlflow_ci.commands.session import Options, Session
from mlflow_ci.errors import UsageError
from mlflow_ci.gate import fmt, rule_direction
from mlflow_ci.tracking import TAG_FINGERPRINT, TAG_ROLE
from mlflow_ci.train import train

SEED_VARIABLE = "MLFLOW_CI_SEED"
ROLE = "calibration"
SUMMARY_ROLE = "calibration-summary"
PREFIX = "calibrated_max_drop."


@dataclass(frozen=True)
class Noise:
    metric: str
    direction: str
    values: tuple[float, ...]
    margin: float  # in the metric's units
    method: str  # "bootstrap bound" | "seed pairs"
    rule_key: str  # max_drop | max_drop_pct
    proposed: float  # the value for rule_key
    current: float | None

    @property
    def saturated(self) -> bool:
        """Every seed scored the metric's best possible value (1 where higher is better, 0 where lower is): the
        rows cannot tell models apart, which says nothing about whether the training reads the seed."""
        best = 1.0 if self.direction == "higher" else 0.0
        return self.method == "seed pairs" and bool(self.values) and set(self.values) == {best}

    def explained(self, level: float) -> str:
        """What the proposed margin is, in one sentence."""
        if self.method == "bootstrap bound":
            return (f"proposed: how far below 0 the one-sided bound of a seed's change against seed 1 reached at "
                    f"significance {level:g}, so unchanged code does not fail the significance rule")
        return (f"proposed: the drop that two seeds of unchanged code exceed in fewer than {level:.0%} of pairs "
                f"(never lower than the rule's current {self.rule_key})")


@dataclass(frozen=True)
class Calibration:
    runs: tuple[str, ...]
    level: float
    noise: tuple[Noise, ...]
    summary_run: str
    written: bool
    deterministic: bool  # every seed gave the same values: no noise, or MLFLOW_CI_SEED is not read


def deterministic(noise) -> bool:
    """Every seed gave the same values for every metric that is not saturated (and at least one is not)."""
    open_ended = [n for n in noise if not n.saturated]
    return bool(open_ended) and all(n.margin == 0 and len(set(n.values)) <= 1 for n in open_ended)


def calibrated_rules(cfg):
    return [r for r in cfg.gate if r.max_drop is not None or r.max_drop_pct is not None or r.significance]


def do_calibrate(s: Session, opts: Options, *, runs: int, level: float, write: bool) -> Calibration:
    cfg = s.cfg
    rules = calibrated_rules(cfg)
    if not rules:
        raise UsageError("calibrate: no gate rule compares with a baseline (max_drop, max_drop_pct or significance): nothing to calibrate")
    if runs < 3:
        raise UsageError("calibrate: --runs must be at least 3 (20 keeps false alarms under 5 %)")
    tracker = s.tracker()
    ctx = s.context(opts)
    trained = []
    for seed in range(1, runs + 1):
        s.stream.write(f"mlflow-ci: calibration training {seed}/{runs} ({SEED_VARIABLE}={seed})\n")
        env = {**s.code_env, SEED_VARIABLE: str(seed)}
        result = train(cfg, tracker, ctx, env, out_dir=opts.out_dir / "calibration" / f"seed-{seed}", use_cache=False,
                       stream=s.stream)
        # a fingerprint of its own: a calibration run is never reused as the plain training
        tracker.set_tags(result.run.run_id, {TAG_ROLE: ROLE, "mlflow_ci.seed": str(seed),
                                             TAG_FINGERPRINT: f"{result.fingerprint or 'none'}#calibration-seed-{seed}"})
        trained.append(result.run)
    evaluated = _evaluated_against_first(s, trained) if cfg.evaluate is not None else {}
    noise = tuple(_noise(rule, trained, evaluated, level) for rule in rules)
    summary = tracker.start_run(trained[0].experiment_id, run_name="calibration", tags={TAG_ROLE: SUMMARY_ROLE})
    tracker.log_metrics(summary, {PREFIX + n.metric: n.margin for n in noise})
    tracker.set_tags(summary, {"mlflow_ci.calibration.runs": str(runs), "mlflow_ci.calibration.level": repr(level),
                               "mlflow_ci.calibration.at": time.strftime("%Y-%m-%d", time.gmtime(s.clock()))})
    tracker.end_run(summary, "FINISHED")
    if write:
        write_margins(cfg.path, [n for n in noise if n.current is None or n.proposed > n.current])
    return Calibration(tuple(r.run_id for r in trained), level, noise, summary, write, deterministic(noise))


def _evaluated_against_first(s: Session, runs) -> dict[str, list]:
    """Per eval metric, each later seed's paired bootstrap interval against seed 1's model."""
    from mlflow_ci.evaluate.rows import evaluate_rows

    first, out = runs[0], {}
    for run in runs[1:]:
        comparison = cmp.Comparison(run, cmp.Baseline(first, "calibration", "seed 1"), (), (), ())
        evaluated = evaluate_rows(s.cfg, s.tracker(), s.registry, comparison, env=s.env)
        for name, interval in evaluated.intervals.items():
            out.setdefault(name, []).append(interval)
        s.stream.write(f"mlflow-ci: scored seed run {run.run_id[:12]} against seed 1 on the evaluation rows\n")
    return out


def _noise(rule, runs, evaluated: dict[str, list], level: float) -> Noise:
    import numpy as np

    direction = rule_direction(rule, rule.metric)
    sign = 1.0 if direction == "higher" else -1.0
    intervals = evaluated.get(rule.metric)
    if rule.significance and intervals:
        margin, method = bootstrap_margin(intervals, rule.significance, direction), "bootstrap bound"
        values = tuple(float(iv.delta) for iv in intervals)
    else:
        values = tuple(float(r.metrics[rule.metric]) for r in runs if rule.metric in r.metrics)
        if len(values) < 2:
            raise UsageError(f"calibrate: gate.{rule.metric}: the training did not log {rule.metric} (or evaluate: did not score it)")
        regressions = [sign * (a - b) for i, a in enumerate(values) for j, b in enumerate(values) if i != j]
        margin, method = max(float(np.quantile(regressions, 1 - level)), 0.0), "seed pairs"
    use_pct = rule.max_drop is None and rule.max_drop_pct is not None
    mean = float(np.mean([float(r.metrics.get(rule.metric, 0.0)) for r in runs])) if use_pct else 0.0
    proposed = margin / abs(mean) * 100 if use_pct and mean else margin
    current = rule.max_drop_pct if use_pct else rule.max_drop
    # never below what the rule allows already: the noise is the least margin that avoids false alarms
    proposed = max(_round_up(proposed), current or 0.0)
    return Noise(rule.metric, direction, values, margin, method, "max_drop_pct" if use_pct else "max_drop",
                 proposed, current)


def bootstrap_margin(intervals, alpha: float, direction: str) -> float:
    """The largest distance by which a seed-only retrain's one-sided (1 - alpha) bound fell on the
    regression side of zero: with n retrains, a fresh one exceeds it with probability 1/(n + 1)."""
    shortfalls = [-iv.one_sided_upper(alpha) if direction == "higher" else iv.one_sided_lower(alpha) for iv in intervals]
    return max(max(shortfalls), 0.0)


def _round_up(value: float) -> float:
    """Two significant digits, rounded away from zero (a margin is never made smaller by display)."""
    import math

    if value <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return math.ceil(value / scale) * scale


def write_margins(path: Path, noise) -> None:
    """Set ``rule_key: proposed`` in each metric's rule, in flow (``{min: 0.8, max_drop: 0.01}``) or
    block style, keeping every other character of the file."""
    text = path.read_text(encoding="utf-8")
    for n in noise:
        text = _set_key(text, n.metric, n.rule_key, fmt(n.proposed, 2), path)
    path.write_text(text, encoding="utf-8")


def _set_key(text: str, metric: str, key: str, value: str, path: Path) -> str:
    lines = text.splitlines(keepends=True)
    name = re.escape(metric)
    for i, line in enumerate(lines):
        flow = re.match(rf"^(\s+)(['\"]?){name}\2\s*:\s*\{{(.*)\}}(\s*(#.*)?)$", line.rstrip("\n"))
        if flow:
            body = flow.group(3)
            if re.search(rf"(^|,)\s*{key}\s*:", body):
                body = re.sub(rf"((?:^|,)\s*{key}\s*:\s*)[^,}}]+", lambda m: m.group(1) + value, body)
            else:
                body = f"{body.rstrip()}, {key}: {value}" if body.strip() else f"{key}: {value}"
            lines[i] = f"{flow.group(1)}{flow.group(2)}{metric}{flow.group(2)}: {{{body}}}{flow.group(4) or ''}\n"
            return "".join(lines)
        block = re.match(rf"^(\s+)(['\"]?){name}\2\s*:\s*(#.*)?$", line.rstrip("\n"))
        if block:
            indent = len(block.group(1))
            j = i + 1
            child = None
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
                if child is None and lines[j].strip():
                    child = lines[j][: len(lines[j]) - len(lines[j].lstrip())]
                if re.match(rf"^\s+{key}\s*:", lines[j]):
                    lines[j] = re.sub(rf"^(\s+{key}\s*:\s*)[^#\n]*?(\s*(#.*)?)$", lambda m: m.group(1) + value + m.group(2), lines[j].rstrip("\n")) + "\n"
                    return "".join(lines)
                j += 1
            lines.insert(i + 1, f"{child or ' ' * (indent + 2)}{key}: {value}\n")
            return "".join(lines)
    raise UsageError(f"calibrate --write: {path.name}: cannot find the rule of {metric!r} to edit; set {key}: {value} yourself")


def calibrated_noise(tracker, experiment_id: str | None) -> dict[str, float]:
    """The margins of the newest calibration of the experiment, by metric (empty when never calibrated)."""
    if experiment_id is None:
        return {}
    found = tracker.search_runs(experiment_id, tags={TAG_ROLE: SUMMARY_ROLE}, limit=1)
    if not found:
        return {}
    return {k[len(PREFIX):]: v for k, v in found[0].metrics.items() if k.startswith(PREFIX)}


def margin_notes(cfg, noise: dict[str, float], baseline_metrics: dict[str, float] | None) -> list[str]:
    """A note per rule whose allowed regression is below the calibrated seed-to-seed noise."""
    notes = []
    for rule in cfg.gate:
        calibrated = noise.get(rule.metric)
        if calibrated is None or calibrated <= 0:
            continue
        allowed = rule.max_drop
        if allowed is None and rule.max_drop_pct is not None and baseline_metrics and rule.metric in baseline_metrics:
            allowed = abs(baseline_metrics[rule.metric]) * rule.max_drop_pct / 100
        if allowed is not None and allowed < calibrated:
            notes.append(f"gate.{rule.metric} allows a regression of {fmt(allowed, 3)}, less than the seed-to-seed noise "
                         f"{fmt(calibrated, 3)} that mlflow-ci calibrate measured: retrains that change nothing may fail")
    return notes


"""`mlflow-ci.yml`: loading, validation and the frozen configuration objects.

Validation collects *every* problem before failing. Each problem is one line that names the file,
the line, the key path and what was expected, e.g.::

    mlflow-ci.yml:9: gate.rmse.max_drop_pct: expected a number >= 0, got -5

The full reference is docs/config.md; tests/test_docs.py keeps it in step with this module.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mlflow_ci import yamlnodes
from mlflow_ci.errors import ConfigError

DEFAULT_CONFIG = "mlflow-ci.yml"
DEFAULT_TIMEOUT = 3600.0
BASELINE_SOURCES = ("alias", "base_commit", "base_branch")
RULE_BOUNDS = ("min", "max")
RULE_BASELINE = ("max_drop", "max_drop_pct")
RULE_MLFLOW = ("threshold", "min_absolute_change", "min_relative_change")
TOP_KEYS = (
    "experiment", "model", "tracking_uri", "artifact_location", "train", "baseline", "gate", "report", "publish",
    "promote", "deploy", "evaluate",
)
PUBLISH_KEYS = ("comment", "check_name")
PROMOTE_KEYS = ("alias", "previous_alias", "model_path", "on_missing", "select")
DEPLOY_KEYS = ("command", "workdir", "env", "timeout")
COMMENT_MODES = ("always", "on-change", "on-failure", "never")
TRAIN_KEYS = ("command", "workdir", "env", "timeout", "metrics_file", "inputs")
BASELINE_KEYS = ("alias", "branch", "sources")
REPORT_KEYS = ("template", "title", "precision", "ui_url")
LIMIT_RULES = (*RULE_BOUNDS, *RULE_BASELINE, *RULE_MLFLOW)  # the rules that carry a number
RULE_KEYS = (
    *RULE_BOUNDS,
    *RULE_BASELINE,
    *RULE_MLFLOW,
    "direction",
    "greater_is_better",
    "required",
    "mode",
    "significance",
)
EVALUATE_KEYS = ("data", "target", "task", "metrics", "resamples", "seed", "confidence", "data_checks", "slices", "slice_gate")
DATA_CHECK_KEYS = ("max_psi", "max_missing", "fail_on_removed_columns")


@dataclass(frozen=True)
class TrainConfig:
    command: str
    workdir: str = "."
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    metrics_file: str | None = None
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class BaselineConfig:
    alias: str = "champion"
    branch: str | None = None
    sources: tuple[str, ...] = BASELINE_SOURCES


@dataclass(frozen=True)
class Rule:
    """The rules configured for one metric (any subset of the rule keys)."""

    metric: str
    min: float | None = None
    max: float | None = None
    max_drop: float | None = None
    max_drop_pct: float | None = None
    threshold: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    direction: str | None = None
    greater_is_better: bool | None = None
    required: bool = True
    mode: str = "block"
    significance: float | None = None  # with an evaluate: metric, fail only on a significant regression
    line: int | None = field(default=None, compare=False)  # where the metric's rules start


@dataclass(frozen=True)
class ReportConfig:
    template: str | None = None
    title: str | None = None
    precision: int = 4
    ui_url: str | None = None


@dataclass(frozen=True)
class PublishConfig:
    comment: str = "always"
    check_name: str | None = None


@dataclass(frozen=True)
class PromoteConfig:
    alias: str | None = None  # default: baseline.alias
    previous_alias: str = "previous"
    model_path: str = "model"
    on_missing: str = "refuse"  # refuse | retrain
    select_metric: str | None = None  # fan-out: the candidate that passed with the best value wins
    select_direction: str | None = None


@dataclass(frozen=True)
class DeployConfig:
    command: str | None = None
    workdir: str = "."
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class EvaluateConfig:
    data: str
    target: str
    task: str
    metrics: tuple[str, ...]
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    max_psi: float | None = None
    max_missing: float | None = None
    fail_on_removed_columns: bool = False
    slices: tuple[str, ...] = ()  # categorical columns: metrics per value, with the same diff and gate
    slice_gate: tuple[Rule, ...] = ()  # rules applied to every slice (metric = the plain metric name)


@dataclass(frozen=True)
class Config:
    path: Path
    experiment: str
    model: str
    train: TrainConfig
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    gate: tuple[Rule, ...] = ()
    report: ReportConfig = field(default_factory=ReportConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    evaluate: EvaluateConfig | None = None
    tracking_uri: str | None = None
    artifact_location: str | None = None

    @property
    def root(self) -> Path:
        """The folder holding the config file: relative paths are resolved against it."""
        return self.path.parent

    @property
    def champion_alias(self) -> str:
        return self.promote.alias or self.baseline.alias

    def resolve(self, relative: str) -> Path:
        return (self.root / relative).resolve()


# --------------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a config file; raise :class:`ConfigError` listing every problem."""
    cfg_path = Path(path or DEFAULT_CONFIG)
    shown = str(path or DEFAULT_CONFIG)
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"{shown}: file not found (create one with 'mlflow-ci init', or pass --config PATH)"],
            path=shown,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{shown}: cannot read the file: {exc}"], path=shown) from None
    return parse_config(text, cfg_path.resolve(), shown=shown)


def parse_config(text: str, path: Path, *, shown: str | None = None) -> Config:
    shown = shown or path.name
    try:
        loaded = yamlnodes.load(text)
    except yamlnodes.YamlSyntaxError as exc:
        where = f"{shown}:{exc.line}:{exc.column}" if exc.line else shown
        raise ConfigError([f"{where}: invalid YAML: {exc.problem}"], path=shown) from None
    checker = _Checker(shown, loaded)
    config = checker.config(path)
    if checker.problems:
        raise ConfigError(checker.problems, path=shown)
    assert config is not None
    return config


# --------------------------------------------------------------------------------------------------
# Validation


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Checker:
    """Walks the loaded YAML, records problems and builds the dataclasses."""

    def __init__(self, shown: str, loaded: yamlnodes.LoadedYaml) -> None:
        self.shown = shown
        self.loaded = loaded
        self.problems: list[str] = []
        for dup_path, line in loaded.duplicates:
            self.problems.append(f"{shown}:{line}: {_dotted(dup_path)}: key appears more than once")

    # -- reporting ---------------------------------------------------------------------------------
    def problem(self, path: tuple[str | int, ...], message: str, *, key: bool = False) -> None:
        line = self.loaded.line(path, key=key)
        where = f"{self.shown}:{line}" if line else self.shown
        self.problems.append(f"{where}: {_dotted(path)}: {message}")

    def mapping(self, value: Any, path: tuple[str | int, ...], allowed: tuple[str, ...]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {_describe(value)}")
            return {}
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                self.problem(
                    path + (key,),
                    f"unknown key{suggestion} (expected one of: {', '.join(allowed)})",
                    key=True,
                )
        return value

    def typed(
        self,
        section: dict,
        path: tuple[str | int, ...],
        key: str,
        check: Callable[[Any], bool],
        expected: str,
        default: Any = None,
        *,
        required: bool = False,
    ) -> Any:
        if key not in section or section[key] is None:
            if required:
                self.problem(path + (key,), f"required key is missing (expected {expected})")
            return default
        value = section[key]
        if not check(value):
            self.problem(path + (key,), f"expected {expected}, got {_describe(value)}")
            return default
        return value

    def string(self, section: dict, path, key, default=None, *, required=False) -> str | None:
        return self.typed(
            section,
            path,
            key,
            lambda v: isinstance(v, str) and v.strip() != "",
            "a non-empty string",
            default,
            required=required,
        )

    # -- sections ----------------------------------------------------------------------------------
    def config(self, path: Path) -> Config | None:
        data = self.loaded.data
        if data is None:
            self.problems.append(
                f"{self.shown}: the file is empty (expected at least 'experiment' and 'train.command')"
            )
            return None
        top = self.mapping(data, (), TOP_KEYS)
        if not isinstance(data, dict):
            return None
        experiment = self.string(top, (), "experiment", required=True)
        model = self.string(top, (), "model", experiment)
        tracking_uri = self.string(top, (), "tracking_uri")
        artifact_location = self.string(top, (), "artifact_location")
        if "train" not in top:
            self.problem(("train",), "required key is missing (expected a mapping with 'command')")
        train = self.train(top.get("train"))
        baseline = self.baseline(top.get("baseline"))
        gate = self.gate(top.get("gate"))
        report = self.report(top.get("report"))
        publish = self.publish(top.get("publish"))
        promote = self.promote(top.get("promote"))
        deploy = self.deploy(top.get("deploy"))
        evaluate = self.evaluate(top["evaluate"]) if top.get("evaluate") is not None else None
        if self.problems or experiment is None or train is None:
            return None
        return Config(
            path=path,
            experiment=experiment,
            model=model or experiment,
            train=train,
            baseline=baseline,
            gate=gate,
            report=report,
            publish=publish,
            promote=promote,
            deploy=deploy,
            evaluate=evaluate,
            tracking_uri=tracking_uri,
            artifact_location=artifact_location,
        )

    def train(self, value: Any) -> TrainConfig | None:
        path = ("train",)
        section = self.mapping(value, path, TRAIN_KEYS)
        command = self.string(section, path, "command", required=isinstance(value, dict))
        workdir = self.string(section, path, "workdir", ".")
        metrics_file = self.string(section, path, "metrics_file")
        env = self.env(section.get("env"), path + ("env",))
        timeout = self.duration(section.get("timeout"), path + ("timeout",))
        inputs = self.string_list(section.get("inputs"), path + ("inputs",))
        if command is None:
            return None
        return TrainConfig(
            command=command,
            workdir=workdir or ".",
            env=env,
            timeout=timeout,
            metrics_file=metrics_file,
            inputs=inputs,
        )

    def env(self, value: Any, path) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping of variable names to values, got {_describe(value)}")
            return ()
        pairs = []
        for name, item in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self.problem(path + (name,), "expected an environment variable name", key=True)
                continue
            if isinstance(item, (dict, list)) or item is None:
                self.problem(path + (name,), f"expected a string or number, got {_describe(item)}")
                continue
            text = str(item).lower() if isinstance(item, bool) else str(item)
            pairs.append((name, text))
        return tuple(pairs)

    def duration(self, value: Any, path) -> float:
        if value is None:
            return DEFAULT_TIMEOUT
        expected = "a duration in seconds (a number > 0, or a string like '90s', '30m', '2h')"
        if _is_number(value) and math.isfinite(value) and value > 0:
            return float(value)
        if isinstance(value, str):
            match = _DURATION.match(value)
            if match and float(match.group(1)) > 0:
                return float(match.group(1)) * _UNITS[match.group(2)]
        self.problem(path, f"expected {expected}, got {_describe(value)}")
        return DEFAULT_TIMEOUT

    def string_list(self, value: Any, path) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.problem(path, f"expected a list of strings, got {_describe(value)}")
            return ()
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.problem(path + (i,), f"expected a non-empty string, got {_describe(item)}")
            else:
                out.append(item)
        return tuple(out)

    def baseline(self, value: Any) -> BaselineConfig:
        path = ("baseline",)
        section = self.mapping(value, path, BASELINE_KEYS)
        alias = self.alias(section, path, "alias", "champion")
        branch = self.string(section, path, "branch")
        sources = self.string_list(section.get("sources"), path + ("sources",)) if "sources" in section else BASELINE_SOURCES
        for i, source in enumerate(sources):
            if source not in BASELINE_SOURCES:
                hint = difflib.get_close_matches(source, BASELINE_SOURCES, n=1)
                suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                self.problem(
                    path + ("sources", i),
                    f"unknown baseline source {source!r}{suggestion} (expected one of: {', '.join(BASELINE_SOURCES)})",
                )
        return BaselineConfig(alias=alias or "champion", branch=branch, sources=tuple(sources))

    def report(self, value: Any) -> ReportConfig:
        path = ("report",)
        section = self.mapping(value, path, REPORT_KEYS)
        precision = self.typed(
            section,
            path,
            "precision",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 12,
            "a whole number from 1 to 12",
            4,
        )
        ui_url = self.typed(
            section,
            path,
            "ui_url",
            lambda v: isinstance(v, str) and re.match(r"^https?://\S+$", v) is not None,
            "an http(s) URL of the MLflow UI",
        )
        return ReportConfig(
            template=self.string(section, path, "template"),
            title=self.string(section, path, "title"),
            precision=precision,
            ui_url=ui_url.rstrip("/") if ui_url else None,
        )

    def publish(self, value: Any) -> PublishConfig:
        path = ("publish",)
        section = self.mapping(value, path, PUBLISH_KEYS)
        comment = self.typed(
            section, path, "comment", lambda v: v in COMMENT_MODES,
            "one of: " + ", ".join(COMMENT_MODES), "always",
        )
        return PublishConfig(comment=comment, check_name=self.string(section, path, "check_name"))

    def alias(self, section: dict, path, key: str, default: str | None) -> str | None:
        value = self.string(section, path, key, default)
        if value and not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            self.problem(path + (key,), f"expected an alias of letters, digits, '_' or '-', got {value!r}")
        return value

    def promote(self, value: Any) -> PromoteConfig:
        path = ("promote",)
        section = self.mapping(value, path, PROMOTE_KEYS)
        on_missing = self.typed(section, path, "on_missing", lambda v: v in ("refuse", "retrain"), "'refuse' or 'retrain'", "refuse")
        select = self.mapping(section.get("select"), path + ("select",), ("metric", "direction"))
        metric = self.string(select, path + ("select",), "metric")
        direction = self.typed(select, path + ("select",), "direction", lambda v: v in ("higher", "lower"), "'higher' or 'lower'")
        if select and metric is None and "metric" not in select:
            self.problem(path + ("select", "metric"), "required key is missing (expected a metric name)")
        return PromoteConfig(
            alias=self.alias(section, path, "alias", None),
            previous_alias=self.alias(section, path, "previous_alias", "previous") or "previous",
            model_path=self.string(section, path, "model_path", "model") or "model",
            on_missing=on_missing,
            select_metric=metric,
            select_direction=direction,
        )

    def deploy(self, value: Any) -> DeployConfig:
        path = ("deploy",)
        section = self.mapping(value, path, DEPLOY_KEYS)
        return DeployConfig(
            command=self.string(section, path, "command"),
            workdir=self.string(section, path, "workdir", ".") or ".",
            env=self.env(section.get("env"), path + ("env",)),
            timeout=self.duration(section.get("timeout"), path + ("timeout",)),
        )

    def evaluate(self, value: Any) -> EvaluateConfig | None:
        from mlflow_ci.evaluation import CLASSIFICATION, DEFAULT_METRICS, REGRESSION

        path = ("evaluate",)
        section = self.mapping(value, path, EVALUATE_KEYS)
        data = self.string(section, path, "data", required=True)
        target = self.string(section, path, "target", required=True)
        task = self.typed(section, path, "task", lambda v: v in ("classification", "regression"),
                          "'classification' or 'regression'", None, required=True)
        known = CLASSIFICATION if task == "classification" else REGRESSION
        metrics = self.string_list(section.get("metrics"), path + ("metrics",)) or DEFAULT_METRICS.get(task or "", ())
        for i, name in enumerate(metrics):
            if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", name):
                continue  # a user function module:function(y_true, output) -> float
            if task and name not in known:
                hint = difflib.get_close_matches(name, known, n=1)
                suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                self.problem(path + ("metrics", i), f"unknown {task} metric {name!r}{suggestion} (expected one of: {', '.join(known)}, or module:function)")
        resamples = self.typed(section, path, "resamples", lambda v: isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 100_000,
                               "a whole number from 100 to 100000", 1000)
        seed = self.typed(section, path, "seed", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number >= 0", 0)
        confidence = self.typed(section, path, "confidence", lambda v: _is_number(v) and 0.5 <= v < 1, "a number from 0.5 to below 1 (e.g. 0.95)", 0.95)
        dpath = path + ("data_checks",)
        checks = self.mapping(section.get("data_checks"), dpath, DATA_CHECK_KEYS)
        max_psi = self.typed(checks, dpath, "max_psi", lambda v: _is_number(v) and v > 0, "a number > 0 (0.1 small, 0.25 large shift)")
        max_missing = self.typed(checks, dpath, "max_missing", lambda v: _is_number(v) and 0 <= v <= 1, "a fraction from 0 to 1")
        removed = self.typed(checks, dpath, "fail_on_removed_columns", lambda v: isinstance(v, bool), "true or false", False)
        slices = self.string_list(section.get("slices"), path + ("slices",))
        slice_rules = []
        gate_spec = section.get("slice_gate")
        if gate_spec is not None and not isinstance(gate_spec, dict):
            self.problem(path + ("slice_gate",), f"expected a mapping of metric names to rules, got {_describe(gate_spec)}")
        for metric, spec in (gate_spec or {}).items() if isinstance(gate_spec, dict) else ():
            if metric not in metrics:
                self.problem(path + ("slice_gate", metric), f"not one of evaluate.metrics ({', '.join(metrics)})", key=True)
                continue
            rule = self.rule(metric, spec, path + ("slice_gate", metric))
            if rule is not None:
                slice_rules.append(rule)
        if slice_rules and not slices:
            self.problem(path + ("slice_gate",), "needs evaluate.slices (the columns to slice by)")
        if not (data and target and task):
            return None
        return EvaluateConfig(data, target, task, tuple(metrics), resamples, seed, float(confidence),
                              float(max_psi) if max_psi is not None else None,
                              float(max_missing) if max_missing is not None else None, removed,
                              tuple(slices), tuple(slice_rules))

    def gate(self, value: Any) -> tuple[Rule, ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.problem(("gate",), f"expected a mapping of metric names to rules, got {_describe(value)}")
            return ()
        rules = []
        for metric, spec in value.items():
            rule = self.rule(metric, spec, ("gate", metric))
            if rule is not None:
                rules.append(rule)
        return tuple(rules)

    def rule(self, metric: str, spec: Any, path) -> Rule | None:
        if not isinstance(spec, dict):
            self.problem(path, f"expected a mapping of rules (e.g. {{min: 0.8}}), got {_describe(spec)}")
            return None
        section = self.mapping(spec, path, RULE_KEYS)
        before = len(self.problems)
        numbers: dict[str, float] = {}
        for key in LIMIT_RULES:
            if key not in section:
                continue
            number = section[key]
            nonneg = key not in ("min", "max", "threshold")
            if not _is_number(number) or not math.isfinite(number):
                self.problem(path + (key,), f"expected a finite number, got {_describe(number)}")
            elif nonneg and number < 0:
                self.problem(path + (key,), f"expected a number >= 0, got {number!r}")
            elif key == "min_relative_change" and number > 1:
                self.problem(
                    path + (key,),
                    f"expected a fraction from 0 to 1 (MLflow's meaning; 0.05 is 5%), got {number!r}",
                )
            else:
                numbers[key] = number
        direction = self.typed(
            section, path, "direction", lambda v: v in ("higher", "lower"), "'higher' or 'lower'"
        )
        gib = self.typed(section, path, "greater_is_better", lambda v: isinstance(v, bool), "true or false")
        required = self.typed(section, path, "required", lambda v: isinstance(v, bool), "true or false", True)
        mode = self.typed(section, path, "mode", lambda v: v in ("block", "warn"), "'block' or 'warn'", "block")
        significance = self.typed(section, path, "significance", lambda v: _is_number(v) and 0 < v < 0.5,
                                  "a significance level between 0 and 0.5 (e.g. 0.05)")
        if direction is not None and gib is not None and (direction == "higher") != gib:
            self.problem(
                path + ("greater_is_better",),
                f"contradicts direction: {direction} (expected greater_is_better: {str(direction == 'higher').lower()})",
            )
        if any(k in numbers for k in RULE_MLFLOW) and gib is None and direction is None:
            self.problem(
                path,
                "MLflow's MetricThreshold vocabulary needs greater_is_better: true|false (or direction: higher|lower)",
            )
        if "min" in numbers and "max" in numbers and numbers["min"] > numbers["max"]:
            self.problem(path + ("min",), f"min ({numbers['min']!r}) is greater than max ({numbers['max']!r})")
        if not numbers and significance is None and len(self.problems) == before:
            self.problem(
                path,
                "no rule given (expected at least one of: " + ", ".join(LIMIT_RULES) + ")",
            )
        if len(self.problems) != before:
            return None
        return Rule(
            metric=metric,
            line=self.loaded.line(path, key=True),
            direction=direction,
            greater_is_better=gib,
            required=required,
            mode=mode,
            significance=float(significance) if significance is not None else None,
            **{k: float(v) for k, v in numbers.items()},
        )

"""``mlflow-ci.yml`` as declared models: the one description of the file, from which validation, the
frozen configuration objects the commands read, and the JSON Schema (``mlflow-ci schema``) all come.

Each place says what it expects (:class:`~mlflow_ci.declared.Says`), so an error reads
``gate.rmse.max_drop_pct: expected a number >= 0, got -5``. A null value counts as absent, as it did
for every key before. docs/config.md is the reference; tests keep it, the models and the committed
schema in step.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from mlflow_ci.config import (
    BASELINE_SOURCES,
    CLASSIFICATION,
    COMMENT_MODES,
    DEFAULT_METRICS,
    DEFAULT_TIMEOUT,
    GENAI_SCORERS,
    GENAI_SCORERS_WITH_ARGUMENT,
    JUDGE_PROVIDERS,
    LIMIT_RULES,
    MLFLOW_SCORER,
    MLFLOW_SCORERS,
    REGRESSION,
    RULE_MLFLOW,
    USER_METRIC,
)
from mlflow_ci.declared import Says, describe, did_you_mean, problem

METRIC_KEY = "(metric)"  # where _named_rules hands a rule its metric: no key a file means to write
DATA_CHANGE = "train_metrics_on_data_change"  # gate's one key that is not a metric
DATA_CHANGE_KEY = f"({DATA_CHANGE})"  # where Config keeps it: no key a file means to write
DATA_CHANGE_MODES = ("inform", "decide")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


# -- value types -----------------------------------------------------------------------------------

Text = Annotated[StrictStr, StringConstraints(pattern=r"\S"), Says("a non-empty string")]
AliasName = Annotated[StrictStr, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$"),
                      Says("an alias of letters, digits, '_' or '-'")]
Number = Annotated[StrictFloat, Field(allow_inf_nan=False), Says("a finite number")]
NonNegative = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False), Says("a number >= 0")]
Fraction = Annotated[StrictFloat, Field(ge=0, le=1), Says("a fraction from 0 to 1")]
Flag = Annotated[StrictBool, Says("true or false")]
Direction = Annotated[Literal["higher", "lower"], Says("'higher' or 'lower'")]


def _seconds(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match and float(match.group(1)) > 0:
        return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError("not a duration")


Duration = Annotated[
    float,
    PlainValidator(_seconds, json_schema_input_type=Annotated[float, Field(gt=0)] | Annotated[str, StringConstraints(pattern=_DURATION.pattern)]),
    Says("a duration in seconds (a number > 0, or a string like '90s', '30m', '2h', '7d')"),
]


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError("not a scalar")


_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[StrictStr, StringConstraints(pattern=_ENV_NAME), Says("an environment variable name")]
EnvValue = Annotated[str, PlainValidator(_env_text, json_schema_input_type=str | int | float | bool), Says("a string or number")]
# The file holds a mapping; the configuration keeps it as (name, value) pairs in file order.
EnvVars = Annotated[dict[EnvName, EnvValue], AfterValidator(lambda env: tuple(env.items())),
                    Field(json_schema_extra={"additionalProperties": False}), Says("a mapping of variable names to values")]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Texts = Annotated[tuple[Text, ...], BeforeValidator(_as_list, json_schema_input_type=list[Text] | Text),
                  Says("a list of strings")]


DEFAULT_IGNORE = ("*.md", "*.rst", "docs/**", ".github/**", "LICENSE", ".gitignore")
# 'auto' is kept as None (the default); a list as its patterns; [] turns the run cache off.
Inputs = Annotated[Texts | None, BeforeValidator(lambda v: None if v == "auto" else v,
                                                 json_schema_input_type=Literal["auto"] | list[Text] | Text),
                   Says("'auto' or a list of glob patterns")]


class Section(BaseModel):
    """A mapping in the file: unknown keys are errors, nulls count as absent, values are frozen."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


# -- sections --------------------------------------------------------------------------------------


class RayJobConfig(Section):
    """Resources of the training job's entrypoint on a Ray cluster (Ray's Jobs API); the cluster's address
    and credentials come from the environment (RAY_ADDRESS, MLFLOW_CI_RAY_HEADERS), never from here."""
    entrypoint_num_cpus: NonNegative | None = Field(None, description="CPUs reserved for the training command.")
    entrypoint_num_gpus: NonNegative | None = Field(None, description="GPUs reserved for the training command.")
    entrypoint_memory: Annotated[StrictInt, Field(ge=0), Says("a whole number of bytes >= 0")] | None = Field(
        None, description="Memory reserved for the training command, in bytes.")
    entrypoint_resources: Annotated[dict[Annotated[StrictStr, StringConstraints(pattern=r"\S")], NonNegative],
                                    Says("a mapping of resource names to numbers")] = Field(
        {}, description="Custom resources reserved for the training command (e.g. {accelerator_type:A100: 1}).")
    pip: Texts = Field((), description="Packages the job's runtime environment installs before the command runs.")
    excludes: Texts = Field((), description="Files of the project not uploaded as the job's working directory (globs, "
                                            "as Ray reads them; .git is never uploaded).")


TRAIN_ENGINES = ("local", "ray")


class TrainConfig(Section):
    command: Text | None = Field(None, description="Training command, run inside the MLflow run mlflow-ci creates "
                                                   "(or entry_point).")
    entry_point: Text | None = Field(None, description="Instead of command: an entry point of the project's MLproject "
                                                       "file, run as 'mlflow run' runs it, read at every check.")
    parameters: Annotated[dict[EnvName, EnvValue], Says("a mapping of parameter names to values")] = Field(
        {}, description="With entry_point: values for the MLproject's parameters (the rest take their defaults there).")
    workdir: Text = Field(".", description="Working directory of the command, relative to the config file.")
    env: EnvVars = Field({}, validate_default=True, description="Extra environment variables for the command.")
    timeout: Duration = Field(DEFAULT_TIMEOUT, description="Seconds, or '90s', '30m', '2h'; the command is killed after it.")
    metrics_file: Text | None = Field(None, description="Flat JSON {name: number} the command writes; mlflow-ci logs it.")
    inputs: Inputs = Field(
        None, description="What decides whether an earlier run is reused: 'auto' (every file git tracks in the project "
                            "folder, untracked ones that are not ignored, and train.data; minus train.ignore), a list of "
                            "glob patterns, or [] to always train.")
    ignore: Texts = Field(DEFAULT_IGNORE, description="With inputs: auto, files that never change the model (globs; "
                                                      "'*.md' matches at any depth, 'docs/**' a folder).")
    data: Texts = Field((), description="With inputs: auto, globs of data the training reads that git does not track "
                                        "(e.g. data/** kept out of git): their files count too.")
    engine: Annotated[Literal[TRAIN_ENGINES], Says("'local' or 'ray'")] = Field(
        "local", description="Where the command runs: 'local' (a process on this machine) or 'ray' (a job on the Ray "
                             "cluster at RAY_ADDRESS, with the project's files as its working directory).")
    ray: RayJobConfig = Field(default_factory=RayJobConfig, description="With engine: ray, the job's resources.")

    @model_validator(mode="after")
    def _one_way_to_train(self) -> "TrainConfig":
        if (self.command is None) == (self.entry_point is None):
            raise problem("expected either command (a shell command) or entry_point (an entry point of the MLproject "
                          "file), not both" if self.command else "expected command (a shell command) or entry_point "
                          "(an entry point of the MLproject file)", key=True)
        if self.parameters and self.entry_point is None:
            raise problem("parameters go with entry_point (a command takes its arguments itself)", at=("parameters",), key=True)
        if self.engine == "ray" and self.metrics_file:
            raise problem("with engine: ray the job writes its files on the cluster: log the metrics with MLflow from "
                          "the job (it runs inside the run mlflow-ci created)", at=("metrics_file",), key=True)
        return self

    @property
    def auto_inputs(self) -> bool:
        return self.inputs is None

    @property
    def cached(self) -> bool:
        """Whether earlier runs may be reused: unless ``inputs: []``."""
        return self.inputs is None or bool(self.inputs)


def _baseline_source(value: Any) -> str:
    if isinstance(value, str) and value in BASELINE_SOURCES:
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("not a string")
    raise problem(f"unknown baseline source {value!r}{did_you_mean(value, BASELINE_SOURCES)} "
                  f"(expected one of: {', '.join(BASELINE_SOURCES)})")


BaselineSource = Annotated[str, PlainValidator(_baseline_source, json_schema_input_type=Literal[BASELINE_SOURCES]),
                           Says("a non-empty string")]


class BaselineConfig(Section):
    alias: AliasName = Field("champion", description="Registered model alias compared against first.")
    branch: Text | None = Field(None, description="Base branch when the event does not say (default: main).")
    sources: Annotated[tuple[BaselineSource, ...], BeforeValidator(_as_list), Says("a list of strings")] = Field(
        BASELINE_SOURCES, description="The baseline sources to try, in order.")
    required: Flag = Field(True, description="With rules that need a baseline: fail closed when none may serve although "
                                             "one should exist (false: pass, those rules not evaluated).")
    max_age: Annotated[Duration | Literal[False], Says("a duration ('30d', '12h') or false")] = Field(
        30 * 86400.0, description="Warn when the baseline run is older than this ('30d', '12h', seconds; false: never).")


class Rule(Section):
    """The rules of one metric (the key it is written under in ``gate:``)."""
    __says__ = "a mapping of rules (e.g. {min: 0.8})"
    model_config = ConfigDict(populate_by_name=True)

    min: Number | None = Field(None, description="Absolute lower bound.")
    max: Number | None = Field(None, description="Absolute upper bound.")
    max_drop: NonNegative | None = Field(None, description="Largest allowed regression against the baseline, in the metric's units.")
    max_drop_pct: NonNegative | None = Field(None, description="Largest allowed regression against the baseline, in percent.")
    threshold: Number | None = Field(None, description="MLflow MetricThreshold: absolute threshold.")
    min_absolute_change: NonNegative | None = Field(None, description="MLflow MetricThreshold: least absolute improvement over the baseline.")
    min_relative_change: Annotated[Fraction, Says("a fraction from 0 to 1 (MLflow's meaning; 0.05 is 5%)")] | None = Field(
        None, description="MLflow MetricThreshold: least relative improvement over the baseline (0.05 is 5%).")
    direction: Direction | None = Field(None, description="What regression means (default: inferred from the name).")
    greater_is_better: Flag | None = Field(None, description="MLflow's spelling of direction.")
    required: Flag = Field(True, description="false: a missing or non-finite metric skips the rule instead of failing it.")
    mode: Annotated[Literal["block", "warn"], Says("'block' or 'warn'")] = Field("block", description="warn: report without blocking.")
    significance: Annotated[StrictFloat, Field(gt=0, lt=0.5), Says("a significance level between 0 and 0.5 (e.g. 0.05)")] | None = Field(
        None, description="With an evaluate: metric, fail a drop rule only on a regression significant at this level.")
    # The key the rules are written under; filled in from the mapping, never written in the file.
    metric: SkipJsonSchema[str] = Field("", exclude=True, alias=METRIC_KEY)

    def __init__(self, metric: str | None = None, /, **rules: Any) -> None:
        """``Rule("acc", min=0.9)``: the metric may also come first, as in ``gate:``."""
        super().__init__(**rules, **({METRIC_KEY: metric} if metric is not None else {}))

    @model_validator(mode="after")
    def _consistent(self) -> "Rule":
        direction, gib = self.direction, self.greater_is_better
        if direction is not None and gib is not None and (direction == "higher") != gib:
            raise problem(f"contradicts direction: {direction} (expected greater_is_better: {str(direction == 'higher').lower()})",
                          at=("greater_is_better",))
        if any(getattr(self, k) is not None for k in RULE_MLFLOW) and gib is None and direction is None:
            raise problem("MLflow's MetricThreshold vocabulary needs greater_is_better: true|false (or direction: higher|lower)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise problem(f"min ({_plain(self.min)}) is greater than max ({_plain(self.max)})", at=("min",))
        if all(getattr(self, k) is None for k in LIMIT_RULES) and self.significance is None:
            raise problem("no rule given (expected at least one of: " + ", ".join(LIMIT_RULES) + ")")
        return self


def _plain(value: float) -> str:
    return repr(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def _named_rules(value: Any) -> Any:
    """``{metric: {rules}}`` in the file → one :class:`Rule` per metric, in file order."""
    if not isinstance(value, dict):
        raise ValueError("not a mapping")
    return [{**spec, METRIC_KEY: name} if isinstance(spec, dict) else spec for name, spec in value.items()]


Rules = Annotated[tuple[Rule, ...], BeforeValidator(_named_rules, json_schema_input_type=dict[str, Rule]),
                  Says("a mapping of metric names to rules")]


class ReportConfig(Section):
    template: Text | None = Field(None, description="Jinja2 template replacing the built-in report.md template.")
    title: Text | None = Field(None, description="Report title (default: mlflow-ci · <experiment>).")
    precision: Annotated[StrictInt, Field(ge=1, le=12), Says("a whole number from 1 to 12")] = Field(4, description="Significant digits shown.")
    ui_url: Annotated[StrictStr, StringConstraints(pattern=r"^https?://\S+$"), AfterValidator(lambda url: url.rstrip("/")),
                      Says("an http(s) URL of the MLflow UI")] | None = Field(None, description="MLflow UI base URL for run links.")
    trend: Annotated[StrictInt, Field(ge=0, le=100), Says("a whole number from 0 to 100")] = Field(
        20, description="Gated runs of the base branch drawn in each gated metric's trend (0: no trend).")


class PublishConfig(Section):
    comment: Annotated[Literal[COMMENT_MODES], Says("one of: " + ", ".join(COMMENT_MODES))] = Field(
        "always", description="When to write the sticky PR comment.")
    check_name: Text | None = Field(None, description="Check run name (default: mlflow-ci / <experiment>).")
    app: Annotated[StrictStr, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,99}$"), Says("a GitHub App slug, e.g. github-actions")] = Field(
        "github-actions",
        description="The GitHub App whose check runs promote trusts: github-actions for GITHUB_TOKEN, else your app's slug.")


class SelectConfig(Section):
    metric: Annotated[Text, Says("a metric name")] = Field(description="The metric that picks the best passing candidate.")
    direction: Direction | None = Field(None, description="Which way is better (default: inferred from the name).")


class PromoteConfig(Section):
    alias: AliasName | None = Field(None, description="Alias moved on merge (default: baseline.alias).")
    previous_alias: AliasName = Field("previous", description="Alias the replaced champion keeps.")
    model_path: Text = Field("model", description="Artifact path of the logged model in the run.")
    on_missing: Annotated[Literal["refuse", "retrain"], Says("'refuse' or 'retrain'")] = Field(
        "refuse", description="What promote does when no run passed the gate for the merged commit.")
    select: SelectConfig | None = Field(None, description="Fan-out: how promote picks among passing candidates.")
    release_experiment: Text | None = Field(
        None, description="Experiment promote copies the verified model into and registers it from (default: the experiment "
                          "name + ' releases'); only the deploy credentials may write it, so a champion's files never change.")
    provenance: Annotated[Literal["required", "optional"], Says("'required' or 'optional'")] = Field(
        "required",
        description="For a merged PR (GitHub reachable): 'required' promotes only the model whose digest the PR's check "
                    "run recorded; 'optional' uses store tags, marked unverified, when no such check run exists.")

    @property
    def select_metric(self) -> str | None:
        return self.select.metric if self.select else None

    @property
    def select_direction(self) -> str | None:
        return self.select.direction if self.select else None


class DeployConfig(Section):
    command: Text | None = Field(None, description="Deploy hook run after the alias moved, with MODEL_URI set.")
    workdir: Text = Field(".", description="Working directory of the hook, relative to the config file.")
    env: EnvVars = Field({}, validate_default=True, description="Extra environment variables for the hook.")
    timeout: Duration = Field(DEFAULT_TIMEOUT, description="Seconds, or '90s', '30m', '2h'.")


class DataChecksConfig(Section):
    max_psi: Annotated[StrictFloat, Field(gt=0), Says("a number > 0 (0.1 small, 0.25 large shift)")] | None = Field(
        None, description="Largest population stability index per feature against the baseline's data.")
    max_missing: Annotated[Fraction, Says("a fraction from 0 to 1")] | None = Field(None, description="Largest share of missing values per feature.")
    fail_on_removed_columns: Flag = Field(False, description="Fail when the data lost a column the baseline had.")


PERF_PREFIX = "perf."


class PerfConfig(Section):
    repeats: Annotated[StrictInt, Field(ge=3, le=1000), Says("a whole number from 3 to 1000")] = Field(
        15, description="Timed batch predictions per model (p50 and p95 are taken over them).")
    batch_rows: Annotated[StrictInt, Field(ge=1, le=1_000_000), Says("a whole number from 1 to 1000000")] = Field(
        1000, description="Rows per timed batch (at most the evaluation rows); times are per 1,000 rows.")
    single_rows: Annotated[StrictInt, Field(ge=3, le=10_000), Says("a whole number from 3 to 10000")] = Field(
        100, description="Single-row predictions timed per model (latency p50 and p95).")


EVALUATE_ENGINES = ("local", "spark", "ray")
PARQUET_SPEC = re.compile(r"\.(parquet|pq)$|[*?\[]")


class EvaluateConfig(Section):
    data: Text = Field(description="Evaluation data: a CSV/Parquet file, a folder (ending in /) or glob of Parquet files, "
                                   "or module:function returning a frame.")
    target: Text = Field(description="The label column.")
    task: Annotated[Literal["classification", "regression"], Says("'classification' or 'regression'")]
    metrics: Annotated[tuple[Text, ...], BeforeValidator(_as_list), Says("a list of strings")] = Field(
        (), validate_default=True, description="Metric names, or module:function (default: per task).")
    resamples: Annotated[StrictInt, Field(ge=100, le=100_000), Says("a whole number from 100 to 100000")] = Field(
        1000, description="Paired bootstrap resamples.")
    seed: Annotated[StrictInt, Field(ge=0), Says("a whole number >= 0")] = Field(0, description="Bootstrap seed.")
    confidence: Annotated[StrictFloat, Field(ge=0.5, lt=1), Says("a number from 0.5 to below 1 (e.g. 0.95)")] = Field(
        0.95, description="Confidence level of the intervals.")
    output: Annotated[Literal["labels", "probabilities", "logits"], Says("'labels', 'probabilities' or 'logits'")] | None = Field(
        None, description="What the models return when mlflow-ci cannot tell (a custom pyfunc, a PyTorch module that ends in softmax).")
    classes: Annotated[tuple[StrictStr | StrictInt | StrictBool, ...], Says("a list of class labels")] | None = Field(
        None, description="The class of each probability column the models return, in order (default: the model's own, else the sorted labels).")
    data_checks: DataChecksConfig = Field(default_factory=DataChecksConfig, description="Rules on the evaluation data itself.")
    slices: Texts = Field((), description="Categorical columns: metrics per value, with the same diff and gate.")
    slice_gate: Rules = Field({}, validate_default=True, description="Rules applied to every slice, per evaluate metric.")
    deterministic: Annotated[Literal["warn", "required"], Says("'warn' or 'required'")] = Field(
        "warn", description="Each model predicts a sample of rows twice: a model whose outputs differ is reported "
                            "(warn), or fails the gate (required).")
    perf: PerfConfig | None = Field(None, description="Measure prediction time, latency, size and memory of both models "
                                                      "(perf.* metrics; on by default when a gate rule names one).")
    engine: Annotated[Literal[EVALUATE_ENGINES], Says("'local', 'spark' or 'ray'")] = Field(
        "local", description="Where both models score the rows: 'local' (this machine, in memory), 'spark' or 'ray' "
                             "(where the data lives; data: Parquet, a file, a folder or a glob). docs/engines.md.")

    @model_validator(mode="after")
    def _engine_needs(self) -> "EvaluateConfig":
        if self.engine == "local":
            return self
        if not PARQUET_SPEC.search(self.data) and not self.data.endswith("/"):
            raise problem(f"with engine: {self.engine}, expected Parquet data: a .parquet file, a folder of them "
                          "(ending in /) or a glob (*.parquet)", at=("data",))
        user = [m for m in self.metrics if USER_METRIC.fullmatch(m)]
        if user:
            raise problem(f"{user[0]}: module:function metrics run on engine: local only (each resample copies rows); "
                          "the built-in metrics reduce partition by partition", at=("metrics",))
        if self.perf is not None:
            raise problem(f"perf: timings are taken on this machine: not with engine: {self.engine}", at=("perf",), key=True)
        if self.deterministic == "required":
            raise problem(f"deterministic: required needs engine: local (the engines score each row once)", at=("deterministic",))
        return self

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        task = info.data.get("task")
        if task is None:
            return metrics
        metrics = metrics or DEFAULT_METRICS[task]
        known = CLASSIFICATION if task == "classification" else REGRESSION
        for i, name in enumerate(metrics):
            if name not in known and not USER_METRIC.fullmatch(name):
                raise problem(f"unknown {task} metric {name!r}{did_you_mean(name, known)} "
                              f"(expected one of: {', '.join(known)}, or module:function)", at=(i,))
        return metrics

    @field_validator("output", "classes")
    @classmethod
    def _classification_only(cls, value, info: ValidationInfo):
        if value is not None and info.data.get("task") == "regression":
            raise problem("only for task: classification (a regression model returns one number per row)")
        return value

    @field_validator("slice_gate")
    @classmethod
    def _slice_metrics(cls, rules: tuple[Rule, ...], info: ValidationInfo) -> tuple[Rule, ...]:
        if "metrics" not in info.data:  # invalid, and reported as such
            return rules
        metrics = info.data["metrics"]
        for rule in rules:
            if rule.metric not in metrics:
                raise problem(f"not one of evaluate.metrics ({', '.join(metrics)})", at=(rule.metric,), key=True)
        if rules and not info.data.get("slices"):
            raise problem("needs evaluate.slices (the columns to slice by)")
        return rules


GENAI_PREFIX = "genai."


def _scorer_entries(value: Any) -> Any:
    """``[exact_match, {max_length: 400}]`` as (name, argument) pairs; a bare string is one scorer."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return value
    out = []
    for entry in value:
        if isinstance(entry, str):
            out.append((entry, None))
        elif isinstance(entry, dict) and len(entry) == 1:
            out.append(next(iter(entry.items())))
        else:
            out.append(entry)  # refused below with its position
    return out


ScorerEntry = tuple[StrictStr, Any]
JUDGE = "judge"  # a scorer entry {judge: {name: ..., instructions: ...}}: an LLM judge's verdict per row
JUDGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,59}")


def _key_env(value: Any) -> str | bool:
    if value is False or (isinstance(value, str) and re.match(_ENV_NAME, value)):
        return value
    raise ValueError("not an environment variable name")


KeyEnv = Annotated[str | bool, PlainValidator(_key_env, json_schema_input_type=Annotated[str, StringConstraints(pattern=_ENV_NAME)] | Literal[False]),
                   Says("an environment variable name, or false (no key)")]


class JudgeConfig(Section):
    """The LLM judge behind the ``judge`` scorers and MLflow's judges: one pinned model, one budget for the whole check."""
    model: Text = Field(description="The judge model: MLflow's provider URI (openai:/gpt-4o-mini; providers: "
                                    + ", ".join(JUDGE_PROVIDERS) + "), or the id an OpenAI-compatible base_url names it by.")
    base_url: Annotated[StrictStr, StringConstraints(pattern=r"^https?://\S+$"), Says("an http(s) URL")] | None = Field(
        None, description="An OpenAI-compatible API (POST {base_url}/chat/completions), e.g. https://api.openai.com/v1; "
                          "default: the provider's, when model is a provider URI.")
    api_key_env: KeyEnv | None = Field(
        None, description="The environment variable holding the key (false: no key, e.g. a local server); never the key "
                          "itself. Default: the provider's (OPENAI_API_KEY for openai:/...), else OPENAI_API_KEY.")
    temperature: Annotated[StrictFloat, Field(ge=0, le=2), Says("a number from 0 to 2")] = Field(0.0, description="Sampling temperature.")
    max_calls: Annotated[StrictInt, Field(ge=1), Says("a whole number >= 1")] = Field(
        200, description="Requests the check may send, retries and repeats included; checked before each one (exit 4 when spent).")
    max_tokens: Annotated[StrictInt, Field(ge=1), Says("a whole number >= 1")] | None = Field(
        None, description="Tokens (prompt + completion, as the endpoint reports them) the check may use; the next request's worst case is counted first.")
    max_response_tokens: Annotated[StrictInt, Field(ge=1, le=100_000), Says("a whole number from 1 to 100000")] = Field(
        300, description="max_tokens of each request.")
    repeats: Annotated[StrictInt, Field(ge=1, le=15), Says("a whole number from 1 to 15")] = Field(
        1, description="Verdicts per row, aggregated; the report says how many rows flipped between them.")
    aggregate: Annotated[Literal["majority", "mean"], Says("'majority' or 'mean'")] = Field(
        "majority", description="How repeats make one verdict: majority (ties fail), or mean (half or more pass).")
    retries: Annotated[StrictInt, Field(ge=0, le=10), Says("a whole number from 0 to 10")] = Field(
        4, description="Retries of a request on 408/409/429/5xx or a dropped connection, with backoff (each one counted).")
    timeout: Duration = Field(60.0, description="Seconds per request.")

    @model_validator(mode="after")
    def _endpoint_known(self) -> "JudgeConfig":
        provider, uri, _ = self.model.partition(":/")
        if uri and provider not in JUDGE_PROVIDERS:
            raise problem(f"unknown provider {provider!r}{did_you_mean(provider, JUDGE_PROVIDERS)} (expected one of: "
                          f"{', '.join(JUDGE_PROVIDERS)}; or a plain model id with base_url)", at=("model",))
        if not uri and self.base_url is None:
            raise problem("expected base_url with a plain model id (or write the model as a provider URI, "
                          "e.g. openai:/gpt-4o-mini)", at=("base_url",))
        return self

    def endpoint(self) -> tuple[str, str]:
        """(the model id the endpoint knows, the OpenAI-compatible base URL)."""
        provider, uri, model_id = self.model.partition(":/")
        if not uri:
            return self.model, str(self.base_url)
        return model_id, self.base_url or JUDGE_PROVIDERS[provider][0]

    def key_env(self) -> str | None:
        """The variable holding the key, or None when the endpoint takes none."""
        if self.api_key_env is False:
            return None
        if self.api_key_env:
            return self.api_key_env
        provider, uri, _ = self.model.partition(":/")
        return JUDGE_PROVIDERS[provider][1] if uri else "OPENAI_API_KEY"


PromptName = Annotated[StrictStr, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"),
                       Says("a prompt name of letters, digits, '_', '-' and '.'")]


class PromptConfig(Section):
    """A prompt of the app kept in the repository and registered in MLflow's Prompt Registry on merge."""
    name: PromptName = Field(description="Its name in MLflow's Prompt Registry.")
    file: Text = Field(description="The template file in the repository (relative to this file), as the app reads it.")


GENAI_BASELINES = ("base_commit", "prompts", "model")


def _dataset_name(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class DatasetConfig(Section):
    """An MLflow evaluation dataset (mlflow.genai.datasets) in the tracking store."""
    name: Text = Field(description="The dataset's name.")
    digest: Annotated[StrictStr, StringConstraints(pattern=r"^[0-9a-f]{6,64}$"), Says("a hex digest")] | None = Field(
        None, description="The digest the dataset must have (MLflow's dataset digest): pins the rows, a check on changed rows stops.")


class GenaiConfig(Section):
    data: Text | None = Field(None, description="The rows: a JSONL file ({\"inputs\": {...}, \"expectations\": {...}} per line) "
                                                "or a CSV (expected_* columns are expectations, the others inputs).")
    dataset: Annotated[DatasetConfig, BeforeValidator(_dataset_name, json_schema_input_type=str | dict[str, Any])] | None = Field(
        None, description="Instead of data: an MLflow evaluation dataset by name, or {name, digest}.")
    predict_fn: Annotated[StrictStr, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"),
                          Says("module:function (the app, called with each row's inputs as keyword arguments)")] = Field(
        description="The app: module:function in the repository, run for the candidate in this checkout and for the "
                    "baseline in a worktree of the base commit.")
    scorers: Annotated[tuple[ScorerEntry, ...], BeforeValidator(_scorer_entries, json_schema_input_type=list[Any]),
                       Says("a list of scorer names or {name: argument}")] = Field(
        description="Per-row scorers; each one's pass rate is the metric genai.<name>.")
    judge: JudgeConfig | None = Field(None, description="The LLM judge for {judge: {name, instructions}} scorers and MLflow's judges.")
    prompts: tuple[PromptConfig, ...] = Field((), description="The app's prompt templates: their digests are recorded by "
                                                             "check, and promote registers them and moves their alias.")
    baseline: Annotated[Literal[GENAI_BASELINES], Says("'base_commit', 'prompts' or 'model'")] = Field(
        "base_commit", description="What the candidate is compared with: base_commit (the base commit's code, from a "
                                   "worktree); prompts (that code with each of genai.prompts as the champion alias has it); "
                                   "model (the registered model's champion, the app logged as an MLflow model).")
    timeout: Duration = Field(600.0, description="Seconds, or '90s', '30m': the app must answer every row within it.")
    resamples: Annotated[StrictInt, Field(ge=100, le=100_000), Says("a whole number from 100 to 100000")] = Field(
        1000, description="Paired bootstrap resamples.")
    seed: Annotated[StrictInt, Field(ge=0), Says("a whole number >= 0")] = Field(0, description="Bootstrap seed.")
    confidence: Annotated[StrictFloat, Field(ge=0.5, lt=1), Says("a number from 0.5 to below 1 (e.g. 0.95)")] = Field(
        0.95, description="Confidence level of the intervals.")

    @field_validator("scorers")
    @classmethod
    def _known_scorers(cls, scorers: tuple[ScorerEntry, ...]) -> tuple[ScorerEntry, ...]:
        if not scorers:
            raise problem("expected at least one scorer")
        known = (*GENAI_SCORERS, *GENAI_SCORERS_WITH_ARGUMENT, JUDGE, MLFLOW_SCORER)
        seen = set()
        for i, (name, argument) in enumerate(scorers):
            user = USER_METRIC.fullmatch(name) is not None
            if name not in known and not user:
                raise problem(f"unknown scorer {name!r}{did_you_mean(name, known)} (expected one of: {', '.join(known)}, "
                              "or your own module:function)", at=(i,))
            if user and argument is not None:
                raise problem(f"scorer {name} takes no argument (write it as a plain module:function)", at=(i, name))
            wrong = None if user else (_judge_problem(argument) if name == JUDGE else _mlflow_problem(argument)
                                       if name == MLFLOW_SCORER else _scorer_argument_problem(name, argument))
            if wrong:
                raise problem(wrong, at=(i,) if argument is None else (i, name))
            metric = scorer_metric(name, argument)
            if metric in seen:
                raise problem(f"scorer {metric} appears twice (give one a name:)", at=(i,))
            seen.add(metric)
        return scorers

    @model_validator(mode="after")
    def _one_source_of_rows(self) -> "GenaiConfig":
        if (self.data is None) == (self.dataset is None):
            raise problem("expected exactly one of data (a JSONL or CSV file) and dataset (an MLflow evaluation dataset)"
                          + (", not both" if self.data is not None else ""), at=("data",) if self.data is not None else ())
        return self

    def rows_label(self) -> str:
        """Where the rows come from, as the report names it."""
        if self.data is not None:
            return self.data
        return f"MLflow dataset {self.dataset.name}"

    @model_validator(mode="after")
    def _prompts_are_distinct(self) -> "GenaiConfig":
        names = [p.name for p in self.prompts]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise problem(f"prompt {name} appears twice", at=("prompts", i, "name"))
        if self.baseline == "prompts" and not self.prompts:
            raise problem("baseline: prompts needs genai.prompts (the templates to take from the registry)", at=("baseline",))
        return self

    @model_validator(mode="after")
    def _judges_need_a_judge(self) -> "GenaiConfig":
        if self.judge is None:
            for i, (name, argument) in enumerate(self.scorers):
                if asks_judge(name, argument):
                    raise problem("a judge scorer needs genai.judge (the model, the endpoint and the budget)", at=("scorers", i))
        return self

    def metric_names(self) -> tuple[str, ...]:
        """Each scorer's name in ``genai.<name>``: its own, or the name a judge or MLflow scorer is given."""
        return tuple(scorer_metric(name, argument) for name, argument in self.scorers)

    def uses_llm(self) -> bool:
        return any(asks_judge(name, argument) for name, argument in self.scorers)

    def judged_metrics(self) -> tuple[str, ...]:
        """The ``genai.<scorer>`` metrics whose scorer asks the LLM judge (ours, or one of MLflow's judges)."""
        return tuple(GENAI_PREFIX + metric for (name, argument), metric in zip(self.scorers, self.metric_names())
                     if asks_judge(name, argument))


def asks_judge(name: str, argument: Any) -> bool:
    """Whether a scorer entry asks the LLM judge: ``{judge: ...}``, or one of MLflow's judging scorers."""
    return name == JUDGE or (name == MLFLOW_SCORER and MLFLOW_SCORERS[mlflow_scorer_class(argument)][1])


def mlflow_scorer_class(argument: Any) -> str:
    """The MLflow scorer class an ``{mlflow: ...}`` entry names (a bare name, or ``{scorer: Name, ...}``)."""
    return argument if isinstance(argument, str) else argument["scorer"]


def mlflow_scorer_arguments(argument: Any) -> dict:
    """What an ``{mlflow: {scorer: Guidelines, guidelines: ..., name: ...}}`` entry passes to the class."""
    return {} if isinstance(argument, str) else {k: v for k, v in argument.items() if k != "scorer"}


def scorer_metric(name: str, argument: Any) -> str:
    """The ``<name>`` of a scorer entry's metric ``genai.<name>``."""
    if name == JUDGE:
        return argument["name"]
    if name == MLFLOW_SCORER:
        return mlflow_scorer_arguments(argument).get("name") or MLFLOW_SCORERS[mlflow_scorer_class(argument)][0]
    return name.rsplit(":", 1)[-1]


def _mlflow_problem(argument: Any) -> str | None:
    if not isinstance(argument, (str, dict)) or (isinstance(argument, dict) and not isinstance(argument.get("scorer"), str)):
        return "expected the name of one of MLflow's scorers, or {scorer: Name, <its arguments>}"
    cls = mlflow_scorer_class(argument)
    if cls not in MLFLOW_SCORERS:
        return (f"unknown MLflow scorer {cls!r}{did_you_mean(cls, MLFLOW_SCORERS)} (expected one of: "
                f"{', '.join(MLFLOW_SCORERS)})")
    arguments = mlflow_scorer_arguments(argument)
    if "model" in arguments:
        return "model: the judge model is genai.judge's, for every scorer (it is pinned and budgeted there)"
    if "name" in arguments and (not isinstance(arguments["name"], str) or not JUDGE_NAME.fullmatch(arguments["name"])):
        return "name: expected a name of letters, digits and '_' (the metric is genai.<name>)"
    plain = (str, int, float, bool)
    for key, value in arguments.items():
        if not (isinstance(value, plain) or (isinstance(value, list) and all(isinstance(v, plain) for v in value))):
            return f"{key}: expected a string, a number, true/false or a list of them"
    return None


def _judge_problem(argument: Any) -> str | None:
    if not isinstance(argument, dict) or set(argument) != {"name", "instructions"}:
        return "expected {name: ..., instructions: ...}"
    if not isinstance(argument["name"], str) or not JUDGE_NAME.fullmatch(argument["name"]):
        return "name: expected a name of letters, digits and '_' (the metric is genai.<name>)"
    if not isinstance(argument["instructions"], str) or not argument["instructions"].strip():
        return "instructions: expected what the judge must decide, as text"
    return None


def _scorer_argument_problem(name: str, argument: Any) -> str | None:
    """What is wrong with a scorer's argument, or None."""
    if name in GENAI_SCORERS:
        return None if argument is None else f"scorer {name} takes no argument (write it as a plain name)"
    if argument is None:
        return None if name == "json_valid" else f"scorer {name} needs an argument, e.g. {{{name}: ...}}"
    if name in ("max_length", "max_latency_ms"):
        number = isinstance(argument, (int, float)) and not isinstance(argument, bool)
        return None if number and argument > 0 else "expected a number > 0"
    if name == "regex":
        if not isinstance(argument, str):
            return "expected a regular expression (a string)"
        try:
            re.compile(argument)
        except re.error as exc:
            return f"not a regular expression: {exc}"
        return None
    return None if isinstance(argument, dict) else "expected a JSON Schema (a mapping), or no argument"


EVAL_PREFIX = "eval."


def _unscored_eval(metric: str, evaluate: "EvaluateConfig | None") -> str | None:
    """Why nothing scores the ``eval.*`` metric a rule gates (None when evaluate: does): the metric must be
    one of evaluate.metrics (a module:function by its function's name), a slice's column one of evaluate.slices."""
    if evaluate is None:
        return "scored by evaluate:, but there is no evaluate section (add one with the rows both models are scored on)"
    name, _, piece = metric[len(EVAL_PREFIX):].partition("/")
    labels = [spec.rsplit(":", 1)[-1] for spec in evaluate.metrics]
    if name not in labels:
        return f"evaluate.metrics does not score {name} (it scores: {', '.join(labels)}){did_you_mean(name, labels)}"
    column = piece.rpartition(":")[0] if piece else None
    if piece and column not in evaluate.slices:
        return f"no slice column {column!r} in evaluate.slices" + (f" (it has: {', '.join(evaluate.slices)})" if evaluate.slices else "")
    return None


class Config(Section):
    """The whole file. ``path`` (where it was read from) is set by the loader."""
    model_config = ConfigDict(title="mlflow-ci.yml")

    experiment: Text = Field(description="MLflow experiment of the runs.")
    model: Text | None = Field(None, description="Registered model name, the promotion target (default: the experiment).")
    tracking_uri: Text | None = Field(None, description="Tracking URI when MLFLOW_TRACKING_URI is not set (default: a local SQLite store).")
    artifact_location: Text | None = Field(None, description="Artifact location of a newly created experiment.")
    train: Annotated[TrainConfig, Says("a mapping with 'command' or 'entry_point'")] = Field(description="How to train the candidate.")
    baseline: BaselineConfig = Field(default_factory=BaselineConfig, description="Where the baseline comes from.")
    gate: Annotated[Rules, Field(json_schema_extra={"properties": {DATA_CHANGE: {
        "enum": list(DATA_CHANGE_MODES), "description": "When the training's data changed between baseline and candidate, "
        "rules on training-logged metrics (computed on different rows) inform (default) or still decide."}}})] = Field(
        {}, validate_default=True, description="Per metric: the rules a candidate must meet.")
    data_change: SkipJsonSchema[Literal[DATA_CHANGE_MODES]] = Field("inform", exclude=True, alias=DATA_CHANGE_KEY)
    report: ReportConfig = Field(default_factory=ReportConfig, description="report.md settings.")
    publish: PublishConfig = Field(default_factory=PublishConfig, description="PR comment and check run settings.")
    promote: PromoteConfig = Field(default_factory=PromoteConfig, description="What happens on merge.")
    deploy: DeployConfig = Field(default_factory=DeployConfig, description="The deploy hook run by promote and rollback.")
    evaluate: EvaluateConfig | None = Field(None, description="Score candidate and baseline on the same rows.")
    genai: GenaiConfig | None = Field(None, description="A GenAI app scored per row, candidate against the base commit's "
                                                         "code on the same rows (genai.* metrics).")

    _path: Path = PrivateAttr(Path("mlflow-ci.yml"))
    _rule_lines: dict[str, int] = PrivateAttr(default_factory=dict)
    _lines: Any = PrivateAttr(None)  # the file's line of each key (yamlnodes.LoadedYaml), set by the loader

    @field_validator("evaluate")
    @classmethod
    def _perf_rules_need_evaluate(cls, evaluate: "EvaluateConfig | None", info: ValidationInfo) -> "EvaluateConfig | None":
        perf = [rule.metric for rule in info.data.get("gate", ()) if rule.metric.startswith(PERF_PREFIX)]
        if perf and evaluate is not None and evaluate.perf is None:
            return evaluate.model_copy(update={"perf": PerfConfig()})
        return evaluate

    @model_validator(mode="after")
    def _perf_metrics_come_from_evaluate(self) -> "Config":
        perf = [rule.metric for rule in self.gate if rule.metric.startswith(PERF_PREFIX)]
        if perf and self.evaluate is None:
            raise problem(f"{perf[0]} is measured by evaluate: (add an evaluate section with the data to time the models on)",
                          at=("gate", perf[0]), key=True)
        if perf and self.evaluate.engine != "local":
            raise problem(f"{perf[0]} is timed on this machine: not with evaluate.engine: {self.evaluate.engine}",
                          at=("gate", perf[0]), key=True)
        for rule in self.gate:
            if rule.metric.startswith(EVAL_PREFIX):
                unscored = _unscored_eval(rule.metric, self.evaluate)
                if unscored:
                    raise problem(f"{rule.metric}: {unscored}", at=("gate", rule.metric), key=True)
        scored = {f"{GENAI_PREFIX}{name}" for name in self.genai.metric_names()} if self.genai else set()
        for rule in self.gate:
            if rule.metric.startswith(GENAI_PREFIX) and rule.metric not in scored:
                where = "no genai: section scores it" if self.genai is None else f"genai.scorers has no {rule.metric[len(GENAI_PREFIX):]}"
                raise problem(f"{rule.metric} is a GenAI scorer's pass rate, but {where}", at=("gate", rule.metric), key=True)
        return self

    @model_validator(mode="before")
    @classmethod
    def _gate_options(cls, data: Any) -> Any:
        """``gate.train_metrics_on_data_change`` is a setting of the gate, not a metric: kept aside."""
        gate = data.get("gate") if isinstance(data, dict) else None
        if not isinstance(gate, dict) or DATA_CHANGE not in gate:
            return data
        mode = gate[DATA_CHANGE]
        if mode not in DATA_CHANGE_MODES:
            raise problem(f"expected one of: {', '.join(DATA_CHANGE_MODES)} (got {describe(mode)})", at=("gate", DATA_CHANGE))
        rules = {k: v for k, v in gate.items() if k != DATA_CHANGE}
        return {**data, "gate": rules, DATA_CHANGE_KEY: mode}

    @model_validator(mode="before")
    @classmethod
    def _model_defaults_to_experiment(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("model") is None and isinstance(data.get("experiment"), str):
            return {**data, "model": data["experiment"]}
        return data

    @property
    def path(self) -> Path:
        return self._path

    @property
    def root(self) -> Path:
        """The folder holding the config file: relative paths are resolved against it."""
        return self._path.parent

    @property
    def champion_alias(self) -> str:
        return self.promote.alias or self.baseline.alias

    def training_command(self) -> str:
        """``train.command``, or the command of ``train.entry_point`` in the project's MLproject, read now."""
        if self.train.command is not None:
            return self.train.command
        from mlflow_ci.config.mlproject import entry_point_command

        return entry_point_command(self.root, self.train.entry_point, dict(self.train.parameters))

    @property
    def release_experiment(self) -> str:
        return self.promote.release_experiment or f"{self.experiment} releases"

    def resolve(self, relative: str) -> Path:
        return (self.root / relative).resolve()

    def with_experiment(self, experiment: str) -> "Config":
        """The same configuration for another experiment (read from the same file)."""
        return self.model_copy(update={"experiment": experiment})

    def at(self, key_path: str) -> str:
        """``mlflow-ci.yml:12: evaluate.data``: a dotted key path with the file and the line it is written on."""
        parts = tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", key_path))
        line = self._lines.line(parts, key=True) if self._lines is not None else None
        return f"{self._path.name}:{line}: {key_path}" if line else f"{self._path.name}: {key_path}"

    def located(self, problem: str) -> str:
        """A problem that starts with a key path (``evaluate.data: file not found: …``), with its file and line."""
        match = re.match(r"^([A-Za-z_][\w.\[\]]*): ", problem)
        return f"{self.at(match.group(1))}: {problem[match.end():]}" if match else f"{self._path.name}: {problem}"

    def rule_line(self, metric: str) -> int | None:
        """The line of the file where ``gate.<metric>`` starts (for annotations)."""
        return self._rule_lines.get(metric)

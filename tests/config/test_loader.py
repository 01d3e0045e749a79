from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_ci.config import DEFAULT_TIMEOUT
from mlflow_ci.config.loader import load_config, parse_config
from mlflow_ci.errors import ConfigError


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("/repo/mlflow-ci.yml"), shown="mlflow-ci.yml")
    return info.value.problems


def parse(text: str):
    return parse_config(text, Path("/repo/mlflow-ci.yml"), shown="mlflow-ci.yml")


MINIMAL = "experiment: e\ntrain:\n  command: python train.py\n"


def test_minimal_config_gets_documented_defaults():
    cfg = parse(MINIMAL)
    assert cfg.experiment == "e"
    assert cfg.model == "e"  # the registered model defaults to the experiment name
    assert cfg.train.workdir == "."
    assert cfg.train.timeout == DEFAULT_TIMEOUT
    assert cfg.train.auto_inputs and cfg.train.cached and "*.md" in cfg.train.ignore
    assert cfg.baseline.alias == "champion"
    assert cfg.baseline.sources == ("alias", "base_commit", "base_branch", "base_trained")
    assert cfg.gate == ()
    assert cfg.report.precision == 4
    assert cfg.root == Path("/repo")


def test_full_config_parses_every_key():
    cfg = parse(
        """
experiment: diabetes-ridge
model: diabetes
tracking_uri: sqlite:///store.db
artifact_location: artifacts
train:
  command: python train.py --fast
  workdir: src
  env: {SEED: 3, FAST: true, NAME: x}
  timeout: 30m
  metrics_file: out/metrics.json
  inputs: ["*.py", "params.yaml", "data/**"]
baseline:
  alias: prod
  branch: develop
  sources: [base_branch, alias]
gate:
  rmse: {max: 65, max_drop_pct: 5, direction: lower}
  r2: {min: 0.3}
  mae: {threshold: 60, greater_is_better: false, mode: warn, required: false}
report:
  title: Diabetes
  precision: 3
  ui_url: https://mlflow.example.com/
"""
    )
    assert cfg.train.env == (("SEED", "3"), ("FAST", "true"), ("NAME", "x"))
    assert cfg.train.timeout == 1800
    assert cfg.train.inputs == ("*.py", "params.yaml", "data/**")
    assert cfg.baseline.sources == ("base_branch", "alias")
    rmse, r2, mae = cfg.gate
    assert (rmse.metric, rmse.max, rmse.max_drop_pct, rmse.direction) == ("rmse", 65.0, 5.0, "lower")
    assert r2.min == 0.3 and r2.required and r2.mode == "block"
    assert mae.threshold == 60 and mae.greater_is_better is False and mae.mode == "warn" and not mae.required
    assert cfg.report.ui_url == "https://mlflow.example.com"


@pytest.mark.parametrize(
    "timeout, seconds", [(90, 90.0), ("90s", 90.0), ("2h", 7200.0), ("1.5m", 90.0), (0.5, 0.5)]
)
def test_timeouts(timeout, seconds):
    assert parse(MINIMAL + f"  timeout: {timeout}\n").train.timeout == seconds


def test_every_problem_is_reported_with_file_line_and_key_path():
    text = """\
experiment: e
modle: typo
train:
  command: python train.py
  timeout: soon
  inputs: [1]
gate:
  rmse: {max: abc, max_drop_pct: -5}
  acc: {min: 0.9, max: 0.8}
  f1: {threshold: 0.5}
  auc: 0.9
  r2: {}
  mae: {direction: up, min: 1}
report:
  precision: 0
"""
    assert problems(text) == [
        "mlflow-ci.yml:2: modle: unknown key; did you mean 'model'? (expected one of: experiment, model, tracking_uri, artifact_location, train, baseline, gate, report, publish, promote, deploy, evaluate, genai)",
        "mlflow-ci.yml:5: train.timeout: expected a duration in seconds (a number > 0, or a string like '90s', '30m', '2h', '7d'), got 'soon'",
        "mlflow-ci.yml:6: train.inputs[0]: expected a non-empty string, got 1",
        "mlflow-ci.yml:8: gate.rmse.max: expected a finite number, got 'abc'",
        "mlflow-ci.yml:8: gate.rmse.max_drop_pct: expected a number >= 0, got -5",
        "mlflow-ci.yml:9: gate.acc.min: min (0.9) is greater than max (0.8)",
        "mlflow-ci.yml:10: gate.f1: MLflow's MetricThreshold vocabulary needs greater_is_better: true|false (or direction: higher|lower)",
        "mlflow-ci.yml:11: gate.auc: expected a mapping of rules (e.g. {min: 0.8}), got 0.9",
        "mlflow-ci.yml:12: gate.r2: no rule given (expected at least one of: min, max, max_drop, max_drop_pct, threshold, min_absolute_change, min_relative_change)",
        "mlflow-ci.yml:13: gate.mae.direction: expected 'higher' or 'lower', got 'up'",
        "mlflow-ci.yml:15: report.precision: expected a whole number from 1 to 12, got 0",
    ]


def test_missing_required_keys():
    assert problems("model: m\n") == [
        "mlflow-ci.yml:1: experiment: required key is missing (expected a non-empty string)",
        "mlflow-ci.yml:1: train: required key is missing (expected a mapping with 'command' or 'entry_point')",
    ]
    assert problems("experiment: e\ntrain:\n  workdir: src\n") == [
        "mlflow-ci.yml:2: train: expected command (a shell command) or entry_point (an entry point of the MLproject file)",
    ]
    assert problems("experiment: e\ntrain:\n  command: x\n  parameters: {alpha: 1}\n") == [
        "mlflow-ci.yml:4: train.parameters: parameters go with entry_point (a command takes its arguments itself)",
    ]


def test_unknown_rule_key_suggests_the_closest():
    out = problems(MINIMAL + "gate:\n  acc:\n    mn: 0.9\n")
    assert out[0].startswith("mlflow-ci.yml:6: gate.acc.mn: unknown key; did you mean 'min'?")


def test_contradicting_direction_and_greater_is_better():
    out = problems(MINIMAL + "gate:\n  loss: {max: 1, direction: lower, greater_is_better: true}\n")
    assert out == [
        "mlflow-ci.yml:5: gate.loss.greater_is_better: contradicts direction: lower (expected greater_is_better: false)"
    ]


def test_min_relative_change_is_a_fraction_as_in_mlflow():
    out = problems(MINIMAL + "gate:\n  acc: {min_relative_change: 5, greater_is_better: true}\n")
    assert out == [
        "mlflow-ci.yml:5: gate.acc.min_relative_change: expected a fraction from 0 to 1 (MLflow's meaning; 0.05 is 5%), got 5"
    ]


def test_duplicate_keys_are_errors():
    out = problems("experiment: a\nexperiment: b\ntrain: {command: x}\n")
    assert out == ["mlflow-ci.yml:2: experiment: key appears more than once"]


def test_yaml_syntax_error_names_line_and_column():
    out = problems("experiment: e\ntrain: [unclosed\n")
    assert len(out) == 1 and out[0].startswith("mlflow-ci.yml:3:1: invalid YAML: ")


def test_empty_and_non_mapping_files():
    assert problems("") == [
        "mlflow-ci.yml: the file is empty (expected at least 'experiment' and 'train.command')"
    ]
    assert problems("- a\n- b\n") == ["mlflow-ci.yml:1: (top level): expected a mapping, got a list"]


def test_baseline_problems():
    out = problems(MINIMAL + "baseline:\n  alias: 'bad alias'\n  sources: [alias, base_comit]\n")
    assert out == [
        "mlflow-ci.yml:5: baseline.alias: expected an alias of letters, digits, '_' or '-', got 'bad alias'",
        "mlflow-ci.yml:6: baseline.sources[1]: unknown baseline source 'base_comit'; did you mean 'base_commit'? (expected one of: alias, base_commit, base_branch, base_trained)",
    ]


def test_env_problems():
    out = problems(MINIMAL + "  env:\n    GOOD: 1\n    bad-name: x\n    LIST: [1]\n")
    assert out == [
        "mlflow-ci.yml:6: train.env.bad-name: expected an environment variable name",
        "mlflow-ci.yml:7: train.env.LIST: expected a string or number, got a list",
    ]


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yml")
    assert "file not found (create one with 'mlflow-ci init', or pass --config PATH)" in info.value.problems[0]


@pytest.mark.parametrize(("value", "problem"), [
    ("!!python/name:os.system", "could not determine a constructor for the tag"),
    ("!!timestamp nope", "timestamp value that cannot be read"),
    ("!!int 12x", "int value that cannot be read"),
])
def test_a_tag_the_safe_reader_refuses_is_a_located_problem_not_a_crash(tmp_path, value, problem):
    path = tmp_path / "mlflow-ci.yml"
    path.write_text(f"experiment: e\ntrain: {{command: x}}\nextra: {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [found] = caught.value.problems
    assert found.startswith(f"{path}:3:8: invalid YAML: ") and problem in found


GENAI = MINIMAL + "genai:\n  data: faq.jsonl\n  predict_fn: faq_app:answer\n  scorers: {scorers}\n"


def test_genai_scorers_are_names_or_one_key_mappings():
    cfg = parse(GENAI.format(scorers='[contains, {max_length: 400}, {regex: "^A"}, json_valid]')
                + "gate:\n  genai.contains: {min: 0.9, significance: 0.05}\n")
    assert cfg.genai.scorers == (("contains", None), ("max_length", 400), ("regex", "^A"), ("json_valid", None))
    assert cfg.genai.timeout == 600 and cfg.genai.resamples == 1000


@pytest.mark.parametrize("scorers,message", [
    ("[contians]", "genai.scorers[0]: unknown scorer 'contians'; did you mean 'contains'?"),
    ('[{regex: "("}]', "genai.scorers[0].regex: not a regular expression: missing )"),
    ("[{max_length: true}]", "genai.scorers[0].max_length: expected a number > 0"),
    ("[{exact_match: 1}]", "genai.scorers[0].exact_match: scorer exact_match takes no argument"),
    ("[{json_valid: 3}]", "genai.scorers[0].json_valid: expected a JSON Schema (a mapping), or no argument"),
    ("[contains, contains]", "genai.scorers[1]: scorer contains appears twice"),
    ("[max_length]", "genai.scorers[0]: scorer max_length needs an argument, e.g. {max_length: ...}"),
    ("[]", "genai.scorers: expected at least one scorer"),
    ("[{mlflow: Corectness}]", "genai.scorers[0].mlflow: unknown MLflow scorer 'Corectness'; did you mean 'Correctness'?"),
    ("[{mlflow: {scorer: Safety, model: 'openai:/x'}}]", "genai.scorers[0].mlflow: model: the judge model is genai.judge's"),
    ("[{mlflow: {scorer: Guidelines, guidelines: {a: 1}}}]", "genai.scorers[0].mlflow: guidelines: expected a string, a number"),
    ("[{mlflow: {guidelines: x}}]", "genai.scorers[0].mlflow: expected the name of one of MLflow's scorers"),
    ("[{mlflow: RegexMatch}, {mlflow: {scorer: RegexMatch, pattern: x}}]", "genai.scorers[1]: scorer regex_match appears twice (give one a name:)"),
])
def test_bad_genai_scorers_are_located(scorers, message):
    (problem,) = problems(GENAI.format(scorers=scorers))
    assert problem.startswith("mlflow-ci.yml:7: ") and message in problem


def test_a_rule_on_a_genai_metric_needs_its_scorer():
    (problem,) = problems(GENAI.format(scorers="[contains]") + "gate:\n  genai.exact_match: {min: 0.9}\n")
    assert "gate.genai.exact_match: genai.exact_match is a GenAI scorer's pass rate, but genai.scorers has no exact_match" in problem
    (problem,) = problems(MINIMAL + "gate:\n  genai.contains: {min: 0.9}\n")
    assert "but no genai: section scores it" in problem


def test_mlflows_scorers_are_named_and_judging_ones_need_a_judge():
    cfg = parse(GENAI.format(scorers="[{mlflow: RegexMatch}, {mlflow: {scorer: ResponseLength, max_length: 9, name: short}}]")
                + "gate:\n  genai.short: {min: 0.9}\n")
    assert cfg.genai.metric_names() == ("regex_match", "short") and not cfg.genai.uses_llm()
    (problem,) = problems(GENAI.format(scorers="[contains, {mlflow: Correctness}]"))
    assert "genai.scorers[1]: a judge scorer needs genai.judge" in problem


JUDGE_BLOCK = "  judge: {judge}\n"


@pytest.mark.parametrize("judge,message", [
    ("{model: gpt-x}", "genai.judge.base_url: expected base_url with a plain model id (or write the model as a provider URI"),
    ("{model: 'opnai:/gpt-x'}", "genai.judge.model: unknown provider 'opnai'; did you mean 'openai'?"),
    ("{model: 'openai:/gpt-x', api_key_env: 3}", "genai.judge.api_key_env: expected an environment variable name, or false (no key), got 3"),
])
def test_bad_judges_are_located(judge, message):
    (problem,) = problems(GENAI.format(scorers="[{mlflow: Safety}]") + JUDGE_BLOCK.format(judge=judge))
    assert message in problem, problem


def test_a_judge_by_provider_uri_gets_its_endpoint_and_key_variable():
    def judge(text):
        return parse(GENAI.format(scorers="[{mlflow: Safety}]") + JUDGE_BLOCK.format(judge=text)).genai.judge

    j = judge("{model: 'anthropic:/claude-x'}")
    assert j.endpoint() == ("claude-x", "https://api.anthropic.com/v1") and j.key_env() == "ANTHROPIC_API_KEY"
    j = judge("{model: 'openai:/gpt-x', base_url: 'http://127.0.0.1:9/v1', api_key_env: false}")
    assert j.endpoint() == ("gpt-x", "http://127.0.0.1:9/v1") and j.key_env() is None
    j = judge("{model: local-7b, base_url: 'http://127.0.0.1:9/v1'}")
    assert j.endpoint() == ("local-7b", "http://127.0.0.1:9/v1") and j.key_env() == "OPENAI_API_KEY"
    assert judge("{model: 'ollama:/llama3'}").key_env() is None


@pytest.mark.parametrize("extra,message", [
    ("  dataset: faq-eval\n", "genai.data: expected exactly one of data (a JSONL or CSV file) and dataset (an MLflow evaluation dataset), not both"),
    ("  prompts: [{name: faq, file: a.txt}, {name: faq, file: b.txt}]\n", "genai.prompts[1].name: prompt faq appears twice"),
    ("  baseline: prompts\n", "genai.baseline: baseline: prompts needs genai.prompts"),
    ("  baseline: champion\n", "genai.baseline: expected 'base_commit', 'prompts' or 'model'"),
    ("  dataset: {name: faq-eval, digest: XYZ}\n", "genai.dataset.digest: expected a hex digest"),
])
def test_bad_genai_rows_prompts_and_baselines_are_located(extra, message):
    found = problems(GENAI.format(scorers="[contains]") + extra)
    assert any(message in p for p in found), found


def test_rows_need_a_file_or_a_dataset():
    (problem,) = problems(GENAI.format(scorers="[contains]").replace("  data: faq.jsonl\n", ""))
    assert "genai: expected exactly one of data (a JSONL or CSV file) and dataset (an MLflow evaluation dataset)" in problem


def test_rows_from_an_mlflow_dataset():
    cfg = parse(GENAI.format(scorers="[contains]").replace("  data: faq.jsonl\n", "  dataset: {name: faq-eval, digest: c2f09bf9}\n"))
    assert (cfg.genai.dataset.name, cfg.genai.dataset.digest, cfg.genai.rows_label()) == ("faq-eval", "c2f09bf9", "MLflow dataset faq-eval")


def test_a_repositorys_own_scorer_is_named_by_its_function():
    cfg = parse(GENAI.format(scorers="[contains, checks.tone:polite]") + "gate:\n  genai.polite: {min: 0.9}\n")
    assert cfg.genai.metric_names() == ("contains", "polite")
    (problem,) = problems(GENAI.format(scorers="[{checks.tone:polite: 3}]"))
    assert "genai.scorers[0].checks.tone:polite: scorer checks.tone:polite takes no argument" in problem


def test_a_deep_unclosed_flow_collection_is_a_located_problem():
    """#24 item 9: PyYAML's parser recursed until Python gave up (exit 4); it is a located problem (exit 2)."""
    out = problems(MINIMAL + "gate: {a: " + "[" * 5000 + "\n")
    assert out == ["mlflow-ci.yml:4:74: invalid YAML: values are nested more than 64 levels deep"]


@pytest.mark.parametrize("gate, evaluate, message", [
    ("eval.f1: {min: 0.5}", "", "gate.eval.f1: eval.f1: scored by evaluate:, but there is no evaluate section (add one with the rows both models are scored on)"),
    ("eval.f1: {min: 0.5}", "  metrics: [accuracy, roc_auc]\n",
     "gate.eval.f1: eval.f1: evaluate.metrics does not score f1 (it scores: accuracy, roc_auc)"),
    ("eval.acuracy: {min: 0.5}", "  metrics: [accuracy]\n",
     "gate.eval.acuracy: eval.acuracy: evaluate.metrics does not score acuracy (it scores: accuracy); did you mean 'accuracy'?"),
    ("eval.accuracy/region:north: {min: 0.5}", "  metrics: [accuracy]\n",
     "gate.eval.accuracy/region:north: eval.accuracy/region:north: no slice column 'region' in evaluate.slices"),
])
def test_a_rule_on_an_eval_metric_nothing_scores_is_refused(gate, evaluate, message):
    """#24 item 8: validate accepted it, and check then failed closed with exit 1."""
    section = "evaluate:\n  data: eval.csv\n  target: y\n  task: classification\n" + evaluate if evaluate else ""
    [problem] = problems(MINIMAL + f"gate:\n  {gate}\n" + section)
    assert problem.endswith(message), problem


def test_eval_rules_on_scored_metrics_slices_and_own_functions_are_valid():
    cfg = parse(MINIMAL + "gate:\n  eval.accuracy: {min: 0.5}\n  eval.cost: {max: 3}\n  eval.accuracy/region:north: {min: 0.4}\n"
                "evaluate:\n  data: eval.csv\n  target: y\n  task: classification\n  metrics: [accuracy, 'pkg.m:cost']\n"
                "  slices: [region]\n")
    assert [r.metric for r in cfg.gate] == ["eval.accuracy", "eval.cost", "eval.accuracy/region:north"]


def test_the_gate_setting_for_data_changes_is_not_a_metric():
    cfg = parse(MINIMAL + "gate:\n  acc: {min: 0.5}\n  train_metrics_on_data_change: decide\n")
    assert [r.metric for r in cfg.gate] == ["acc"] and cfg.data_change == "decide"
    assert parse(MINIMAL).data_change == "inform"
    [problem] = problems(MINIMAL + "gate:\n  train_metrics_on_data_change: always\n")
    assert problem == "mlflow-ci.yml:5: gate.train_metrics_on_data_change: expected one of: inform, decide (got 'always')"


def test_baseline_required_and_max_age():
    cfg = parse(MINIMAL + "baseline:\n  required: false\n  max_age: 7d\n")
    assert cfg.baseline.required is False and cfg.baseline.max_age == 7 * 86400
    assert parse(MINIMAL + "baseline:\n  max_age: false\n").baseline.max_age is False
    assert parse(MINIMAL).baseline.max_age == 30 * 86400 and parse(MINIMAL).baseline.required is True


def test_the_engines_say_what_they_need():
    evaluate = "evaluate:\n  data: {data}\n  target: y\n  task: classification\n  engine: {engine}\n{extra}"
    assert parse(MINIMAL + evaluate.format(data="rows/", engine="spark", extra="")).evaluate.engine == "spark"
    assert parse(MINIMAL + evaluate.format(data="s3://bucket/rows/*.parquet", engine="ray", extra="")).evaluate.engine == "ray"
    [csv] = problems(MINIMAL + evaluate.format(data="eval.csv", engine="spark", extra=""))
    assert "evaluate.data" in csv and "with engine: spark, expected Parquet data" in csv
    [user] = problems(MINIMAL + evaluate.format(data="rows/", engine="ray", extra="  metrics: [accuracy, costs:fnr]\n"))
    assert "costs:fnr: module:function metrics run on engine: local only" in user
    [timed] = problems(MINIMAL + evaluate.format(data="rows/", engine="spark", extra="") + "gate:\n  perf.latency_p95_ms: {max: 5}\n")
    assert "perf.latency_p95_ms is timed on this machine: not with evaluate.engine: spark" in timed
    [engine] = problems(MINIMAL.replace("train.py\n", "train.py\n  engine: kubernetes\n"))
    assert "train.engine" in engine and "'local' or 'ray'" in engine
    [metrics] = problems(MINIMAL.replace("train.py\n", "train.py\n  engine: ray\n  metrics_file: m.json\n"))
    assert "train.metrics_file" in metrics and "log the metrics with MLflow from the job" in metrics
    cfg = parse(MINIMAL.replace("train.py\n", "train.py\n  engine: ray\n  ray: {entrypoint_num_gpus: 1, pip: [torch]}\n"))
    assert cfg.train.ray.entrypoint_num_gpus == 1 and cfg.train.ray.pip == ("torch",)

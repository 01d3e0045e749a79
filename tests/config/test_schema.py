"""The JSON Schema of mlflow-ci.yml: generated from the models, committed, printed by `mlflow-ci schema`,
and in agreement with the loader on every config the project ships or documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT

from mlflow_ci.cli import cli
from mlflow_ci.commands.init import render_config
from mlflow_ci.config import SCHEMA_URL
from mlflow_ci.config.loader import json_schema, json_schema_text, parse_config
from mlflow_ci.config.models import Config
from mlflow_ci.errors import ConfigError

COMMITTED = ROOT / "schema" / "mlflow-ci.schema.json"
MINIMAL = {"experiment": "e", "train": {"command": "python train.py"}}
# What a documented fragment of a section leaves out (it shows only the keys it is about).
FILLERS = {"evaluate": {"data": "eval.csv", "target": "label", "task": "classification"},
           "genai": {"data": "eval/faq.jsonl", "predict_fn": "faq_app:answer", "scorers": ["contains"]}}


def _filled(key: str, value):
    """A documented section completed with what it leaves out (rows from a file unless it names a dataset)."""
    if key not in FILLERS or not isinstance(value, dict):
        return value
    filler = {k: v for k, v in FILLERS[key].items() if not (k == "data" and "dataset" in value)}
    return {**filler, **value}


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(COMMITTED.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def shipped_configs() -> list[Path]:
    return sorted(ROOT.glob("examples/*/mlflow-ci.yml")) + [ROOT / "mlflow_ci" / "demo_project" / "mlflow-ci.yml"]


def documented_configs() -> list[tuple[str, dict]]:
    """Every YAML block of the docs that is (part of) an mlflow-ci.yml, completed to a whole file."""
    keys = set(Config.model_fields)
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("examples/*/README.md"))]:
        text = doc.read_text(encoding="utf-8")
        for i, block in enumerate(re.findall(r"```ya?ml\n(.*?)```", text, re.S)):
            try:
                data = yaml.safe_load(block)
            except yaml.YAMLError:
                continue
            if isinstance(data, dict) and data and set(data) <= keys:
                whole = {**MINIMAL, **{k: _filled(k, v) for k, v in data.items()}}
                found.append((f"{doc.relative_to(ROOT)} block {i + 1}", whole))
    return found


def test_committed_schema_is_the_generated_one():
    assert COMMITTED.read_text(encoding="utf-8") == json_schema_text(), (
        "schema/mlflow-ci.schema.json is stale: regenerate it with 'mlflow-ci schema > schema/mlflow-ci.schema.json'"
    )


def test_schema_command_prints_it():
    out = CliRunner().invoke(cli, ["schema"])
    assert out.exit_code == 0
    assert json.loads(out.output) == json_schema()
    assert json_schema()["$id"] == SCHEMA_URL


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_configs_are_valid(validator, path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert [e.message for e in validator.iter_errors(data)] == []
    parse_config(path.read_text(encoding="utf-8"), path)


def test_documented_configs_are_valid(validator):
    documented = documented_configs()
    assert len(documented) >= 5  # the README's tutorial, docs/config.md, docs/gate.md, ...
    for where, data in documented:
        assert [e.message for e in validator.iter_errors(data)] == [], where
        parse_config(yaml.safe_dump(data), Path("/repo/mlflow-ci.yml"))


def test_init_config_points_editors_at_the_schema(validator):
    text = render_config("churn", ("command", "python train.py"))
    assert list(validator.iter_errors(yaml.safe_load(render_config("churn", ("entry_point", "main"))))) == []
    assert text.splitlines()[0] == f"# yaml-language-server: $schema={SCHEMA_URL}"
    assert list(validator.iter_errors(yaml.safe_load(text))) == []


@pytest.mark.parametrize("bad", [
    {"modle": "typo"},
    {"train": {"command": "x", "timeout": "soon"}},
    {"train": {"command": "x", "env": {"bad-name": "1"}}},
    {"gate": {"acc": {"mn": 0.9}}},
    {"gate": {"acc": {"min": "high"}}},
    {"gate": {"acc": {"max_drop_pct": -5}}},
    {"gate": {"acc": {"min": 0.9, "direction": "up"}}},
    {"baseline": {"alias": "bad alias"}},
    {"baseline": {"sources": ["base_comit"]}},
    {"report": {"precision": 0}},
    {"publish": {"comment": "sometimes"}},
    {"evaluate": {"data": "d.csv", "target": "y", "task": "ranking"}},
])
def test_schema_and_loader_reject_the_same_mistakes(validator, bad):
    data = {**MINIMAL, **bad}
    assert list(validator.iter_errors(data)), f"the schema accepts {bad}"
    with pytest.raises(ConfigError):
        parse_config(yaml.safe_dump(data), Path("/repo/mlflow-ci.yml"))

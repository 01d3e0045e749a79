"""The docs stay true: CLI help in docs/cli.md, every config key documented, README commands."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_ci.cli import cli
from mlflow_ci.config import models
from mlflow_ci.declared import field_names

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = ROOT / "docs" / "cli.md"


def commands() -> list[str]:
    return sorted(cli.commands)


def help_text(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="mlflow-ci", terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def render_cli_doc() -> str:
    parts = [
        "# Command reference\n",
        "Generated from `mlflow-ci … --help`; `tests/test_docs.py` fails when it drifts",
        "(regenerate with `UPDATE_DOCS=1 python -m pytest tests/test_docs.py`).\n",
        "```text\n" + help_text() + "```\n",
    ]
    for name in commands():
        parts.append(f"## mlflow-ci {name}\n")
        parts.append("```text\n" + help_text(name) + "```\n")
    return "\n".join(parts)


def test_cli_doc_matches_help():
    expected = render_cli_doc()
    if os.environ.get("UPDATE_DOCS"):
        CLI_DOC.write_text(expected, encoding="utf-8")
    assert CLI_DOC.read_text(encoding="utf-8") == expected


def test_product_commands_exist():
    for name in ("check", "train", "compare", "gate", "report", "validate", "demo"):
        assert name in cli.commands


@pytest.mark.parametrize(
    "section, keys",
    [
        ("Top level", field_names(models.Config)),
        ("`train`", field_names(models.TrainConfig)),
        ("`baseline`", field_names(models.BaselineConfig)),
        ("`report`", field_names(models.ReportConfig)),
        ("`gate`", field_names(models.Rule)),
        ("`evaluate`", field_names(models.EvaluateConfig)),
        ("`genai`", field_names(models.GenaiConfig)),
        ("`genai.judge`", field_names(models.JudgeConfig)),
    ],
)
def test_every_config_key_is_documented(section, keys):
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    for key in keys:
        assert f"`{key}`" in body, f"{key} missing from docs/config.md section {section}"


def test_every_rule_is_in_the_gate_doc():
    text = (ROOT / "docs" / "gate.md").read_text(encoding="utf-8")
    for key in field_names(models.Rule):
        assert f"`{key}" in text, key


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- (demo|test)-command -->\n```bash\n(.+?)\n```", readme)
    assert [kind for kind, _ in blocks] == ["demo", "test"]
    demo, test = (cmd for _, cmd in blocks)
    assert demo.endswith("mlflow-ci demo") and "pytest" in test
    assert readme.index("<!-- test-command -->") < readme.index("## How a check works")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in ci


def test_every_benchmark_row_is_documented_and_the_readme_shows_a_whole_table():
    source = (ROOT / "benchmarks" / "run.py").read_text(encoding="utf-8")
    groups = re.search(r'"--only", default="([^"]+)"', source).group(1).split(",")
    doc = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    assert [g for g in groups if f"| {g} |" not in doc] == []
    assert f"(rows: {', '.join(groups)})" in doc
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- benchmark-table -->")[1].split("<!-- /benchmark-table -->")[0]
    lines = [line for line in block.strip().splitlines() if line.startswith("|")]
    assert lines[:2] == ["| benchmark | ours (s) | reference (s) | figure | target | met |", "|---|---:|---:|---:|---:|:-:|"]
    assert all(line.count("|") == 7 for line in lines), "a row with the wrong number of cells"
    assert re.search(r"Measured on \d{4}-\d{2}-\d{2} .*`python benchmarks/run\.py", block)

"""Loading ``mlflow-ci.yml``: YAML with line numbers, validation against the models, and the JSON Schema.

The file is described once, by the models in :mod:`.models`. Loading collects *every* problem before
failing; each is one line naming the file, the line, the key path and what was expected, e.g.::

    mlflow-ci.yml:9: gate.rmse.max_drop_pct: expected a number >= 0, got -5

The full reference is docs/config.md; tests/test_docs.py keeps it in step with the models.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from mlflow_ci import yamlnodes
from mlflow_ci.config import DEFAULT_CONFIG, SCHEMA_URL
from mlflow_ci.config.models import Config
from mlflow_ci.declared import Problem, describe, did_you_mean, dotted, problems
from mlflow_ci.errors import ConfigError


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
    if loaded.data is None:
        raise ConfigError([f"{shown}: the file is empty (expected at least 'experiment' and 'train.command')"], path=shown)
    found = [f"{shown}:{line}: {dotted(dup)}: key appears more than once" for dup, line in loaded.duplicates]
    config = None
    try:
        config = Config.model_validate(loaded.data)
    except ValidationError as exc:
        found += [_line(p, shown, loaded) for p in _reading_order(problems(exc, Config, loaded.data))]
    if found:
        raise ConfigError(found, path=shown)
    assert config is not None
    config._path = path
    config._rule_lines = {rule.metric: loaded.line(("gate", rule.metric), key=True) for rule in config.gate}
    config._lines = loaded
    return config


def _reading_order(found: list[Problem]) -> list[Problem]:
    """Pydantic reports a mapping's unknown keys after its fields; a reader meets them first, so each
    moves up to the first problem inside the mapping it was found in."""
    def key(item: tuple[int, Problem]) -> tuple[int, int, int]:
        index, p = item
        if p.kind != "unknown_key":
            return index, 1, index
        parent = p.path[:-1]
        first = next(i for i, q in enumerate(found) if q.path[: len(parent)] == parent)
        return first, 0, index

    return [p for _, p in sorted(enumerate(found), key=key)]


def _line(p: Problem, shown: str, loaded: yamlnodes.LoadedYaml) -> str:
    line = loaded.line(p.path, key=p.at_key)
    where = f"{shown}:{line}" if line else shown
    return f"{where}: {dotted(p.path)}: {message(p)}"


def message(p: Problem) -> str:
    """What one problem says after its key path."""
    if p.kind == "custom":
        return p.message or ""
    if p.kind == "missing":
        return f"required key is missing (expected {p.expected or 'a value'})"
    if p.kind == "unknown_key":
        key = str(p.path[-1]) if p.path else ""
        return f"unknown key{did_you_mean(key, p.allowed)} (expected one of: {', '.join(p.allowed)})"
    if p.kind == "bad_key":
        return f"expected {p.expected or 'another key'}"
    return f"expected {p.expected or 'another value'}, got {describe(p.value)}"


def json_schema() -> dict:
    """The JSON Schema of ``mlflow-ci.yml`` (draft 2020-12), generated from the models."""
    schema = Config.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_URL,
        **schema,
        "title": "mlflow-ci.yml",
        "description": "Configuration of mlflow-ci: train, compare, gate and promote MLflow models on every pull request.",
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def missing_paths(config: Config) -> list[str]:
    """The files and folders the configuration names that do not exist, each located (file, line, key)."""
    wanted = [("train.workdir", config.train.workdir, "folder"), ("deploy.workdir", config.deploy.workdir, "folder")]
    if config.report.template:
        wanted.append(("report.template", config.report.template, "file"))
    out = []
    for key, relative, kind in wanted:
        path = config.resolve(relative)
        if not (path.is_dir() if kind == "folder" else path.is_file()):
            out.append(f"{config.at(key)}: {kind} not found: {path}")
    return out


def module_file(root: Path, module: str) -> Path | None:
    """The file of ``module`` (dotted) under ``root``: ``a/b.py`` or ``a/b/__init__.py``; None when neither exists."""
    base = root / module.replace(".", "/")
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)

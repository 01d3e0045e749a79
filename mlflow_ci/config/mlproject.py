"""The training of a project with an ``MLproject`` file, as ``mlflow run`` runs it (``train.entry_point``).

Read at every check, never copied: a pull request that changes a parameter's default or the command in
``MLproject`` trains with the change. MLflow's semantics: each declared parameter takes the value
``train.parameters`` gives it, else its default (one with neither is an error naming it); values are
shell-quoted into the command's ``{name}`` placeholders (``str.format``: a literal brace is doubled); a
given parameter the entry point does not declare is appended as ``--name value``. The command keeps its
lines: a ``command: |`` block with ``\\`` continuations runs as the shell reads it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Mapping

from mlflow_ci.errors import UsageError

NAMES = ("MLproject", "MLproject.yaml", "MLproject.yml")


def mlproject_file(root: Path) -> Path | None:
    return next((root / name for name in NAMES if (root / name).is_file()), None)


def entry_points(path: Path) -> dict:
    """The ``entry_points`` mapping of an MLproject file (UsageError naming the file when it is not one)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: not readable YAML ({type(exc).__name__})") from None
    points = data.get("entry_points") if isinstance(data, dict) else None
    if not isinstance(points, dict) or not points:
        raise UsageError(f"{path}: entry_points: expected a mapping of entry point names to their command and parameters")
    return points


def entry_point_command(root: Path, name: str, given: Mapping[str, str], where: str = "train") -> str:
    """The shell command of entry point ``name`` of the MLproject in ``root``, with its parameters filled in."""
    path = mlproject_file(root)
    if path is None:
        raise UsageError(f"{where}.entry_point: {name!r}, but {root} has no MLproject file ({', '.join(NAMES)})")
    points = entry_points(path)
    point = points.get(name)
    if not isinstance(point, dict) or not isinstance(point.get("command"), str):
        known = ", ".join(str(k) for k in points)
        raise UsageError(f"{path}: entry_points.{name}: expected an entry point with a command (this file has: {known})")
    declared = point.get("parameters") or {}
    if not isinstance(declared, dict):
        raise UsageError(f"{path}: entry_points.{name}.parameters: expected a mapping of parameter names")
    values, missing = {}, []
    for param, spec in declared.items():
        default = spec.get("default") if isinstance(spec, dict) else spec
        value = given.get(param, default)
        if value is None:
            missing.append(str(param))
        else:
            values[str(param)] = shlex.quote(str(value))
    if missing:
        raise UsageError(f"{path}: entry_points.{name}: no value for parameter {', '.join(missing)} (no default there)",
                         hint=f"give it under {where}.parameters in mlflow-ci.yml")
    try:
        command = point["command"].format(**values)
    except KeyError as exc:
        raise UsageError(f"{path}: entry_points.{name}.command: {{{exc.args[0]}}} is not a declared parameter") from None
    except (IndexError, ValueError) as exc:
        raise UsageError(f"{path}: entry_points.{name}.command: {exc} (a literal brace is written twice: {{{{ }}}})") from None
    extra = [f"--{param} {shlex.quote(str(value))}" for param, value in given.items() if param not in declared]
    return " ".join([command.rstrip(), *extra]) if extra else command.rstrip()

"""YAML loading that remembers where every value came from.

PyYAML's composer gives a node tree with line marks; we turn it into plain Python values plus a map
from key path to line number, so configuration errors can say ``mlflow-ci.yml:12: gate.rmse.max``.
Duplicate keys, which PyYAML silently accepts, are reported as problems. A document that expands
to more than :data:`MAX_VALUES` values (YAML aliases can make a few hundred bytes expand to billions)
or nests deeper than :data:`MAX_DEPTH` is refused at once, before it can use the memory or the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]
MAX_VALUES = 20_000  # a real mlflow-ci.yml has a few hundred
MAX_DEPTH = 64


@dataclass
class LoadedYaml:
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    key_lines: dict[Path, int] = field(default_factory=dict)
    duplicates: list[tuple[Path, int]] = field(default_factory=list)

    def line(self, path: Path, *, key: bool = False) -> int | None:
        """Line (1-based) of the value at ``path``, or of its key with ``key=True``.

        A path that does not exist (a missing key) falls back to the key of its nearest ancestor.
        """
        probe = tuple(path)
        if not key and probe in self.lines:
            return self.lines[probe]
        while probe:
            if probe in self.key_lines:
                return self.key_lines[probe]
            probe = probe[:-1]
        return self.lines.get((), None)


class YamlSyntaxError(Exception):
    def __init__(self, line: int | None, column: int | None, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.column = column
        self.problem = problem


def load(text: str) -> LoadedYaml:
    """Parse ``text`` (one YAML document) into values with line information."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(line, column, problem) from None
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML always marks its errors
        raise YamlSyntaxError(None, None, str(exc)) from None
    except RecursionError:  # PyYAML's parser recurses once per level of a flow collection ([[[[...)
        line, column = _too_deep(text)
        raise YamlSyntaxError(line, column, f"values are nested more than {MAX_DEPTH} levels deep") from None
    result = LoadedYaml(data=None)
    if node is None:
        return result
    constructor = yaml.SafeLoader("")
    result.data = _convert(node, (), result, constructor, [MAX_VALUES])
    return result


def _too_deep(text: str) -> tuple[int | None, int | None]:
    """Where the brackets of flow collections first open more than MAX_DEPTH levels deep (line, column)."""
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        for column, char in enumerate(line, 1):
            depth += char in "[{"
            depth -= char in "]}"
            if depth > MAX_DEPTH:
                return number, column
    return None, None


def _convert(node: yaml.Node, path: Path, out: LoadedYaml, constructor: yaml.SafeLoader, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise YamlSyntaxError(node.start_mark.line + 1, node.start_mark.column + 1,
                              f"the document expands to more than {MAX_VALUES:,} values (YAML aliases?)")
    if len(path) > MAX_DEPTH:
        raise YamlSyntaxError(node.start_mark.line + 1, node.start_mark.column + 1,
                              f"values are nested more than {MAX_DEPTH} levels deep (a self-referencing alias?)")
    out.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(constructor, key_node)
            if not isinstance(key, str):
                key = str(key)
            child = path + (key,)
            if key in mapping:
                out.duplicates.append((child, key_node.start_mark.line + 1))
            out.key_lines[child] = key_node.start_mark.line + 1
            mapping[key] = _convert(value_node, child, out, constructor, budget)
        return mapping
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), out, constructor, budget) for i, item in enumerate(node.value)]
    return _construct(constructor, node)


def _construct(constructor: yaml.SafeLoader, node: yaml.Node) -> Any:
    """A scalar's value; a tag the safe loader refuses (``!!python/name:…``) or a value its tag cannot
    hold (``!!timestamp nope``) is a syntax problem at that place, never an unexpected failure."""
    try:
        return constructor.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError) as exc:
        problem = getattr(exc, "problem", None) or f"{node.tag.rsplit(':', 1)[-1]} value that cannot be read"
        raise YamlSyntaxError(node.start_mark.line + 1, node.start_mark.column + 1, problem) from None

"""Declared models that fail the way mlflow-ci promises: every problem at once, each naming the key
path and what was expected, in the user's words rather than pydantic's.

The models (``mlflow-ci.yml`` in :mod:`mlflow_ci.config.models`, ``result.json`` in
:mod:`mlflow_ci.result`) say what each place expects with :class:`Says` metadata; validators raise
:func:`problem` for rules that span several keys. :func:`problems` turns pydantic's
``ValidationError`` into :class:`Problem` values, which each caller formats for its reader.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

PathPart = Union[str, int]
KEY_ERROR = "[key]"  # pydantic's last path element when a mapping key (not its value) is invalid
MAPPING_ERRORS = ("model_type", "model_attributes_type", "dict_type")


class Says:
    """``Annotated`` metadata: what the value at this place is expected to be, e.g. "a number >= 0".

    When a type nests several, the outermost wins, so ``Annotated[Text, Says("a metric name")]``
    refines a reusable ``Text``.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Says({self.text!r})"


def problem(message: str, *, at: tuple[PathPart, ...] = (), key: bool = False) -> PydanticCustomError:
    """An error with our own message, raised by a validator; ``at`` extends the path below the
    validated value, ``key`` points the line at the key instead of its value."""
    return PydanticCustomError("mlflow_ci", "{message}", {"message": message, "at": at, "key": key})


def describe(value: Any) -> str:
    """A short, safe rendering of a value the user wrote, for "got ..."."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def dotted(path: tuple[PathPart, ...]) -> str:
    """``gate.rmse.max``, ``train.inputs[0]``; ``(top level)`` for the empty path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + part
    return out or "(top level)"


def did_you_mean(word: str, choices: typing.Sequence[str]) -> str:
    """``; did you mean 'min'?`` when one choice is close, else an empty string."""
    hint = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{hint[0]}'?" if hint else ""


@dataclass(frozen=True)
class Problem:
    """One validation problem, located in the user's data."""
    path: tuple[PathPart, ...]  # mapping keys as the user wrote them, list indexes as ints
    kind: str  # missing | unknown_key | bad_key | custom | value
    expected: str | None  # the Says text of the place, when it has one
    value: Any  # what the user wrote there
    message: str | None = None  # custom problems: the whole message
    at_key: bool = False  # point at the key's line rather than the value's
    allowed: tuple[str, ...] = ()  # unknown_key: the keys that place accepts


def problems(exc: ValidationError, model: type[BaseModel], data: Any) -> list[Problem]:
    """The problems of one validation, in pydantic's order, with paths in the user's terms."""
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == "mlflow_ci":
            path = _user_path(loc, data) + tuple(ctx.get("at") or ())
            out.append(Problem(path, "custom", None, err.get("input"), ctx["message"], bool(ctx.get("key"))))
            continue
        bad_key = bool(loc) and loc[-1] == KEY_ERROR
        place = loc[:-1] if bad_key else loc
        says, parent = locate(model, loc)
        path = _user_path(place, data)
        if err["type"] == "missing":
            out.append(Problem(path, "missing", says, None))
        elif err["type"] == "extra_forbidden":
            out.append(Problem(path, "unknown_key", None, err.get("input"), at_key=True, allowed=field_names(parent)))
        elif bad_key:
            out.append(Problem(path, "bad_key", says, loc[-2], at_key=True))
        else:
            if says is None and err["type"] in MAPPING_ERRORS:
                says = "a mapping"
            out.append(Problem(path, "value", says, err.get("input")))
    return out


def field_names(model: type[BaseModel] | None) -> tuple[str, ...]:
    """The keys a model accepts, in declaration order (fields marked ``exclude`` are internal)."""
    if model is None:
        return ()
    return tuple(f.alias or name for name, f in model.model_fields.items() if not f.exclude)


def locate(model: type[BaseModel], loc: tuple[PathPart, ...]) -> tuple[str | None, type[BaseModel] | None]:
    """The :class:`Says` text of the place at ``loc`` and the innermost model on the way there."""
    tp: Any = model
    parent: type[BaseModel] | None = None
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        core, _ = _unwrap(tp)
        if isinstance(core, type) and issubclass(core, BaseModel):
            parent = core
            field = _field(core, part)
            if field is None:
                return None, parent
            tp = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        elif typing.get_origin(core) in (dict, typing.Mapping):
            key_type, value_type = typing.get_args(core)
            if parts and parts[0] == KEY_ERROR:
                parts.pop(0)
                tp = key_type
            else:
                tp = value_type
        elif typing.get_origin(core) in (list, tuple):
            tp = typing.get_args(core)[0]
        else:
            return None, parent
    core, says = _unwrap(tp)
    return (says[-1] if says else getattr(core, "__says__", None)), parent


def _field(model: type[BaseModel], name: PathPart):
    for field_name, field in model.model_fields.items():
        if name in (field_name, field.alias):
            return field
    return None


def _unwrap(tp: Any) -> tuple[Any, list[str]]:
    """Strip ``Annotated`` and ``Optional`` layers; collect their :class:`Says` texts, innermost first."""
    says: list[str] = []
    while True:
        if typing.get_origin(tp) is Annotated:
            inner, *meta = typing.get_args(tp)
            says = [m.text for m in meta if isinstance(m, Says)] + says
            tp = inner
            continue
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (Union, types.UnionType) and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1:
                tp = rest[0]
                continue
        return tp, says


def _user_path(loc: tuple, data: Any) -> tuple[PathPart, ...]:
    """Pydantic's location in the user's terms: where a mapping was validated as a list of named
    items (``gate:``), the item's index becomes its key."""
    path: list[PathPart] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, int) and part not in node and 0 <= part < len(node):
            part = list(node)[part]
        path.append(part)
        node = _child(node, part)
    return tuple(path)


def _child(node: Any, part: PathPart) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None

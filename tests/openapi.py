"""GitHub's own description of the operations mlflow-ci calls (a subset of ``@octokit/openapi``, see
``fixtures/github-openapi/``), for the fake GitHub: which operation a request is, whether its body
conforms, whether a response conforms, and the documented example of a response."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator
from referencing import Registry
from referencing.jsonschema import DRAFT4

SPEC_PATH = Path(__file__).resolve().parent / "fixtures" / "github-openapi" / "api.github.com.subset.json"
URI = "urn:github-openapi"


@functools.cache
def spec() -> dict:
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(URI, DRAFT4.create_resource(spec()))


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


@functools.cache
def _templates() -> list[tuple[str, str, re.Pattern]]:
    out = []
    for template, item in spec()["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        out.extend((method, template, pattern) for method in item if method != "parameters")
    return out


def operation(method: str, path: str) -> tuple[str, dict] | None:
    """The documented template and operation a concrete request is, or None when GitHub has none."""
    method = method.lower()
    for m, template, pattern in _templates():
        if m == method and pattern.match(path):
            return template, spec()["paths"][template][m]
    return None


def _problems(validator_class, pointer: str, instance) -> list[str]:
    validator = validator_class({"$ref": f"{URI}#{pointer}"}, registry=_registry())
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}" for e in validator.iter_errors(instance))


def request_problems(method: str, template: str, body) -> list[str]:
    op = spec()["paths"][template][method.lower()]
    content = (op.get("requestBody") or {}).get("content", {}).get("application/json")
    if content is None:
        return [] if body in (None, {}) else ["the operation takes no JSON body"]
    return _problems(OAS30WriteValidator, _pointer("paths", template, method.lower(), "requestBody", "content", "application/json", "schema"), body)


def _response(template: str, method: str, status: int) -> tuple[list[str], dict] | None:
    responses = spec()["paths"][template][method.lower()]["responses"]
    name = str(status)
    if name not in responses:
        return None
    parts = ["paths", template, method.lower(), "responses", name]
    response = responses[name]
    while "$ref" in response:  # a shared response in components
        parts = response["$ref"].lstrip("#/").split("/")
        response = spec()["components"][parts[1]][parts[2]]
    return parts, response


def response_problems(method: str, template: str, status: int, payload) -> list[str]:
    found = _response(template, method, status)
    if found is None and status >= 400:  # GitHub answers any operation with errors it documents once
        return _problems(OAS30ReadValidator, _pointer("components", "schemas", "basic-error"), payload)
    if found is None:
        return [f"{status} is not a documented answer of {method.upper()} {template}"]
    parts, response = found
    if "application/json" not in response.get("content", {}):
        return [] if payload is None else [f"a {status} answer has no JSON body"]
    return _problems(OAS30ReadValidator, _pointer(*parts, "content", "application/json", "schema"), payload)


def example(method: str, template: str, status: int):
    """The documented example of an answer (a complete object, as GitHub sends it)."""
    parts, response = _response(template, method, status)
    content = response["content"]["application/json"]
    if "example" in content:
        return json.loads(json.dumps(content["example"]))
    ref = next(iter(content["examples"].values()))
    while "$ref" in ref:
        ref = spec()["components"]["examples"][ref["$ref"].rsplit("/", 1)[1]]
    return json.loads(json.dumps(ref["value"]))

"""The published JSON Schema of ``--json`` events, and a small validator for it.

One schema covers every line of ``run --json`` (and ``run --save``: ``lab``, ``step``,
``result``) and of ``watch --json`` (``watch``, ``transition``, ``socket``, ``summary``).

``schema.json`` beside this module is the schema (draft 2020-12) a grader or an LMS validates a
saved run against; ``docs/schema.json`` is the same file (a test compares the bytes), and
docs/json.md documents every field of it (a test compares the names). Its ``schema_version``
is ``codec.JSON_SCHEMA``: every event carries it in its ``schema`` field.

``handshake-lab grade`` must check a submission against the schema without a runtime
dependency, so this module validates with the subset of JSON Schema the file uses
(``KEYWORDS``): the test suite checks the file against the full ``jsonschema`` library and that
both say the same of valid and of broken events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_FILE = "schema.json"

KEYWORDS = frozenset(
    {
        # annotations
        "$schema",
        "$id",
        "$defs",
        "title",
        "description",
        # assertions this validator implements
        "$ref",
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minimum",
        "maximum",
        "pattern",
        "anyOf",
        "allOf",
        "if",
        "then",
    }
)
"""Every keyword ``schema.json`` may use; a test fails if the file uses another."""

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_text() -> str:
    """The schema file's text, as shipped in the package."""
    return resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


@cache
def run_schema() -> dict[str, Any]:
    """The schema of one ``--json`` line (parsed once)."""
    doc: dict[str, Any] = json.loads(schema_text())
    return doc


def schema_version() -> int:
    """The version the schema requires in every event's ``schema`` field."""
    return int(run_schema()["$defs"]["schema_version"]["const"])


def _is(value: object, name: str) -> bool:
    if isinstance(value, bool) and name in {"integer", "number"}:
        return False  # JSON's true is not a number
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def _same(a: object, b: object) -> bool:
    """JSON equality: 1 == 1.0, but true != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _resolve(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local references are supported, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node  # type: ignore[no-any-return]


def _errors(
    value: object, schema: Mapping[str, Any], root: Mapping[str, Any], path: str
) -> Iterator[str]:
    if "$ref" in schema:
        yield from _errors(value, _resolve(root, schema["$ref"]), root, path)
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is(value, name) for name in names):
            yield f"{path}: {json.dumps(value)[:60]} is not of type {' or '.join(names)}"
            return
    if "const" in schema and not _same(value, schema["const"]):
        yield f"{path}: {json.dumps(value)[:60]} must be {json.dumps(schema['const'])}"
    if "enum" in schema and not any(_same(value, v) for v in schema["enum"]):
        choices = ", ".join(json.dumps(v) for v in schema["enum"])
        yield f"{path}: {json.dumps(value)[:60]} is not one of {choices}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            yield f"{path}: {value} is less than {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            yield f"{path}: {value} is more than {schema['maximum']}"
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        yield f"{path}: {json.dumps(value)[:60]} does not match {schema['pattern']}"
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                yield f"{path}: {key!r} is missing"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            where = f"{path}.{key}"
            if key in props:
                yield from _errors(item, props[key], root, where)
            elif extra is False:
                yield f"{path}: unexpected field {key!r}"
            elif isinstance(extra, Mapping):
                yield from _errors(item, extra, root, where)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _errors(item, schema["items"], root, f"{path}[{index}]")
    if "anyOf" in schema:
        branches = [list(_errors(value, s, root, path)) for s in schema["anyOf"]]
        if all(branches):
            yield min(branches, key=len)[0]
    for sub in schema.get("allOf", ()):
        yield from _errors(value, sub, root, path)
    if "if" in schema and not any(_errors(value, schema["if"], root, path)):
        yield from _errors(value, schema.get("then", {}), root, path)


def event_errors(doc: object) -> list[str]:
    """What is wrong with one ``--json`` object by the published schema (empty: valid).

    Each error is one line: a JSON path (``$.segments[2].seq``) and the problem."""
    schema = run_schema()
    return list(_errors(doc, schema, schema, "$"))

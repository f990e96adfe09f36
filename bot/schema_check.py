"""A quick check that a document conforms to one of the bot's own JSON Schemas.

    conforms(schema, doc) -> True | None

The rules and the vocabulary are validated on every load that the on-disk cache
does not serve (a `--no-cache` review, a new worker, an edited rule). jsonschema
is complete but costs ~0.06 s to import and more to run; the shipped files are
valid. This module proves validity for the keywords our schemas use, and says
None ("cannot tell") for anything else: a keyword it does not know, a `$ref`
that is not local, a value it would have to compare across types, or a
document that breaks the schema. The caller then asks jsonschema, which also
words the errors; so a document is accepted here only when jsonschema would
accept it too (tests/test_schema_check.py compares the two).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["conforms"]

# Keywords that only annotate: they never make a document invalid.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples", "$defs"}
)
_KNOWN = _ANNOTATIONS | {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "const",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "minimum",
    "maximum",
    "oneOf",
    "anyOf",
    "allOf",
    "pattern",
    "propertyNames",
    "$ref",
}
_MAX_DEPTH = 64


def conforms(schema: dict[str, Any], doc: Any) -> bool | None:
    """True when `doc` conforms to `schema` (draft 2020-12, the keywords above);
    None when it does not or this check cannot tell."""
    try:
        return True if _check(schema, doc, schema, 0) else None
    except _CannotTell:
        return None


class _CannotTell(Exception):
    pass


def _type_ok(name: str, value: Any) -> bool:
    if name == "object":
        return type(value) is dict
    if name == "array":
        return type(value) is list
    if name == "string":
        return type(value) is str
    if name == "boolean":
        return type(value) is bool
    if name == "null":
        return value is None
    if name == "integer":
        if type(value) is float:
            raise _CannotTell  # 1.0 is an integer to JSON Schema
        return type(value) is int
    if name == "number":
        return type(value) in (int, float)
    raise _CannotTell


def _same(a: Any, b: Any) -> bool:
    """JSON equality for scalars (True is not 1); anything else cannot tell."""
    scalars = (str, int, float, bool, type(None))
    if type(a) not in scalars or type(b) not in scalars:
        raise _CannotTell
    if {type(a), type(b)} == {int, float}:
        raise _CannotTell
    return type(a) is type(b) and a == b


@lru_cache(maxsize=256)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/$defs/"):
        raise _CannotTell
    found = (root.get("$defs") or {}).get(ref[len("#/$defs/") :])
    if not isinstance(found, dict):
        raise _CannotTell
    return found


def _check(schema: Any, doc: Any, root: dict[str, Any], depth: int) -> bool:
    if schema is True:
        return True
    if schema is False:
        return False
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        raise _CannotTell
    if not schema.keys() <= _KNOWN:
        raise _CannotTell
    sub = depth + 1
    if "$ref" in schema and not _check(_resolve(schema["$ref"], root), doc, root, sub):
        return False
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_type_ok(k, doc) for k in kinds):
            return False
    if "enum" in schema and not any(_same(doc, v) for v in schema["enum"]):
        return False
    if "const" in schema and not _same(doc, schema["const"]):
        return False
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            hits = sum(1 for s in schema[key] if _check(s, doc, root, sub))
            total = len(schema[key])
            if (key == "allOf" and hits != total) or (key == "anyOf" and hits == 0):
                return False
            if key == "oneOf" and hits != 1:
                return False
    if type(doc) is dict:
        return _check_object(schema, doc, root, sub)
    if type(doc) is list:
        if len(doc) < schema.get("minItems", 0) or len(doc) > schema.get("maxItems", len(doc)):
            return False
        items = schema.get("items")
        return items is None or all(_check(items, v, root, sub) for v in doc)
    if type(doc) is str:
        if len(doc) < schema.get("minLength", 0) or len(doc) > schema.get("maxLength", len(doc)):
            return False
        return "pattern" not in schema or _pattern(schema["pattern"]).search(doc) is not None
    if type(doc) in (int, float):
        if "minimum" in schema and doc < schema["minimum"]:
            return False
        return "maximum" not in schema or doc <= schema["maximum"]
    return True


def _check_object(
    schema: dict[str, Any], doc: dict[str, Any], root: dict[str, Any], depth: int
) -> bool:
    if len(doc) < schema.get("minProperties", 0):
        return False
    if any(name not in doc for name in schema.get("required", ())):
        return False
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties", True)
    names = schema.get("propertyNames")
    for key, value in doc.items():
        if type(key) is not str:
            raise _CannotTell
        if names is not None and not _check(names, key, root, depth):
            return False
        if key in props:
            if not _check(props[key], value, root, depth):
                return False
        elif not _check(extra, value, root, depth):
            return False
    return True

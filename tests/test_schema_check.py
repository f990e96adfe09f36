"""bot.schema_check proves a document valid only when jsonschema agrees."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bot.schema_check import conforms
from bot.yamlio import load_yaml

RULES = Path(__file__).resolve().parent.parent / "rules"


def _shipped() -> list[tuple[dict[str, Any], Any]]:
    rule_schema = json.loads((RULES / "rule.schema.json").read_text())
    api_schema = json.loads((RULES / "api" / "schema.json").read_text())
    docs = [(rule_schema, load_yaml(p.read_text())) for p in sorted(RULES.glob("*/rule.yaml"))]
    docs += [(api_schema, load_yaml(p.read_text())) for p in sorted((RULES / "api").glob("*.yaml"))]
    return docs


def _errors(schema: dict[str, Any], doc: Any) -> list[Any]:
    return list(jsonschema.Draft202012Validator(schema).iter_errors(doc))


def test_every_shipped_rule_and_vocabulary_file_is_proved_valid() -> None:
    docs = _shipped()
    assert len(docs) >= 10
    for schema, doc in docs:
        assert conforms(schema, doc) is True
        assert _errors(schema, doc) == []


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


_REPLACEMENTS: list[Any] = [None, True, 0, 1.0, -1, "", "x y", [], {}, ["a"], {"zz": 1}]


def _mutated(doc: Any, rng: random.Random) -> Any:
    doc = copy.deepcopy(doc)
    path = rng.choice(_paths(doc))
    if not path:
        return rng.choice(_REPLACEMENTS)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    action = rng.randrange(3)
    if action == 0:
        del parent[last]
    elif action == 1:
        parent[last] = rng.choice(_REPLACEMENTS)
    elif isinstance(parent, dict):
        parent["unexpected_" + str(rng.randrange(9))] = rng.choice(_REPLACEMENTS)
    else:
        parent.append(rng.choice(_REPLACEMENTS))
    return doc


def test_a_document_is_never_accepted_where_jsonschema_finds_an_error() -> None:
    rng = random.Random(20261207)
    accepted = refused = 0
    for schema, doc in _shipped():
        for _ in range(60):
            bad = _mutated(doc, rng)
            errors = _errors(schema, bad)
            if conforms(schema, bad) is True:
                assert errors == [], (bad, errors)
                accepted += 1
            else:
                refused += 1
    # both outcomes occur: the check is neither a rubber stamp nor a refusal
    assert accepted > 50 and refused > 50


@pytest.mark.parametrize(
    ("schema", "doc"),
    [
        ({"type": "integer"}, 1.0),  # an integer to JSON Schema: jsonschema decides
        ({"enum": [1]}, True),  # True is not 1 in JSON
        ({"$ref": "other.json#/x"}, 1),  # not a local reference
        ({"if": {"type": "string"}}, "x"),  # a keyword this check does not know
        ({"type": "string", "pattern": "^a"}, "b"),  # invalid
    ],
)
def test_what_the_check_cannot_prove_is_left_to_jsonschema(
    schema: dict[str, Any], doc: Any
) -> None:
    assert conforms(schema, doc) is None


def test_a_broken_rule_still_gets_jsonschemas_words(tmp_path: Path) -> None:
    from bot.analyze.engine import validate_rules

    rules = tmp_path / "rules"
    (rules / "api").mkdir(parents=True)
    (rules / "rule.schema.json").write_text((RULES / "rule.schema.json").read_text())
    folder = rules / "MMLC001"
    folder.mkdir()
    doc = load_yaml((RULES / "MMLC001" / "rule.yaml").read_text())
    del doc["symbol"]
    (folder / "rule.yaml").write_text(json.dumps(doc))
    problems = validate_rules(rules, examples=False)
    assert any("'symbol' is a required property" in p for p in problems), problems

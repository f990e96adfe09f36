"""b4 review check output and Patchwork checks: verdicts per message and per patch."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from bot.errors import UsageError
from bot.model import CheckResult, Severity, Status
from bot.report import b4_results, patchwork_checks, render
from tests.test_report_support import P1_ID, P2_ID, build_review, findings

B4_KEYS = {"tool", "status", "summary", "url", "details"}  # b4's documented result fields


def b4(**changes: object) -> list[dict[str, object]]:
    out = json.loads(render(build_review(**changes), "b4"))
    assert isinstance(out, list)
    return out


def test_b4_output_is_an_array_of_one_result_in_b4s_shape() -> None:
    out = b4()
    assert len(out) == 1
    (res,) = out
    assert set(res) <= B4_KEYS and {"tool", "status"} <= set(res)
    assert all(isinstance(v, str) for v in res.values())
    assert res["tool"] == "mm-lifecycle"


def test_b4_fails_when_an_error_is_introduced() -> None:
    (res,) = b4()
    assert res["status"] == "fail"
    assert str(res["summary"]).startswith("1 error, 1 warning introduced: MMLC001")
    details = str(res["details"]).splitlines()
    assert details[0].startswith("[1/3] MMLC001 release-path-stops-destroy [error]")
    assert any(d.startswith("fixed: [1/3] SIM-UAF") for d in details)
    assert any("check MMLC004 failed" in d for d in details)


def test_b4_warns_for_an_introduced_warning_only() -> None:
    (res,) = b4(findings=(findings()[1],), checks=())
    assert res["status"] == "warn"


def test_b4_passes_when_nothing_is_introduced_and_everything_ran() -> None:
    review = build_review(
        findings=tuple(f for f in findings() if f.status is not Status.INTRODUCED),
        checks=(CheckResult("MMLC001", True),),
    )
    apps = tuple(replace(a, ok=True) for a in review.applied.applications)
    review = replace(review, applied=replace(review.applied, applications=apps))
    (res,) = b4_results(review)
    assert res["status"] == "pass"
    assert res["summary"] == "no lifecycle issue introduced"


def test_b4_info_findings_do_not_change_the_verdict() -> None:
    info = replace(findings()[1], severity=Severity.INFO)
    review = build_review(findings=(info,), checks=())
    apps = tuple(replace(a, ok=True) for a in review.applied.applications)
    (res,) = b4_results(replace(review, applied=replace(review.applied, applications=apps)))
    assert res["status"] == "pass" and "1 note introduced" in res["summary"]


def test_b4_warns_when_a_check_crashed_even_without_findings() -> None:
    (res,) = b4(findings=())
    assert res["status"] == "warn"
    assert "1 check(s) failed" in str(res["summary"])


def test_b4_url_is_passed_through() -> None:
    (res,) = b4_results(build_review(), url="https://ci.example.org/r/1")
    assert res["url"] == "https://ci.example.org/r/1"


def test_patchwork_gives_one_check_per_patch_that_arrived() -> None:
    checks = patchwork_checks(build_review(), target_url="https://ci.example.org/r/1")
    assert [(c["patch"], c["msgid"]) for c in checks] == [(1, P1_ID), (2, P2_ID)]
    for c in checks:
        assert c["state"] in ("pending", "success", "warning", "fail")
        assert re.match(r"^[-a-zA-Z0-9_]+$", str(c["context"]))
        assert c["context"] == "mm-lifecycle"
        assert c["target_url"] == "https://ci.example.org/r/1"
        assert isinstance(c["description"], str) and "\n" not in c["description"]


def test_patchwork_states_follow_each_patchs_own_findings() -> None:
    first, second = patchwork_checks(build_review(), context="mm-lifecycle_v2")
    assert first["state"] == "fail"
    assert "MMLC001" in str(first["description"])
    # patch 2: no introduced finding, but it did not apply and a check crashed
    assert second["state"] == "warning"
    assert "2/3 did not apply (analysed on the diff alone)" in str(second["description"])
    assert first["context"] == "mm-lifecycle_v2"
    assert first["target_url"] is None


def test_patchwork_success_for_a_clean_patch() -> None:
    review = build_review(findings=(), checks=())
    apps = tuple(replace(a, ok=True) for a in review.applied.applications)
    checks = patchwork_checks(replace(review, applied=replace(review.applied, applications=apps)))
    assert [c["state"] for c in checks] == ["success", "success"]


def test_patchwork_series_wide_findings_count_against_the_last_patch() -> None:
    wide = replace(findings()[0], patch_number=None)
    first, second = patchwork_checks(build_review(findings=(wide,), checks=()))
    assert second["state"] == "fail"
    assert first["state"] == "success"


@pytest.mark.parametrize("context", ["", "mm lifecycle", "mm/lifecycle", "x" * 256])
def test_patchwork_refuses_a_context_patchwork_would_reject(context: str) -> None:
    with pytest.raises(UsageError):
        patchwork_checks(build_review(), context=context)


@pytest.mark.parametrize(
    "url", ["ftp://ci.example.org/1", "javascript:alert(1)", "https://x/" + "a" * 200, "http://a b"]
)
def test_patchwork_refuses_a_target_url_patchwork_would_reject(url: str) -> None:
    with pytest.raises(UsageError):
        patchwork_checks(build_review(), target_url=url)


def test_patchwork_pending_marks_every_arrived_patch_queued() -> None:
    from bot.report import patchwork_pending

    review = build_review()
    pending = patchwork_pending(review.series, target_url="https://ci.example.org/q/7")
    assert [(c["state"], c["msgid"]) for c in pending] == [("pending", P1_ID), ("pending", P2_ID)]
    with pytest.raises(UsageError):
        patchwork_pending(review.series, context="bad context")

"""Every format on awkward reviews: empty, half-filled and hostile data never crash."""

from __future__ import annotations

import email
import email.policy
import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from bot.model import (
    Confidence,
    Finding,
    Review,
    Severity,
    Status,
    Trace,
    TraceStep,
)
from bot.report import FORMATS, patchwork_checks, render, render_email_messages
from tests.test_report_support import build_review, findings

SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "docs" / "review.schema.json").read_text()
)


def bare_finding(**kw: object) -> Finding:
    base = Finding(
        rule_id="SIM-LEAK",
        symbol="",
        severity=Severity.INFO,
        confidence=Confidence.LOW,
        status=Status.INTRODUCED,
        message="",
        file="",
        line=None,
        function=None,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def awkward_reviews() -> dict[str, Review]:
    odd_trace = Trace(
        actors=("CPU0",),
        steps=(TraceStep("ghost", "", ""), TraceStep("CPU0", "x" * 200, "f")),
    )
    return {
        "empty": build_review(findings=(), checks=(), notes=(), versions=()),
        "bare-finding": build_review(findings=(bare_finding(),)),
        "line-zero": build_review(findings=(bare_finding(file="mm/a.c", line=0, patch_number=1),)),
        "odd-trace": build_review(findings=(bare_finding(trace=odd_trace, patch_number=1),)),
        "hostile": build_review(
            findings=(
                bare_finding(
                    symbol="a\nb",
                    message="From evil\n\n.\r\nBcc: x@y",
                    question="\x00\x1b[31m?",
                    file="../../etc/passwd",
                    function="f\tg",
                    evidence=("\n",),
                    patch_number=1,
                ),
            )
        ),
        "no-applications": replace(
            build_review(),
            applied=replace(build_review().applied, applications=(), images=()),
        ),
    }


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(awkward_reviews()))
def test_every_format_renders_awkward_reviews(name: str, fmt: str) -> None:
    review = awkward_reviews()[name]
    out = render(review, fmt)
    assert isinstance(out, str)
    if fmt == "json":
        jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(out))
    if fmt in ("sarif", "b4"):
        json.loads(out)
    if fmt == "text":
        assert "\x1b" not in out and "\x00" not in out


@pytest.mark.parametrize("name", sorted(awkward_reviews()))
def test_awkward_replies_parse_back_cleanly(name: str) -> None:
    for msg in render_email_messages(awkward_reviews()[name]):
        back = email.message_from_bytes(bytes(msg), policy=email.policy.default)
        assert back["Bcc"] is None
        assert not back.defects
    patchwork_checks(awkward_reviews()[name])


def test_a_finding_line_below_one_is_reported_as_unknown() -> None:
    doc = json.loads(render(awkward_reviews()["line-zero"], "json"))
    assert doc["findings"][0]["line"] is None
    sarif = json.loads(render(awkward_reviews()["line-zero"], "sarif"))
    assert "region" not in sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]


def test_mbox_escapes_a_from_line_inside_a_reply() -> None:
    f = replace(findings()[0], question="From now on the pool leaks.")
    text = render(build_review(findings=(f,)), "email")
    assert "\n>From now on the pool leaks." in text
    assert "\nFrom now on" not in text
    assert text.startswith("From mboxrd@z") and text.count("From mboxrd@z") == 1

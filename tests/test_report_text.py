"""The terminal renderer: versions and MISSING slots, apply results, findings by status."""

from __future__ import annotations

import re

import pytest

from bot.errors import UsageError
from bot.model import Status
from bot.report import FORMATS, render
from bot.report.common import trace_lines
from tests.test_report_support import build_review, findings, leak_trace

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_text_shows_every_version_with_its_missing_slots() -> None:
    text = render(build_review(), "text")
    assert "v1: 1/3 present, 2/3 3/3 MISSING" in text
    assert "v2: 0/3 1/3 2/3 present, 3/3 MISSING" in text
    assert re.search(r"\[3/3\] MISSING", text)


def test_text_says_how_each_patch_applied_and_names_the_failed_hunk() -> None:
    text = render(build_review(), "text")
    first, second = text.index("[1/3] mm/zblock"), text.index("[2/3] mm/zblock")
    assert "applied (git-am-3way)" in text[first:second]
    assert "moved: mm/zblock.c @@ -201,20 +199,19 @@" in text[first:second]
    assert "offset 3 fuzz 0" in text[first:second]
    block = text[second : text.index("[3/3] MISSING")]
    assert "did not apply (not-applied)" in block
    # one line per failed hunk, never wrapped: file and @@ header stay searchable
    assert "      failed hunk: mm/zblock.c @@ -150,4 +150,3 @@ (context does not match)" in (
        block.splitlines()
    )


def test_text_headline_names_location_rule_and_tags() -> None:
    text = render(build_review(), "text")
    assert (
        "mm/zblock.c:129 zblock_release_pages(): MMLC001 release-path-stops-destroy "
        "[error, high confidence, introduced]"
    ) in text


def test_text_gives_introduced_findings_in_full_with_trace_columns() -> None:
    text = render(build_review(), "text")
    intro = text[text.index("Findings introduced") : text.index("Fixed within the series")]
    assert "Question: zblock_release_pages() can run after" in intro
    assert "removed call schedule_work(&pool->destroy)" in intro
    assert "Suggestion: If the pool must outlive" in intro
    for line in trace_lines(leak_trace(), indent="      "):
        assert line in intro.splitlines()


def test_trace_columns_line_up_under_their_actor() -> None:
    lines = trace_lines(leak_trace(), indent="")
    header = lines[0]
    cols = {a: header.index(a) for a in ("CPU0", "CPU1", "worker")}
    assert cols["CPU0"] == 0 < cols["CPU1"] < cols["worker"]
    assert lines[1].split() == ["----", "----", "------"]
    body = lines[2:]
    # each actor's entry function starts exactly at its column, its steps two further in
    assert body[0] == " " * cols["CPU1"] + "zblock_pool_offline()"
    # and each step ends with its source line, as the simulator recorded it
    assert body[1] == " " * (cols["CPU1"] + 2) + "pool->dead = true :149"
    assert " " * cols["worker"] + "zblock_destroy_work()" in body
    assert "zblock_release_pages()" in body
    assert "  atomic_sub(1 << order, &pool->nr_pages) -> 0 :129" in body
    # rows keep the interleaving: CPU1 marks dead before CPU0 drops the last page
    assert body.index("zblock_release_pages()") > 1


def test_text_lists_pre_existing_and_fixed_apart_and_shorter() -> None:
    text = render(build_review(), "text")
    pre = text.index("Pre-existing")
    fixed = text.index("Fixed by this series")
    assert text.index("Findings introduced") < pre < fixed
    assert "MMLC002 create-error-path-leak [warning, medium confidence, pre-existing]" in text[pre:]
    # shorter: only the first sentence of a pre-existing finding's message
    assert "leaks the pool when the owner lookup fails." in text[pre:fixed]
    assert "Long tail" not in text
    assert "SIM-UAF use-after-free" in text[fixed:]
    within = text[text.index("Fixed within the series") : pre]
    assert "(fixed by [2/3])" in within


def test_text_reports_a_failed_check_and_that_the_others_ran() -> None:
    text = render(build_review(), "text")
    assert "check MMLC004 failed: KeyError: 'callee'; the other checks ran" in text
    assert "simulator: state bound reached (20000 states)" in text
    assert "v2 is incomplete" in text


def test_text_without_introduced_findings_says_so() -> None:
    rest = tuple(f for f in findings() if f.status is not Status.INTRODUCED)
    text = render(build_review(findings=rest), "text")
    assert "No lifecycle finding introduced by this series." in text
    assert "Summary: 0 introduced, 1 pre-existing, 1 fixed" in text


def test_color_only_when_asked_and_words_stay_the_same() -> None:
    review = build_review()
    plain = render(review, "text")
    colored = render(review, "text", color=True)
    assert "\x1b[" not in plain
    assert "\x1b[" in colored
    assert ANSI.sub("", colored).rstrip("\n") == plain.rstrip("\n")


def test_hostile_text_cannot_add_lines_or_escape_codes() -> None:
    bad = findings()[0]
    from dataclasses import replace

    evil = replace(bad, function="f\x1b[2J\nFAKE", message="x\r\nFAKE: line")
    text = render(build_review(findings=(evil,)), "text")
    assert "\x1b" not in text
    assert not any(line.startswith("FAKE") for line in text.splitlines())


def test_unknown_format_is_a_usage_error_naming_the_choices() -> None:
    with pytest.raises(UsageError) as exc:
        render(build_review(), "html")
    assert "html" in exc.value.one_line()
    for fmt in FORMATS:
        assert fmt in exc.value.one_line()
    assert FORMATS == ("text", "email", "json", "sarif", "b4")


def test_text_shows_a_few_notes_per_check_and_counts_the_rest() -> None:
    from bot.model import CheckResult

    notes = tuple(f"note {i}" for i in range(12))
    text = render(build_review(checks=(CheckResult("simulator", True, notes=notes),)), "text")
    assert "simulator: note 4" in text and "simulator: note 5" not in text
    assert "simulator: ... 7 more note(s) in --format json" in text


def test_public_names_are_all_exported() -> None:
    import bot.report

    for name in bot.report.__all__:
        assert hasattr(bot.report, name), name
    assert set(bot.report.__all__) >= {
        "FORMATS",
        "JSON_SCHEMA_VERSION",
        "render",
        "render_email_messages",
        "patchwork_checks",
    }

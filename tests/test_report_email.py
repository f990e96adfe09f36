"""The LKML reply renderer: RFC 5322 messages, threading, trimmed quotes, questions."""

from __future__ import annotations

import email
import email.policy
import mailbox
from dataclasses import replace
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

import pytest

from bot.errors import UsageError
from bot.model import Status
from bot.report import render, render_email_messages
from bot.report.common import MAIL_WIDTH, trace_lines
from bot.report.quote import parse_diff
from tests.test_report_support import (
    COVER_ID,
    LEAK_QUESTION,
    P1_ID,
    build_review,
    findings,
    leak_trace,
)


def parsed(msg: EmailMessage) -> EmailMessage:
    """The message as a receiver sees it: serialised, then parsed back strictly.

    policy.strict raises on any defect the parser finds, and every header is
    read so its own parser runs too.
    """
    raw = bytes(msg)
    assert all(len(line) <= 998 for line in raw.split(b"\n"))  # RFC 5322 2.1.1
    back = email.message_from_bytes(raw, policy=email.policy.strict)
    assert isinstance(back, EmailMessage)
    assert not back.defects
    for name, value in back.items():
        assert not getattr(value, "defects", ()), name
    for required in ("From", "Date"):  # RFC 5322 3.6
        assert back[required]
    return back


def body_of(msg: EmailMessage) -> str:
    part = parsed(msg).get_body(preferencelist=("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def test_one_reply_for_the_patch_with_findings_and_none_for_the_others() -> None:
    msgs = render_email_messages(build_review())
    assert len(msgs) == 1
    back = parsed(msgs[0])
    assert back["Subject"] == (
        "Re: [PATCH v2 1/3] mm/zblock: do not schedule pool destruction from the release path"
    )
    assert back.get_content_type() == "text/plain"
    assert not back.defects


def test_reply_threads_under_the_patch() -> None:
    back = parsed(render_email_messages(build_review())[0])
    assert back["In-Reply-To"] == f"<{P1_ID}>"
    assert back["References"].split() == [f"<{COVER_ID}>", f"<{P1_ID}>"]
    assert back["Message-ID"].startswith("<mm-lifecycle-bot.")
    assert back["Date"]


def test_reply_goes_to_the_author_and_copies_everyone_else() -> None:
    back = parsed(render_email_messages(build_review())[0])
    to = [a for _, a in getaddresses([back["To"]])]
    cc = [a for _, a in getaddresses([back["Cc"]])]
    assert to == ["jane@example.org"]
    assert set(cc) == {"akpm@example.org", "linux-mm@kvack.example", "one@example.org"}
    assert "bot@localhost" not in cc and "jane@example.org" not in cc


def test_prose_and_traces_fit_78_columns() -> None:
    body = body_of(render_email_messages(build_review())[0])
    trace = trace_lines(leak_trace(), indent="  ", hard=True)
    for ln in trace:
        assert ln in body.splitlines()
    for ln in body.splitlines():
        # quotes and traces too: only a Message-ID may not be split
        assert len(ln.expandtabs(8)) <= MAIL_WIDTH or ln.strip() == P1_ID, ln


def test_quoted_lines_keep_the_patch_verbatim() -> None:
    body = body_of(render_email_messages(build_review())[0])
    quoted = [ln for ln in body.splitlines() if ln.startswith(">")]
    assert quoted and all(ln.startswith("> ") for ln in quoted)
    assert "> diff --git a/mm/zblock.c b/mm/zblock.c" in quoted
    # the file is named once, by `diff --git`: ---/+++ say it again, so they go
    assert "> +++ b/mm/zblock.c" not in quoted
    assert (
        "> @@ -120,15 +120,13 @@ static void zblock_destroy_work(struct work_struct *w)" in quoted
    )
    assert "> -\t\tschedule_work(&pool->destroy);" in quoted
    assert "> +\tatomic_sub(1 << order, &pool->nr_pages);" in quoted


def test_only_the_relevant_part_of_a_long_hunk_is_quoted() -> None:
    body = body_of(render_email_messages(build_review())[0])
    lines = body.splitlines()
    assert "> [...]" in lines
    # far from both findings: left out
    assert ">  \tzblock_shrink(pool);" not in lines
    assert ">  \towner->nr_pools = 0;" not in lines
    # the removed cancel and the free right after it: kept
    assert "> -\t\tcancel_work_sync(&pool->destroy);" in lines
    assert ">  \t\tzblock_pool_free(pool);" in lines
    # patch 2 has no introduced finding: none of it is quoted
    assert "zblock.h" not in body


def test_question_follows_its_hunk_then_rule_evidence_trace_suggestion() -> None:
    body = body_of(render_email_messages(build_review())[0])
    hunk1 = body.index("> +\tatomic_sub(1 << order")
    question = body.index("zblock_release_pages() can run after the owner went offline.")
    hunk2 = body.index("> @@ -201,20 +199,19 @@")
    assert hunk1 < question < hunk2
    rule = body.index("[MMLC001 release-path-stops-destroy")
    evidence = body.index("  - removed call schedule_work(&pool->destroy)")
    trace = body.index("  CPU0 ")
    suggestion = body.index("If the pool must outlive")
    # the trace folded under the question, then evidence, rule and fingerprint
    assert question < trace < evidence < rule < suggestion < hunk2
    assert "fingerprint " in body[rule : rule + 200]
    # the second finding sits under the second hunk
    assert hunk2 < body.index("What stops the destroy work from running on a pool freed here?")
    # the question itself, re-flowed, is all there
    assert " ".join(LEAK_QUESTION.split()) in " ".join(body.split())


def test_reply_notes_failed_check_and_positive_fix_and_signs_with_reproducer() -> None:
    body = body_of(render_email_messages(build_review())[0])
    assert "check MMLC004 failed: KeyError: 'callee'; the other checks ran" in body
    assert "SIM-UAF use-after-free" in body and "no longer trigger" in body
    sig = body.splitlines()[body.splitlines().index("-- ") :]
    assert f"    {P1_ID}" in sig and "  bot review --tree linux \\" in sig
    assert "  git -C linux checkout --detach 0123456789ab" in sig
    assert "bot: not-a-bug <fingerprint>" in " ".join(sig)
    assert "<html" not in body.lower() and "```" not in body


def test_summary_reply_to_the_cover_when_nothing_is_introduced() -> None:
    rest = tuple(f for f in findings() if f.status is not Status.INTRODUCED)
    msgs = render_email_messages(build_review(findings=rest))
    assert len(msgs) == 1
    back = parsed(msgs[0])
    assert back["In-Reply-To"] == f"<{COVER_ID}>"
    assert back["Subject"] == "Re: [PATCH v2 0/3] mm/zblock: simplify pool teardown"
    body = body_of(msgs[0])
    flat = " ".join(body.split())
    assert "found nothing that the series introduces" in flat
    assert "Patch 3/3 never arrived" in flat
    assert "SIM-UAF use-after-free" in flat
    assert "MMLC002" in flat and "(fixed again by [2/3])" in flat
    assert "[2/3] did not apply to the tree" in flat
    assert "/src/linux" not in body
    assert not any(ln.startswith(">") for ln in body.splitlines())


def test_series_wide_finding_goes_to_the_cover_letter() -> None:
    wide = replace(findings()[1], patch_number=None, file="", line=None, function=None)
    msgs = render_email_messages(build_review(findings=(findings()[0], wide)))
    assert [parsed(m)["In-Reply-To"] for m in msgs] == [f"<{COVER_ID}>", f"<{P1_ID}>"]
    cover_body = body_of(msgs[0])
    assert "About the series as a whole:" in cover_body
    assert "What stops the destroy work" in cover_body


def test_finding_outside_the_diff_says_so_instead_of_quoting() -> None:
    away = replace(findings()[1], file="mm/other.c", line=12)
    body = body_of(render_email_messages(build_review(findings=(away,)))[0])
    flat = " ".join(body.split())
    assert "In mm/other.c:12 zblock_destroy_all(), which this patch does not change:" in flat
    assert "> diff --git" not in body


def test_quotes_from_the_patch_text_when_the_apply_stage_left_no_images() -> None:
    review = build_review()
    review = replace(review, applied=replace(review.applied, images=()))
    body = body_of(render_email_messages(review)[0])
    assert "> +\tatomic_sub(1 << order, &pool->nr_pages);" in body


def test_same_review_gives_the_same_message_id() -> None:
    a = render_email_messages(build_review())[0]["Message-ID"]
    b = render_email_messages(build_review())[0]["Message-ID"]
    assert a == b


def test_render_email_is_an_mbox_of_the_replies(tmp_path: Path) -> None:
    wide = replace(findings()[1], patch_number=None)
    review = build_review(findings=(findings()[0], wide))
    path = tmp_path / "out.mbox"
    path.write_text(render(review, "email"))
    box = mailbox.mbox(str(path))
    got = [m["In-Reply-To"] for m in box]
    box.close()
    assert got == [f"<{COVER_ID}>", f"<{P1_ID}>"]


def test_header_injection_in_a_subject_stays_in_the_subject() -> None:
    review = build_review()
    p1 = review.series.slots[0].patch
    assert p1 is not None
    evil = replace(
        p1, message=replace(p1.message, subject="[PATCH v2 1/3] x\r\nBcc: evil@example.net")
    )
    series = replace(review.series, slots=(replace(review.series.slots[0], patch=evil),))
    back = parsed(render_email_messages(replace(review, series=series))[0])
    assert back["Bcc"] is None
    assert "\n" not in str(back["Subject"])
    assert "evil@example.net" not in (back["To"] or "") + (back["Cc"] or "")


def test_non_ascii_author_and_text_survive_the_round_trip() -> None:
    review = build_review()
    p1 = review.series.slots[0].patch
    assert p1 is not None
    msg = replace(p1.message, from_name="Jörg Rödel", from_addr="joro@example.org")
    series = replace(
        review.series, slots=(replace(review.series.slots[0], patch=replace(p1, message=msg)),)
    )
    f = replace(findings()[0], question="Wäre das nicht ein Leck?")
    out = render_email_messages(replace(review, series=series, findings=(f,)))[0]
    back = parsed(out)
    assert getaddresses([back["To"]])[0] == ("Jörg Rödel", "joro@example.org")
    body = body_of(out)
    assert "Wäre das nicht ein Leck?" in body
    assert "Jörg Rödel wrote:" in body
    raw = bytes(out)
    head = raw.split(b"\n\n", 1)[0]
    assert head.isascii() and b"=?utf-8?" in head  # RFC 2047 in headers
    assert "Content-Transfer-Encoding: 8bit" in raw.decode("utf-8")


def test_a_bad_from_address_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        render_email_messages(build_review(), from_addr="not an address")


def test_attribution_uses_the_original_date_and_zone() -> None:
    body = body_of(render_email_messages(build_review())[0])
    assert body.splitlines()[0] == "On Tue, Nov 14, 2023 at 04:14:20PM +0300, Jane Hacker wrote:"


def test_parse_diff_keeps_line_numbers_of_both_images() -> None:
    review = build_review()
    p1 = review.series.slots[0].patch
    assert p1 is not None
    files = parse_diff(p1)
    assert [f.path for f in files] == ["mm/zblock.c"]
    h = files[0].hunks[0]
    added = next(ln for ln in h.lines if ln.kind.value == "+")
    assert (added.source_line, added.target_line) == (None, 129)
    removed = [ln for ln in h.lines if ln.kind.value == "-"]
    assert [ln.source_line for ln in removed] == [129, 130, 131]


def test_garbage_diff_quotes_nothing_instead_of_failing() -> None:
    review = build_review()
    p1 = review.series.slots[0].patch
    assert p1 is not None
    garbage = replace(p1, diff="@@ -1,3 +1,2 @@\n-only\n")
    assert parse_diff(garbage) == ()
    series = replace(review.series, slots=(replace(review.series.slots[0], patch=garbage),))
    applied = replace(review.applied, images=())
    body = body_of(render_email_messages(replace(review, series=series, applied=applied))[0])
    assert "which this patch does not change" in body
    assert f"\n    {P1_ID}\n" in body and "bot review --tree linux" in body


def test_long_message_ids_are_folded_between_ids_never_encoded() -> None:
    long_id = "0123456789abcdef0123456789abcdef01234567.1700000000.git.jane@example.org"
    review = build_review()
    p1 = review.series.slots[0].patch
    assert p1 is not None
    msg = replace(p1.message, message_id=long_id, references=(COVER_ID, "x" * 90 + "@example.org"))
    slot = replace(review.series.slots[0], patch=replace(p1, message=msg))
    out = render_email_messages(replace(review, series=replace(review.series, slots=(slot,))))[0]
    raw = bytes(out).decode("ascii")
    assert "=?" not in raw
    assert f"In-Reply-To: <{long_id}>" in raw
    back = parsed(out)
    assert back["References"].split() == [
        f"<{COVER_ID}>",
        "<" + "x" * 90 + "@example.org>",
        f"<{long_id}>",
    ]


def test_a_second_finding_on_the_same_function_reads_as_support() -> None:
    leak = findings()[0]
    sim = replace(
        leak,
        rule_id="SIM-LEAK",
        symbol="object-never-freed",
        question="",
        message="struct zblock_pool is never freed once every actor has finished.",
        evidence=(),
        suggestion="",
    )
    body = body_of(render_email_messages(build_review(findings=(leak, sim)))[0])
    flat = " ".join(body.split())
    assert "The lifecycle simulator agrees: struct zblock_pool is never freed" in flat
    assert flat.count("> @@ -120,15 +120,13 @@") == 1  # the hunk is quoted once
    assert flat.index("If the pool must outlive") < flat.index("The lifecycle simulator agrees")


def test_without_a_cover_letter_the_summary_answers_the_first_patch() -> None:
    review = build_review(findings=())
    review = replace(review, series=replace(review.series, cover=None))
    (msg,) = render_email_messages(review)
    assert parsed(msg)["In-Reply-To"] == f"<{P1_ID}>"
    assert parsed(msg)["Subject"].startswith("Re: [PATCH v2 1/3]")


def test_a_simulator_finding_on_the_same_function_does_not_ask_twice() -> None:
    leak = findings()[0]
    sim = replace(
        leak,
        rule_id="SIM-LEAK",
        symbol="object-never-freed",
        question="What frees struct zblock_pool in the order below?",
        message="After this patch the simulator finds a leak of struct zblock_pool.",
    )
    body = body_of(render_email_messages(build_review(findings=(leak, sim)))[0])
    flat = " ".join(body.split())
    assert "What frees struct zblock_pool" not in flat
    assert "The lifecycle simulator agrees: after this patch the simulator finds a leak" in flat


def test_a_synthesised_message_id_is_not_threaded_under() -> None:
    review = build_review()
    p1 = review.series.slots[0].patch
    assert p1 is not None
    msg = replace(p1.message, message_id="mail/0001.eml#0", references=())
    slot = replace(review.series.slots[0], patch=replace(p1, message=msg))
    out = render_email_messages(replace(review, series=replace(review.series, slots=(slot,))))[0]
    back = parsed(out)
    assert back["In-Reply-To"] is None and back["References"] is None
    assert "bot review" not in body_of(out)


def test_a_trace_summary_that_restates_the_message_is_not_repeated() -> None:
    leak = findings()[0]
    assert leak.trace is not None
    same = replace(leak, trace=replace(leak.trace, summary="leak: " + leak.message))
    body = " ".join(body_of(render_email_messages(build_review(findings=(same,)))[0]).split())
    # mail asks the question and leaves the message to the text format; a
    # summary restating the message is dropped too
    assert body.count("nothing else destroys a pool") == 0
    kept = " ".join(body_of(render_email_messages(build_review(findings=(leak,)))[0]).split())
    assert "yet the pool is never freed" in kept

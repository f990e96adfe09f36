"""Series assembly on small kernel-style threads: rerolls, stitching, replies, refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bot.assemble import assemble, select
from bot.config import load_settings
from bot.errors import InputError
from bot.ingest import load, parse_message
from bot.model import RawMessage

_DIFF = "---\n--- a/mm/x.c\n+++ b/mm/x.c\n@@ -1,1 +1,2 @@\n ctx\n+\tcss_put(css);\n"


def mail(
    msgid: str,
    subject: str,
    *,
    sender: str = "Ada Hacker <ada@example.org>",
    date: str = "Mon, 3 Mar 2025 10:00:00 +0000",
    reply_to: str | None = None,
    refs: tuple[str, ...] = (),
    body: str = "Signed-off-by: Ada Hacker <ada@example.org>\n" + _DIFF,
    index: int = 0,
) -> RawMessage:
    headers = [f"From: {sender}", f"Subject: {subject}", f"Date: {date}", f"Message-ID: <{msgid}>"]
    if reply_to:
        headers.append(f"In-Reply-To: <{reply_to}>")
    if refs:
        headers.append("References: " + " ".join(f"<{r}>" for r in refs))
    raw = ("\n".join(headers) + "\n\n" + body).encode()
    return parse_message(raw, f"test:{index}", index)


def _assemble(*messages: RawMessage) -> list[tuple[str, str, list[str | None]]]:
    """(key, revision, message-id per slot) for each series, to compare compactly."""
    fixed = [replace(m, index=i) for i, m in enumerate(messages)]
    series_set = assemble(fixed, load_settings())
    return [
        (s.key, s.revision, [sl.patch.message.message_id if sl.patch else None for sl in s.slots])
        for s in series_set.series
    ]


def test_partial_reroll_carries_untouched_patches_over(fixtures: Path) -> None:
    settings = load_settings()
    series_set = assemble(
        load([str(fixtures / "ingest" / "partial-reroll.mbox")], settings), settings
    )
    v5, v51 = series_set.series
    assert [p.message.message_id for p in v51.patches] == [
        "v5-1@example.org",
        "v5.1-2@example.org",
        "v5-3@example.org",
    ]
    assert (v51.version, v51.revision, v51.revision_of) == (5, "5.1", v5.key)
    assert v51.name == v5.name == "mm/zpool: tear down pools on module unload"
    assert any("partial reroll" in note for note in series_set.notes)
    assert [m.message_id for m in v5.replies] == ["review-2@example.net"]
    assert select(series_set)[0].key == v51.key


def test_unthreaded_patches_are_stitched_by_sender_version_and_total(fixtures: Path) -> None:
    settings = load_settings()
    series_set = assemble(load([str(fixtures / "ingest" / "unthreaded.mbox")], settings), settings)
    ada, bo = series_set.series
    assert [p.message.message_id for p in ada.patches] == [
        "unthreaded-1@example.org",
        "unthreaded-2@example.org",
    ]
    assert bo.missing == (2,)
    narrow = settings.with_(stitch_window_minutes=1)
    apart = assemble(load([str(fixtures / "ingest" / "unthreaded.mbox")], narrow), narrow)
    assert len(apart.series) == 3  # two minutes apart is outside a one-minute window


def test_patches_under_a_missing_cover_form_one_series() -> None:
    got = _assemble(
        mail("p1@x", "[PATCH v2 1/3] mm: one", reply_to="cover@x", refs=("cover@x",)),
        mail("p3@x", "[PATCH v2 3/3] mm: three", reply_to="cover@x", refs=("cover@x",)),
    )
    assert got == [("p1@x", "2", ["p1@x", None, "p3@x"])]


def test_v2_threaded_under_v1_is_a_new_series_linked_to_v1() -> None:
    v1 = mail("a1@x", "[PATCH] mm: fix css leak")
    v2 = mail(
        "b1@x",
        "[PATCH v2] mm: fix css leak",
        reply_to="a1@x",
        refs=("a1@x",),
        date="Tue, 4 Mar 2025 10:00:00 +0000",
    )
    series_set = assemble([v1, replace(v2, index=1)], load_settings())
    first, second = series_set.series
    assert (first.version, second.version) == (1, 2)
    assert second.revision_of == first.key
    assert not first.replies


def test_reply_to_a_patch_we_do_not_have_is_placed_by_its_subject() -> None:
    patch = mail("p1@x", "[PATCH 1/1] mm: drop the memcg ref on error")
    reply = mail(
        "r1@y",
        "Re: [PATCH 1/1] mm: drop the memcg ref on error",
        sender="Rui Reviewer <rui@example.net>",
        reply_to="elsewhere@z",
        body="Reviewed-by: Rui Reviewer <rui@example.net>\n",
    )
    series_set = assemble([patch, replace(reply, index=1)], load_settings())
    (series,) = series_set.series
    assert [m.message_id for m in series.replies] == ["r1@y"]
    assert not series_set.orphans


def test_unrelated_comment_is_an_orphan_not_a_patch() -> None:
    note = mail("n@x", "memcg: question about charging", body="How is this charged?\n")
    patch = mail("p@x", "[PATCH] mm: x")
    series_set = assemble([note, replace(patch, index=1)], load_settings())
    assert [m.message_id for m in series_set.orphans] == ["n@x"]
    assert len(series_set.series) == 1


def test_reference_loop_does_not_hang_or_crash() -> None:
    a = mail("a@x", "[PATCH 1/2] a", reply_to="b@x", refs=("b@x",))
    b = mail("b@x", "[PATCH 2/2] b", reply_to="a@x", refs=("a@x",))
    got = _assemble(a, b)
    assert sorted(slot for _, _, slots in got for slot in slots if slot) == ["a@x", "b@x"]


def test_duplicate_message_is_kept_once_with_a_note() -> None:
    p = mail("p@x", "[PATCH] mm: x")
    series_set = assemble([p, replace(p, index=1)], load_settings())
    assert len(series_set.series) == 1
    assert any("duplicate message <p@x>" in n for n in series_set.notes)


def test_patch_author_comes_from_the_in_body_from_line() -> None:
    body = (
        "From: Real Author <real@example.org>\n\nFix.\n\n"
        "Signed-off-by: Real Author <real@example.org>\n" + _DIFF
    )
    (series,) = assemble([mail("p@x", "[PATCH] mm: x", body=body)], load_settings()).series
    patch = series.patches[0]
    assert (patch.author_name, patch.author_addr) == ("Real Author", "real@example.org")
    assert patch.commit_message.startswith("Fix.")
    assert series.author_addr == "ada@example.org"  # the sender


def test_huge_total_is_bounded() -> None:
    (series,) = assemble([mail("p@x", "[PATCH 1/5000] mm: x")], load_settings()).series
    assert series.total == 999
    # a counter too long to be real is no counter at all
    (junk,) = assemble([mail("q@x", "[PATCH 1/99999999] mm: x")], load_settings()).series
    assert junk.total == 1


def test_select_with_no_patch_is_an_input_error() -> None:
    note = mail("n@x", "memcg: question", body="No diff here.\n")
    with pytest.raises(InputError, match="no patch"):
        select(assemble([note], load_settings()))


def test_assembly_of_hundreds_of_messages_is_fast_enough_to_not_matter() -> None:
    # Not a timing assertion: a size that would expose quadratic blow-ups in
    # reference walking (every reply references the whole thread).
    messages = [mail("c@x", "[PATCH 0/300] big")]
    refs: tuple[str, ...] = ("c@x",)
    for n in range(1, 301):
        messages.append(mail(f"p{n}@x", f"[PATCH {n}/300] part {n}", reply_to="c@x", refs=("c@x",)))
        messages.append(
            mail(
                f"r{n}@y",
                f"Re: [PATCH {n}/300] part {n}",
                reply_to=f"p{n}@x",
                refs=(*refs, f"p{n}@x"),
                body="ok\n",
            )
        )
    fixed = [replace(m, index=i) for i, m in enumerate(messages)]
    (series,) = assemble(fixed, load_settings()).series
    assert series.complete and len(series.replies) == 300


@pytest.mark.corpus
def test_partial_reroll_matches_what_b4_builds(corpus: Path) -> None:
    """b4's own sample: "v3 2/2" sent in reply to v2 2/2; b4 reviews v3 as v2 1/2 + v3 2/2."""
    settings = load_settings()
    folder = corpus / "mbox" / "b4"
    series_set = assemble(
        load([str(folder / "trailers-followup-partial-reroll.mbox")], settings), settings
    )
    chosen, versions, _ = select(series_set)
    b4_result = load([str(folder / "trailers-followup-partial-reroll-ref-defaults.txt")], settings)
    assert [p.message.message_id for p in chosen.patches] == [m.message_id for m in b4_result]
    assert (chosen.version, [s.version for s in versions]) == (3, [2, 3])


def test_zero_of_zero_patch_is_kept_as_patch_one() -> None:
    (series,) = assemble([mail("p@x", "[PATCH 0/0] mm: x")], load_settings()).series
    assert [p.message.message_id for p in series.patches] == ["p@x"]


def test_select_by_the_message_id_of_a_patch() -> None:
    msgs = [
        mail("c@x", "[PATCH 0/2] mm: cover"),
        mail("p1@x", "[PATCH 1/2] mm: one", reply_to="c@x", refs=("c@x",)),
        mail("q@y", "[PATCH] mm: other", sender="Bo <bo@example.com>"),
    ]
    series_set = assemble([replace(m, index=i) for i, m in enumerate(msgs)], load_settings())
    assert select(series_set, key="<p1@x>")[0].key == "c@x"


def test_deep_threads_in_reverse_order_do_not_exhaust_the_stack() -> None:
    # --chain-reply-to threading (each patch answers the previous one) and a long
    # reply chain, both given newest first: parents must still be placed first.
    patches = [mail("p1@x", "[PATCH 1/900] part 1")]
    for n in range(2, 901):
        patches.append(
            mail(f"p{n}@x", f"[PATCH {n}/900] part {n}", reply_to=f"p{n - 1}@x", refs=("p1@x",))
        )
    replies = [mail("r1@y", "Re: [PATCH 1/900] part 1", reply_to="p1@x", body="a\n")]
    for n in range(2, 3001):
        replies.append(
            mail(f"r{n}@y", "Re: [PATCH 1/900] part 1", reply_to=f"r{n - 1}@y", body="b\n")
        )
    ordered = list(reversed(patches + replies))
    series_set = assemble([replace(m, index=i) for i, m in enumerate(ordered)], load_settings())
    (series,) = series_set.series
    assert series.complete and len(series.replies) == 3000
    assert [r.message_id for r in series.replies][:2] == ["r3000@y", "r2999@y"]  # input order


def test_reroll_sent_patch_by_patch_in_reply_to_predecessors_is_one_series() -> None:
    v1 = [mail("c1@x", "[PATCH 0/2] mm: pair")] + [
        mail(f"a{n}@x", f"[PATCH {n}/2] mm: part {n}", reply_to="c1@x", refs=("c1@x",))
        for n in (1, 2)
    ]
    v2 = [
        mail(
            f"b{n}@x",
            f"[PATCH v2 {n}/2] mm: part {n}",
            reply_to=f"a{n}@x",
            refs=("c1@x", f"a{n}@x"),
            date="Tue, 4 Mar 2025 10:00:00 +0000",
        )
        for n in (1, 2)
    ]
    got = _assemble(*v1, *v2)
    assert got == [("c1@x", "1", ["a1@x", "a2@x"]), ("b1@x", "2", ["b1@x", "b2@x"])]
    msgs = [replace(m, index=i) for i, m in enumerate(v1 + v2)]
    assert assemble(msgs, load_settings()).series[1].revision_of == "c1@x"

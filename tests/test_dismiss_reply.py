"""Dismissing by reply mail: `bot: not-a-bug ...` from a trusted sender or the author."""

from __future__ import annotations

from pathlib import Path

from bot.dismiss import FileStore, dismissed_in, record
from bot.dismiss_reply import commands_in_reply, dismiss_from_reply
from bot.report.common import introduced
from bot.report.fingerprint import fingerprint, short
from tests.test_report_support import P1_ID, build_review


def reply(sender: str, body: str, *, to: str = P1_ID) -> bytes:
    return (
        f"From: {sender}\n"
        "To: mm-lifecycle-bot <bot@localhost>\n"
        "Subject: Re: [PATCH v2 1/3] mm/zblock: do not schedule pool destruction\n"
        "Message-ID: <reply-1@example.org>\n"
        "In-Reply-To: <mm-lifecycle-bot.abc@localhost>\n"
        f"References: <{to}> <mm-lifecycle-bot.abc@localhost>\n"
        "Date: Tue, 14 Nov 2023 18:00:00 +0000\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n" + body
    ).encode()


BODY = """\
On Tue, bot wrote:
> bot: not-a-bug MMLC003 quoted lines never count
> [MMLC001 release-path-stops-destroy ...; fingerprint 0123456789]

Thanks, but the pool holds a reference here.

bot: not-a-bug MMLC001 the pool holds a reference
BOT: Not-A-Bug 0123456789aB everywhere same helper everywhere
bot: not-a-bug MMLC002 everywhere
bot: not-a-bug what?

--
Maintainer
bot: not-a-bug MMLC004 under the signature
"""


def test_trusted_sender_gets_the_unquoted_commands() -> None:
    cmds = commands_in_reply(
        reply("Andrew <akpm@example.org>", BODY), trusted=["Andrew Morton <AKPM@example.org>"]
    )
    assert [(c.target, c.everywhere, c.reason) for c in cmds] == [
        ("MMLC001", False, "the pool holds a reference"),
        ("0123456789ab", True, "same helper everywhere"),
    ]
    assert cmds[0].by == "akpm@example.org"
    assert cmds[0].references[0] == "mm-lifecycle-bot.abc@localhost"
    assert P1_ID in cmds[0].references


def test_untrusted_sender_gets_nothing_but_the_author_may() -> None:
    assert commands_in_reply(reply("x@evil.example", BODY), trusted=["akpm@example.org"]) == []
    assert commands_in_reply(reply("<>", BODY), trusted=[""]) == []
    by_author = commands_in_reply(
        reply("Jane Hacker <jane@example.org>", BODY), author="jane@example.org"
    )
    assert [c.target for c in by_author] == ["MMLC001", "0123456789ab"]


def test_a_reply_dismisses_in_the_store_and_a_later_review_shows_it(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s" / "dismissals.json")
    review = build_review()
    record(store, review)
    leak = introduced(review)[0]
    text = f"Not a leak.\n\nbot: not-a-bug {short(fingerprint(leak))} reference held\n"
    # a stranger: nothing stored
    assert dismiss_from_reply(store, reply("x@evil.example", text)) == []
    # the series author: stored, with the full fingerprint
    (d,) = dismiss_from_reply(store, reply("jane@example.org", text))
    assert d.target == fingerprint(leak) and d.by == "jane@example.org"
    assert d.reason == "reference held"
    assert set(dismissed_in(store, review)) == {fingerprint(leak)}
    # a reply to a message no recorded review knows: nothing
    assert dismiss_from_reply(store, reply("jane@example.org", text, to="x@y")) == []
    assert len(store.dismissals()) == 1

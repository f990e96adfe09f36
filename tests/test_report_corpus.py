"""The email renderer on the real seed patch (read in place from the shared corpus).

The Review is built here from the .eml with the standard library, so this test
depends on nothing but the renderer; the finding is ours, placed where the seed
thread's reviewer put his objection (the release path in mm/slab.h).
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

import pytest

from bot.model import (
    AppliedSeries,
    ApplyMethod,
    Confidence,
    Finding,
    Patch,
    PatchApplication,
    PatchSlot,
    RawMessage,
    Review,
    Series,
    Severity,
    Status,
)
from bot.report import render_email_messages
from bot.report.common import MAIL_WIDTH

pytestmark = pytest.mark.corpus

SEED = "seed/v3-0001-patch-1of3.eml"


def _ids(value: str | None) -> tuple[str, ...]:
    return tuple(x.strip("<>") for x in (value or "").split())


def seed_review(corpus: Path) -> Review:
    raw = (corpus / SEED).read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    body = msg.get_content()
    assert isinstance(body, str)
    diff = body[body.index("diff --git") : body.index("\n-- \n")]
    name, addr = getaddresses([str(msg["From"])])[0]
    rm = RawMessage(
        source=str(corpus / SEED),
        raw=raw,
        message_id=str(msg["Message-ID"]).strip("<>"),
        subject=" ".join(str(msg["Subject"]).split()),
        from_name=name,
        from_addr=addr,
        date=parsedate_to_datetime(str(msg["Date"])),
        in_reply_to=str(msg["In-Reply-To"]).strip("<>"),
        references=_ids(msg["References"]),
        body=body,
        to=(str(msg["To"]),),
        cc=tuple(a.strip() for a in str(msg["Cc"]).split(",")),
    )
    patch = Patch(rm, 1, 3, "memcg, slab: ...", "", diff, author_name=name, author_addr=addr)
    series = Series(
        key=rm.in_reply_to or rm.message_id,
        version=3,
        revision="3",
        total=3,
        name="kmemcg: simplify work-flow",
        author_name=name,
        author_addr=addr,
        cover=None,
        slots=(PatchSlot(1, patch), PatchSlot(2, None), PatchSlot(3, None)),
    )
    finding = Finding(
        rule_id="MMLC001",
        symbol="release-path-stops-destroy",
        severity=Severity.ERROR,
        confidence=Confidence.HIGH,
        status=Status.INTRODUCED,
        message="The release path no longer schedules destruction of an offline cache.",
        question="Who destroys the cache once its last page is released after offline?",
        file="mm/slab.h",
        line=131,
        function="memcg_release_pages",
        patch_number=1,
    )
    applied = AppliedSeries(
        series=series,
        tree=str(corpus / "kernel" / "v3.15.5"),
        applications=(PatchApplication(1, ApplyMethod.GIT_APPLY, True),),
        images=(),  # exercise quoting straight from the patch text
    )
    return Review(series, (series,), applied, (finding,), ())


def back_id(msg: EmailMessage) -> str:
    return str(msg["In-Reply-To"]).strip("<>")


def test_seed_reply_quotes_only_the_release_path_hunk(corpus: Path) -> None:
    (msg,) = render_email_messages(seed_review(corpus))
    back = email.message_from_bytes(bytes(msg), policy=email.policy.default)
    assert isinstance(back, EmailMessage)
    assert back["Subject"].startswith("Re: [PATCH -mm v3 1/3] memcg, slab:")
    assert back["References"].split() == [
        "<cover.1398235153.git.vdavydov@parallels.com>",
        "<7740d66b62befa271d368a7b7c5d881fef3ebc90.1398235153.git.vdavydov@parallels.com>",
    ]
    part = back.get_body(preferencelist=("plain",))
    assert part is not None
    body = part.get_content()
    lines = body.splitlines()
    assert lines[0] == "On Wed, Apr 23, 2014 at 11:13:13AM +0400, Vladimir Davydov wrote:"
    quoted = [ln for ln in lines if ln.startswith(">")]
    assert "> diff --git a/mm/slab.h b/mm/slab.h" in quoted
    assert "> -\tif (atomic_sub_and_test((1 << order), &s->memcg_params->nr_pages))" in quoted
    assert "> +\t\tatomic_sub(1 << order, &s->memcg_params->nr_pages);" in quoted
    assert not any("memcontrol" in ln for ln in quoted)
    question = body.index("Who destroys the cache")
    flat = " ".join(body.split())
    assert "fingerprint " in body
    assert "This review is partial: patch 2/3 and 3/3 of v3 never arrived" in flat
    assert body.index("> +\t\tatomic_sub(") < question
    for ln in lines:
        # every line fits, quotes included; only a Message-ID cannot be split
        assert len(ln.expandtabs(8)) <= MAIL_WIDTH or ln.strip() == back_id(back), ln
    # the reproducer is the whole command: --tree, and no path of the bot's machine
    assert "  bot review --tree linux \\" in lines
    assert str(corpus) not in body and "/shared/" not in body
    # the long kernel Message-ID is threaded verbatim, never RFC 2047-encoded
    raw = bytes(msg).decode("ascii")
    assert "In-Reply-To: <7740d66b62befa271d368a7b7c5d881fef3ebc90.1398235153" in raw
    assert "=?utf-8?" not in raw

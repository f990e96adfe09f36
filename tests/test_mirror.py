"""The public-inbox v2 reader: epochs, cursors, deletions, routing headers."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.errors import InputError
from bot.ingest.mirror import PublicInboxMirror, normalise_title, routing_keys
from tests.fixtures.service.helpers import (
    append_epoch,
    demo_reply,
    demo_series,
    have_public_inbox,
    public_inbox,
    write_inbox,
)


def _msgs(n: int) -> list[bytes]:
    s1, s2 = demo_series(1), demo_series(2)
    pool = [*s1.messages.values(), demo_reply(s1, 1), *s2.messages.values()]
    return pool[:n]


def test_walk_yields_every_message_in_commit_order(tmp_path: Path) -> None:
    msgs = _msgs(7)
    write_inbox(tmp_path / "inbox", msgs)
    mirror = PublicInboxMirror(str(tmp_path / "inbox"), tmp_path / "cache")
    assert mirror.sync() == [0]
    got = list(mirror.walk({}))
    assert [m.raw for m in got] == msgs
    assert {m.epoch for m in got} == {0}


def test_walk_resumes_after_the_cursor(tmp_path: Path) -> None:
    msgs = _msgs(7)
    write_inbox(tmp_path / "inbox", msgs)
    mirror = PublicInboxMirror(str(tmp_path / "inbox"), tmp_path / "cache")
    mirror.sync()
    first = list(mirror.walk({}))
    rest = list(mirror.walk({0: first[2].commit}))
    assert [m.raw for m in rest] == msgs[3:]
    assert list(mirror.walk({0: first[-1].commit})) == []
    assert mirror.pending({0: first[2].commit}) == 4


def test_fetch_picks_up_new_messages_and_a_new_epoch(tmp_path: Path) -> None:
    msgs = _msgs(7)
    inbox = tmp_path / "inbox"
    write_inbox(inbox, msgs[:3])
    mirror = PublicInboxMirror(str(inbox), tmp_path / "cache")
    mirror.sync()
    seen = list(mirror.walk({}))
    cursor = {0: seen[-1].commit}
    append_epoch(inbox, 0, msgs[3:5], datetime(2024, 2, 1, tzinfo=UTC))
    append_epoch(inbox, 1, msgs[5:], datetime(2024, 3, 1, tzinfo=UTC))  # the archive rolled over
    assert mirror.sync() == [0, 1]
    new = list(mirror.walk(cursor))
    assert [m.raw for m in new] == msgs[3:]
    assert [m.epoch for m in new] == [0, 0, 1, 1]


def test_a_mirror_url_is_cloned_and_its_epochs_probed(tmp_path: Path) -> None:
    msgs = _msgs(4)
    write_inbox(tmp_path / "inbox", msgs, per_epoch=2)
    mirror = PublicInboxMirror((tmp_path / "inbox").as_uri(), tmp_path / "cache")
    assert mirror.epoch_url(1) == (tmp_path / "inbox").as_uri() + "/git/1.git"
    assert mirror.sync() == [0, 1]
    assert [m.raw for m in mirror.walk({})] == msgs
    assert (tmp_path / "cache" / "git" / "1.git" / "HEAD").is_file()


def test_lore_epochs_are_cloned_from_the_inbox_url_and_epoch_number(tmp_path: Path) -> None:
    mirror = PublicInboxMirror("https://lore.kernel.org/linux-mm/", tmp_path / "cache")
    assert mirror.epoch_url(0) == "https://lore.kernel.org/linux-mm/0"


def test_a_cursor_the_archive_no_longer_has_walks_the_epoch_again(tmp_path: Path) -> None:
    write_inbox(tmp_path / "inbox", _msgs(3))
    mirror = PublicInboxMirror(str(tmp_path / "inbox"), tmp_path / "cache")
    mirror.sync()
    got = list(mirror.walk({0: "0" * 40}))
    assert len(got) == 3


def test_since_skips_older_commits(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    append_epoch(inbox, 0, _msgs(2), datetime(2020, 1, 1, tzinfo=UTC))
    append_epoch(inbox, 0, _msgs(5)[2:], datetime(2024, 1, 1, tzinfo=UTC))
    mirror = PublicInboxMirror(str(inbox), tmp_path / "cache")
    mirror.sync()
    got = list(mirror.walk({}, since=datetime(2023, 1, 1, tzinfo=UTC)))
    assert [m.raw for m in got] == _msgs(5)[2:]


def test_a_deletion_commit_carries_no_message_but_moves_the_cursor(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_inbox(inbox, _msgs(2))
    repo = inbox / "git" / "0.git"
    # public-inbox purges a message with a commit whose tree holds `d` instead of `m`
    stream = (
        b"commit refs/heads/master\ncommitter pi <pi@example.org> 1700000000 +0000\n"
        b"data 1\nd\nfrom refs/heads/master^0\nD m\nM 100644 inline d\ndata 2\nx\n\n"
    )
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=stream, check=True)
    mirror = PublicInboxMirror(str(inbox), tmp_path / "cache")
    mirror.sync()
    got = list(mirror.walk({}))
    assert [bool(m.raw) for m in got] == [True, True, False]


def test_a_source_that_is_neither_url_nor_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="neither a URL nor a directory"):
        PublicInboxMirror(str(tmp_path / "nope"), tmp_path / "cache")
    with pytest.raises(InputError, match="not allowed"):
        PublicInboxMirror("ext::sh -c touch% /tmp/pwned", tmp_path / "cache")


def test_routing_keys_put_replies_and_patches_in_their_cover_thread() -> None:
    s = demo_series(1)
    cover = routing_keys(s.messages["cover"], "x")
    patch = routing_keys(s.messages["2"], "x")
    reply = routing_keys(demo_reply(s, 1), "x")
    assert cover.root == patch.root == reply.root == s.cover_id
    assert patch.is_patch and not reply.is_patch
    assert patch.author == "ada@example.org"
    assert patch.title == routing_keys(demo_series(2).messages["2"], "x").title


def test_normalise_title_drops_prefixes_and_versions() -> None:
    assert normalise_title("Re: [PATCH v3 -mm 2/5] mm: Fix  leak") == "mm: fix leak"
    assert normalise_title("Aw: Re: [RFC][PATCH] x") == "x"


def test_a_message_without_message_id_gets_the_fallback_id() -> None:
    keys = routing_keys(b"From: a@b.c\nSubject: hi\n\nbody\n", "list-abc")
    assert keys.message_id == keys.root == "list-abc"


@pytest.mark.integration
@pytest.mark.skipif(not have_public_inbox(), reason="public-inbox is not installed")
def test_reads_an_inbox_written_by_public_inbox_mda(tmp_path: Path) -> None:
    pi = public_inbox(tmp_path)
    s = demo_series(1)
    for raw in s.messages.values():
        pi.deliver(raw)
    mirror = PublicInboxMirror(str(pi.path), tmp_path / "cache")
    assert mirror.sync() == [0]
    got = [routing_keys(m.raw, "?").message_id for m in mirror.walk({})]
    assert got == [s.cover_id, *s.patch_ids]

"""Inputs and refusals: files, directories, stdin, size limit, junk; and parse_message."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import pytest

from bot.assemble import assemble, split_patch_body
from bot.config import load_settings
from bot.errors import InputError, TooLargeError
from bot.ingest import load, parse_message, split_mbox


def _ingest(fixtures: Path) -> Path:
    return fixtures / "ingest"


def test_missing_path_is_a_one_line_input_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mbox"
    with pytest.raises(InputError) as info:
        load([str(missing)], load_settings())
    assert info.value.one_line() == f"{missing}: no such file or directory"


def test_binary_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "vmlinux.bin"
    junk.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8)
    with pytest.raises(InputError, match="binary file") as info:
        load([str(junk)], load_settings())
    assert str(junk) in info.value.one_line()


def test_text_that_is_neither_mail_nor_diff_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.patch"
    notes.write_text("just some words\nabout a patch\n")
    with pytest.raises(InputError, match="not a mail, mbox or patch"):
        load([str(notes)], load_settings())


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.mbox"
    with big.open("wb") as fh:
        fh.truncate(4096)  # sparse: the size is what counts
    settings = load_settings().with_(max_input_bytes=1024)
    with pytest.raises(TooLargeError, match="over the limit of 1024"):
        load([str(big)], settings)


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked.eml"
    locked.write_text("From: a@b\nSubject: x\n\nbody\n")
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root: permissions do not stop reads
        pytest.skip("file permissions are not enforced for this user")
    with pytest.raises(InputError, match="cannot read"):
        load([str(locked)], load_settings())


def test_stdin_dash_reads_an_mbox(fixtures: Path) -> None:
    data = (_ingest(fixtures) / "unthreaded.mbox").read_bytes()
    messages = load(["-"], load_settings(), stdin=io.BytesIO(data))
    assert [m.message_id for m in messages] == [
        "unthreaded-1@example.org",
        "other-1@example.com",
        "unthreaded-2@example.org",
    ]
    assert messages[0].source == "<stdin>:0"


def test_stdin_over_the_size_limit_is_refused() -> None:
    settings = load_settings().with_(max_input_bytes=100)
    with pytest.raises(TooLargeError):
        load(["-"], settings, stdin=io.BytesIO(b"From: a@b\n\n" + b"x" * 200))


def test_stdin_dash_without_stdin_is_refused() -> None:
    with pytest.raises(InputError, match="no standard input"):
        load(["-"], load_settings())


def test_no_arguments_is_refused() -> None:
    with pytest.raises(InputError, match="no input given"):
        load([], load_settings())


def test_bare_diff_becomes_one_message_titled_from_the_file_name(fixtures: Path) -> None:
    (msg,) = load([str(_ingest(fixtures) / "0001-mm-list_lru-fix-leak.diff")], load_settings())
    assert msg.subject == "mm list lru fix leak"
    _, diff, _ = split_patch_body(msg.body)
    assert "+\tkfree(lru->node);" in diff


def test_maildir_reads_cur_and_new(fixtures: Path) -> None:
    settings = load_settings()
    messages = load([str(_ingest(fixtures) / "maildir")], settings)
    assert {m.message_id for m in messages} == {"maildir-1@example.org", "maildir-2@example.org"}
    (series,) = assemble(messages, settings).series
    assert series.complete


def test_quilt_directory_follows_the_series_file(fixtures: Path) -> None:
    messages = load([str(_ingest(fixtures) / "quilt")], load_settings())
    assert [Path(m.source).name for m in messages] == [
        "mm-workingset-add-shadow-counter.patch",
        "mm-workingset-free-shadow-counter.patch",
    ]
    assert messages[1].subject == "[PATCH 2/2] mm/workingset: free the shadow counter on teardown"
    assert messages[1].from_addr == "ada@example.org"


def test_directory_without_mail_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("nothing here\n")
    with pytest.raises(InputError, match="no mail or patch files"):
        load([str(tmp_path)], load_settings())


def test_several_arguments_are_indexed_in_order(fixtures: Path) -> None:
    folder = _ingest(fixtures)
    messages = load(
        [str(folder / "latin1-body-claims-utf8.eml"), str(folder / "unthreaded.mbox")],
        load_settings(),
    )
    assert [m.index for m in messages] == [0, 1, 2, 3]


# --------------------------------------------------------------------------- parse_message


def test_rfc2047_subject_and_sender_are_decoded(fixtures: Path) -> None:
    raw = (_ingest(fixtures) / "multipart-octet-stream.eml").read_bytes()
    msg = parse_message(raw, "x.eml")
    assert msg.subject == "[PATCH] mm/slab: free the cache on the error path — no leak"
    assert (msg.from_name, msg.from_addr) == ("Jörg Käfer", "joerg@example.de")
    assert msg.date is not None and msg.date.utcoffset() is not None


def test_missing_message_id_is_synthesised_from_source_and_index(fixtures: Path) -> None:
    raw = (_ingest(fixtures) / "multipart-octet-stream.eml").read_bytes()
    assert parse_message(raw, "inbox.mbox:3", 3).message_id == "inbox.mbox:3#3"


def test_octet_stream_patch_attachment_is_read_and_html_ignored(fixtures: Path) -> None:
    raw = (_ingest(fixtures) / "multipart-octet-stream.eml").read_bytes()
    msg = parse_message(raw, "x.eml")
    assert "html part" not in msg.body
    message, diff, _ = split_patch_body(msg.body)
    assert "error path returns without destroying" in message
    assert "+\t\tkmem_cache_destroy(s);" in diff


def test_body_in_latin1_that_claims_utf8_still_decodes(fixtures: Path) -> None:
    msg = parse_message((_ingest(fixtures) / "latin1-body-claims-utf8.eml").read_bytes(), "x")
    assert msg.from_name == "Zoé Latin"
    assert msg.subject == "[PATCH] mm/memcg: décrire le compteur"
    assert "Le commentaire était faux." in msg.body


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00\x01\x02binary", b"just a line of prose\n", b"\n\n\n"],
)
def test_bytes_without_mail_headers_are_not_a_mail(raw: bytes) -> None:
    with pytest.raises(InputError, match="not a mail") as info:
        parse_message(raw, "input.bin")
    assert info.value.one_line().startswith("input.bin: ")


def test_bad_date_and_references_loop_degrade_quietly() -> None:
    raw = (
        b"From: A <a@example.org>\nSubject: [PATCH] x\nDate: Wed, 4 Jun 207777777777 17:50 0\n"
        b"Message-ID: <self@example.org>\nIn-Reply-To: <self@example.org>\n"
        b"References: <self@example.org> <p@example.org>\n\nbody\n"
    )
    msg = parse_message(raw, "x")
    assert msg.date is None
    assert msg.in_reply_to is None
    assert msg.references == ("p@example.org",)


def test_mbox_split_ignores_from_lines_inside_a_body_and_unescapes() -> None:
    data = (
        b"From a@b Thu Jan  1 00:00:00 1970\nFrom: a@b\nSubject: one\n\n"
        b"From the changelog:\n>From here on\n\n"
        b"From 2014 on the cache is kept\nSigned-off-by: a@b\n\n"
        b"From a@b Thu Jan  1 00:00:00 1970\nFrom: a@b\nSubject: two\n\nbody\n"
    )
    first, second = split_mbox(data)
    assert b"From the changelog:\nFrom here on" in first
    assert b"From 2014 on the cache is kept" in first
    assert b"Subject: two" in second


def test_device_or_fifo_is_refused_as_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mbox"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load([str(fifo)], load_settings())
    with pytest.raises(InputError, match="not a regular file"):
        load(["/dev/zero"], load_settings())


def test_progress_reports_each_argument(fixtures: Path) -> None:
    lines: list[str] = []
    path = str(_ingest(fixtures) / "unthreaded.mbox")
    load([path], load_settings(), progress=lines.append)
    assert lines == [f"{path}: 3 message(s)"]


def test_revision_range_without_a_repository_says_so() -> None:
    with pytest.raises(InputError, match="give the repository"):
        load(["v6.1..v6.2"], load_settings())


def test_mime_nesting_bomb_is_refused_in_one_line() -> None:
    depth = 5000
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(depth)
    )
    closing = b"".join(b"--b%d--\n" % i for i in reversed(range(depth)))
    raw = b"From: a@b\nSubject: x\nMIME-Version: 1.0\n" + opening + b"\nhello\n" + closing
    with pytest.raises(InputError) as info:
        parse_message(raw, "bomb.eml")
    assert info.value.one_line().startswith("bomb.eml: ")


def test_saved_lore_download_gz_file_is_read(fixtures: Path, tmp_path: Path) -> None:
    saved = tmp_path / "t.mbox.gz"
    saved.write_bytes(gzip.compress((_ingest(fixtures) / "partial-reroll.mbox").read_bytes()))
    messages = load([str(saved)], load_settings())
    assert len(messages) == 6 and messages[0].message_id == "v5-cover@example.org"
    broken = tmp_path / "broken.mbox.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputError, match="bad gzip data"):
        load([str(broken)], load_settings())


def test_missing_relative_path_with_dots_is_reported_as_missing() -> None:
    with pytest.raises(InputError, match="no such file or directory"):
        load(["../no-such-dir/series.mbox"], load_settings(), repo=".")


@pytest.mark.parametrize("arg", ["x" * 5000, "/" + "y" * 300 + "/z", "a\0b"])
def test_impossible_paths_are_one_line_input_errors(arg: str) -> None:
    with pytest.raises(InputError) as info:
        load([arg], load_settings())
    assert "\n" not in info.value.one_line()

"""Every file of the corpus's mail collections loads or is refused in one line.

The Patchwork fuzz files (NUL bytes, absurd headers), the non-UTF-8 ones and
b4's expected-output text files all go through load() + assemble(); the only
acceptable failure is an InputError whose one line names the file.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from unidiff.patch import PatchSet

from bot.assemble import assemble, parse_subject
from bot.config import load_settings
from bot.errors import InputError
from bot.ingest import load, messages_from_bytes
from tests.conftest import corpus_path

pytestmark = pytest.mark.corpus


def _mail_files() -> list[str]:
    root = corpus_path() / "mbox"
    if not root.is_dir():
        return ["(corpus absent)"]
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("name", _mail_files())
def test_corpus_mail_file_loads_or_is_refused_in_one_line(corpus: Path, name: str) -> None:
    path = corpus / "mbox" / name
    settings = load_settings()
    try:
        messages = load([str(path)], settings)
    except InputError as exc:
        line = exc.one_line()
        assert "\n" not in line
        assert str(path) in line
        return
    assert messages
    series_set = assemble(messages, settings)
    placed = {m.message_id for s in series_set.series for m in s.replies}
    placed |= {p.message.message_id for s in series_set.series for p in s.patches + s.extra}
    placed |= {s.cover.message_id for s in series_set.series if s.cover}
    placed |= {m.message_id for m in series_set.orphans}
    assert placed == {m.message_id for m in messages}, "every message lands somewhere, once"


def test_non_utf8_mail_decodes_subject_and_body(corpus: Path) -> None:
    settings = load_settings()
    (msg,) = load(
        [str(corpus / "mbox/patchwork/mail/0015-with-invalid-utf8-headers.mbox")], settings
    )
    assert msg.subject.startswith("MAINTAINERS: Update entry for")
    (latin,) = load([str(corpus / "mbox/patchew/0005-non-utf-8.mbox")], settings)
    assert latin.body and "\udc80" not in latin.body


def test_directory_of_git_format_patch_files_loads_each_with_a_diff(corpus: Path) -> None:
    folder = corpus / "patches/hhoffstaette-kernel-patches/3.14"
    settings = load_settings()
    messages = load([str(folder)], settings)
    assert len(messages) == len(list(folder.glob("*.patch")))
    series_set = assemble(messages, settings)
    patches = [p for s in series_set.series for p in s.patches]
    assert len(patches) == len(messages)
    for patch in patches:
        assert patch.diff.strip(), patch.message.source
        assert patch.author_addr, patch.message.source


def test_quilt_directory_loads_in_series_file_order_as_one_stack(corpus: Path) -> None:
    folder = corpus / "patches/sjp38-mmotm/broken-out"
    settings = load_settings()
    messages = load([str(folder)], settings)
    present = {p.name for p in folder.glob("*.patch")}
    listed = [
        line.split()[0]
        for line in (folder.parent / "series").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    expected_order = [name for name in listed if name in present]
    assert [Path(m.source).name for m in messages] == expected_order
    series_set = assemble(messages, settings)
    (stack,) = series_set.series
    assert stack.total == len(expected_order) and stack.complete
    for patch in stack.patches:
        assert PatchSet(patch.diff), patch.message.source
        assert "Patches currently in -mm" not in patch.diff
        assert parse_subject(patch.message.subject).number == patch.number


def test_mutated_seed_mails_load_and_assemble_or_are_refused(corpus: Path) -> None:
    """Seeded byte-level mutations of real mail: only InputError may come out."""
    rng = random.Random(20140409)
    originals = [p.read_bytes() for p in sorted((corpus / "seed").glob("*.eml"))]
    inserts = [
        b"\n",
        b"From x Mon Jan 1 00:00:00 2000\n",
        b"@@ -1,2 +1,3 @@\n",
        b"\x00",
        b"diff --git a/x b/x\n",
        b"[PATCH 0/3]",
        b"Re: ",
        b"<",
        b"=?utf-8?b?",
        b"-- \n",
    ]
    settings = load_settings()
    for _ in range(300):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 20)):
            pos = rng.randrange(len(data)) if data else 0
            roll = rng.random()
            if roll < 0.4 and data:
                data[pos] = rng.randrange(256)
            elif roll < 0.7:
                data[pos:pos] = rng.choice(inserts)
            else:
                del data[pos : pos + rng.randint(1, 40)]
        try:
            series_set = assemble(messages_from_bytes(bytes(data), "mutant.eml"), settings)
        except InputError as exc:
            assert exc.one_line().startswith("mutant.eml")
            continue
        assert all(s.total >= 1 for s in series_set.series)

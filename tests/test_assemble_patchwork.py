"""Conformance with Patchwork: every series fixture in the corpus's EXPECTED.json.

Patchwork's own test data (read in place from the corpus) is assembled and
compared with what Patchwork builds from it: series count and order, version,
total, cover letter, patches in number order, received_all, name, replies.

Two documented differences of representation, not of opinion:
  * Patchwork names a series without a cover after its first patch's subject
    with the counter kept ("[1/2] test: ..."); our Series.name is the title
    alone, so the leading bracket group is dropped before comparing. Where
    Patchwork records no name at all, ours must be the first patch's title.
  * Patchwork does not link revisions; EXPECTED.json states the link each
    scenario describes ("revision_of", an index), which we compare.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bot.assemble import assemble
from bot.config import load_settings
from bot.ingest import messages_from_bytes
from bot.model import RawMessage, Series, SeriesSet
from tests.conftest import corpus_path

SERIES_DIR = Path("mbox/patchwork/series")
_LEADING_GROUP = re.compile(r"^\[[^\]]*\]\s*")


def _fixtures() -> list[str]:
    """Fixture names; a template once per scenario ("name@2"), each with its own tokens."""
    expected = corpus_path() / SERIES_DIR / "EXPECTED.json"
    if not expected.is_file():
        return ["(corpus absent)"]
    out: list[str] = []
    for name, entry in sorted(json.loads(expected.read_text())["fixtures"].items()):
        if entry["kind"] == "template":
            out += [f"{name}@{i}" for i in range(len(entry["scenarios"]))]
        else:
            out.append(name)
    return out


def _expected(corpus: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((corpus / SERIES_DIR / "EXPECTED.json").read_text())
    return data


def _bare(msgid: str) -> str:
    return msgid.strip().strip("<>")


def _template_tokens(entry: dict[str, Any], scenario: int) -> dict[str, str]:
    """Tokens of one scenario, with the {S1.id} database id of its setup series filled."""
    tokens: dict[str, str] = dict(entry["scenarios"][scenario]["substitute"])
    return {k: v.replace("{S1.id}", "1") for k, v in tokens.items()}


def _load_fixture(
    corpus: Path, name: str, entry: dict[str, Any], scenario: int = 0
) -> list[RawMessage]:
    path = corpus / SERIES_DIR / name
    data = path.read_bytes()
    if entry["kind"] == "template":
        text = data.decode("utf-8").format(**_template_tokens(entry, scenario))
        data = text.encode("utf-8")
    return messages_from_bytes(data, str(path))


def _assert_series_matches(ours: Series, want: dict[str, Any], where: str) -> None:
    assert ours.version == want["version"], f"{where}: version"
    assert ours.total == want["total"], f"{where}: total"
    cover = want["cover_letter"]
    assert (ours.cover.message_id if ours.cover else None) == (
        _bare(cover["message_id"]) if cover else None
    ), f"{where}: cover letter"
    got_patches = [p.message.message_id for p in ours.patches + ours.extra]
    assert got_patches == [_bare(p["message_id"]) for p in want["patches"]], f"{where}: patches"
    assert ours.complete == want["received_all"], f"{where}: received_all"
    if want["name"] is None:
        assert ours.name == ours.patches[0].title, f"{where}: name (Patchwork has none)"
    else:
        want_name = want["name"] if cover else _LEADING_GROUP.sub("", want["name"])
        assert ours.name == want_name, f"{where}: name"


def _compare(series_set: SeriesSet, entry: dict[str, Any]) -> None:
    want_series = entry["series"]
    got = series_set.series
    assert len(got) == len(want_series), "series count"
    for i, (ours, want) in enumerate(zip(got, want_series, strict=True)):
        _assert_series_matches(ours, want, f"series {i}")
        if want.get("revision_of") is not None:
            assert ours.revision_of == got[want["revision_of"]].key, f"series {i}: revision_of"
        else:
            assert ours.revision_of is None, f"series {i}: revision_of should be unset"
    replies = {m.message_id for s in got for m in s.replies}
    for comment in entry.get("comments") or []:
        assert _bare(comment["message_id"]) in replies, f"comment {comment['subject']!r}"
    orphan_ids = {m.message_id for m in series_set.orphans}
    patch_ids = {p.message.message_id for s in got for p in s.patches + s.extra}
    assert not orphan_ids & patch_ids


@pytest.mark.corpus
@pytest.mark.parametrize("name", _fixtures())
def test_patchwork_series_fixture_assembles_as_patchwork_expects(corpus: Path, name: str) -> None:
    # No fixture is an expected failure: where our model differs from Patchwork's
    # (names, revision links) the comparison maps it, as the module docstring says.
    fixture, _, scenario = name.partition("@")
    entry = _expected(corpus)["fixtures"][fixture]
    messages = _load_fixture(corpus, fixture, entry, int(scenario or 0))
    if entry["kind"] == "template":
        for token in _template_tokens(entry, int(scenario)).values():
            assert any(f"Depends-on: {token}" in m.body for m in messages), token
    assert len(messages) == entry["messages"]
    series_set = assemble(messages, load_settings())
    _compare(series_set, entry)

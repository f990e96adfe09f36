"""The seed thread (corpus/seed): three versions of one kmemcg series, with holes.

What b4 0.16 gets wrong here and we must not: the prerequisite "sl[au]b: charge
slabs to kmemcg explicitly" is also a v2 from the same author within weeks,
but a different series (other name, other total, other thread).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from unidiff.patch import PatchSet

from bot.assemble import assemble, select
from bot.config import load_settings
from bot.errors import UsageError
from bot.ingest import load
from bot.model import Series, SeriesSet

V1_COVER = "cover.1397054470.git.vdavydov@parallels.com"
V3_COVER = "cover.1398235153.git.vdavydov@parallels.com"
V2_FIRST = "e929fb6cc3a10ce1a9dcee0440e6995bdf427090.1397804745.git.vdavydov@parallels.com"
PREREQ = "031f9e2374dcb4cb6c2e7d509d1276623d5b1fba.1396335798.git.vdavydov@parallels.com"
V1_REPLIES = {
    "20140415021614.GC7969@cmpxchg.org",
    "534CD08F.30702@parallels.com",
    "alpine.DEB.2.10.1404151016400.11231@gentwo.org",
    "534D83AB.6040107@parallels.com",
    "alpine.DEB.2.10.1404151431400.29234@gentwo.org",
}

pytestmark = pytest.mark.corpus


@pytest.fixture
def seed(corpus: Path) -> SeriesSet:
    settings = load_settings()
    return assemble(load([str(corpus / "seed")], settings), settings)


def _by_key(series_set: SeriesSet, key: str) -> Series:
    return next(s for s in series_set.series if s.key == key)


def _present(series: Series) -> list[int]:
    return [s.number for s in series.slots if not s.missing]


def test_seed_v1_has_cover_two_patches_and_shows_1_and_2_missing(seed: SeriesSet) -> None:
    v1 = _by_key(seed, V1_COVER)
    assert (v1.version, v1.total, v1.name) == (1, 4, "memcg-vs-slab cleanup")
    assert v1.cover is not None and v1.cover.message_id == V1_COVER
    assert _present(v1) == [3, 4]
    assert v1.missing == (1, 2)
    assert not v1.complete


def test_seed_replies_to_missing_patch_are_kept_as_replies_of_v1(seed: SeriesSet) -> None:
    v1 = _by_key(seed, V1_COVER)
    assert {m.message_id for m in v1.replies} == V1_REPLIES
    patch_ids = {p.message.message_id for s in seed.series for p in s.patches}
    assert not patch_ids & V1_REPLIES
    assert not seed.orphans


def test_seed_v2_has_two_patches_and_3_of_3_missing(seed: SeriesSet) -> None:
    v2 = _by_key(seed, V2_FIRST)
    assert (v2.version, v2.total, v2.rfc) == (2, 3, True)
    assert v2.cover is None
    assert _present(v2) == [1, 2]
    assert v2.missing == (3,)


def test_seed_v3_is_complete_with_cover(seed: SeriesSet) -> None:
    v3 = _by_key(seed, V3_COVER)
    assert (v3.version, v3.total, v3.name) == (3, 3, "kmemcg: simplify work-flow")
    assert v3.complete
    assert [p.title for p in v3.patches][2] == "memcg, slab: simplify synchronization scheme"


def test_seed_versions_are_linked_v1_v2_v3(seed: SeriesSet) -> None:
    assert _by_key(seed, V1_COVER).revision_of is None
    assert _by_key(seed, V2_FIRST).revision_of == V1_COVER
    assert _by_key(seed, V3_COVER).revision_of == V2_FIRST
    assert [s.key for s in seed.versions_of(V2_FIRST)] == [V1_COVER, V2_FIRST, V3_COVER]


def test_seed_prerequisite_is_its_own_series_not_mixed_into_v2(seed: SeriesSet) -> None:
    prereq = _by_key(seed, PREREQ)
    assert prereq.name == "sl[au]b: charge slabs to kmemcg explicitly"
    assert (prereq.version, prereq.total, prereq.revision_of) == (2, 2, None)
    assert _present(prereq) == [1]
    v2 = _by_key(seed, V2_FIRST)
    assert PREREQ not in {p.message.message_id for p in v2.patches}
    assert not any(s.revision_of == PREREQ for s in seed.series)
    assert len(seed.series) == 4


def test_select_picks_v3_by_default_and_others_are_unrelated(seed: SeriesSet) -> None:
    chosen, versions, others = select(seed)
    assert chosen.key == V3_COVER
    assert [s.version for s in versions] == [1, 2, 3]
    assert [s.key for s in others] == [PREREQ]


def test_select_by_version_and_refuses_an_unknown_version(seed: SeriesSet) -> None:
    chosen, _, _ = select(seed, version=2)
    assert chosen.key == V2_FIRST
    with pytest.raises(UsageError, match=r"no version 7; versions found: 1, 2, 3"):
        select(seed, version=7)


def test_select_by_key_picks_that_chain(seed: SeriesSet) -> None:
    chosen, versions, others = select(seed, key=f"<{PREREQ}>")
    assert chosen.key == PREREQ
    assert versions == (chosen,)
    assert len(others) == 3


def test_seed_patch_diffs_parse_and_exclude_the_list_footer(seed: SeriesSet) -> None:
    for series in seed.series:
        for patch in series.patches:
            files = PatchSet(patch.diff)
            assert len(files) >= 1, patch.title
            assert "unsubscribe" not in patch.diff
            assert "Signed-off-by: Vladimir Davydov" in patch.commit_message
            assert "diff --git" not in patch.commit_message
            assert (patch.author_name, patch.author_addr) == (
                "Vladimir Davydov",
                "vdavydov@parallels.com",
            )
    v3_first = _by_key(seed, V3_COVER).patches[0]
    assert {f.path for f in PatchSet(v3_first.diff)} >= {"mm/memcontrol.c"}

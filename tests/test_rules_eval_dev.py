"""The eval-dev cases of the shared corpus, diff-only, as a regression guard:
each positive's bug.patch (the fix reversed) is flagged by the rule for its shape,
and no fix.patch (positives' fixes and the hard negatives) is flagged by any rule.
The shrinker case needs the tree (its helper's free is outside the hunks); the
bench (bench/eval.py) measures it with the trees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.config import Settings
from bot.model import Status
from bot.pipeline import review_inputs

pytestmark = pytest.mark.corpus

SETTINGS = Settings(simulate=False)
# shape of the bug -> the rule that speaks for it
EXPECTED = {
    "cgwb-release-uaf": "MMLC003",
    "hugetlb-cgroup-mremap-css-leak": "MMLC002",
    "list-lru-memcg-rcu": "MMLC005",
    "secretmem-users-refcount": "MMLC002",
    "wb-bw-dwork-after-unregister": "MMLC004",
}
NEEDS_TREE = {"shrinker-info-teardown-race"}


def _cases(corpus: Path) -> list[Path]:
    return sorted(p.parent for p in (corpus / "eval-dev").glob("*/meta.json"))


def _introduced(path: Path) -> set[str]:
    review = review_inputs([str(path)], SETTINGS)
    return {f.rule_id for f in review.findings if f.status is Status.INTRODUCED}


def test_every_positive_bug_is_flagged_by_the_rule_for_its_shape(corpus: Path) -> None:
    for case in _cases(corpus):
        meta = json.loads((case / "meta.json").read_text())
        if meta["kind"] != "positive" or case.name in NEEDS_TREE:
            continue
        assert EXPECTED[case.name] in _introduced(case / "bug.patch"), case.name


def test_no_fix_and_no_negative_is_flagged(corpus: Path) -> None:
    cases = _cases(corpus)
    assert len(cases) >= 10
    for case in cases:
        assert _introduced(case / "fix.patch") == set(), case.name

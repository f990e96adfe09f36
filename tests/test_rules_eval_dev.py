"""The eval-dev cases of the shared corpus, diff-only, as a regression guard over
what the bot reliably does: each positive listed in EXPECTED (its bug.patch, the
fix reversed) is flagged by the rule for its shape, and no fix.patch of any case
(positives' fixes and every negative) is flagged by any rule.

EXPECTED lists the positives the rules find from the diff alone; the others are
measured, with the trees, by bench/eval.py (targets and per-class recall live
there, not here). A case added to the corpus is covered by the second test at
once; it joins EXPECTED only when the bot finds it."""

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
    "damon-memcg-path-show-uaf": "MMLC008",
    "hugetlb-copy-error-resv-leak": "MMLC007",
    "hugetlb-node-sysfs-group-leak": "MMLC001",
    "shm-destroy-orphaned-rcu": "MMLC008",
    "shm-orphan-destroy-nattch-race": "MMLC008",
    "shmem-dquot-rbroot-unlocked": "MMLC008",
    "swap-avail-list-swapoff-race": "MMLC008",
    "swapfile-unlink-race": "MMLC007",
    "vmap-pool-shrink-purge-lock": "MMLC008",
    "damon-attrs-add-dirs-errcode": "MMLC007",
    "damon-dbgfs-ctxs-unlocked": "MMLC006",
    "hugetlb-cgroup-mremap-css-leak": "MMLC002",
    "hwpoison-kill-procs-list-uaf": "MMLC003",
    "list-lru-memcg-rcu": "MMLC005",
    "put-pages-list-reinit": "MMLC003",
    "secretmem-users-refcount": "MMLC002",
    "test-meminit-bulk-cache-leak": "MMLC002",
    "thp-split-pmd-counter-after-put": "MMLC003",
    "uffd-wp-exit-mmap-race": "MMLC002",
    "wb-bw-dwork-after-unregister": "MMLC004",
    "free-pages-prepare-stale-private": "MMLC009",
    "khugepaged-retract-anon-vma-race": "MMLC009",
    "mglru-migrate-mm-before-add": "MMLC009",
    "slab-obj-exts-cleanup-always": "MMLC002",
    "swapoff-unuse-mm-unstable": "MMLC009",
    "vmemmap-restore-pte-wmb": "MMLC008",
    "shrinker-info-teardown-race": "MMLC006",
    "writeback-mark-inode-dirty-uaf": "MMLC008",
    "z3fold-claimed-clear-under-lock": "MMLC008",
    "kasan-free-pxd-double-free": "MMLC003",
    "anon-name-refcount-saturation": "MMLC002",
    "zsmalloc-lock-zspage-migrate-race": "MMLC008",
}


def _cases(corpus: Path) -> list[Path]:
    return sorted(p.parent for p in (corpus / "eval-dev").glob("*/meta.json"))


def _introduced(path: Path) -> set[str]:
    review = review_inputs([str(path)], SETTINGS)
    return {f.rule_id for f in review.findings if f.status is Status.INTRODUCED}


def test_every_expected_positive_is_flagged_by_the_rule_for_its_shape(corpus: Path) -> None:
    cases = {c.name: c for c in _cases(corpus)}
    for name, rule in EXPECTED.items():
        if name not in cases:
            continue  # an older corpus without this case
        meta = json.loads((cases[name] / "meta.json").read_text())
        assert meta["kind"] == "positive", name
        assert rule in _introduced(cases[name] / "bug.patch"), name


def test_no_fix_and_no_negative_is_flagged(corpus: Path) -> None:
    cases = _cases(corpus)
    assert len(cases) >= 10
    for case in cases:
        assert _introduced(case / "fix.patch") == set(), case.name

"""The seed series (v3 1/3..3/3) on the corpus kernel v3.15.5 (a plain directory),
checked hunk by hunk against GNU patch, and the functions patch 1 touches."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.analyze.cfunc import touched_functions
from bot.apply import apply_series
from bot.config import Settings, load_settings
from bot.model import AppliedSeries, ApplyMethod, ChangeKind
from tests.test_apply import assert_hunks_match_images, series_of, tree_digest

SEED = ["v3-0001-patch-1of3.eml", "v3-0002-patch-2of3.eml", "v3-0003-patch-3of3.eml"]

HunkOutcome = tuple[bool, int, int]  # applied, offset, fuzz
_GNU_HUNK = re.compile(
    r"Hunk #(\d+) (succeeded|FAILED) at \d+"
    r"(?: with fuzz (\d+))?(?: \(offset (-?\d+) lines?\))?"
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings().with_(scratch_dir=tmp_path / "scratch")


def _apply(corpus: Path, settings: Settings, names: list[str]) -> AppliedSeries:
    tree = corpus / "kernel" / "v3.15.5"
    return apply_series(series_of([corpus / "seed" / n for n in names]), str(tree), settings)


def _gnu_patch(tree: Path, mail: Path) -> dict[tuple[str, int], HunkOutcome]:
    """What GNU patch (forward only, as a batch tool runs it) does with each hunk."""
    out = subprocess.run(
        [
            "patch",
            "-p1",
            "-N",
            "--no-backup-if-mismatch",
            "-r",
            "-",
            "-d",
            str(tree),
            "-i",
            str(mail),
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    result: dict[tuple[str, int], HunkOutcome] = {}
    current = ""
    for line in out.splitlines():
        if m := re.match(r"patching file (\S+)", line):
            current = m.group(1)
        elif m := _GNU_HUNK.match(line):
            ok = m.group(2) == "succeeded"
            result[(current, int(m.group(1)))] = (ok, int(m.group(4) or 0), int(m.group(3) or 0))
        elif m := re.match(r"(\d+) out of (\d+) hunks? ignored", line):
            for n in range(1, int(m.group(2)) + 1):
                result[(current, n)] = (False, 0, 0)
    return result


def test_v3_patch_1_applies_with_offsets(corpus: Path, settings: Settings) -> None:
    tree = corpus / "kernel" / "v3.15.5"
    before = tree_digest(tree)
    applied = _apply(corpus, settings, SEED[:1])
    (app,) = applied.applications
    assert app.ok
    # git am -3 has no blobs to merge with and git apply refuses the fuzz the
    # memcontrol.h hunk needs: our fuzzy apply does it, as GNU patch would.
    assert app.method is ApplyMethod.FUZZY
    assert app.message == "applied with offsets (-3, +9, +3) and fuzz 2 by fuzzy apply"
    assert tree_digest(tree) == before
    # Hunks keep the patch's text with line numbers of the tree (offsets applied).
    assert_hunks_match_images(applied.images[0])


def test_v3_series_matches_gnu_patch_hunk_by_hunk(
    corpus: Path, settings: Settings, tmp_path: Path
) -> None:
    if shutil.which("patch") is None:
        pytest.skip("GNU patch not installed")
    applied = _apply(corpus, settings, SEED)
    work = tmp_path / "gnu"
    shutil.copytree(corpus / "kernel" / "v3.15.5", work)
    for name, app in zip(SEED, applied.applications, strict=True):
        gnu = _gnu_patch(work, corpus / "seed" / name)
        assert gnu, f"GNU patch reported nothing for {name}"
        ours: dict[tuple[str, int], HunkOutcome] = {}
        per_file: dict[str, int] = {}
        for h in app.hunks:
            per_file[h.file] = per_file.get(h.file, 0) + 1
            ours[(h.file, per_file[h.file])] = (h.applied, h.offset, h.fuzz)
        # GNU prints nothing for a hunk that applies exactly where it says.
        expected = {key: gnu.get(key, (True, 0, 0)) for key in ours}
        assert ours == expected, name
        if app.ok:
            for image in applied.images[app.number - 1].images:
                assert image.post == (work / image.path).read_text(), image.path


def test_v3_patch_3_has_exactly_one_failing_hunk_named(corpus: Path, settings: Settings) -> None:
    applied = _apply(corpus, settings, SEED)
    third = applied.applications[2]
    assert not third.ok and third.method is ApplyMethod.FUZZY
    (failed,) = third.failed_hunks
    assert failed.file == "mm/slab_common.c"
    assert failed.hunk.startswith("@@ -296,14 +288,18 @@")
    assert third.message.startswith(
        "hunk 4 of mm/slab_common.c (@@ -296,14 +288,18 @@) does not apply"
    )
    assert all(img.partial for img in applied.images[2].images)


def test_v3_patch_1_touched_functions_on_the_tree(corpus: Path, settings: Settings) -> None:
    applied = _apply(corpus, settings, SEED[:1])
    images = applied.images[0]
    assert not any(img.partial for img in images.images)
    changes = {(c.file, c.name): c for c in touched_functions(images)}
    release = changes[("mm/slab.h", "memcg_release_pages")]
    assert release.kind is ChangeKind.MODIFIED
    assert release.pre is not None and release.post is not None
    assert release.pre.body.startswith("static inline void memcg_release_pages(")
    assert release.pre.body.rstrip().endswith("}")
    assert "mem_cgroup_destroy_cache" in release.pre.calls
    assert "mem_cgroup_destroy_cache" not in release.post.body
    destroy = changes[("mm/memcontrol.c", "mem_cgroup_destroy_cache")]
    assert destroy.kind is ChangeKind.REMOVED and destroy.post is None
    assert destroy.pre is not None and "schedule_work" in destroy.pre.calls
    work = changes[("mm/memcontrol.c", "kmem_cache_destroy_work_func")]
    assert work.kind is ChangeKind.MODIFIED
    assert work.pre is not None and work.post is not None
    # Full images: the whole function, head included, not just the hunk.
    assert work.pre.body.startswith("static void kmem_cache_destroy_work_func(")

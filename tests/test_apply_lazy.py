"""A plain-directory scratch gets a git repository only when git is about to run,
and a fuzzy-applied patch is committed only when git runs next: the results are
what a repository made up front (and a commit after every patch) gives."""

from __future__ import annotations

import os
import random
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

import bot.apply.scratch as scratch_mod
import bot.apply.strategies as strategies_mod
from bot.apply import apply_series
from bot.apply.fuzzy import MAX_FUZZ, Placement, _context_run, _old, locate_hunks
from bot.config import Settings, load_settings
from bot.model import AppliedSeries, ApplyMethod, Hunk, HunkLine, LineKind, PatchSlot
from tests.test_apply import (
    APPLY,
    P1,
    P2,
    assert_hunks_match_images,
    diff_series,
    needs_fuzz,
    plain_tree,
    run_git,
    series_of,
)
from tests.test_apply_seed import SEED

# The v3 series on kernel v3.15.5: every patch goes to fuzzy apply, 2/3 and 3/3
# only in part (pinned with the repository made up front; GNU patch agrees hunk by
# hunk in test_apply_seed).
SEED_RESULTS = [
    (ApplyMethod.FUZZY, True, "applied with offsets (-3, +9, +3) and fuzz 2 by fuzzy apply"),
    (
        ApplyMethod.FUZZY,
        False,
        "3 hunks do not apply: hunk 1 of include/linux/memcontrol.h (@@ -506,8 +506,8 @@);"
        " hunk 2 of mm/slab.h (@@ -197,8 +185,7 @@); hunk 3 of mm/slab.h (@@ -207,7 +194,7 @@);"
        " mm/memcontrol.c skipped: looks already applied (6 other hunks applied by fuzzy apply)",
    ),
    (
        ApplyMethod.FUZZY,
        False,
        "hunk 4 of mm/slab_common.c (@@ -296,14 +288,18 @@) does not apply"
        " (19 other hunks applied by fuzzy apply)",
    ),
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings().with_(scratch_dir=tmp_path / "scratch")


@pytest.fixture
def no_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH with a `git` that records it ran and fails; returns the record file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "git-ran"
    fake = bin_dir / "git"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {record}\nexit 1\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return record


def _summary(applied: AppliedSeries) -> list[tuple[ApplyMethod, bool, str]]:
    return [(a.method, a.ok, a.message) for a in applied.applications]


# A mail whose widget_init hunk needs fuzz 1 on the fixture tree (its first context
# line differs) and whose index line names a blob nobody has: neither git am -3 nor
# git apply can apply it, so it goes straight to fuzzy apply.
MARK_INIT = "\n".join(
    [
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001",
        "From: Test <test@example.org>",
        "Date: Thu, 1 Jan 2026 10:00:00 +0000",
        "Subject: [PATCH 1/2] mm/widget: mark widget_init",
        "",
        "Signed-off-by: Test Author <test@example.org>",
        "---",
        " mm/widget.c | 2 +-",
        " 1 file changed, 1 insertion(+), 1 deletion(-)",
        "",
        "diff --git a/mm/widget.c b/mm/widget.c",
        "index 1234567..89abcde 100644",
        "--- a/mm/widget.c",
        "+++ b/mm/widget.c",
        "@@ -57,7 +57,7 @@ void widget_kick(struct widget *w)",
        " } /* kick */",
        " ",
        " static int __init widget_init(void)",
        "-{",
        "+{ /* init */",
        " \twidget_cache = KMEM_CACHE(widget, 0);",
        " \treturn widget_cache ? 0 : -ENOMEM;",
        " }",
        "-- ",
        "2.39.5",
        "",
    ]
)


def _mark_init_mail(tmp_path: Path) -> Path:
    mail = tmp_path / "0001-mark-widget-init.patch"
    mail.write_text(MARK_INIT)
    return mail


# --------------------------------------------------------------------------- no git at all


def test_seed_series_on_a_plain_tree_runs_no_git(
    corpus: Path, settings: Settings, no_git: Path
) -> None:
    tree = corpus / "kernel" / "v3.15.5"
    series = series_of([corpus / "seed" / name for name in SEED])
    applied = apply_series(series, str(tree), settings)
    assert not no_git.exists(), no_git.read_text()
    assert _summary(applied) == SEED_RESULTS
    assert applied.notes[0] == "tree is a plain directory: applied in a scratch repository"
    assert_hunks_match_images(applied.images[0])
    assert all(image.partial for image in applied.images[1].images)


def test_fully_fuzzy_plain_series_runs_no_git_and_matches_pinned_results(
    tmp_path: Path, settings: Settings, no_git: Path
) -> None:
    tree = plain_tree(tmp_path)
    needs_fuzz(tree)
    series = series_of([APPLY / P1, _mark_init_mail(tmp_path)])
    applied = apply_series(series, str(tree), settings)
    assert not no_git.exists(), no_git.read_text()
    assert _summary(applied) == [
        (ApplyMethod.FUZZY, True, "applied with fuzz 1 by fuzzy apply"),
        (ApplyMethod.FUZZY, True, "applied with fuzz 1 by fuzzy apply"),
    ]
    first, second = applied.images
    widget_1, widget_2 = first.image("mm/widget.c"), second.image("mm/widget.c")
    assert widget_1 is not None and widget_2 is not None
    assert widget_2.pre == widget_1.post
    assert widget_2.post is not None and "{ /* init */" in widget_2.post
    assert "\tif (!w)\n\t\treturn;" in widget_2.post
    assert_hunks_match_images(first)
    assert_hunks_match_images(second)
    assert list((tmp_path / "scratch").iterdir()) == []


# --------------------------------------------------------------------------- git later on


def test_git_after_fuzzy_apply_sees_the_fuzzy_result(
    tmp_path: Path, settings: Settings, git_calls: list[str]
) -> None:
    # P1 needs fuzz; P2 then applies with git on top of what fuzzy apply wrote.
    tree = plain_tree(tmp_path)
    needs_fuzz(tree)
    applied = apply_series(series_of([APPLY / P1, APPLY / P2]), str(tree), settings)
    assert _summary(applied) == [
        (ApplyMethod.FUZZY, True, "applied with fuzz 1 by fuzzy apply"),
        (ApplyMethod.GIT_AM, True, "applied cleanly by git am -3"),
    ]
    # The repository is made (from the fuzzy-applied files) only for patch 2.
    assert git_calls == ["init", "add", "commit", "am"]
    first, second = applied.images
    widget_1, widget_2 = first.image("mm/widget.c"), second.image("mm/widget.c")
    assert widget_1 is not None and widget_2 is not None
    assert widget_2.pre == widget_1.post
    assert widget_2.post is not None
    assert "\tif (!w)\n\t\treturn;" in widget_2.post and "/* gone */" in widget_2.post
    assert "void widget_flush(struct widget *w)" in widget_2.post
    header = second.image("mm/widget.h")
    assert header is not None and header.pre == (tree / "mm" / "widget.h").read_text()
    assert header.post is not None and "void widget_flush(struct widget *w);" in header.post
    assert_hunks_match_images(second)


def test_git_apply_after_fuzzy_apply_without_a_mail(
    tmp_path: Path, settings: Settings, git_calls: list[str]
) -> None:
    tree = plain_tree(tmp_path)
    needs_fuzz(tree)
    text = (APPLY / P2).read_text()
    mailed = series_of([APPLY / P1, APPLY / P2])
    bare = diff_series(text[text.index("diff --git") : text.index("-- \n")]).slots[0].patch
    assert bare is not None
    second = PatchSlot(2, replace(bare, number=2, total=2))
    series = replace(mailed, slots=(mailed.slots[0], second))
    applied = apply_series(series, str(tree), settings)
    assert _summary(applied) == [
        (ApplyMethod.FUZZY, True, "applied with fuzz 1 by fuzzy apply"),
        (ApplyMethod.GIT_APPLY, True, "applied cleanly by git apply"),
    ]
    assert git_calls == ["init", "add", "commit", "apply", "commit"]
    widget = applied.images[1].image("mm/widget.c")
    assert widget is not None and widget.post is not None
    assert "/* gone */" in widget.post and "void widget_flush(struct widget *w)" in widget.post
    assert_hunks_match_images(applied.images[1])


def test_three_way_merge_finds_a_blob_fuzzy_apply_replaced_before_git_ran(
    tmp_path: Path, settings: Settings, git_calls: list[str]
) -> None:
    # The tree is P1 applied, so its widget.c is the blob P2's index line names.
    # Patch 1 (fuzzy, no git) edits a context line of P2's hunk: git apply cannot,
    # but git am -3 merges from that blob, which the repository made for patch 2
    # must hold although no file in the scratch has that content any more.
    tree = plain_tree(tmp_path)
    subprocess.run(["git", "apply", str(APPLY / P1)], cwd=tree, check=True)
    series = series_of([_mark_init_mail(tmp_path), APPLY / P2])
    applied = apply_series(series, str(tree), settings)
    assert _summary(applied) == [
        (ApplyMethod.FUZZY, True, "applied with fuzz 1 by fuzzy apply"),
        (ApplyMethod.GIT_AM, True, "applied with fuzz 2 by git am -3"),
    ]
    assert git_calls == ["init", "add", "commit", "am"]
    image = applied.images[1].image("mm/widget.c")
    assert image is not None and image.post is not None
    assert "void widget_flush(struct widget *w)" in image.post and "{ /* init */" in image.post
    assert_hunks_match_images(applied.images[1])


def test_git_tree_commits_a_fuzzy_result_only_when_git_runs_next(
    tmp_path: Path, settings: Settings, git_calls: list[str]
) -> None:
    # The base never held P1's pre-image blob: P1 goes to fuzzy apply; P2 applies
    # with git am on top of it, so the fuzzy result was committed first.
    tree = plain_tree(tmp_path)
    needs_fuzz(tree)
    run_git(tree, "init", "-q", "-b", "master")
    run_git(tree, "add", "-A")
    run_git(tree, "commit", "-q", "-m", "base")
    applied = apply_series(series_of([APPLY / P1, APPLY / P2, APPLY / P1]), str(tree), settings)
    assert _summary(applied) == [
        (ApplyMethod.FUZZY, True, "applied with fuzz 1 by fuzzy apply"),
        (ApplyMethod.GIT_AM, True, "applied cleanly by git am -3"),
        (ApplyMethod.NOT_APPLIED, False, "mm/widget.c skipped: looks already applied"),
    ]
    per_patch = git_calls[git_calls.index("checkout") + 1 :]
    assert per_patch == ["am", "am", "add", "commit", "am", "am", "am"]
    widget = applied.images[1].image("mm/widget.c")
    assert widget is not None and widget.post is not None
    assert "/* gone */" in widget.post and "void widget_flush(struct widget *w)" in widget.post


def test_a_bare_diff_file_is_not_offered_to_git_am(
    tmp_path: Path, settings: Settings, git_calls: list[str]
) -> None:
    # A file holding only a diff (no mbox line, no headers) fails git am's format
    # detection whatever the tree: git apply is tried first, with the same result.
    tree = plain_tree(tmp_path)
    run_git(tree, "init", "-q", "-b", "master")
    run_git(tree, "add", "-A")
    run_git(tree, "commit", "-q", "-m", "base")
    text = (APPLY / P1).read_text()
    bare = tmp_path / "widget.diff"
    bare.write_text(text[text.index("diff --git") : text.index("-- \n")])
    from bot import assemble, ingest

    messages = ingest.load([str(bare)], settings)
    assert messages[0].raw.startswith(b"diff --git")
    series, _, _ = assemble.select(assemble.assemble(messages, settings))
    applied = apply_series(series, str(tree), settings)
    assert _summary(applied) == [(ApplyMethod.GIT_APPLY, True, "applied cleanly by git apply")]
    assert "am" not in git_calls
    assert_hunks_match_images(applied.images[0])


# --------------------------------------------------------------------------- helpers


def test_head_read_from_the_repository_matches_rev_parse(tmp_path: Path) -> None:
    repo = plain_tree(tmp_path)
    run_git(repo, "init", "-q", "-b", "master")
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", "base")
    assert scratch_mod.head_commit(repo) == run_git(repo, "rev-parse", "HEAD").strip()
    run_git(repo, "commit", "-q", "--allow-empty", "-m", "two")
    assert scratch_mod.head_commit(repo) == run_git(repo, "rev-parse", "HEAD").strip()
    # A detached HEAD names the commit itself.
    run_git(repo, "checkout", "-q", "--detach", "HEAD~1")
    assert scratch_mod.head_commit(repo) == run_git(repo, "rev-parse", "HEAD").strip()
    # A packed branch has no loose ref file: git is asked.
    run_git(repo, "checkout", "-q", "master")
    run_git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "master").exists()
    assert scratch_mod.head_commit(repo) == run_git(repo, "rev-parse", "HEAD").strip()


def test_loose_blobs_written_in_python_are_read_by_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    run_git(tmp_path, "init", "-q", str(repo))
    data = [b"", b"int x;\n", bytes(range(256)) * 40]
    for blob in data:
        scratch_mod._write_blob(repo / ".git", blob)
    for blob in data:
        oid = scratch_mod._blob_id(blob)
        assert run_git(repo, "cat-file", "-t", oid).strip() == "blob"
        shown = subprocess.run(
            ["git", "cat-file", "blob", oid], cwd=repo, capture_output=True, check=True
        )
        assert shown.stdout == blob
    subprocess.run(["git", "fsck", "--strict"], cwd=repo, capture_output=True, check=True)


def test_contains_agrees_with_a_scan_of_every_position() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        lines = [rng.choice("abc") for _ in range(rng.randrange(0, 12))]
        block = [rng.choice("abc") for _ in range(rng.randrange(1, 4))]
        scan = any(lines[i : i + len(block)] == block for i in range(len(lines)))
        assert strategies_mod._contains(lines, block) == scan


def test_locate_hunks_on_random_inputs_matches_an_exhaustive_reference() -> None:
    # Placement rules checked against a brute-force search (every start, GNU order).
    rng = random.Random(11)
    for _ in range(1500):
        lines = [rng.choice("abcd") for _ in range(rng.randrange(0, 16))]
        start = rng.randrange(0, max(len(lines), 1))
        old = lines[start : start + rng.randrange(1, 6)] or ["a"]
        if rng.random() < 0.5 and old:
            old[rng.randrange(len(old))] = rng.choice("abcde")
        hunk = _one_hunk(old, rng.randrange(len(old) + 1), start + rng.randrange(-2, 3))
        got = locate_hunks(lines, (hunk,), forward_only=False)
        assert got == _reference_locate(lines, hunk), (lines, old)


def _one_hunk(old: list[str], changed: int, stated: int) -> Hunk:
    """A hunk over `old` replacing line `changed` (context around it; none when
    `changed` is past the end)."""
    lines: list[HunkLine] = []
    for i, text in enumerate(old):
        if i == changed:
            lines.append(HunkLine(LineKind.REMOVED, text, None, None))
            lines.append(HunkLine(LineKind.ADDED, text + "!", None, None))
        else:
            lines.append(HunkLine(LineKind.CONTEXT, text, None, None))
    source = max(stated, 0) + 1
    return Hunk(source, len(old), source, len(old), "", tuple(lines))


def _reference_locate(lines: Sequence[str], hunk: Hunk) -> list[Placement]:
    """locate_hunks for one hunk by trying every start position in GNU order."""
    old = _old(hunk)
    stated = max(hunk.source_start - 1, 0)
    prefix, suffix = _context_run(hunk, False), _context_run(hunk, True)
    n = len(lines)
    for fuzz in range(min(MAX_FUZZ, max(prefix, suffix)) + 1):
        context = max(prefix, suffix)
        pfuzz, sfuzz = fuzz + prefix - context, fuzz + suffix - context
        ptrim, strim = max(pfuzz, 0), max(sfuzz, 0)
        pattern = old[ptrim : len(old) - strim]
        if not pattern:
            continue
        if pfuzz < 0 and stated <= 0:
            starts = [0] if sfuzz >= 0 or len(old) == n else []
        elif sfuzz < 0:
            starts = [n - len(old) + strim]
        else:
            low, high = -ptrim, n - len(old) + strim
            starts = sorted(range(low, high + 1), key=lambda s: (abs(s - stated), s < stated))
        for s in starts:
            pos = s + ptrim
            fits = s >= 0 and pos >= 0 and pos + len(pattern) <= n
            if fits and list(lines[pos : pos + len(pattern)]) == pattern:
                return [Placement(0, True, s, s - stated, fuzz, ptrim, strim)]
    return [Placement(0, False, reason=f"context not found within fuzz {MAX_FUZZ}")]


# --------------------------------------------------------------------------- made up front


def _scenario(name: str, tmp_path: Path, corpus_dir: Path) -> tuple[Path, list[Path]]:
    """A tree and mails for one of the lazy-repository scenarios above."""
    if name == "seed":
        return corpus_dir / "kernel" / "v3.15.5", [corpus_dir / "seed" / n for n in SEED]
    tree = plain_tree(tmp_path)
    if name == "three-way":
        subprocess.run(["git", "apply", str(APPLY / P1)], cwd=tree, check=True)
        return tree, [_mark_init_mail(tmp_path), APPLY / P2]
    needs_fuzz(tree)
    if name == "fuzzy-then-git":
        return tree, [APPLY / P1, APPLY / P2, APPLY / P1]
    return tree, [APPLY / P1, _mark_init_mail(tmp_path)]


@pytest.mark.parametrize("name", ["seed", "fully-fuzzy", "fuzzy-then-git", "three-way"])
def test_results_equal_a_repository_made_up_front(
    name: str,
    tmp_path: Path,
    settings: Settings,
    git_calls: list[str],
    request: pytest.FixtureRequest,
) -> None:
    corpus_dir: Path = request.getfixturevalue("corpus") if name == "seed" else tmp_path
    tree, mails = _scenario(name, tmp_path, corpus_dir)
    lazy = apply_series(series_of(mails), str(tree), settings)
    lazy_calls = list(git_calls)
    # No room for uncommitted versions: the repository is made right after the
    # copies and every fuzzy result is committed at once, as before lazy git.
    git_calls.clear()
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(scratch_mod, "UNSAVED_LIMIT", -1)
        eager = apply_series(series_of(mails), str(tree), settings)
    assert git_calls[:3] == ["init", "add", "commit"]
    assert len(git_calls) > len(lazy_calls)
    assert eager == lazy
    assert list((tmp_path / "scratch").iterdir()) == []

"""apply_series on real scratch repositories: git trees, plain trees, fallbacks,
special files, hostile input, and the user's tree left exactly as it was."""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from bot.apply import apply_series
from bot.config import Settings, load_settings
from bot.errors import InputError, UnsafePatchError
from bot.model import ApplyMethod, LineKind, Patch, PatchImages, PatchSlot, RawMessage, Series

APPLY = Path(__file__).resolve().parent / "fixtures" / "apply"
P1 = "0001-mm-widget-return-early-from-widget_put-on-NULL.patch"
P2 = "0002-mm-widget-add-widget_flush.patch"
P3 = "0003-mm-widget-rename-config-add-stats-drop-legacy-entry-.patch"
P4 = "0004-mm-widget-add-a-binary-table-and-declare-widget_rese.patch"


# --------------------------------------------------------------------------- helpers


def patch_from_mail(
    raw: bytes, number: int, total: int, source: str, base: str | None = None
) -> Patch:
    """A Patch as the assemble stage would make it, from one mail."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    body = str(part.get_content()).replace("\r\n", "\n")
    at = min(i for i in (body.find("\ndiff --git "), body.find("\ndiff -puN ")) if i >= 0)
    message = RawMessage(
        source=source,
        raw=raw,
        message_id=f"{source}@test",
        subject=str(msg["Subject"]),
        from_name="Test Author",
        from_addr="test@example.org",
        date=None,
        in_reply_to=None,
        references=(),
        body=body,
    )
    return Patch(
        message=message,
        number=number,
        total=total,
        title=str(msg["Subject"]),
        commit_message=body[:at],
        diff=body[at + 1 :],
        base_commit=base,
    )


def series_of(paths: Sequence[Path], base: str | None = None) -> Series:
    """A complete series of the given mail files, in order."""
    total = len(paths)
    patches = [
        patch_from_mail(p.read_bytes(), n, total, p.name, base) for n, p in enumerate(paths, 1)
    ]
    return Series(
        key="test-series",
        version=1,
        revision="1",
        total=total,
        name="widget series",
        author_name="Test Author",
        author_addr="test@example.org",
        cover=None,
        slots=tuple(PatchSlot(p.number, p) for p in patches),
    )


def diff_series(diff: str) -> Series:
    """A one-patch series carrying only `diff` (no mail git am could use)."""
    raw = b""
    message = RawMessage("inline", raw, "inline@test", "[PATCH] t", "", "", None, None, (), diff)
    patch = Patch(message, 1, 1, "t", "", diff)
    return Series("k", 1, "1", 1, "t", "", "", None, (PatchSlot(1, patch),))


def assert_hunks_match_images(images: PatchImages) -> None:
    """Every removed line of images.files sits at its source_line in the pre-image,
    every added line at its target_line in the post-image."""
    checked = 0
    for diff in images.files:
        image = images.image(diff.path)
        assert image is not None, diff.path
        pre = (image.pre or "").split("\n")
        post = (image.post or "").split("\n")
        for hunk in diff.hunks:
            for ln in hunk.lines:
                if ln.kind is LineKind.REMOVED and ln.source_line is not None:
                    assert pre[ln.source_line - 1] == ln.text, (diff.path, ln)
                    checked += 1
                if ln.kind is LineKind.ADDED and ln.target_line is not None:
                    assert post[ln.target_line - 1] == ln.text, (diff.path, ln)
                    checked += 1
    assert checked


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root (the .git directory included) with its content hash."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(root))] = "link:" + os.readlink(path)
        elif path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="T",
        GIT_AUTHOR_EMAIL="t@example.org",
        GIT_COMMITTER_NAME="T",
        GIT_COMMITTER_EMAIL="t@example.org",
    )
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    ).stdout


def needs_fuzz(tree: Path) -> None:
    """Edit the first and last context line of P1's hunk in `tree`."""
    widget = tree / "mm" / "widget.c"
    text = widget.read_text()
    text = text.replace(
        "\tkmem_cache_free(widget_cache, w);\n}\n",
        "\tkmem_cache_free(widget_cache, w); /* gone */\n}\n",
    )
    text = text.replace(
        "struct widget *widget_get(struct widget *w)\n",
        "struct widget *widget_get(struct widget *w) /* +1 */\n",
    )
    widget.write_text(text)


def plain_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "linux"
    shutil.copytree(APPLY / "tree", tree)
    return tree


def git_tree(tmp_path: Path) -> Path:
    tree = plain_tree(tmp_path)
    run_git(tree, "init", "-q", "-b", "master")
    run_git(tree, "add", "-A")
    run_git(tree, "commit", "-q", "-m", "base")
    return tree


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings().with_(scratch_dir=tmp_path / "scratch")


# --------------------------------------------------------------------------- trees


def test_git_tree_series_applies_with_git_am(tmp_path: Path, settings: Settings) -> None:
    tree = git_tree(tmp_path)
    series = series_of([APPLY / P1, APPLY / P2])
    applied = apply_series(series, str(tree), settings)
    assert [(a.method, a.ok) for a in applied.applications] == [(ApplyMethod.GIT_AM, True)] * 2
    assert applied.applications[0].message == "applied cleanly by git am -3"
    assert applied.base_commit == run_git(tree, "rev-parse", "HEAD").strip()
    assert any("no base-commit given; applied on HEAD" in n for n in applied.notes)
    second = applied.images[1].image("mm/widget.c")
    assert second is not None and second.pre is not None and second.post is not None
    assert not second.partial
    # The pre-image of patch 2 is the post-image of patch 1.
    assert "if (!w)\n\t\treturn;" in second.pre and "widget_flush" not in second.pre
    assert "void widget_flush(struct widget *w)" in second.post


def test_plain_directory_applies_in_scratch_and_is_left_untouched(
    tmp_path: Path, settings: Settings
) -> None:
    tree = plain_tree(tmp_path)
    before = tree_digest(tree)
    applied = apply_series(series_of([APPLY / P1, APPLY / P2]), str(tree), settings)
    assert all(a.ok for a in applied.applications)
    assert applied.base_commit is None
    assert any("plain directory" in n for n in applied.notes)
    assert tree_digest(tree) == before
    assert not (tree / ".git").exists()
    # The scratch area is gone afterwards.
    assert list((tmp_path / "scratch").iterdir()) == []


def test_user_git_repo_is_byte_identical_and_hooks_never_run(
    tmp_path: Path, settings: Settings
) -> None:
    tree = git_tree(tmp_path)
    marker = tmp_path / "hook-ran"
    hook = f'#!/bin/sh\necho "$0" >> {marker}\n'
    hooks = tree / ".git" / "hooks"
    for name in (
        "applypatch-msg",
        "pre-applypatch",
        "post-applypatch",
        "pre-commit",
        "commit-msg",
        "post-commit",
        "post-checkout",
        "post-merge",
        "reference-transaction",
    ):
        (hooks / name).write_text(hook)
        (hooks / name).chmod(0o755)
    outside = tmp_path / "planted.txt"
    outside.write_text("planted\n")
    # An uncommitted edit is not part of the base; noticing it must not write the index.
    widget_h = tree / "mm" / "widget.h"
    widget_h.write_text(widget_h.read_text() + "/* local */\n")
    status = run_git(tree, "status", "--porcelain", "--ignored")
    before = tree_digest(tree)
    series = series_of([APPLY / P1, APPLY / P2, APPLY / P3, APPLY / P4])
    applied = apply_series(series, str(tree), settings)
    assert all(a.ok for a in applied.applications)
    assert "uncommitted changes in the tree (mm/widget.h) are not part of the base" in applied.notes
    assert not marker.exists()
    assert outside.read_text() == "planted\n"
    assert tree_digest(tree) == before
    assert run_git(tree, "status", "--porcelain", "--ignored") == status
    assert run_git(tree, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_base_commit_is_honoured_when_in_the_repo(tmp_path: Path, settings: Settings) -> None:
    tree = git_tree(tmp_path)
    base = run_git(tree, "rev-parse", "HEAD").strip()
    widget = tree / "mm" / "widget.c"
    # A later commit rewrites the lines patch 1 changes: on HEAD it cannot apply.
    widget.write_text(widget.read_text().replace("\tif (w)\n", "\tif (w != NULL)\n"))
    run_git(tree, "commit", "-qam", "later")
    applied = apply_series(series_of([APPLY / P1], base=base), str(tree), settings)
    assert applied.base_commit == base
    assert applied.applications[0].ok
    assert any(f"applied on base-commit {base[:12]}" in n for n in applied.notes)


def test_unknown_base_commit_falls_back_to_head_and_says_so(
    tmp_path: Path, settings: Settings
) -> None:
    tree = git_tree(tmp_path)
    head = run_git(tree, "rev-parse", "HEAD").strip()
    missing = "0123456789abcdef0123456789abcdef01234567"
    applied = apply_series(series_of([APPLY / P1], base=missing), str(tree), settings)
    assert applied.base_commit == head
    assert any(f"base-commit {missing[:12]} is not in the tree" in n for n in applied.notes)


def test_missing_tree_is_a_one_line_input_error(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(InputError, match="tree not found"):
        apply_series(series_of([APPLY / P1]), str(tmp_path / "nope"), settings)


# --------------------------------------------------------------------------- fallbacks


def test_offsets_only_use_git_and_report_gnu_style_offsets(
    tmp_path: Path, settings: Settings
) -> None:
    tree = plain_tree(tmp_path)
    widget = tree / "mm" / "widget.c"
    widget.write_text(
        widget.read_text().replace(
            "#include <linux/slab.h>\n",
            "#include <linux/slab.h>\n#include <linux/err.h>\n#include <linux/bug.h>\n",
        )
    )
    applied = apply_series(series_of([APPLY / P1]), str(tree), settings)
    (app,) = applied.applications
    assert app.ok and app.method in (ApplyMethod.GIT_AM, ApplyMethod.GIT_APPLY)
    assert [h.offset for h in app.hunks] == [2]
    assert app.message.startswith("applied with offsets (+2) by git")
    image = applied.images[0].image("mm/widget.c")
    assert image is not None and not image.partial
    # The patch's own hunk, renumbered to where it landed.
    (hunk,) = applied.images[0].files[0].hunks
    assert hunk.header == "@@ -21,8 +21,9 @@ static void widget_release(struct kref *kref)"
    assert_hunks_match_images(applied.images[0])


def test_fuzz_needed_falls_back_to_fuzzy_apply(tmp_path: Path, settings: Settings) -> None:
    tree = plain_tree(tmp_path)
    widget = tree / "mm" / "widget.c"
    # The hunk's first context line (`{` after widget_release's head is line 19)
    # and last one differ in the tree: git refuses, fuzz 1 applies.
    text = widget.read_text()
    text = text.replace(
        "\tkmem_cache_free(widget_cache, w);\n}\n",
        "\tkmem_cache_free(widget_cache, w); /* gone */\n}\n",
    )
    text = text.replace(
        "struct widget *widget_get(struct widget *w)\n",
        "struct widget *widget_get(struct widget *w) /* +1 */\n",
    )
    widget.write_text(text)
    applied = apply_series(series_of([APPLY / P1]), str(tree), settings)
    (app,) = applied.applications
    assert (app.method, app.ok) == (ApplyMethod.FUZZY, True)
    assert [(h.offset, h.fuzz) for h in app.hunks] == [(0, 1)]
    assert app.message == "applied with fuzz 1 by fuzzy apply"
    image = applied.images[0].image("mm/widget.c")
    assert image is not None and image.post is not None and not image.partial
    assert "\tif (!w)\n\t\treturn;\n\tkref_put(&w->ref, widget_release);" in image.post
    assert "/* gone */" in image.post


def test_patch_that_does_not_apply_is_a_result_and_later_patches_still_apply(
    tmp_path: Path, settings: Settings
) -> None:
    tree = git_tree(tmp_path)
    series = series_of([APPLY / "conflict.patch", APPLY / P1])
    applied = apply_series(series, str(tree), settings)
    failed, ok = applied.applications
    assert (failed.method, failed.ok) == (ApplyMethod.NOT_APPLIED, False)
    assert failed.message == "hunk 1 of mm/widget.c (@@ -41,6 +41,6 @@) does not apply"
    assert failed.failed_hunks[0].hunk.startswith("@@ -41,6 +41,6 @@ struct widget *widget_create")
    assert ok.ok
    # The failed patch is analysed on its own diff context.
    image = applied.images[0].image("mm/widget.c")
    assert image is not None and image.partial
    assert image.pre is not None and image.pre.splitlines()[43] == "\trefcount_set(&w->ref, 1);"
    assert any("patch 1 did not apply fully" in n for n in applied.notes)


def test_quilt_patch_applies_with_an_offset(tmp_path: Path, settings: Settings) -> None:
    tree = plain_tree(tmp_path)
    applied = apply_series(series_of([APPLY / "quilt-widget-get.patch"]), str(tree), settings)
    (app,) = applied.applications
    assert app.ok and [h.offset for h in app.hunks] == [-1]
    image = applied.images[0].image("mm/widget.c")
    assert image is not None and image.post is not None
    assert "\tWARN_ON_ONCE(!kref_read(&w->ref));\n\tkref_get(&w->ref);" in image.post


# --------------------------------------------------------------------------- special files


def test_rename_new_delete_and_no_newline_through_git(tmp_path: Path, settings: Settings) -> None:
    tree = git_tree(tmp_path)
    applied = apply_series(series_of([APPLY / P3]), str(tree), settings)
    (app,) = applied.applications
    assert app.ok and app.method is ApplyMethod.GIT_AM
    images = applied.images[0]
    cfg = images.image("mm/widget.cfg")
    assert cfg is not None and cfg.pre == "# widget test data\nmode = 2"
    assert cfg.post == "# widget test data\nmode = 3\n"
    legacy = images.image("mm/widget_legacy.c")
    assert legacy is not None and legacy.post is None and legacy.pre is not None
    stats = images.image("mm/widget_stats.c")
    assert stats is not None and stats.pre is None and "atomic_inc" in (stats.post or "")


def test_rename_new_delete_and_no_newline_through_fuzzy_apply(
    tmp_path: Path, settings: Settings
) -> None:
    tree = plain_tree(tmp_path)
    diff = (APPLY / P3).read_text()
    diff = diff[diff.index("diff --git") :]
    # Without the index lines' blobs and with a stray byte in the renamed file's
    # first line git cannot apply it; fuzzy apply must still rename it.
    conf = tree / "mm" / "widget.conf"
    conf.write_text("# widget test data!\nmode = 2")
    diff = diff.replace(
        "@@ -1,2 +1,2 @@\n # widget test data\n", "@@ -1,2 +1,2 @@\n # widget test data?\n"
    )
    applied = apply_series(diff_series(diff), str(tree), settings)
    (app,) = applied.applications
    assert app.method is ApplyMethod.FUZZY
    assert app.ok, app.message
    images = applied.images[0]
    cfg = images.image("mm/widget.cfg")
    assert cfg is not None and cfg.post == "# widget test data!\nmode = 3\n"
    assert images.image("mm/widget_legacy.c") is not None
    stats = images.image("mm/widget_stats.c")
    assert stats is not None and stats.pre is None and stats.post is not None
    assert stats.post.endswith("atomic_inc(&widget_count);\n}\n")


def test_binary_file_is_skipped_and_said(tmp_path: Path, settings: Settings) -> None:
    tree = git_tree(tmp_path)
    applied = apply_series(series_of([APPLY / P1, APPLY / P2, APPLY / P4]), str(tree), settings)
    app = applied.applications[2]
    assert app.ok
    assert app.skipped == ("binary patch for mm/widget.bin skipped",)
    images = applied.images[2]
    assert images.image("mm/widget.bin") is None
    header = images.image("mm/widget.h")
    assert header is not None and "void widget_reset(struct widget *w);" in (header.post or "")


def test_diff_only_mode_rebuilds_partial_images(settings: Settings) -> None:
    applied = apply_series(series_of([APPLY / P1, APPLY / P4]), None, settings)
    assert [a.method for a in applied.applications] == [ApplyMethod.NO_TREE] * 2
    assert applied.applications[1].skipped == ("binary patch for mm/widget.bin skipped",)
    image = applied.images[0].image("mm/widget.c")
    assert image is not None and image.partial
    assert image.pre is not None and image.post is not None
    pre, post = image.pre.splitlines(), image.post.splitlines()
    assert pre[21] == "\tif (w)" and post[21] == "\tif (!w)"
    assert pre[0] == "" and len(pre) == 26 and len(post) == 27


def test_malformed_diff_is_a_not_applied_result(tmp_path: Path, settings: Settings) -> None:
    broken = "--- a/mm/widget.c\n+++ b/mm/widget.c\n@@ -1,5 +1,5 @@\n a\n-b\n+c\n@@ -9,2 +9,2 @@\n"
    applied = apply_series(diff_series(broken), str(plain_tree(tmp_path)), settings)
    (app,) = applied.applications
    assert (app.method, app.ok) == (ApplyMethod.NOT_APPLIED, False)
    assert app.message.startswith("not applied: malformed diff")


# --------------------------------------------------------------------------- hostile input


def test_path_through_a_symlink_in_a_plain_tree_is_refused(
    tmp_path: Path, settings: Settings
) -> None:
    tree = plain_tree(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "widget.c").write_text("planted\n")
    shutil.rmtree(tree / "mm")
    (tree / "mm").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePatchError, match="symlink mm"):
        apply_series(series_of([APPLY / P1]), str(tree), settings)
    assert (elsewhere / "widget.c").read_text() == "planted\n"


def test_path_through_a_symlink_committed_in_a_git_tree_is_refused(
    tmp_path: Path, settings: Settings
) -> None:
    tree = git_tree(tmp_path)
    (tree / "mm" / "widget.c").unlink()
    (tree / "mm" / "widget.c").symlink_to("/etc/passwd")
    run_git(tree, "commit", "-qam", "link")
    with pytest.raises(UnsafePatchError, match=r"symlink mm/widget\.c"):
        apply_series(series_of([APPLY / P1]), str(tree), settings)


@pytest.mark.parametrize("name", ["unsafe-dotdot.patch", "unsafe-absolute.patch", "ed-script.diff"])
def test_hostile_diffs_are_refused_before_anything_applies(
    tmp_path: Path, settings: Settings, name: str
) -> None:
    tree = plain_tree(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("planted\n")
    before = tree_digest(tree)
    with pytest.raises(UnsafePatchError):
        apply_series(diff_series((APPLY / name).read_text()), str(tree), settings)
    assert outside.read_text() == "planted\n"
    assert tree_digest(tree) == before


def test_without_a_mail_git_apply_is_the_first_fallback(tmp_path: Path, settings: Settings) -> None:
    text = (APPLY / "quilt-widget-get.patch").read_text()
    seen: list[str] = []
    applied = apply_series(
        diff_series(text[text.index("diff -puN") :]),
        str(plain_tree(tmp_path)),
        settings,
        progress=seen.append,
    )
    (app,) = applied.applications
    assert (app.method, app.ok) == (ApplyMethod.GIT_APPLY, True)
    assert app.message == "applied with offsets (-1) by git apply"
    assert seen == ["patch 1/1: applied with offsets (-1) by git apply"]


def test_file_that_is_a_directory_in_the_tree_is_a_failed_hunk(
    tmp_path: Path, settings: Settings
) -> None:
    tree = git_tree(tmp_path)
    (tree / "mm" / "widget_new.c").mkdir()
    (tree / "mm" / "widget_new.c" / "keep").write_text("x\n")
    run_git(tree, "add", "-A")
    run_git(tree, "commit", "-qm", "a directory where the patch wants a file")
    diff = "--- /dev/null\n+++ b/mm/widget_new.c\n@@ -0,0 +1 @@\n+int widget_new;\n"
    applied = apply_series(diff_series(diff), str(tree), settings)
    (app,) = applied.applications
    assert not app.ok
    assert app.hunks[0].reason == "mm/widget_new.c already exists"
    assert app.message == "hunk 1 of mm/widget_new.c (@@ -0,0 +1,1 @@) does not apply"


def test_deleting_a_file_whose_content_differs_keeps_it_and_says_so(
    tmp_path: Path, settings: Settings
) -> None:
    tree = plain_tree(tmp_path)
    legacy = tree / "mm" / "widget_legacy.c"
    legacy.write_text(legacy.read_text() + "/* local addition */\n")
    text = (APPLY / P3).read_text()
    start = text.index("diff --git a/mm/widget_legacy.c")
    diff = text[start : text.index("diff --git a/mm/widget_stats.c")]
    applied = apply_series(diff_series(diff), str(tree), settings)
    (app,) = applied.applications
    assert app.method is ApplyMethod.FUZZY and app.ok
    assert any("not deleting mm/widget_legacy.c" in n for n in applied.notes)
    image = applied.images[0].image("mm/widget_legacy.c")
    assert image is not None and image.post == "/* local addition */\n"


def test_a_patch_applied_twice_says_already_applied(tmp_path: Path, settings: Settings) -> None:
    tree = plain_tree(tmp_path)
    text = (APPLY / P1).read_text()
    diff = text[text.index("diff --git") :]
    # The same change twice: the second copy finds its change already there.
    once = apply_series(diff_series(diff), str(tree), settings).images[0].image("mm/widget.c")
    assert once is not None and once.post is not None
    (tree / "mm" / "widget.c").write_text(once.post)
    (app,) = apply_series(diff_series(diff), str(tree), settings).applications
    assert (app.ok, app.method) == (False, ApplyMethod.NOT_APPLIED)
    assert app.message == "mm/widget.c skipped: looks already applied"
    assert app.hunks[0].reason.startswith("already applied")


def test_git_am_three_way_merges_when_context_moved_on(tmp_path: Path, settings: Settings) -> None:
    tree = git_tree(tmp_path)
    run_git(tree, "am", "-q", str(APPLY / P1))  # patch 2's base blob is now in the repo
    widget = tree / "mm" / "widget.c"
    # A later commit edits a context line of patch 2's hunk: git apply refuses, but
    # the blob named by the patch's index line is in the repo, so git am -3 merges.
    widget.write_text(
        widget.read_text().replace(
            "static int __init widget_init(void)\n{\n",
            "static int __init widget_init(void)\n{ /* init */\n",
        )
    )
    run_git(tree, "commit", "-qam", "later")
    text = (APPLY / P2).read_text()
    # Without the mail (no git am) only fuzzy apply can do it, with fuzz.
    alone = apply_series(diff_series(text[text.index("diff --git") :]), str(tree), settings)
    assert alone.applications[0].method is ApplyMethod.FUZZY
    applied = apply_series(series_of([APPLY / P2]), str(tree), settings)
    (app,) = applied.applications
    assert (app.method, app.ok) == (ApplyMethod.GIT_AM, True)
    # GNU rules would need fuzz 2 for it (the edited line is second from the end).
    assert [(h.offset, h.fuzz) for h in app.hunks] == [(0, 2), (0, 0)]
    assert app.message == "applied with fuzz 2 by git am -3"
    image = applied.images[0].image("mm/widget.c")
    assert image is not None and image.post is not None
    assert "void widget_flush(struct widget *w)" in image.post and "{ /* init */" in image.post


def test_missing_patches_are_skipped_and_present_ones_apply(
    tmp_path: Path, settings: Settings
) -> None:
    full = series_of([APPLY / P1, APPLY / P2])
    holey = replace(full, slots=(PatchSlot(1, None), full.slots[1]))
    applied = apply_series(holey, str(git_tree(tmp_path)), settings)
    # Patch 2 on a tree without patch 1: its context is there, so it applies.
    assert [a.number for a in applied.applications] == [2]
    assert [i.number for i in applied.images] == [2]
    assert applied.applications[0].ok


def test_patch_without_a_diff_is_a_result_in_both_modes(tmp_path: Path, settings: Settings) -> None:
    empty = diff_series("Just some words about the series.\n")
    for tree in (None, str(plain_tree(tmp_path))):
        (app,) = apply_series(empty, tree, settings).applications
        assert (app.method, app.ok) == (ApplyMethod.NOT_APPLIED, False)
        assert app.message == "not applied: no diff found in the patch"


def test_malformed_diff_in_diff_only_mode_is_a_result(settings: Settings) -> None:
    broken = "--- a/mm/widget.c\n+++ b/mm/widget.c\n@@ -1,5 +1,5 @@\n a\n-b\n+c\n@@ -9,2 +9,2 @@\n"
    applied = apply_series(diff_series(broken), None, settings)
    (app,) = applied.applications
    assert (app.method, app.ok) == (ApplyMethod.NOT_APPLIED, False)
    assert applied.images[0].images == ()


def test_unusable_scratch_dir_is_a_one_line_input_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the scratch directory should go\n")
    settings = load_settings().with_(scratch_dir=blocker / "scratch")
    with pytest.raises(InputError, match="cannot create a scratch directory"):
        apply_series(series_of([APPLY / P1]), str(plain_tree(tmp_path)), settings)


def test_symlink_created_by_an_earlier_patch_is_never_written_through(
    tmp_path: Path, settings: Settings
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.c").write_text("planted\n")
    make_link = (
        "diff --git a/mm/link b/mm/link\n"
        "new file mode 120000\n"
        "index 0000000..1111111\n"
        "--- /dev/null\n"
        "+++ b/mm/link\n"
        "@@ -0,0 +1 @@\n"
        f"+{outside}\n"
        "\\ No newline at end of file\n"
    )
    write_through = (
        "--- a/mm/link/victim.c\n+++ b/mm/link/victim.c\n@@ -1 +1 @@\n-planted\n+overwritten\n"
    )
    one, two = (diff_series(d).slots[0].patch for d in (make_link, write_through))
    assert one is not None and two is not None
    series = replace(
        diff_series(make_link),
        total=2,
        slots=(PatchSlot(1, one), PatchSlot(2, replace(two, number=2, total=2))),
    )
    applied = apply_series(series, str(plain_tree(tmp_path)), settings)
    first, second = applied.applications
    assert first.ok
    assert not second.ok
    assert (
        second.hunks[0].reason
        == "mm/link/victim.c passes through a symlink an earlier patch created"
    )
    assert (outside / "victim.c").read_text() == "planted\n"


def test_paths_inside_dot_git_are_refused(tmp_path: Path, settings: Settings) -> None:
    evil = (
        "--- a/.git/config\n+++ b/.git/config\n"
        "@@ -1 +1,2 @@\n [core]\n+\tfsmonitor = touch /tmp/pwned\n"
    )
    with pytest.raises(UnsafePatchError, match=r"inside \.git"):
        apply_series(diff_series(evil), str(plain_tree(tmp_path)), settings)

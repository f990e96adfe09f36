"""parse_diff: git and quilt diffs, special files, and refusal of hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.analyze.diff import parse_diff, parse_diff_detail
from bot.errors import InputError, UnsafePatchError
from bot.model import LineKind

APPLY = Path(__file__).resolve().parent / "fixtures" / "apply"


def _diff_part(text: str) -> str:
    """The diff of a mail: from the first `diff ` line on."""
    for marker in ("\ndiff --git ", "\ndiff -puN ", "\n--- "):
        at = text.find(marker)
        if at >= 0:
            return text[at + 1 :]
    raise AssertionError("no diff in fixture")


def _fixture(name: str) -> str:
    return _diff_part((APPLY / name).read_text(encoding="utf-8"))


def test_git_diff_gives_paths_hunks_and_line_numbers() -> None:
    (fd,) = parse_diff(_fixture("0001-mm-widget-return-early-from-widget_put-on-NULL.patch"), "t")
    assert fd.old_path == fd.new_path == "mm/widget.c"
    (hunk,) = fd.hunks
    assert (hunk.source_start, hunk.source_length, hunk.target_start, hunk.target_length) == (
        19,
        8,
        19,
        9,
    )
    assert hunk.section == "static void widget_release(struct kref *kref)"
    removed = [ln for ln in hunk.lines if ln.kind is LineKind.REMOVED]
    added = [ln for ln in hunk.lines if ln.kind is LineKind.ADDED]
    assert [(ln.text, ln.source_line, ln.target_line) for ln in removed] == [
        ("\tif (w)", 22, None),
        ("\t\tkref_put(&w->ref, widget_release);", 23, None),
    ]
    assert [ln.target_line for ln in added] == [22, 23, 24]
    assert hunk.header.startswith("@@ -19,8 +19,9 @@ static void widget_release")


def test_rename_delete_and_new_file_with_no_newline_marker() -> None:
    files, no_nl = parse_diff_detail(
        _fixture("0003-mm-widget-rename-config-add-stats-drop-legacy-entry-.patch"), "t"
    )
    rename, deleted, new = files
    assert rename.is_rename and (rename.old_path, rename.new_path) == (
        "mm/widget.conf",
        "mm/widget.cfg",
    )
    assert deleted.is_deleted and deleted.old_path == "mm/widget_legacy.c"
    assert deleted.path == "mm/widget_legacy.c"
    assert new.is_new and new.new_path == "mm/widget_stats.c" and not new.is_rename
    # `\ No newline at end of file` follows the removed line: the old file lacked it.
    assert [(n.file_index, n.hunk_index, n.source, n.target) for n in no_nl] == [
        (0, 0, True, False)
    ]
    assert all("No newline" not in ln.text for h in rename.hunks for ln in h.lines)


def test_binary_patch_has_no_hunks() -> None:
    binary, text = parse_diff(
        _fixture("0004-mm-widget-add-a-binary-table-and-declare-widget_rese.patch"), "t"
    )
    assert binary.is_binary and binary.path == "mm/widget.bin" and not binary.hunks
    assert not text.is_binary and len(text.hunks) == 1


def test_quilt_diff_strips_backup_suffix_and_trailing_underscore() -> None:
    (fd,) = parse_diff(_fixture("quilt-widget-get.patch"), "t")
    assert fd.old_path == fd.new_path == "mm/widget.c"
    assert not fd.is_rename
    assert [ln.text for ln in fd.hunks[0].lines if ln.kind is LineKind.ADDED] == [
        "\tWARN_ON_ONCE(!kref_read(&w->ref));"
    ]


def test_index_line_and_any_prefix_names_are_accepted() -> None:
    text = (
        "Index: linux-2.6/mm/widget.c\n"
        "===================================================================\n"
        "--- linux-2.6.orig/mm/widget.c\t2014-04-01 10:00:00.000000000 +0200\n"
        "+++ linux-2.6/mm/widget.c\t2014-04-01 10:05:00.000000000 +0200\n"
        "@@ -1,2 +1,2 @@\n"
        " a\n"
        "-b\n"
        "+c\n"
    )
    (fd,) = parse_diff(text, "t")
    assert (fd.old_path, fd.new_path) == ("mm/widget.c", "mm/widget.c")


def test_no_prefix_git_diff_keeps_the_whole_path() -> None:
    text = (
        "diff --git mm/widget.c mm/widget.c\n--- mm/widget.c\n+++ mm/widget.c\n"
        "@@ -1 +1 @@\n-a\n+b\n"
    )
    (fd,) = parse_diff(text, "t")
    assert fd.path == "mm/widget.c"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("unsafe-dotdot.patch", "'..'"), ("unsafe-absolute.patch", "absolute path")],
)
def test_hostile_paths_are_refused_with_one_line(name: str, fragment: str) -> None:
    with pytest.raises(UnsafePatchError) as info:
        parse_diff((APPLY / name).read_text(encoding="utf-8"), name)
    line = info.value.one_line()
    assert fragment in line and "\n" not in line and line.startswith(name)


def test_nul_in_path_is_refused() -> None:
    text = "--- a/mm/wid\x00get.c\n+++ b/mm/wid\x00get.c\n@@ -1 +1 @@\n-a\n+b\n"
    with pytest.raises(UnsafePatchError, match="NUL"):
        parse_diff(text, "t")


def test_ed_script_is_refused() -> None:
    with pytest.raises(UnsafePatchError, match="ed script"):
        parse_diff((APPLY / "ed-script.diff").read_text(encoding="utf-8"), "t")


def test_text_without_a_diff_gives_no_files() -> None:
    assert parse_diff("Just a reply.\n\nThanks,\nA reviewer\n", "t") == ()


def test_truncated_hunk_is_a_clear_input_error() -> None:
    text = "--- a/mm/widget.c\n+++ b/mm/widget.c\n@@ -1,5 +1,5 @@\n a\n-b\n+c\n@@ -9,2 +9,2 @@\n"
    with pytest.raises(InputError) as info:
        parse_diff(text, "patch 1/1")
    assert not isinstance(info.value, UnsafePatchError)
    assert info.value.one_line().startswith("patch 1/1: malformed diff")


# --------------------------------------------------------------------------- corpus


def _mail_diff(corpus: Path, name: str) -> str:
    raw = (corpus / "mbox" / "patchwork" / "mail" / name).read_bytes()
    return _diff_part(raw.decode("utf-8", "replace"))


def test_patchwork_rename_mail(corpus: Path) -> None:
    files = parse_diff(_mail_diff(corpus, "0008-git-rename.mbox"), "0008")
    assert len(files) == 2
    assert all(f.is_rename and not f.hunks for f in files)
    assert files[0].old_path == "package/rpi-userland/rpi-userland-add-pkgconfig-files.patch"
    assert files[0].new_path == "package/rpi-userland/rpi-userland-000-add-pkgconfig-files.patch"


def test_patchwork_no_newline_mail(corpus: Path) -> None:
    files, no_nl = parse_diff_detail(
        _mail_diff(corpus, "0011-no-newline-at-end-of-file.mbox"), "0011"
    )
    assert [f.path for f in files] == [
        "tools/testing/selftests/powerpc/Makefile",
        "tools/testing/selftests/powerpc/vphn/vphn.c",
        "tools/testing/selftests/powerpc/vphn/vphn.h",
    ]
    assert files[1].is_new and files[2].is_new
    # Both new files end without a newline; the marker never becomes a line.
    assert {(n.file_index, n.target) for n in no_nl} == {(1, True), (2, True)}
    assert all(ln.text != " No newline at end of file" for h in files[1].hunks for ln in h.lines)


def test_patchwork_empty_new_file_mail(corpus: Path) -> None:
    (fd,) = parse_diff(_mail_diff(corpus, "0021-git-empty-new-file.mbox"), "0021")
    assert fd.is_new and fd.new_path == "banana" and fd.hunks == ()


def test_patchwork_mode_change_mail(corpus: Path) -> None:
    (fd,) = parse_diff(_mail_diff(corpus, "0022-git-mode-change.mbox"), "0022")
    assert fd.mode_only and fd.path == "scripts/kconfig/nconf-cfg.sh" and fd.hunks == ()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("0025-git-add-binary-file.mbox", [("pixel.bmp", True)]),
        ("0026-git-add-mixed-binary-text-files.mbox", [("pixel.bmp", True), ("quit.sh", False)]),
        ("0027-git-modify-binary-file.mbox", [("pixel.bmp", True)]),
    ],
)
def test_patchwork_binary_mails(corpus: Path, name: str, expected: list[tuple[str, bool]]) -> None:
    files = parse_diff(_mail_diff(corpus, name), name)
    assert [(f.path, f.is_binary) for f in files] == expected
    assert all(not f.hunks for f in files if f.is_binary)


def test_quilt_mmotm_patch_parses(corpus: Path) -> None:
    path = corpus / "patches" / "sjp38-mmotm" / "broken-out" / "memcg-refactor-mem_cgroup_oom.patch"
    (fd,) = parse_diff(_diff_part(path.read_text(encoding="utf-8")), path.name)
    assert fd.old_path == fd.new_path == "mm/memcontrol.c" and not fd.is_rename
    assert len(fd.hunks) == 5


def test_hunk_far_beyond_any_real_file_is_refused() -> None:
    text = "--- a/mm/x.c\n+++ b/mm/x.c\n@@ -900000000,1 +900000000,1 @@\n-a\n+b\n"
    with pytest.raises(InputError, match="beyond 2000000 lines"):
        parse_diff(text, "t")


def test_control_character_in_path_is_refused() -> None:
    text = "--- a/mm/x\x1b[2J.c\n+++ b/mm/x\x1b[2J.c\n@@ -1 +1 @@\n-a\n+b\n"
    with pytest.raises(UnsafePatchError, match="control character"):
        parse_diff(text, "t")


def test_context_lines_whose_leading_space_a_mailer_ate_are_repaired() -> None:
    text = (
        "--- a/mm/widget.c\n+++ b/mm/widget.c\n"
        "@@ -1,4 +1,4 @@\n"
        "\tkref_get(&w->ref);\n"  # tab-indented context line lost its space
        "\n"  # blank context line lost its space
        "-\twidget_put(w);\n"
        "+\twidget_flush(w);\n"
        " }\n"
    )
    (fd,) = parse_diff(text, "t")
    kinds = [(ln.kind, ln.text) for ln in fd.hunks[0].lines]
    assert kinds == [
        (LineKind.CONTEXT, "\tkref_get(&w->ref);"),
        (LineKind.CONTEXT, ""),
        (LineKind.REMOVED, "\twidget_put(w);"),
        (LineKind.ADDED, "\twidget_flush(w);"),
        (LineKind.CONTEXT, "}"),
    ]


@pytest.mark.parametrize("path", [".git/config", "mm/.git/hooks/post-commit", ".GIT/config"])
def test_paths_inside_a_git_directory_are_refused(path: str) -> None:
    text = f"--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-a\n+b\n"
    with pytest.raises(UnsafePatchError, match=r"inside \.git"):
        parse_diff(text, "t")

"""parse_subject and split_patch_body on the subject and body shapes kernel mail uses."""

from __future__ import annotations

import pytest

from bot.assemble import parse_subject, split_patch_body


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("[PATCH v3 -mm 2/5] mm: fix foo", ("mm: fix foo", 3, "3", 2, 5)),
        (
            "[PATCH -mm v3 0/3] kmemcg: simplify work-flow",
            ("kmemcg: simplify work-flow", 3, "3", 0, 3),
        ),
        ("[RFC PATCH] mm: idea", ("mm: idea", 1, "1", None, None)),
        ("[PATCH RESEND] mm: again", ("mm: again", 1, "1", None, None)),
        ("[PATCH v5.1 3/7] mm: partial", ("mm: partial", 5, "5.1", 3, 7)),
        ("[PATCH 1 of 2] hg style", ("hg style", 1, "1", 1, 2)),
        (
            "[PATCH 0/4] net: dsa: Multi-CPU ground work (v3)",
            ("net: dsa: Multi-CPU ground work (v3)", 3, "3", 0, 4),
        ),
        ("[Qemu-devel] [PATCH V2 3/4] two groups", ("two groups", 2, "2", 3, 4)),
        ("[net,v2,1/2] comma separated", ("comma separated", 2, "2", 1, 2)),
        ("[PATCHv4 07/12] glued version", ("glued version", 4, "4", 7, 12)),
        ("[Patch 2/2]: colon after the group", ("colon after the group", 1, "1", 2, 2)),
        (
            "sl[au]b: brackets inside the title",
            ("sl[au]b: brackets inside the title", 1, "1", None, None),
        ),
        ("", ("", 1, "1", None, None)),
    ],
)
def test_parse_subject_reads_prefixes(
    subject: str, expected: tuple[str, int, str, int | None, int | None]
) -> None:
    info = parse_subject(subject)
    assert (info.title, info.version, info.revision, info.number, info.total) == expected


def test_parse_subject_keeps_every_bracket_token_and_flags() -> None:
    info = parse_subject("[PATCH RFC -mm v2 1/3] memcg, slab: x")
    assert info.prefixes == ("PATCH", "RFC", "-mm", "v2", "1/3")
    assert info.is_patch and info.rfc and not info.resend and not info.is_reply
    assert parse_subject("[PATCH RESEND v2] x").resend


@pytest.mark.parametrize(
    "subject",
    [
        "Re: [PATCH -mm 1/4] memcg, slab: x",
        "RE: Re: [PATCH] x",
        "Aw: [PATCH] x",
        "[Qemu-devel] Re: [PATCH] x",
        "Re[2]: [PATCH] x",
    ],
)
def test_parse_subject_marks_replies(subject: str) -> None:
    info = parse_subject(subject)
    assert info.is_reply
    assert info.title == ("memcg, slab: x" if "memcg" in subject else "x")


def test_forward_is_stripped_but_not_a_reply() -> None:
    info = parse_subject("Fwd: [PATCH 2/3] mm: y")
    assert not info.is_reply
    assert (info.title, info.number, info.total) == ("mm: y", 2, 3)


def test_not_a_patch_when_no_patch_tag() -> None:
    assert not parse_subject("[GIT PULL] mm updates").is_patch
    assert not parse_subject("memcg: question about charging").is_patch


# --------------------------------------------------------------------------- bodies

_GIT_BODY = """From: Real Author <author@example.org>

The destroy work can run after the cache is freed.

Signed-off-by: Real Author <author@example.org>
---
v2: rebased
 mm/slab.c | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/mm/slab.c b/mm/slab.c
index 0123456..89abcde 100644
--- a/mm/slab.c
+++ b/mm/slab.c
@@ -10,3 +10,3 @@ void cache_release(struct kmem_cache *s)
 {
-\tschedule_work(&s->destroy);
+\tcancel_work_sync(&s->destroy);
 }
-\x20
--\x20
2.43.0

base-commit: 1234567890abcdef1234567890abcdef12345678
--
To unsubscribe, send a message with 'unsubscribe linux-mm' in
"""


def test_split_patch_body_cuts_at_separator_and_hunk_counts() -> None:
    message, diff, base = split_patch_body(_GIT_BODY)
    assert message == (
        "The destroy work can run after the cache is freed.\n\n"
        "Signed-off-by: Real Author <author@example.org>"
    )
    assert diff.startswith("diff --git a/mm/slab.c b/mm/slab.c\n")
    assert diff.endswith("+\tcancel_work_sync(&s->destroy);\n }\n")
    assert "2.43.0" not in diff and "unsubscribe" not in diff
    assert base == "1234567890abcdef1234567890abcdef12345678"


def test_split_patch_body_keeps_a_removed_line_that_looks_like_a_signature() -> None:
    body = "msg\n---\n--- a/x.c\n+++ b/x.c\n@@ -1,2 +1,1 @@\n-- \n ctx\n-- \n2.1\n"
    _, diff, _ = split_patch_body(body)
    assert diff == "--- a/x.c\n+++ b/x.c\n@@ -1,2 +1,1 @@\n-- \n ctx\n"


def test_split_patch_body_reads_quilt_and_cvs_styles() -> None:
    quilt = (
        "Changelog.\n\nSigned-off-by: A <a@b>\n---\n\n mm/x.c | 1 +\n\n"
        "diff -puN mm/x.c~name mm/x.c\n--- a/mm/x.c~name\n+++ a/mm/x.c\n"
        "@@ -1 +1,2 @@\n ctx\n+new\n_\n\nPatches currently in -mm which might be from a@b are\n"
    )
    message, diff, _ = split_patch_body(quilt)
    assert message == "Changelog.\n\nSigned-off-by: A <a@b>"
    assert diff.endswith("+new\n") and "Patches currently" not in diff
    cvs = (
        "Fix.\n\nIndex: gcc/x.c\n===================\n"
        "--- gcc/x.c\t(rev 1)\n+++ gcc/x.c\t(copy)\n@@ -1 +1 @@\n-a\n+b\n"
    )
    _, diff, _ = split_patch_body(cvs)
    assert diff.startswith("Index: gcc/x.c\n") and diff.endswith("+b\n")


def test_split_patch_body_ignores_diff_words_in_prose() -> None:
    body = "diff -u output shows the problem.\n\nSigned-off-by: A <a@b>\n"
    message, diff, base = split_patch_body(body)
    assert diff == "" and base is None
    assert message.startswith("diff -u output")


def test_split_patch_body_repairs_context_lines_that_lost_their_space() -> None:
    body = "x\n---\n--- a/f.c\n+++ b/f.c\n@@ -1,3 +1,4 @@\n\tint a;\n+\tint b;\n\n }\n"
    _, diff, _ = split_patch_body(body)
    assert diff.endswith("@@ -1,3 +1,4 @@\n \tint a;\n+\tint b;\n\n }\n")


def test_split_patch_body_keeps_git_binary_and_mode_only_changes() -> None:
    body = (
        "msg\n---\ndiff --git a/s.sh b/s.sh\nold mode 100644\nnew mode 100755\n"
        "diff --git a/p.png b/p.png\nnew file mode 100644\nindex 0000000..1111111\n"
        "GIT binary patch\nliteral 5\nMcmZ?wbhEHb\n\nliteral 0\nHcmV?d00001\n\n-- \n2.1\n"
    )
    _, diff, _ = split_patch_body(body)
    assert "new mode 100755" in diff and "literal 0" in diff and "2.1" not in diff


def test_split_patch_body_keeps_a_diff_with_unreadable_hunks_as_a_diff() -> None:
    body = (
        "msg\n---\ndiff --git a/j.py b/j.py\n--- a/j.py\n+++ b/j.py\n"
        "@@@ -1,1 +1,1 @@@ def junk():\n-junk1\n+junk2\n-- \n2.1\n"
    )
    _, diff, _ = split_patch_body(body)
    assert diff.startswith("diff --git a/j.py b/j.py\n") and diff.endswith("+junk2\n")


@pytest.mark.parametrize(
    "subject",
    [
        "[" + "1" * 20000 + "] digits",
        "[v" + "9" * 20000 + "] version",
        "[1/" + "2" * 20000 + "] total",
        "(v" + "3" * 20000 + ") title",
        "[a]" * 20000 + "groups",
        "Re: " * 20000 + "replies",
    ],
)
def test_hostile_subjects_parse_without_error(subject: str) -> None:
    info = parse_subject(subject)
    assert info.version < 10**6
    assert info.total is None or info.total < 10**6


def test_hunk_header_with_absurd_counts_is_kept_as_a_damaged_diff() -> None:
    body = "x\n---\n--- a/f\n+++ b/f\n@@ -1," + "9" * 5000 + " +1 @@\n-a\n"
    _, diff, _ = split_patch_body(body)
    assert diff.startswith("--- a/f\n+++ b/f\n@@ -1,999") and diff.endswith("-a\n")

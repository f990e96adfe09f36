"""A jump moved up an unwind ladder, through releases it skipped (MMLC002
`release-on-retargeted-exit`), and a reset removed before a retry (MMLC009
`reset-removed-before-retry`): hunk readers, run through the real pipeline on
small kernel-style patches written for these tests."""

from __future__ import annotations

from pathlib import Path

from bot.config import Settings
from bot.model import Status
from bot.pipeline import review_inputs

SETTINGS = Settings(simulate=False)

LADDER = (
    "From: Example Dev <dev@example.org>\n"
    "Subject: [PATCH] mm/gizmo: change an exit\n"
    "\n"
    "---\n"
    "diff --git a/mm/gizmo_map.c b/mm/gizmo_map.c\n"
    "--- a/mm/gizmo_map.c\n"
    "+++ b/mm/gizmo_map.c\n"
    "@@ -40,14 +40,14 @@ static int gizmo_map(struct gizmo *g, struct file *file)\n"
    " \tgizmo_unlock(g);\n"
    " \tgizmo_put(g);\n"
    " \n"
    " \tif (gizmo_check(file)) {\n"
    " \t\terr = -EINVAL;\n"
    "-\t\tgoto {old};\n"
    "+\t\tgoto {new};\n"
    " \t}\n"
    " \terr = 0;\n"
    " out_put:\n"
    " \tgizmo_unlock(g);\n"
    " \tgizmo_put(g);\n"
    " out_file:\n"
    " \tfput(file);\n"
    " \treturn err;\n"
)


def _variants(tmp_path: Path, text: str) -> list[str]:
    patch = tmp_path / "t.patch"
    patch.write_text(text)
    review = review_inputs([str(patch)], SETTINGS)
    return sorted(
        _VARIANT_WORDS[f.rule_id](f.message)
        for f in review.findings
        if f.status is Status.INTRODUCED
    )


def _retargeted(message: str) -> str:
    return "release-on-retargeted-exit" if "unwind ladder" in message else message


def _retry(message: str) -> str:
    return "reset-removed-before-retry" if "the retry now starts" in message else message


# findings carry their rule; the wording tells the variant
_VARIANT_WORDS = {"MMLC002": _retargeted, "MMLC009": _retry}


def test_a_jump_moved_up_the_ladder_through_a_put_is_reported(tmp_path: Path) -> None:
    text = LADDER.replace("{old}", "out_file").replace("{new}", "out_put")
    assert "release-on-retargeted-exit" in _variants(tmp_path, text)


def test_a_jump_moved_down_the_ladder_is_not_reported(tmp_path: Path) -> None:
    text = LADDER.replace("{old}", "out_put").replace("{new}", "out_file")
    assert "release-on-retargeted-exit" not in _variants(tmp_path, text)


RETRY = (
    "From: Example Dev <dev@example.org>\n"
    "Subject: [PATCH] mm/gizmo: retry\n"
    "\n"
    "---\n"
    "diff --git a/mm/gizmo_fail.c b/mm/gizmo_fail.c\n"
    "--- a/mm/gizmo_fail.c\n"
    "+++ b/mm/gizmo_fail.c\n"
    "@@ -210,7 +210,6 @@ {section}\n"
    " \t} else if (ret == 0) {\n"
    " \t\tif (gizmo_offline_free(page) && try_again) {\n"
    " \t\t\ttry_again = false;\n"
    "-\t\t\tflags &= ~GIZMO_REF_HELD;\n"
    " \t\t\tgoto {label};\n"
    " \t\t}\n"
    " \t}\n"
)


def test_a_reset_removed_before_a_jump_back_is_reported(tmp_path: Path) -> None:
    text = RETRY.replace("{section}", "retry:").replace("{label}", "retry")
    assert _variants(tmp_path, text) == ["reset-removed-before-retry"]


def test_a_reset_removed_before_a_forward_jump_is_not_reported(tmp_path: Path) -> None:
    # no `out:` above the jump: a forward exit, nothing is retried
    text = RETRY.replace("{section}", "retry:").replace("{label}", "out")
    assert _variants(tmp_path, text) == []


def test_a_label_of_the_function_above_is_not_a_retry_label(tmp_path: Path) -> None:
    # a whole image: `out:` belongs to the function before this one
    tree = tmp_path / "tree" / "mm"
    tree.mkdir(parents=True)
    body = [
        "static int gizmo_a(int x)",
        "{",
        "\tif (x)",
        "\t\tgoto out;",
        "\tx++;",
        "out:",
        "\treturn x;",
        "}",
        "",
        "static int gizmo_b(struct gizmo *g)",
        "{",
        "\tint allowed = 0;",
        "",
        "\tif (!gizmo_get(g)) {",
        "\t\tgizmo_undo(g);",
        "\t\tallowed = 0;",
        "\t\tgoto out;",
        "\t}",
        "\tallowed = 1;",
        "out:",
        "\treturn allowed;",
        "}",
    ]
    (tree / "gizmo_lock.c").write_text("\n".join(body) + "\n")
    patch = tmp_path / "t.patch"
    patch.write_text(
        "From: Example Dev <dev@example.org>\n"
        "Subject: [PATCH] mm/gizmo: drop a reset\n"
        "\n"
        "---\n"
        "diff --git a/mm/gizmo_lock.c b/mm/gizmo_lock.c\n"
        "--- a/mm/gizmo_lock.c\n"
        "+++ b/mm/gizmo_lock.c\n"
        "@@ -14,5 +14,4 @@ static int gizmo_b(struct gizmo *g)\n"
        " \tif (!gizmo_get(g)) {\n"
        " \t\tgizmo_undo(g);\n"
        "-\t\tallowed = 0;\n"
        " \t\tgoto out;\n"
        " \t}\n"
    )
    review = review_inputs([str(patch)], SETTINGS, tree=str(tmp_path / "tree"))
    assert not any(f.rule_id == "MMLC009" for f in review.findings)

"""Where fuzzy apply looks for a hunk: GNU patch's order of candidate positions."""

from __future__ import annotations

from bot.analyze.diff import parse_diff
from bot.apply.fuzzy import locate_hunks
from bot.model import Hunk


def hunks_of(*body: str) -> tuple[Hunk, ...]:
    diff = "\n".join(["--- a/mm/pool.c", "+++ b/mm/pool.c", *body, ""])
    (file,) = parse_diff(diff, "test")
    return file.hunks


# Replace the put between lock and unlock; the hunk says line 5.
PUT = hunks_of(
    "@@ -5,3 +5,3 @@",
    " \tpool_lock(p);",
    "-\tpool_put(p);",
    "+\tpool_put_locked(p);",
    " \tpool_unlock(p);",
)
BLOCK = ["\tpool_lock(p);", "\tpool_put(p);", "\tpool_unlock(p);"]


def test_of_two_matches_at_equal_distance_the_later_one_wins() -> None:
    # The hunk's text sits two lines above and two lines below its stated line:
    # GNU patch tries guess+2 before guess-2.
    lines = ["a", "b", *BLOCK, "c", *BLOCK]
    (placement,) = locate_hunks(lines, PUT, max_fuzz=0)
    assert placement.applied and (placement.start, placement.offset) == (6, 2)


def test_the_nearest_match_wins_over_a_later_one() -> None:
    lines = ["a", "b", "c", *BLOCK, "d", "e", "f", *BLOCK, "g"]
    (placement,) = locate_hunks(lines, PUT, max_fuzz=0)
    assert (placement.start, placement.offset) == (3, -1)


def test_a_pure_insertion_then_a_context_hunk_both_place() -> None:
    hunks = hunks_of(
        "@@ -1,0 +2,1 @@",
        "+#include <linux/pool.h>",
        "@@ -5,3 +6,3 @@",
        " \tpool_lock(p);",
        "-\tpool_put(p);",
        "+\tpool_put_locked(p);",
        " \tpool_unlock(p);",
    )
    lines = ["#include <linux/slab.h>", "", "void f(struct pool *p)", "{"]
    lines += [*BLOCK, "}"]
    first, second = locate_hunks(lines, hunks)
    assert first.applied and first.start == 1
    assert second.applied and (second.start, second.offset) == (4, 0)


def test_a_hunk_whose_first_line_is_nowhere_does_not_place() -> None:
    lines = ["\tpool_unlock(p);", "\tpool_put(p);", "\tpool_unlock(p);"] * 4
    (placement,) = locate_hunks(lines, PUT, max_fuzz=0)
    assert not placement.applied

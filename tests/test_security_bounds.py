"""Small hostile inputs must not cost unbounded CPU or memory (issue 12): the
fuzzy search is bounded by its input's size, References are linear and capped,
an over-long line is refused. Work is counted, never timed."""

from __future__ import annotations

import pytest

from bot.analyze.diff import parse_diff
from bot.apply import fuzzy
from bot.apply.fuzzy import SEARCH_BOUND, apply_hunks, locate_hunks
from bot.assemble import split_patch_body
from bot.errors import InputError
from bot.ingest.message import MAX_LINE, MAX_REFERENCES, parse_message


def _hostile_diff(hunks: int, length: int) -> str:
    """`hunks` hunks changing a `y` between `length` lines `x` each side: against
    a file of `x` lines, every start is a candidate and matches half the hunk."""
    out = ["--- a/f.c", "+++ b/f.c"]
    for i in range(hunks):
        size = 2 * length + 1
        out.append(f"@@ -{i * 10 + 1},{size} +{i * 10 + 1},{size} @@")
        out += [" x"] * length + ["-y", "+z"] + [" x"] * length
    return "\n".join(out) + "\n"


class _Counting(list[str]):
    """A file's lines that count the line comparisons made on slices of them."""

    compared = 0

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        item = super().__getitem__(key)
        if isinstance(key, slice):
            _Counting.compared += len(item)
        return item


def test_fuzzy_search_is_bounded_by_its_input() -> None:
    (diff,) = parse_diff(_hostile_diff(200, 20), "hostile")
    lines = ["x"] * 3000
    _Counting.compared = 0
    placements = locate_hunks(_Counting(lines), diff.hunks)
    assert not any(p.applied for p in placements)
    assert any(p.reason.startswith(SEARCH_BOUND) for p in placements)
    size = len(lines) + sum(len(h.lines) for h in diff.hunks)
    assert _Counting.compared <= fuzzy.WORK_FLOOR + fuzzy.WORK_PER_LINE * size + 64


def test_an_ordinary_fuzzy_apply_is_far_inside_the_bound() -> None:
    text = [f"line {i}" for i in range(2000)]
    body = ["--- a/f.c", "+++ b/f.c"]
    for start in range(100, 1900, 100):
        body.append(f"@@ -{start + 1},3 +{start + 1},3 @@")
        body += [f" line {start + 3}", f"-line {start + 4}", f"+new {start}", f" line {start + 5}"]
    (diff,) = parse_diff("\n".join(body) + "\n", "ordinary")
    new, placements = apply_hunks(text, diff.hunks)
    assert all(p.applied for p in placements)
    assert all(p.offset == 3 for p in placements)
    assert "new 100" in new


def _mail(references: list[str]) -> bytes:
    refs = " ".join(f"<r{i}@x>" for i in references)
    return (
        f"From: a <a@x>\nSubject: [PATCH] t\nMessage-ID: <m@x>\nReferences: {refs}\n\nbody\n"
    ).encode()


def test_references_are_linear_and_capped() -> None:
    ids = [str(i) for i in range(5000)] + ["0", "5"]  # repeats too
    msg = parse_message(_mail(ids), "refs")
    assert len(msg.references) == MAX_REFERENCES
    assert msg.references[0] == "r0@x"  # the thread's root
    assert msg.references[-1] == "r4999@x"  # the newest
    assert len(set(msg.references)) == len(msg.references)


def test_an_over_long_line_is_refused_with_one_line() -> None:
    long_line = "+" + "a" * (MAX_LINE + 1)
    raw = f"From: a <a@x>\nSubject: [PATCH] t\nMessage-ID: <m@x>\n\n{long_line}\n".encode()
    with pytest.raises(InputError) as exc:
        parse_message(raw, "big.eml")
    assert "longer than" in exc.value.message and "\n" not in exc.value.message
    with pytest.raises(InputError):
        split_patch_body(f"diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n{long_line}\n")
    # the longest line allowed still parses
    ok = "+" + "a" * (MAX_LINE - 1)
    parse_message(f"From: a <a@x>\nSubject: t\nMessage-ID: <m@x>\n\n{ok}\n".encode(), "ok")

"""flow_index.FileIndex.names_mentioning: the names whose bodies spell a word,
searched in all bodies at once, give what a body-by-body search gives."""

from __future__ import annotations

import random
from pathlib import Path

from bot.analyze.flow_index import FileIndex as _FileIndex


def _by_body(index: _FileIndex, words: frozenset[str]) -> tuple[str, ...]:
    needles = [w.encode() for w in words]
    return tuple(
        name
        for name, bodies in index.by_name.items()
        if any(n in body for body in bodies for n in needles)
    )


def test_names_mentioning_matches_a_body_by_body_search() -> None:
    rnd = random.Random(11)
    alphabet = [b"kfree", b"put", b"(", b")", b";", b"\0", b"x", b"kfre", b"e", b" "]
    words_pool = ["kfree", "put", "x", "e", "kfreee", "free", "", "zz"]
    for _ in range(300):
        by_name: dict[str, tuple[bytes, ...]] = {}
        for i in range(rnd.randrange(0, 6)):
            by_name[f"f{i}"] = tuple(
                b"".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 8)))
                for _ in range(rnd.randrange(1, 3))
            )
        index = _FileIndex("mm/x.c", "k", "", by_name)
        for _ in range(4):
            words = frozenset(rnd.sample(words_pool, rnd.randrange(1, 4)))
            assert index.names_mentioning(words) == _by_body(index, words), (by_name, words)


def test_a_word_split_between_two_bodies_is_not_a_mention() -> None:
    index = _FileIndex("mm/x.c", "k", "", {"a": (b"{ kfr",), "b": (b"ee(p); }",)})
    assert index.names_mentioning(frozenset({"kfree"})) == ()
    assert index.names_mentioning(frozenset({"ee(p"})) == ("b",)


def test_a_flow_built_from_a_text_is_keyed_by_its_place_in_that_text() -> None:
    from bot.analyze import summaries
    from bot.analyze.flow_build import flow_of_definition, flows_in_text

    text = "static void a(struct x *p)\n{\n\tkfree(p);\n}\n\nvoid b(void)\n{\n\ta(NULL);\n}\n"
    first = flows_in_text(text, "mm/x.c")
    again = flows_in_text.__wrapped__(text, "mm/x.c")  # built anew, not the memo's
    assert [f.origin for f in first] == [f.origin for f in again]
    assert len({f.origin for f in first}) == 2 and all(f.origin for f in first)
    # another path, another text, or the same function parsed alone: other keys
    assert {f.origin for f in flows_in_text(text, "mm/y.c")}.isdisjoint(f.origin for f in first)
    edited = flows_in_text(text.replace("kfree", "vfree"), "mm/x.c")
    assert edited[0].origin != first[0].origin
    alone = flow_of_definition(text[: text.index("\n\nvoid b")], "mm/x.c", 1)
    assert alone is not None and alone.origin != first[0].origin
    # the summaries' content key is the origin (no encoding of the graph)
    assert summaries._flow_digest(first[0]) == first[0].origin


def test_a_body_the_hunks_show_in_part_is_read_from_the_tree_when_it_has_one(
    tmp_path: Path,
) -> None:
    from bot.analyze.flow_source import SourceView

    # the tree's zone.c: zone_reset() sets fields; zone_free() frees the handle
    tree = (
        "static void zone_reset(struct zone_page *zp)\n{\n\tzp->index = 0;\n\tzp->priv = 0;\n}\n"
        + "\n" * 20
        + "static void zone_free(struct zone_pool *pool, unsigned long h)\n{\n"
        + "\tcache_free_handle(pool, h);\n}\n"
    )
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm" / "zone.c").write_text(tree)
    # the partial image: a hunk shows zone_reset()'s head (lines 1-3), another
    # zone_free()'s body (lines 27-29); the lines between are hidden (blank)
    lines = tree.split("\n")
    shown = {1, 2, 3, 27, 28, 29}
    partial = "\n".join(ln if i + 1 in shown else "" for i, ln in enumerate(lines))
    view = SourceView({"mm/zone.c": partial}, str(tmp_path), True, {"mm/zone.c": frozenset(shown)})
    (flow,) = view.definitions("zone_reset", "mm/zone.c")
    assert "cache_free_handle" not in flow.call_names()  # the tree's body, not run-on
    assert flow.call_names() == []
    # without a tree the partial body is all there is
    alone = SourceView({"mm/zone.c": partial}, None, True, {"mm/zone.c": frozenset(shown)})
    (flow,) = alone.definitions("zone_reset", "mm/zone.c")
    assert "cache_free_handle" in flow.call_names()

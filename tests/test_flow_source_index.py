"""flow_source._FileIndex.names_mentioning: the names whose bodies spell a word,
searched in all bodies at once, give what a body-by-body search gives."""

from __future__ import annotations

import random

from bot.analyze.flow_source import _FileIndex


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

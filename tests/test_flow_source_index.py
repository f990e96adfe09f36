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

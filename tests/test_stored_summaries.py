"""Callee summaries kept in the on-disk cache (bot/analyze/summaries.py): read
back when the body, the vocabulary and the callees' answers are the same,
computed again when a callee changed, and a malformed entry is a miss; a
diff-only review stores none."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import cache
from bot.analyze import summaries
from bot.analyze.api import load_vocabulary
from bot.analyze.flow_source import SourceView
from bot.analyze.infer import Inference, Summary
from bot.config import Settings

VOCAB = load_vocabulary(Settings().rules_dir)

CALLER = """
void widget_drop(struct widget *w)
{
	widget_free(w);
}
"""
CALLEE_FREES = """
void widget_free(struct widget *w)
{
	kfree(w);
}
"""
CALLEE_KEEPS = """
void widget_free(struct widget *w)
{
	w->dead = 1;
}
"""
# what no computation gives widget_drop(): only a stored entry can say it
PLANTED = Summary(name="widget_drop", known=True, hands_off=frozenset({7}))


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    before = cache.active()
    directory = tmp_path / "cache"
    cache.configure(directory)
    (tmp_path / "tree").mkdir()
    yield directory
    cache.flush()
    cache.configure(before)


def _new_process() -> None:
    """Write what was computed and reopen, as the next review would."""
    cache.flush()
    directory = cache.active()
    cache.configure(None)
    cache.configure(directory)


def _inference(callee: str, tree: bool = True) -> Inference:
    """widget_drop() in the series' mm/widget.c and widget_free() in its
    mm/widget_core.c (a summary is keyed by the text its flow was built from:
    the caller's file stays the same when the callee changes), in a review
    with a tree (the tree beside the cache) or diff-only."""
    directory = cache.active()
    root = str(directory.parent / "tree") if tree and directory is not None else None
    view = SourceView({"mm/widget.c": CALLER, "mm/widget_core.c": callee}, root)
    return Inference(vocab=VOCAB, views=(view,), depth=2)


def _caller_key(inf: Inference) -> str:
    (flow,) = inf.definitions("widget_drop", "mm/widget.c")
    key = summaries._key(VOCAB, flow, 2)
    assert key is not None
    return key


def _plant(key: str, value: object) -> None:
    """Replace the stored entry of widget_drop()'s summary with `value`."""
    full = cache._full_key(summaries.NAMESPACE, key)
    cache.put(summaries.NAMESPACE, key, value)
    cache.flush()
    with sqlite3.connect(cache.active() / cache.DB_NAME) as db:  # type: ignore[operator]
        (n,) = db.execute("SELECT COUNT(*) FROM entries WHERE key = ?", (full,)).fetchone()
    assert n == 1
    _new_process()


def test_a_summary_is_computed_once_and_read_back(cache_dir: Path) -> None:
    first = _inference(CALLEE_FREES)
    computed = first.summary("widget_drop", "mm/widget.c")
    assert computed.releases_always == frozenset({0})
    _new_process()
    key = _caller_key(first)
    stored = cache.get(summaries.NAMESPACE, key)
    assert stored is not None
    summary, asked = stored[0]  # type: ignore[misc]
    assert summary == computed
    # the question it asked on the way (once per call site): widget_free()'s summary
    assert {q[:2] for q in asked} == {("summary", ("widget_free", "mm/widget.c", 1))}
    # the next review reads it back: a planted answer proves nothing recomputed it
    _plant(key, (PLANTED, asked))
    assert _inference(CALLEE_FREES).summary("widget_drop", "mm/widget.c") == PLANTED


def test_a_changed_callee_computes_the_summary_again(cache_dir: Path) -> None:
    first = _inference(CALLEE_FREES)
    first.summary("widget_drop", "mm/widget.c")
    _new_process()
    key = _caller_key(first)
    stored = cache.get(summaries.NAMESPACE, key)
    assert stored is not None
    _, asked = stored[0]  # type: ignore[misc]
    _plant(key, (PLANTED, asked))
    # same caller body, but widget_free() no longer frees: its answer differs
    again = _inference(CALLEE_KEEPS).summary("widget_drop", "mm/widget.c")
    assert again != PLANTED
    assert again.known and again.releases_always == frozenset()
    # and what was computed replaces the stale entry
    _new_process()
    stored = cache.get(summaries.NAMESPACE, key)
    assert stored is not None and stored[0][0] == again  # type: ignore[index]


@pytest.mark.parametrize(
    "asked",
    [
        (("definitions", ("widget_free", "mm/widget.c"), (), None),),  # not a question
        (("summary", (["widget_free"],), (), None),),  # arguments of no plain type
        (("summary", ("widget_free",), (), "free"),),  # an answer of the wrong type
        (("summary",),),  # too short
    ],
)
def test_a_malformed_stored_summary_is_computed_again(cache_dir: Path, asked: object) -> None:
    first = _inference(CALLEE_FREES)
    computed = first.summary("widget_drop", "mm/widget.c")
    _new_process()
    _plant(_caller_key(first), (PLANTED, asked))
    assert _inference(CALLEE_FREES).summary("widget_drop", "mm/widget.c") == computed


def test_a_diff_only_review_stores_no_summary(cache_dir: Path) -> None:
    inf = _inference(CALLEE_FREES, tree=False)
    assert inf.summary("widget_drop", "mm/widget.c").releases_always == frozenset({0})
    _new_process()
    assert cache.get(summaries.NAMESPACE, _caller_key(inf)) is None


def test_without_a_cache_nothing_is_stored() -> None:
    before = cache.active()
    cache.configure(None)
    try:
        inf = _inference(CALLEE_FREES)
        assert inf.summary("widget_drop", "mm/widget.c").releases_always == frozenset({0})
        assert inf._asked == []
    finally:
        cache.configure(before)

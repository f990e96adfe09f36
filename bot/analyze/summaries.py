"""Callee summaries kept in the on-disk cache (bot.cache), keyed by content.

A function's summary (bot.analyze.infer.Summary) is computed from three
things: its body (the flow), the lifecycle vocabulary, the depth left, and
the answers to the questions the computation asks the inference on the way:
the summaries of its callees and the roles of bodiless names by convention.
A kernel tree changes slowly, so the summaries of its functions (in a review
with a tree; a diff-only review's images are new each time) are computed
once and stored under a key made of the first three (the flow's origin: the
content key of the text it was built from, with the definition's name and
place, which determines the graph; the vocabulary's plain-data encoding,
hashed; and the depth), with the questions asked and their answers beside
them. A flow of no known origin is keyed by its own encoding, hashed.

A stored summary is used only after the same questions, asked again in the
same order, get the same answers: a callee whose body changed (or that a
series now defines) gives another answer, and the summary is computed
again. Since the computation is a function of its body, the vocabulary, the
depth and those answers, a summary that passes this check is the one the
computation would give. Asking again also leaves the inference memoising the
same callees a computation would.

    summarise(inference, flow, depth)   stored, or computed and stored
    recorded(method)                    Inference methods whose answers count

Every input of Inference._summarise beyond the flow, the vocabulary and the
depth must come through a method decorated with `recorded`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from bot import cache, plaindata

if TYPE_CHECKING:
    from bot.analyze.api import Vocabulary
    from bot.analyze.flow import Flow
    from bot.analyze.infer import Inference, Summary

NAMESPACE = "summaries"
# The questions a stored summary may ask again (methods of Inference).
QUESTIONS = frozenset({"summary", "by_name"})

# (method name, arguments, keyword arguments, answer) of one question
Asked = tuple[str, tuple[object, ...], tuple[tuple[str, object], ...], object]

F = TypeVar("F", bound=Callable[..., Any])


def recorded(method: F) -> F:
    """Note each answer of an Inference question for the summary being computed."""
    name = method.__name__
    assert name in QUESTIONS, name

    @functools.wraps(method)
    def ask(inference: Inference, *args: object, **kwargs: object) -> object:
        answer = method(inference, *args, **kwargs)
        if inference._asked:
            inference._asked[-1].append((name, args, tuple(sorted(kwargs.items())), answer))
        return answer

    return cast(F, ask)


def summarise(inference: Inference, flow: Flow, depth: int) -> Summary:
    """inference._summarise(flow, depth), read back when stored by an earlier review."""
    # a tree's functions are met review after review; the images of a diff-only
    # review are new each time and cheap to summarise: no key is worth its cost
    keep = cache.active() is not None and any(v.tree_root for v in inference.views)
    key = _key(inference.vocab, flow, depth) if keep else None
    if key is not None:
        hit = cache.get(NAMESPACE, key)
        stored = _record(hit[0]) if hit is not None else None
        if stored is not None and _same_answers(inference, stored[1]):
            return stored[0]
    inference._asked.append([])
    try:
        summary = inference._summarise(flow, depth)
    finally:
        asked = tuple(inference._asked.pop())
    if key is not None:
        cache.put(NAMESPACE, key, (summary, asked))
    return summary


def _same_answers(inference: Inference, asked: tuple[Asked, ...]) -> bool:
    """Ask the recorded questions again, in order; True if every answer is the
    same (the first different one stops: the computation would differ there)."""
    inference._asked.append([])  # these answers are not the caller's questions
    try:
        for name, args, kwargs, answer in asked:
            if getattr(inference, name)(*args, **dict(kwargs)) != answer:
                return False
        return True
    finally:
        inference._asked.pop()


def _record(value: object) -> tuple[Summary, tuple[Asked, ...]] | None:
    """A stored (summary, questions) pair, or None when it is not one (a miss)."""
    from bot.analyze.api import ApiRole
    from bot.analyze.infer import Summary

    if not (isinstance(value, tuple) and len(value) == 2):
        return None
    summary, asked = value
    if type(summary) is not Summary or type(asked) is not tuple:
        return None
    plain = (str, int, type(None))
    for q in asked:
        if not (type(q) is tuple and len(q) == 4 and q[0] in QUESTIONS):
            return None
        _, args, kwargs, answer = q
        if not (type(args) is tuple and all(type(a) in plain for a in args)):
            return None
        if not (type(kwargs) is tuple and all(_keyword(kw, plain) for kw in kwargs)):
            return None
        if not (answer is None or type(answer) in (Summary, ApiRole)):
            return None
    return summary, asked


def _keyword(item: object, plain: tuple[type, ...]) -> bool:
    return (
        type(item) is tuple and len(item) == 2 and type(item[0]) is str and type(item[1]) in plain
    )


def _key(vocab: Vocabulary, flow: Flow, depth: int) -> str | None:
    """The content key of a summary: the flow, the vocabulary and the depth
    (None when one cannot be encoded: the summary is then not stored)."""
    vocab_key = _vocabulary_key(vocab)
    body = _flow_digest(flow)
    if vocab_key is None or body is None:
        return None
    return cache.text_key(vocab_key, str(depth), body)


# id -> (flow, digest of its encoding): a flow read once is shared by every
# review of a warm process (the front end memoises them, and nothing changes a
# flow once built), so it is encoded for its key once, not once per review
_FLOW_DIGESTS: dict[int, tuple[Flow, str | None]] = {}
_MAX_FLOWS = 4096


def _flow_digest(flow: Flow) -> str | None:
    if flow.origin:  # built from a known text: its place in that text is the key
        return flow.origin
    known = _FLOW_DIGESTS.get(id(flow))
    if known is not None and known[0] is flow:
        return known[1]
    try:
        digest: str | None = hashlib.sha256(plaindata.dumps(flow)).hexdigest()
    except (ValueError, TypeError, RecursionError):
        digest = None
    if len(_FLOW_DIGESTS) >= _MAX_FLOWS:
        _FLOW_DIGESTS.pop(next(iter(_FLOW_DIGESTS)))
    _FLOW_DIGESTS[id(flow)] = (flow, digest)
    return digest


# id -> (vocabulary, key): the few vocabularies of a process (the objects are
# kept, so an id is never reused while its entry is here)
_VOCABULARY_KEYS: dict[int, tuple[Vocabulary, str | None]] = {}
_MAX_VOCABULARIES = 8


def _vocabulary_key(vocab: Vocabulary) -> str | None:
    known = _VOCABULARY_KEYS.get(id(vocab))
    if known is not None and known[0] is vocab:
        return known[1]
    try:
        key: str | None = hashlib.sha256(plaindata.dumps(vocab)).hexdigest()
    except (ValueError, TypeError, RecursionError):
        key = None
    if len(_VOCABULARY_KEYS) >= _MAX_VOCABULARIES:
        _VOCABULARY_KEYS.pop(next(iter(_VOCABULARY_KEYS)))
    _VOCABULARY_KEYS[id(vocab)] = (vocab, key)
    return key


__all__ = ["NAMESPACE", "QUESTIONS", "recorded", "summarise"]

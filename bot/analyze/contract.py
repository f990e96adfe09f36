"""What a function's callers promise it: a lock or RCU read section held on entry.

A function that is only ever called with a lock held runs under that lock even
though its own body never takes it. The kernel says so in four ways, read here
in order of cost:

* an annotation or assertion in the body (`lockdep_assert_held()`,
  `rcu_read_lock_held()` in a check, `rcu_dereference_protected()`);
* a sparse annotation on the definition (`__must_hold(&x)`, `__releases`);
* the comment above the definition ("Caller must hold ...", "must be called
  with ... held", "called under rcu_read_lock");
* the callers' bodies, when the view has them: every call of the function sits
  where a lock or an RCU read section is held on every path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.analyze.api import Vocabulary
from bot.analyze.csource import calls_spelled, lexicon
from bot.analyze.flow import Call, Event, Flow, explore
from bot.analyze.flow_source import SourceView

_BODY = re.compile(r"(lockdep_assert|_held$|rcu_dereference_protected|rcu_read_lock_any)")
_ANNOTATION = re.compile(r"__must_hold\s*\(|__releases\s*\(|__acquires\s*\(")
_COMMENT = re.compile(
    r"(caller[s]?\s+(must|should|has to|have to)\s+hold"
    r"|must\s+be\s+(called|held)\s+(with|under|while)"
    r"|called\s+(with|under)\s+[^.]{0,60}(held|lock)"
    r"|(with|under)\s+(the\s+)?rcu(_read_lock)?[^.]{0,20}(held|protection)"
    r"|requires?\s+[^.]{0,40}\b(lock|rcu)\b[^.]{0,20}held"
    r"|\bheld\s+by\s+(the\s+)?caller)",
    re.IGNORECASE,
)
# Lines above a definition searched for its comment.
_COMMENT_LINES = 25
# Callers looked at per function (the touched file and the series' files).
_MAX_CALLERS = 16


def _preamble(lines: Sequence[str], start_line: int) -> str:
    """The comment block and signature lines just above and at `start_line`."""
    lo = max(0, start_line - 1 - _COMMENT_LINES)
    chunk = lines[lo : start_line + 2]
    # only what follows the previous definition's closing brace
    for i in range(len(chunk) - 1, -1, -1):
        if chunk[i].startswith("}"):
            chunk = chunk[i + 1 :]
            break
    return "\n".join(chunk)


_HELD: dict[tuple[int, str, str], tuple[SourceView, bool]] = {}


def _callers_hold(flow: Flow, view: SourceView, file: str, vocab: Vocabulary) -> bool:
    """Every caller the view shows calls `flow` with a lock or RCU held (once per
    view and name: each rule asks again)."""
    key = (id(view), flow.name, file)
    hit = _HELD.get(key)
    if hit is not None and hit[0] is view:
        return hit[1]
    if len(_HELD) > 4096:
        _HELD.clear()
    result = _callers_hold_uncached(flow, view, file, vocab)
    _HELD[key] = (view, result)
    return result


def _callers_hold_uncached(flow: Flow, view: SourceView, file: str, vocab: Vocabulary) -> bool:
    callers: list[Flow] = []
    for path in dict.fromkeys([file, *view.files]):
        if not _may_call(view.text(path) or "", flow.name):
            continue  # no `name(` but its own definition: nothing to parse here
        for f in view.flows_mentioning(path, flow.name):
            if f.name != flow.name and any(c.name == flow.name for c in f.calls):
                callers.append(f)
            if len(callers) >= _MAX_CALLERS:
                break
    if not callers:
        return False
    return all(_every_call_held(c, flow.name, vocab) for c in callers)


def _may_call(text: str, name: str) -> bool:
    """Whether `text` may call `name`: it spells `name(` more often than it
    defines `name` (a lexical superset of the calls, read before any parse)."""
    lex = lexicon(text)
    if name not in lex.called:
        return False
    return calls_spelled(text, name, more_than=1 if name in lex.defines else 0)


def _every_call_held(caller: Flow, name: str, vocab: Vocabulary) -> bool:
    held_at: list[bool] = []

    def on_event(state: int, ev: Event) -> int:
        if not isinstance(ev, Call):
            return state
        if ev.name == name:
            held_at.append(state > 0)
            return state
        for role in vocab.roles_of(ev.name):
            if role.role in ("lock", "rcu_read_lock"):
                return min(state + 1, 4)
            if role.role in ("unlock", "rcu_read_unlock"):
                return max(state - 1, 0)
        return state

    done = explore(caller, 0, on_event)
    return done and bool(held_at) and all(held_at)


def held_on_entry(flow: Flow, view: SourceView, file: str, vocab: Vocabulary) -> bool:
    """True when `flow` runs with a lock or RCU held by its callers' contract."""
    if flow.name.endswith(("_locked", "_rcu")):
        return True
    if any(_BODY.search(c.name) for c in flow.calls):
        return True
    lines = view.lines(file)
    if lines:
        pre = _preamble(lines, flow.start_line)
        if _ANNOTATION.search(pre) or _COMMENT.search(pre):
            return True
    return _callers_hold(flow, view, file, vocab)


__all__ = ["held_on_entry"]

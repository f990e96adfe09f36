"""Where function bodies come from, and what a function reaches through its callees.

A `SourceView` is the source as it stands on one side of one patch: the patch's
own pre- or post-images, the post-images of earlier patches of the series for files
they touched, and otherwise the user's tree (read cheaply: the caller's own file,
the headers it includes and its directory). Matchers ask it for the flow of a
called function, so a removed call is judged by the body its callee had at that
point of the series.

`reach` follows calls into functions the view defines (to `settings.call_depth`
levels) and lists every vocabulary call reached, with the chain that got there
and whether a lock was held on every path to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from bot.analyze.api import ApiRole, Vocabulary
from bot.analyze.csource import Texts, lexicon
from bot.analyze.entry_locks import held_before_release, held_on_entry
from bot.analyze.flow import (
    Assume,
    Call,
    Event,
    Flow,
    explore,
    norm_object,
)
from bot.analyze.flow_build import flow_of_definition
from bot.analyze.flow_index import defines, file_index
from bot.model import CFunction
from bot.safefs import tree_listing

if TYPE_CHECKING:
    pass

# Bytes of a tree directory scanned for a definition before giving up (keeps a
# review ~1 s even on a directory with hundreds of files).
_MAX_DIR_BYTES = 8 * 1024 * 1024

# Bound on the work of following calls, per side of a patch: real mm functions
# stay far below it (the seed series uses a few hundred); an 80x80 call clique
# would need millions.
MAX_REACH_WORK = 200_000

_COMMENT_LINE = re.compile(r"^\s*(\*|/\*|\*/|//)")


@lru_cache(maxsize=4096)
def flow_of(fn: CFunction) -> Flow | None:
    """The flow of a CFunction, parsed once; None when it cannot be built (code
    nested deeper than Python's stack allows is hostile input, not a crash)."""
    try:
        return _flow_of(fn)
    except RecursionError:
        return None


def _flow_of(fn: CFunction) -> Flow | None:
    body = _open_hidden_blocks(_trim_open_statement(fn.body))
    if _HEADER_START.match(body):
        flow = flow_of_definition(body, fn.file, fn.start_line)
        if flow is not None:
            return flow
    if _PARAM_TAIL.match(body):
        # the hunk starts inside the header (its first line ends the parameter
        # list): name it, and close what the partial image leaves open
        _, left_open = _brace_deficit(body)
        text = f"void {fn.name}(" + body + "\n" + "}" * left_open + "\n"
        flow = flow_of_definition(text, fn.file, fn.start_line)
        if flow is not None:
            return flow
    # A partial body (no header in the diff): parse it as the body of a stand-in.
    # It may start inside a block comment, so comment-looking lines are blanked
    # (keeping line numbers) rather than read as code.
    body = "\n".join(
        "" if _COMMENT_LINE.match(line) else line
        for line in _trim_open_statement(fn.body).split("\n")
    )
    body = _open_hidden_blocks(body, floor=-1)
    # A hunk often starts inside a block and closes it (`}` of an `if` opened above
    # the hunk): open as many blocks as it closes, so the code after that `}` stays
    # in the function instead of ending it.
    # The blocks it opens are `if`s, so a leading `} else ...` still has its `if`;
    # the blocks it leaves open are closed, a `do {` with its `while`.
    opened, _ = _brace_deficit(body)
    text = (
        "void "
        + fn.name
        + "(void)\n{"
        + HIDDEN_BLOCK * opened
        + "\n"
        + body
        + "\n"
        + _closers(body)
        + "}\n"
    )
    # the stand-in's first definition, two lines above the body (cached like any)
    return flow_of_definition(text, fn.file, fn.start_line - 2)


_STRINGS = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|/\*.*?\*/|//[^\n]*', re.DOTALL)


# What a definition's text starts with (kernel style: the header at column 0, not
# a label); a partial body starts indented, with `}`, a label or a directive.
_HEADER_START = re.compile(r"\s*?^(?![A-Za-z_]\w*:(?!:))[A-Za-z_]", re.MULTILINE)
# The tail of a parameter list, then the body's `{`: a hunk that starts in a header.
_PARAM_TAIL = re.compile(r"[^{};()]*\)\s*\n\s*\{")
# What stands for a block opened in lines a partial image does not show.
HIDDEN_BLOCK = "if (__hidden__) {"
# Lines of a partial image the diff does not show are blank; hunks are never
# closer than this (their context would have merged them).
_HIDDEN_RUN = 3


def _open_hidden_blocks(body: str, *, floor: int = 0) -> str:
    """A body seen through several hunks of a partial image: a `}` in a later
    hunk that closes a block opened in the hidden lines between them would end
    the function (or the enclosing block) early. Open a block on the last hidden
    line before such a `}` (line numbers kept), so the code after it stays where
    it was. `floor` is the depth outside the body: 0 for a definition (its own
    `{` is in the text, and its last `}` is legit), -1 for a stand-in's body."""
    lines = body.split("\n")
    last_code = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    depth = low = blanks = 0
    hidden: int | None = None
    for i, line in enumerate(lines):
        if not line.strip():
            blanks += 1
            if blanks >= _HIDDEN_RUN and (floor < 0 or depth > 0):
                hidden = i
            continue
        blanks = 0
        for ch in _STRINGS.sub("", line):
            if ch == "{":
                depth += 1
            elif ch == "}":
                # the function's own block closing before its end, or (a stand-in's
                # body) a block the body never opened
                outside = depth == 1 and i < last_code if floor == 0 else depth == low
                if outside and hidden is not None:
                    lines[hidden] = HIDDEN_BLOCK
                    hidden = None
                    depth += 1
                depth -= 1
                low = min(low, depth)
    return "\n".join(lines)


def _trim_open_statement(body: str) -> str:
    """A partial image may end inside a statement (a call whose arguments go on
    past the hunk): cut it after the last line where every parenthesis is
    closed, so the statements before it still parse. A whole body is kept."""
    depth = 0
    lines = body.split("\n")
    # strings and comments out, their line breaks kept: a comment spans lines
    code_lines = _STRINGS.sub(lambda m: "\n" * m.group(0).count("\n"), body).split("\n")
    last_closed = len(lines)
    for i, code in enumerate(code_lines):
        depth += code.count("(") - code.count(")")
        if depth <= 0:
            last_closed = i + 1
            depth = 0
    if depth == 0:
        return body
    return "\n".join(lines[:last_closed])


def _closers(body: str) -> str:
    """What closes the blocks `body` leaves open, innermost first: `}` or, for a
    `do {` whose `while` the image does not show, `} while (0);`."""
    stack: list[bool] = []  # open blocks: is it a do-block?
    code = _STRINGS.sub("", body)
    for m in re.finditer(r"\bdo\s*\{|[{}]", code):
        tok = m.group(0)
        if tok == "}":
            if stack:
                stack.pop()
        else:
            stack.append(tok != "{")
    return "".join("} while (0);" if is_do else "}" for is_do in reversed(stack))


def _brace_deficit(body: str) -> tuple[int, int]:
    """(blocks `body` closes that it never opened, blocks it leaves open), braces
    in strings and comments not counted."""
    depth = low = 0
    for ch in _STRINGS.sub("", body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            low = min(low, depth)
    return -low, max(depth - low, 0)


def _includes(text: str) -> tuple[str, ...]:
    """The `#include` targets of a text, in order (scanned once per text)."""
    return lexicon(text).include_paths()


@dataclass
class SourceView:
    """The source on one side of one patch (see module docstring)."""

    files: Mapping[str, str | None]  # repo path -> text on this side (series-touched files)
    tree_root: str | None
    partial: bool = False
    # partial images: path -> the line numbers the diff shows (None known: blank = hidden)
    shown: Mapping[str, frozenset[int]] = field(default_factory=dict)
    _cache: dict[tuple[str, str], tuple[Flow, ...]] = field(default_factory=dict, repr=False)
    _reach: dict[tuple[int, int, bool], tuple[Flow, list[Reached]]] = field(
        default_factory=dict, repr=False
    )
    # Work left for following calls on this side (entries of callees' reach lists
    # copied); a pathological call graph stops being followed, and says so.
    reach_budget: int = field(default_factory=lambda: MAX_REACH_WORK)
    truncated: bool = False
    _paths: dict[str, list[str]] = field(default_factory=dict, repr=False)
    # tree texts read for this side: one review reads a file once (the next
    # review, with a new view, reads it again and sees any change)
    _texts: Texts = field(init=False, repr=False)
    _lines: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    _callbacks: dict[tuple[int, str], tuple[Vocabulary, dict[str, list[tuple[str, Call]]]]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        self._texts = Texts(self.files, self.tree_root)

    def text(self, path: str) -> str | None:
        return self._texts.text(path)

    def lines(self, path: str) -> tuple[str, ...]:
        """The text's lines (split once per view and file; () when unreadable)."""
        got = self._lines.get(path)
        if got is None:
            got = self._lines[path] = tuple((self.text(path) or "").splitlines())
        return got

    def flows_mentioning(self, path: str, name: str | frozenset[str]) -> Iterator[Flow]:
        """The functions of `path` whose body spells `name` (or one of the names:
        the only ones that can call it), built without the file's other functions."""
        text = self.text(path)
        if not text:
            return
        idx = file_index(text, path)
        for fn in idx.names_mentioning(name if isinstance(name, frozenset) else frozenset({name})):
            yield from idx.flows_named(fn)

    def _candidate_paths(self, near: str) -> list[str]:
        cached = self._paths.get(near)
        if cached is None:
            cached = self._paths[near] = list(dict.fromkeys(self._candidates(near)))
        return cached

    def _candidates(self, near: str) -> Iterator[str]:
        yield near
        yield from (p for p in self.files if p != near)
        if self.tree_root is None:
            return
        text = self.text(near) or ""
        near_dir = str(Path(near).parent)
        for inc in _includes(text):
            yield f"include/{inc}"
            yield str(Path(near_dir) / inc)
        stem = Path(near).stem
        yield f"include/linux/{stem}.h"
        if not near.endswith(".c"):
            return  # a header's directory (include/linux) is the whole kernel API
        budget = _MAX_DIR_BYTES
        for rel in tree_listing(self.tree_root, near_dir, (".c", ".h")):
            if budget <= 0:
                break
            yield rel
            budget -= len(self.text(rel) or "")

    def definitions(self, name: str, near: str) -> tuple[Flow, ...]:
        """Flows of every definition of `name` (#ifdef variants included) this view
        can find, looking first near `near`; empty when unknown."""
        key = (name, near)
        if key in self._cache:
            return self._cache[key]
        found: tuple[Flow, ...] = ()
        for path in self._candidate_paths(near):
            texts = [self.text(path)]
            if self.partial and path == near:
                # a partial image shows only the hunks: the file's other functions
                # are in the tree's copy, before any other file's namesake
                texts.append(self._texts.tree_text(path))
            cut: tuple[Flow, ...] = ()
            for i, text in enumerate(texts):
                if not text or not defines(text, name):
                    continue
                found = file_index(text, path).flows_named(name)
                if found and i == 0 and len(texts) > 1 and self._cut(path, found):
                    # a body the hunks show only in part runs on into the next
                    # hunk's lines: the tree's copy, when it has one, is the body
                    cut, found = found, ()
                    continue
                if found:
                    break
            found = found or cut
            if found:
                break
        self._cache[key] = found
        return found

    def _cut(self, path: str, flows: tuple[Flow, ...]) -> bool:
        """Some definition in `flows` (read from the partial image of `path`)
        spans lines the diff does not show."""
        shown = self.shown.get(path)
        if shown is None:
            return False
        for flow in flows:
            lines = [ev.line for n in flow.nodes.values() for ev in n.events]
            hi = max(lines, default=flow.start_line)
            if any(n not in shown for n in range(flow.start_line, hi + 1)):
                return True
        return False

    def callbacks_of(self, vocab: Vocabulary, near: str) -> dict[str, list[tuple[str, Call]]]:
        """Work/timer/rcu member -> callbacks bound to it by an init call (INIT_WORK
        and friends) in `near` or the series files: `destroy` -> [(fn, call)].
        Once per view, vocabulary and file (each matcher asks again)."""
        key = (id(vocab), near)
        hit = self._callbacks.get(key)
        if hit is not None and hit[0] is vocab:
            return hit[1]
        out = self._callbacks_of(vocab, near)
        self._callbacks[key] = (vocab, out)
        return out

    def _callbacks_of(self, vocab: Vocabulary, near: str) -> dict[str, list[tuple[str, Call]]]:
        out: dict[str, list[tuple[str, Call]]] = {}
        paths = [near, *[p for p in self.files if p != near]]
        # Only functions that spell an init call can bind a callback: the others'
        # flows are neither built nor walked (a big file has hundreds).
        inits = frozenset(
            n
            for n in vocab.names_with_role("init")
            if any(r.role == "init" and r.callback_arg is not None for r in vocab.roles_of(n))
        )
        for path in paths:
            text = self.text(path)
            if not text or not lexicon(text).called & inits:
                continue  # no init call spelled anywhere in it: nothing to parse
            idx = file_index(text, path)
            flows = [f for name in idx.names_mentioning(inits) for f in idx.flows_named(name)]
            for flow in flows:
                for call in flow.calls:
                    for role in vocab.roles_of(call.name):
                        if role.role != "init" or role.callback_arg is None:
                            continue
                        if role.work_arg is None or role.work_arg >= len(call.args):
                            continue
                        if role.callback_arg >= len(call.args):
                            continue
                        member = member_tail(call.args[role.work_arg])
                        cb = call.args[role.callback_arg].strip()
                        if member and re.fullmatch(r"[A-Za-z_]\w*", cb):
                            out.setdefault(member, []).append((cb, call))
        return out


def member_tail(expr: str) -> str:
    """The last member of an object expression: `&p->params->destroy` -> `destroy`."""
    e = norm_object(expr)
    parts = re.split(r"->|\.", e)
    return parts[-1] if len(parts) > 1 else ""


def container_of_arg(expr: str) -> str:
    """The object an API argument stands for: `&x->refs` is embedded in `x`; a plain
    pointer (`wb->blkcg_css`, `s`) is the object itself."""
    e = "".join(expr.split())
    if e.startswith("&"):
        inner = norm_object(e)
        m = re.match(r"(.*)(->|\.)[A-Za-z_]\w*$", inner)
        return m.group(1) if m else inner
    return norm_object(e)


@dataclass(frozen=True)
class Reached:
    """A vocabulary call reached from a function, directly or through helpers."""

    terminal: Call
    role: ApiRole
    chain: tuple[tuple[str, Call], ...]  # (function the call is in, call) from the top
    under_lock: bool  # a lock was held on every path to it (in some frame of the chain)
    file: str  # file of the function holding the terminal call
    # API families the function holding the terminal call also takes references of
    # (a helper that gets and puts the same family balances itself)
    holder_gets: frozenset[str] = frozenset()

    @property
    def site(self) -> Call:
        """The call in the top function that leads here."""
        return self.chain[0][1] if self.chain else self.terminal


def lock_sites(
    flow: Flow,
    vocab: Vocabulary,
    lines: tuple[str, ...] | None = None,
    shown: frozenset[int] | None = None,
) -> frozenset[int]:
    """Indexes (into flow.calls) of calls made with a lock held on every path.
    `lines`: the text of a partial image, whose blank lines may hide a lock
    unless `shown` (the line numbers the diff shows) says they are the code's."""
    index = {id(c): i for i, c in enumerate(flow.calls)}
    locked: dict[int, bool] = {}

    def on_event(state: frozenset[str], ev: Event) -> frozenset[str]:
        if not isinstance(ev, Call):
            return state
        i = index.get(id(ev))
        if i is not None:
            locked[i] = locked.get(i, True) and bool(state)
        role = vocab.role_of(ev.name)
        if role is None or role.kind != "lock" or not ev.args:
            return state
        obj = norm_object(ev.args[0])
        if role.role == "lock":
            return state | {obj}
        if role.role == "unlock":
            return state - {obj}
        return state

    # a lock the function releases before taking it is held when it starts
    held = held_on_entry(flow, vocab)
    explore(flow, frozenset(held) if lines is None else frozenset(), on_event)
    for i in held_before_release(flow, held, locked, lines, shown):
        locked[i] = True
    return frozenset(i for i, v in locked.items() if v)


_lock_cache: dict[int, tuple[Flow, frozenset[int]]] = {}


def _locked(
    flow: Flow,
    vocab: Vocabulary,
    lines: tuple[str, ...] | None,
    shown: frozenset[int] | None = None,
) -> frozenset[int]:
    hit = _lock_cache.get(id(flow))
    if hit is not None and hit[0] is flow:
        return hit[1]
    sites = lock_sites(flow, vocab, lines, shown)
    _lock_cache[id(flow)] = (flow, sites)
    return sites


def reach(
    flow: Flow,
    view: SourceView,
    vocab: Vocabulary,
    depth: int,
    *,
    _stack: tuple[str, ...] = (),
    _held: bool = False,
) -> list[Reached]:
    """Every vocabulary call `flow` makes or reaches through helpers the view
    defines, up to `depth` levels of helpers (memoised per view: a kernel call
    graph fans out fast, and the same helper is reached from many places)."""
    key = (id(flow), depth, _held)
    hit = view._reach.get(key)
    if hit is not None and hit[0] is flow:
        return hit[1]
    out = _dedupe(_reach(flow, view, vocab, depth, _stack, _held))
    view._reach[key] = (flow, out)
    return out


def _dedupe(found: list[Reached]) -> list[Reached]:
    """One entry per reached call site and role: the shortest chain to it, locked
    only if every route to it is (a call graph has exponentially many routes)."""
    best: dict[tuple[int, str, str], Reached] = {}
    unlocked: set[tuple[int, str, str]] = set()
    for r in found:
        k = (id(r.terminal), r.role.family, r.role.role)
        if not r.under_lock:
            unlocked.add(k)
        cur = best.get(k)
        if cur is None or len(r.chain) < len(cur.chain):
            best[k] = r
    return [
        replace(r, under_lock=False) if k in unlocked and r.under_lock else r
        for k, r in best.items()
    ]


_CALLBACK_RELEASES = frozenset({"put", "dec_and_test", "rcu_free"})
_IDENT = re.compile(r"[A-Za-z_]\w*")


def _reach(
    flow: Flow,
    view: SourceView,
    vocab: Vocabulary,
    depth: int,
    _stack: tuple[str, ...],
    _held: bool,
) -> list[Reached]:
    out: list[Reached] = []
    locked = (
        _locked(flow, vocab, view.lines(flow.file), view.shown.get(flow.file))
        if view.partial
        else _locked(flow, vocab, None)
    )
    gets = frozenset(
        r.family for c in flow.calls for r in vocab.roles_of(c.name) if r.role in ("get", "tryget")
    )
    for i, call in enumerate(flow.calls):
        held = _held or i in locked
        roles = vocab.roles_of(call.name)
        targets = [call.name]
        if roles:
            for role in roles:
                out.append(Reached(call, role, (), held, flow.file, gets))
            # the release callback a put runs on the last reference
            # (`kref_put(&x->ref, x_release)`): what it frees, the put reaches
            targets = [
                call.args[r.callback_arg].lstrip("&").strip()
                for r in roles
                if r.role in _CALLBACK_RELEASES
                and r.callback_arg is not None
                and r.callback_arg < len(call.args)
            ]
            targets = [t for t in targets if _IDENT.fullmatch(t)]
            if not targets:
                continue
        if depth <= 0 or call.name in _stack or call.name == flow.name:
            continue
        if view.reach_budget <= 0:
            view.truncated = True
            continue
        for callee in (f for t in targets for f in view.definitions(t, flow.file)):
            found = reach(callee, view, vocab, depth - 1, _stack=(*_stack, flow.name), _held=held)
            view.reach_budget -= len(found) + 1
            for r in found:
                out.append(
                    Reached(
                        r.terminal,
                        r.role,
                        ((flow.name, call), *r.chain),
                        r.under_lock or held,
                        r.file,
                        r.holder_gets,
                    )
                )
    return out


__all__ = [
    "Assume",
    "Reached",
    "SourceView",
    "container_of_arg",
    "flow_of",
    "lock_sites",
    "member_tail",
    "reach",
]

"""Control flow of one C function, for path-sensitive lifecycle matching.

A `Flow` is a function definition (tree-sitter-c, built by flow_build.py) as a
small control-flow graph whose nodes carry events in evaluation order: calls
(with their arguments as text), assignments and returns. Edges out of a
condition carry an `Assume` (the condition text and which way it went), so a
matcher can tell the branch where `css_tryget()` succeeded from the one where it
failed.

`explore` walks the graph with a matcher's abstract state. States are hashable and
each (node, state) pair is visited once, so loops are followed until the state stops
changing (error paths, early returns, `goto` unwinding and loop `break`s are all
ordinary edges). Kernel loop macros (`list_for_each_entry(...) { }`,
`for_each_node(nid) { }`) are loops whose header assigns the cursor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

# Where an event or condition is in the text its flow was parsed from: (start
# byte, end byte) of its syntax, so a reader that needs more than the text
# (the simulator's expression values) re-parses just that (csource.parse_span).
# Not part of an event's identity: equal text at one line is one event.
Span = tuple[int, int]
NO_SPAN: Span = (0, 0)


# Bound on (node, state) pairs explored per function and matcher: reaching it
# stops the walk (the matcher sees fewer paths, never a wrong one).
MAX_VISITS = 20_000


@dataclass(frozen=True)
class Call:
    """A call (function or macro) with its arguments as whitespace-collapsed text."""

    name: str
    args: tuple[str, ...]
    line: int  # absolute line in the file
    text: str
    guards: tuple[str, ...] = ()  # enclosing if/loop conditions, innermost last
    in_condition: bool = False  # the call is (part of) an if/while condition
    at: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Assign:
    """`lhs = rhs` (also a declaration with an initialiser)."""

    lhs: str
    rhs: str
    line: int
    at: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True)
class Return:
    expr: str | None
    line: int
    at: Span = field(default=NO_SPAN, compare=False, repr=False)


Event = Call | Assign | Return


@dataclass(frozen=True)
class Assume:
    """The condition of a branch and the value it had on this edge."""

    cond: str
    value: bool
    line: int
    at: Span = field(default=NO_SPAN, compare=False, repr=False)


# What a node of the graph is, for a reader that lowers the graph (the
# simulator, simulate/lower.py); a matcher needs only events and edges:
#   ""        a statement (or a part of one: a `for` loop's initialiser, update)
#   "if"      an if's condition: succ (then, else)
#   "loop"    the head of a while or for loop: its condition, succ (body, exit)
#   "do"      the head of a do-while loop (no events): succ (body)
#   "do-test" a do-while's condition: succ (back to the head, exit)
#   "macro"   the head of a loop macro (`list_for_each_entry(...) { }`): succ (body, exit)
#   "switch"  a switch's condition: succ (each case, in order[, past them all])
#   "return", "goto", "label"
#   "arm"     where an #else/#elif arm starts: succ (the arm), `exit` past it
NODE_KINDS = (
    "",
    "if",
    "loop",
    "do",
    "do-test",
    "macro",
    "switch",
    "return",
    "goto",
    "label",
    "arm",
)


@dataclass
class Node:
    id: int
    events: list[Event] = field(default_factory=list)
    succ: list[tuple[int, Assume | None]] = field(default_factory=list)
    kind: str = ""  # one of NODE_KINDS
    at: Span = NO_SPAN  # the syntax the node was built from
    exit: int = -1  # loop heads, switch, arm: the node after the construct
    loops: tuple[int, ...] = ()  # heads of the loops around the node (a head: itself last)


@dataclass
class Flow:
    """The control-flow graph of one function."""

    name: str
    file: str
    start_line: int
    params: tuple[str, ...]
    param_types: tuple[str, ...]
    nodes: dict[int, Node]
    entry: int
    exit: int
    calls: tuple[Call, ...]  # every call, in source order
    # What the graph was built from, as a content key (the text it was parsed
    # in, with its path, and where in it): two flows of one origin are the same
    # graph (the code fingerprint keys the disk cache too). "" when not known.
    origin: str = field(default="", compare=False, repr=False)

    def call_names(self) -> list[str]:
        return [c.name for c in self.calls]


S = TypeVar("S", bound=Hashable)


def explore(
    flow: Flow,
    start: S,
    on_event: Callable[[S, Event], S],
    *,
    on_assume: Callable[[S, Assume], S | None] | None = None,
    on_exit: Callable[[S], None] | None = None,
    max_visits: int = MAX_VISITS,
) -> bool:
    """Walk every path of `flow` with an abstract state; False if the bound was hit.

    `on_event` maps a state over one event; `on_assume` may refine it on a branch
    edge or return None for an edge the state makes impossible; `on_exit` sees each
    state that reaches the function's end.
    """
    seen: set[tuple[int, S]] = set()
    work: list[tuple[int, S]] = [(flow.entry, start)]
    while work:
        nid, state = work.pop()
        if (nid, state) in seen:
            continue
        if len(seen) >= max_visits:
            return False
        seen.add((nid, state))
        node = flow.nodes[nid]
        for ev in node.events:
            state = on_event(state, ev)
        if nid == flow.exit:
            if on_exit is not None:
                on_exit(state)
            continue
        for succ, assume in node.succ:
            nxt: S | None = state
            if assume is not None and _constant(assume.cond) not in (None, assume.value):
                continue  # `while (1)` never exits through its condition
            if assume is not None and on_assume is not None:
                nxt = on_assume(state, assume)
            if nxt is not None:
                work.append((succ, nxt))
    return True


_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})


def _constant(cond: str) -> bool | None:
    """The value of a constant condition (`1`, `true`, `0`, `false`), else None."""
    c = cond.strip()
    return True if c in _TRUE else False if c in _FALSE else None


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


_IDENT = re.compile(r"[A-Za-z_]\w*")
# A pointer cast in front of an object: `(struct pid *)`, `(void *)`, `(unsigned long)`.
_CAST = re.compile(
    r"\(\s*(?:const\s+)?(?:(?:struct|union|enum)\s+)?[A-Za-z_]\w*(?:\s+[A-Za-z_]\w*)*"
    r"\s*\*+\s*\)|\(\s*(?:unsigned\s+)?(?:long|int|char|void)\s*\)"
)


def base_name(expr: str) -> str:
    """The variable an object expression hangs off: `&wb->memcg_css` -> `wb`,
    `(struct pid *)t->id` -> `t`."""
    e = expr.strip()
    while e:
        cast = _CAST.match(e)
        if cast:
            e = e[cast.end() :].strip()
        elif e[:1] in "&*(":
            e = e[1:].strip()
        else:
            break
    m = _IDENT.match(e)
    return m.group(0) if m else ""


def norm_object(expr: str) -> str:
    """Object text without `&`, casts' parentheses or spaces: `&(x->y)` -> `x->y`."""
    e = "".join(expr.split())
    while e.startswith("&") or (e.startswith("(") and e.endswith(")") and _balanced(e[1:-1])):
        e = e[1:] if e.startswith("&") else e[1:-1]
    return e


def mentions(text: str, obj: str) -> bool:
    """True when `text` contains the object expression `obj` as a whole term."""
    o = norm_object(obj)
    if not o:
        return False
    t = "".join(text.split())
    pattern = r"(?<![\w>.])" + re.escape(o) + r"(?![\w])"
    return re.search(pattern, t) is not None


# The builder moved to flow_build.py; code written against `flow` for these
# names (tests, matchers in flight on other branches) still imports them here.
_BUILDER = frozenset(
    {"FunctionNode", "build_flow", "find_definitions", "flow_of_definition", "flows_in_text"}
)


def __getattr__(name: str) -> object:
    if name in _BUILDER:
        from bot.analyze import flow_build

        return getattr(flow_build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NODE_KINDS",
    "Assign",
    "Assume",
    "Call",
    "Event",
    "Flow",
    "Node",
    "Return",
    "Span",
    "base_name",
    "explore",
    "mentions",
    "norm_object",
]

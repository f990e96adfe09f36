"""The explorer's data: the model it runs, the state it searches, what it
reports, and the small pure helpers every part of the search shares (see
explore.py for the search itself).

A state is a tuple (threads, alive, vals, pending, hist):

    threads  one (frames, rv, runs, rcu, acted, inl) per actor or deferred
             thread; frames is a tuple of (function, pc), () when idle or
             done; inl is the frame depth of a release path run inline by a
             shrink (0: none), which must act before it returns
    alive    1/0 per tracked object type
    vals     value per modelled field or counter (None: unknown)
    pending  1/0 per work item
    hist     frozenset of the lifecycle events so far, so that two routes to
             one violation stay apart (the differential compares routes)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bot.analyze.simulate.program import Function, Key, Loc, Val

Frames = tuple[tuple[str, int], ...]
Thread = tuple[Frames, int | None, int, int, int, int]  # frames, rv, runs, rcu depth, acted, inl
State = tuple[
    tuple[Thread, ...],
    tuple[int, ...],
    tuple[int | None, ...],
    tuple[int, ...],
    frozenset[tuple[str, ...]],
]
Foot = tuple[frozenset[tuple[str, ...]], frozenset[tuple[str, ...]]]  # (reads, writes)

EMPTY: frozenset[tuple[str, ...]] = frozenset()
STAR = ("*",)
HELD = ("run", "holders")  # written by every step of a `holds` thread


@dataclass
class ThreadSpec:
    """One thread of the scenario."""

    role: str  # teardown, release, shrink, entry, worker, rcu
    entry: str  # function it runs
    deferred: bool = False  # runs only when its work is queued
    runs: int = 1  # an actor runs its entry this many times, one after the other
    work: Key | None = None
    must_act: bool = False
    # the object stays alive while this actor runs: a ("quiet",) wait (the
    # free a scenario implies after a shutdown) waits until it has finished
    holds: bool = False


@dataclass
class Model:
    """Everything the explorer needs, already resolved to indexes."""

    functions: dict[str, Function]
    threads: list[ThreadSpec]
    tracked: tuple[str, ...]
    fields: tuple[Key, ...]
    initial: tuple[int | None, ...]
    refcounts: frozenset[Key]
    works: tuple[Key, ...]
    release_bindings: dict[Key, str] = field(default_factory=dict)
    release_thread: dict[str, int] = field(default_factory=dict)  # object type -> thread index
    leak_checked: frozenset[str] = frozenset()  # tracked types with an explicit free
    slots: frozenset[Key] = frozenset()  # pointer fields to tracked objects (1: set, 0: NULL)
    worker_runs: int = 3
    counter_max: int = 8
    counter_floor: int = -3  # counters below zero saturate here (underflow is reported first)


@dataclass(frozen=True)
class Event:
    """One visible step of a counterexample, with what it touched (to find the
    steps a violation causally depends on) and the lifecycle events it did."""

    thread: int
    loc: Loc
    text: str
    foot: Foot = (frozenset(), frozenset())
    labels: tuple[str, ...] = ()
    # False for a step that only dereferences a tracked object: it is an
    # interleaving point, but says nothing to the reader of the trace
    telling: bool = True


@dataclass(frozen=True)
class Violation:
    kind: str  # UAF, DOUBLE-FREE, UNDERFLOW, WORK-AFTER-FREE, LEAK
    obj: str
    detail: str
    signature: tuple[object, ...]
    steps: tuple[Event, ...]


@dataclass
class Bounds:
    max_states: int = 200_000
    max_depth: int = 400
    max_seconds: float = 60.0  # the runaway stop (reported as such), never a work bound
    reduction: bool = True
    deadline: float | None = None  # time.monotonic() value: the caller's runaway stop


@dataclass
class Result:
    violations: dict[tuple[object, ...], Violation]
    states: int
    transitions: int
    seconds: float
    complete: bool
    notes: list[str]
    first_violation_seconds: float | None = None
    first_violation_states: int | None = None


class Timeout(Exception):
    """The time bound passed in the middle of a step."""


class Stop(Exception):
    """A violation ends the current step's outcome."""

    def __init__(self, kind: str, obj: str, detail: str, label: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.obj = obj
        self.detail = detail
        self.label = label


class StepCtx:
    """Mutable scratch state of one step."""

    __slots__ = ("alive", "calls", "events", "inline", "notes", "pending", "rcu", "tid", "vals")

    def __init__(self, st: State, tid: int, inline: bool) -> None:
        self.alive = list(st[1])
        self.vals = list(st[2])
        self.pending = list(st[3])
        self.events: list[str] = []
        self.notes: list[str] = []
        self.calls: list[str] = []
        self.inline = inline
        self.rcu = 0
        self.tid = tid


def as_int(x: object) -> int:
    return x if isinstance(x, int) else 0


def conflict(a: Foot, b: Foot, protected: Callable[[str], bool] | None = None) -> bool:
    """Whether a step with footprint `a` and one with `b` may not commute. A
    free guarded by counter K in `b` ("og", obj, K) does not conflict with a
    use of obj in `a` when `protected(K)`: it cannot happen first."""
    if STAR in a[1] or STAR in b[1]:
        return True
    aw = plain_writes(a[1])
    if aw & (b[0] | plain_writes(b[1])):
        return True
    for w in b[1]:
        if w[0] == "og":
            if ("o", w[1]) in a[0] and (protected is None or not protected(w[2])):
                return True
        elif w in a[0]:
            return True
    return False


def plain_writes(ws: frozenset[tuple[str, ...]]) -> frozenset[tuple[str, ...]]:
    """Writes with guarded frees read as plain frees."""
    if not any(w[0] == "og" for w in ws):
        return ws
    return frozenset(("o", w[1]) if w[0] == "og" else w for w in ws)


def guarded(foot: Foot, guard: str | None) -> Foot:
    """Mark the frees of a footprint as guarded by counter `guard`."""
    if guard is None or not any(w[0] == "o" for w in foot[1]):
        return foot
    return foot[0], frozenset(("og", w[1], guard) if w[0] == "o" else w for w in foot[1])


def decrements(v: Val) -> list[str]:
    """Counters a value decrements."""
    out: list[str] = []
    if v[0] == "rmw" and v[1] in ("sub", "sub_ret", "sub_test"):
        out.append(str(v[2]))
    elif v[0] == "put":
        out.append(str(v[1]))
    for p in v[1:]:
        if isinstance(p, tuple):
            out.extend(decrements(p))
    return out


def add_counts(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def compare(op: str, a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return None
    return int(
        {
            "==": a == b,
            "!=": a != b,
            "<": a < b,
            ">": a > b,
            "<=": a <= b,
            ">=": a >= b,
        }[op]
    )


def short(key: str) -> str:
    """`pool:params.nr_items` -> `params->nr_items`."""
    return key.split(":", 1)[-1].replace(".", "->")


def show(v: int | None) -> str:
    return "?" if v is None else str(v)


def strip_if(text: str) -> str:
    return text[1:-1] if text.startswith("(") and text.endswith(")") else text

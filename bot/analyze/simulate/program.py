"""The lifecycle program: what the simulator runs instead of C.

Each C function's flow graph (bot/analyze/flow_build.py) is lowered
(lower.py, for extract.py) into a flat list of `Instr` with jump targets,
always forward, keeping only what matters for object lifecycles. Values
are small tuples so the explorer can evaluate them fast and states stay
hashable:

    ("k", n)                    constant
    ("u",)                      unknown: a branch on it goes both ways
    ("rd", key)                 read of a field or counter of a tracked object
    ("rmw", op, key, refcount)  counter update; op in RMW_OPS; refcount: True
                                when going below zero is an underflow
    ("put", key, release, refcount)  refcount put: at zero calls `release`
                                (a function name) or frees the key's object
    ("wr", key, value)          store to a field
    ("pend", work) ("sched", work) ("cancel", work)
    ("free", obj) ("freercu", obj) ("callrcu", work)
    ("release", obj)            may run the object's pending release path here
    ("rcu", +1 | -1)            rcu_read_lock / rcu_read_unlock
    ("lock", key) ("unlock", key) ("trylock", key)  locks (a WAIT takes one)
    ("not", v) ("and", a, b) ("or", a, b) ("cmp", op, a, b) ("seq", v, ...)
    ("rv",)                     return value of the last call

A `key` is `"type:field.path"`: objects are abstracted by struct type, so
`a->params->nr_items` and `b->params->nr_items`, with `a` and `b` of one
struct type, are one counter. A `work` is the key of a work_struct, rcu_head
or timer field.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

Key = str  # "struct type:field.path", e.g. "pool:params.nr_items"
Val = tuple[object, ...]

UNKNOWN: Val = ("u",)

# Counter updates: add/sub return the new value, *_ret likewise, sub_test
# returns whether the counter reached zero.
RMW_OPS = ("add", "sub", "add_ret", "sub_ret", "sub_test", "add_test", "set")


class Kind(enum.Enum):
    EVAL = "eval"  # evaluate expr for its effects
    BRANCH = "branch"  # evaluate expr, fall through when true, else go to `target`
    JUMP = "jump"
    CALL = "call"  # push a frame of `callee`
    RET = "ret"  # pop a frame; expr (may be None) is the return value
    # block until `expr` holds: ("idle", work) ("flushed", work) ("gp",)
    # ("barrier",); ("lock", key) also takes the lock
    WAIT = "wait"


@dataclass(frozen=True)
class Loc:
    """Where an instruction comes from, for traces."""

    function: str
    file: str
    line: int
    text: str


@dataclass(frozen=True)
class Instr:
    kind: Kind
    loc: Loc
    expr: Val | None = None
    target: int = -1  # BRANCH: index when true; JUMP: index
    callee: str = ""  # CALL
    uses: frozenset[str] = frozenset()  # struct types dereferenced by this instruction
    negate: bool = False  # BRANCH: jump when false instead


@dataclass
class Function:
    """One C function translated; `code` ends with a RET."""

    name: str
    file: str
    line: int
    code: list[Instr] = field(default_factory=list)
    params: tuple[str, ...] = ()  # struct types of pointer parameters, in order
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Binding:
    """A callback bound to a work/rcu/timer field, or the release callback of a
    percpu_ref (INIT_WORK(&x->f, fn), call_rcu(&x->rcu, fn), percpu_ref_init)."""

    kind: str  # "work", "rcu", "release"
    key: Key | None  # the field it is bound to
    callback: str
    where: Loc


def key_object(key: Key) -> str:
    """The struct type a field key belongs to."""
    return key.split(":", 1)[0]


def walk_val(v: Val) -> Iterator[Val]:
    """Every sub-value of v, v first (keys are strings, so never descended into)."""
    yield v
    for part in v[1:]:
        if isinstance(part, tuple):
            yield from walk_val(part)

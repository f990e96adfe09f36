"""The lifecycle program: what the simulator runs instead of C.

Extraction (extract.py) turns each C function into a flat list of `Instr`
with jump targets, keeping only what matters for object lifecycles. Values
are small tuples so the explorer can evaluate them fast and states stay
hashable:

    ("k", n)                    constant
    ("u",)                      unknown: a branch on it goes both ways
    ("rd", key)                 read of a field or counter of a tracked object
    ("rmw", op, key, amount)    counter update; op in RMW_OPS
    ("put", key, owner)         refcount put that frees `owner` at zero
    ("wr", key, value)          store to a field
    ("pend", work) ("sched", work) ("cancel", work)
    ("free", obj) ("freercu", obj) ("callrcu", work)
    ("release", obj)            may run the object's pending release path here
    ("rcu", +1 | -1)            rcu_read_lock / rcu_read_unlock
    ("not", v) ("and", a, b) ("or", a, b) ("cmp", op, a, b) ("seq", v, ...)
    ("rv",)                     return value of the last call

A `key` is `"type:field.path"`: objects are abstracted by struct type,
so `s->memcg_params->nr_pages` and `cachep->memcg_params->nr_pages` are one
counter. A `work` is the key of a work_struct/rcu_head/timer field.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

Key = str  # "struct type:field.path", e.g. "kmem_cache:memcg_params.nr_pages"
Val = tuple[object, ...]

UNKNOWN: Val = ("u",)

# Counter updates: name -> (delta sign, what the expression returns).
RMW_OPS = ("add", "sub", "add_ret", "sub_ret", "sub_test", "add_test", "set")


class Kind(enum.Enum):
    EVAL = "eval"  # evaluate expr for its effects
    BRANCH = "branch"  # evaluate expr, go to `target` when true, else fall through
    JUMP = "jump"
    CALL = "call"  # push a frame of `callee`
    RET = "ret"  # pop a frame; expr (may be None) is the return value
    WAIT = "wait"  # block until `expr` holds: ("idle", work) ("flushed", work) ("gp",) ("barrier",)
    STOP = "stop"  # a path the program cannot follow further (bound reached): ends the thread


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
    """A callback bound to a work/rcu/timer field or an ops slot."""

    kind: str  # "work", "rcu", "timer", "release", "ops"
    key: Key | None  # the field it is bound to (None for ops slots)
    callback: str
    where: Loc
    slot: str = ""  # ops slot name (".css_offline")


def key_object(key: Key) -> str:
    """The struct type a field key belongs to."""
    return key.split(":", 1)[0]


def key_field(key: Key) -> str:
    """The field path of a key, without its struct type."""
    return key.split(":", 1)[1] if ":" in key else key


def walk_val(v: Val) -> Iterator[Val]:
    """Every sub-value of v, v first (keys are strings, so never descended into)."""
    yield v
    for part in v[1:]:
        if isinstance(part, tuple):
            yield from walk_val(part)

"""Exploration: every interleaving of the actors' lifecycle operations.

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

Each thread sits on its next *visible* instruction (one touching shared
state); invisible ones run eagerly after each step. The search is breadth
first, so the first counterexample of each route is a shortest one. Two
reductions, switchable together: a persistent set (a thread whose next step
cannot conflict with anything the other threads may still do runs alone) and
sleep sets (an order equivalent to one already explored is skipped). Bounds on
states, depth and time stop the search and say so.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.analyze.simulate.budget import runaway_note
from bot.analyze.simulate.program import Function, Instr, Key, Kind, Loc, Val, key_object

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

_EMPTY: frozenset[tuple[str, ...]] = frozenset()
_STAR = ("*",)
_HELD = ("run", "holders")  # written by every step of a `holds` thread


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


class _Timeout(Exception):
    """The time bound passed in the middle of a step."""


class _Stop(Exception):
    """A violation ends the current step's outcome."""

    def __init__(self, kind: str, obj: str, detail: str, label: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.obj = obj
        self.detail = detail
        self.label = label


class _Ctx:
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


class Explorer:
    """Runs a Model; see the module docstring."""

    def __init__(self, model: Model, bounds: Bounds) -> None:
        self.m = model
        self.b = bounds
        self.obj_index = {t: i for i, t in enumerate(model.tracked)}
        self.field_index = {k: i for i, k in enumerate(model.fields)}
        self.work_index = {w: i for i, w in enumerate(model.works)}
        self.work_thread = {t.work: i for i, t in enumerate(model.threads) if t.deferred and t.work}
        self.work_owner = {w: self.obj_index.get(key_object(w), -1) for w in model.works}
        self.has_rcu = any(t.role == "rcu" for t in model.threads)
        self._visible: dict[str, list[bool]] = {}
        self._foot: dict[str, list[Foot]] = {}
        self._future: dict[str, list[Foot]] = {}
        self._full: dict[str, Foot] = {}
        self._norm_cache: dict[tuple[Frames, int | None], list[tuple[Frames, int | None]]] = {}
        self._release_guard = self._release_callbacks()
        self._deadline: float | None = None
        self._ticks = 0
        self._bounds_hit: set[str] = set()  # bounds met inside steps, reported at the end
        for name, fn in model.functions.items():
            self._visible[name] = [self._is_visible(i) for i in fn.code]
        self._relevant = self._relevant_functions()
        for name, fn in model.functions.items():
            guards = self._free_guards(name, fn)
            self._foot[name] = [
                _guarded(self._footprint(i), guards[pc]) for pc, i in enumerate(fn.code)
            ]
        self._maxdec: dict[str, list[dict[str, int]]] = {}
        self._compute_futures()
        self._compute_maxdec()

    # ------------------------------------------------------------------ static analysis

    def _val_visible(self, v: Val | None) -> bool:
        if v is None:
            return False
        tag = v[0]
        if tag in ("rd", "wr", "put"):
            if v[1] in self.field_index:
                return True
        elif tag == "rmw":
            if v[2] in self.field_index:
                return True
        elif tag in ("pend", "sched", "cancel", "callrcu"):
            if v[1] in self.work_index:
                return True
        elif tag in ("free", "freercu"):
            if v[1] in self.obj_index:
                return True
        elif tag == "release":
            if v[1] in self.m.release_thread:
                return True
        elif tag == "rcu":
            return self.has_rcu
        elif tag in ("unlock", "trylock"):
            return v[1] in self.field_index
        return any(isinstance(p, tuple) and self._val_visible(p) for p in v[1:])

    def _is_visible(self, ins: Instr) -> bool:
        if ins.kind in (Kind.JUMP, Kind.CALL):
            return False
        if ins.kind == Kind.WAIT:
            e = ins.expr or ("gp",)
            if e[0] in ("gp", "barrier"):
                return self.has_rcu
            if e[0] == "lock":
                return e[1] in self.field_index
            if e[0] == "quiet":
                return True
            return e[1] in self.work_index
        if any(u in self.obj_index for u in ins.uses):
            return True
        return self._val_visible(ins.expr)

    def _val_foot(
        self, v: Val | None, reads: set[tuple[str, ...]], writes: set[tuple[str, ...]]
    ) -> None:
        if v is None:
            return
        tag = v[0]
        if tag == "rd" and v[1] in self.field_index:
            reads.add(("f", str(v[1])))
        elif tag in ("wr", "put") and v[1] in self.field_index:
            writes.add(("f", str(v[1])))
            if tag == "put":
                # the put frees only when its own counter reaches zero
                writes.add(("og", key_object(str(v[1])), str(v[1])))
        elif tag == "rmw" and v[2] in self.field_index:
            writes.add(("f", str(v[2])))
        elif tag in ("sched", "cancel", "callrcu") and v[1] in self.work_index:
            writes.add(("w", str(v[1])))
        elif tag == "pend" and v[1] in self.work_index:
            reads.add(("w", str(v[1])))
        elif tag in ("free", "freercu") and v[1] in self.obj_index:
            writes.add(("o", str(v[1])))
            for w in self.m.works:
                if key_object(w) == v[1]:
                    reads.add(("w", w))
        elif tag == "release" and v[1] in self.m.release_thread:
            writes.add(_STAR)
        elif tag == "rcu":
            writes.add(("rcu",))
        elif tag in ("unlock", "trylock") and v[1] in self.field_index:
            writes.add(("f", str(v[1])))
        for p in v[1:]:
            if isinstance(p, tuple):
                self._val_foot(p, reads, writes)

    def _footprint(self, ins: Instr) -> Foot:
        reads: set[tuple[str, ...]] = {("o", u) for u in ins.uses if u in self.obj_index}
        writes: set[tuple[str, ...]] = set()
        if ins.kind == Kind.WAIT:
            e = ins.expr or ("gp",)
            if e[0] in ("gp", "barrier"):
                reads.add(("rcu",))
            elif e[0] == "lock":
                if e[1] in self.field_index:
                    writes.add(("f", str(e[1])))
            elif e[0] == "quiet":
                reads.add(_HELD)
            else:
                reads.add(("run", str(e[1])))
                reads.add(("w", str(e[1])))
                if str(e[1]) not in self.work_thread:
                    writes.add(("w", str(e[1])))  # no callback thread: the wait runs it
        else:
            self._val_foot(ins.expr, reads, writes)
        return frozenset(reads), frozenset(writes)

    def _relevant_functions(self) -> set[str]:
        """Functions that do something visible, themselves or in a callee. A
        call to any other function is a no-op: following its branches would
        only multiply paths that all end the same."""
        funcs = self.m.functions
        relevant = {n for n in funcs if any(self._visible[n])}
        changed = True
        while changed:
            changed = False
            for name, fn in funcs.items():
                if name in relevant:
                    continue
                for ins in fn.code:
                    callee = ins.callee if ins.kind == Kind.CALL else ""
                    if ins.expr is not None and ins.expr[0] == "put" and ins.expr[2]:
                        callee = callee or str(ins.expr[2])
                    if callee in relevant:
                        relevant.add(name)
                        changed = True
                        break
        return relevant

    # -- refcount guards: a free that only runs once a counter hits zero cannot
    # happen while another thread still holds a unit of that counter

    def _release_callbacks(self) -> dict[str, str]:
        """Functions only ever run as the release callback of a put: name -> counter."""
        called: set[str] = set()
        released: dict[str, str] = {}
        for fn in self.m.functions.values():
            for ins in fn.code:
                if ins.kind == Kind.CALL:
                    called.add(ins.callee)
                elif ins.expr is not None and ins.expr[0] == "put":
                    rel = str(ins.expr[2]) or self.m.release_bindings.get(str(ins.expr[1]), "")
                    if rel:
                        released[rel] = str(ins.expr[1])
        return {f: k for f, k in released.items() if f not in called}

    def _free_guards(self, name: str, fn: Function) -> list[str | None]:
        """Per pc, the counter whose drop to zero guards a free there, if any."""
        n = len(fn.code)
        targets = {i.target for i in fn.code if i.kind in (Kind.BRANCH, Kind.JUMP)}
        whole = self._release_guard.get(name)
        out: list[str | None] = [whole] * n
        for pc in range(n):
            if out[pc] is not None:
                continue
            # walk back through straight-line code to `if (dec_and_test(K))`
            j = pc - 1
            while j >= 0 and fn.code[j].kind in (Kind.EVAL, Kind.CALL) and (j + 1) not in targets:
                j -= 1
            if j >= 0 and (j + 1 == pc or (j + 1) not in targets):
                br = fn.code[j]
                e = br.expr
                if (
                    br.kind == Kind.BRANCH
                    and e is not None
                    and e[0] == "rmw"
                    and e[1] == "sub_test"
                ):
                    out[pc] = str(e[2])
        return out

    def _compute_maxdec(self) -> None:
        """Per function and pc: the most decrements of each counter any path
        from there can still do (callees included; loops are unrolled)."""
        funcs = self.m.functions
        full: dict[str, dict[str, int]] = {}
        busy: set[str] = set()

        def of_function(name: str) -> dict[str, int]:
            if name in full:
                return full[name]
            if name in busy or name not in funcs:
                return {}  # recursion: bounded by the frame limit anyway
            busy.add(name)
            fn = funcs[name]
            n = len(fn.code)
            table: list[dict[str, int]] = [{} for _ in range(n + 1)]
            for pc in range(n - 1, -1, -1):
                ins = fn.code[pc]
                own: dict[str, int] = {}
                if ins.expr is not None:
                    for k in _decs(ins.expr):
                        own[k] = own.get(k, 0) + 1
                    if ins.expr[0] == "put" and ins.expr[2]:
                        _add(own, of_function(str(ins.expr[2])))
                if ins.kind == Kind.CALL:
                    _add(own, of_function(ins.callee))
                best: dict[str, int] = {}
                for nxt in self._succs(ins, pc, n):
                    if nxt > pc:  # unrolled code only goes forward
                        for k, v in table[nxt].items():
                            best[k] = max(best.get(k, 0), v)
                _add(best, own)
                table[pc] = best
            busy.discard(name)
            self._maxdec[name] = table[:n]
            full[name] = table[0] if n else {}
            return full[name]

        for name in funcs:
            of_function(name)
        self._maxdec_full = full

    def _others_maxdec(self, st: State, tid: int, key: str) -> int:
        total = 0
        for u, th in enumerate(st[0]):
            if u == tid:
                continue
            for name, pc in th[0]:
                total += self._maxdec[name][pc].get(key, 0)
            spec = self.m.threads[u]
            if spec.deferred:
                runs_left = max(0, self.m.worker_runs - th[2])
                total += runs_left * self._maxdec_full.get(spec.entry, {}).get(key, 0)
            else:
                # runs still to come after the one the frames show (an actor
                # that has not stepped yet sits in its first run)
                extra = spec.runs - max(th[2], 1) if th[0] or th[2] else 0
                total += max(0, extra) * self._maxdec_full.get(spec.entry, {}).get(key, 0)
        return total

    def _protected(self, st: State, tid: int, key: str) -> bool:
        """Thread tid's next step happens before any free guarded by `key`:
        the others cannot bring the counter to zero on their own."""
        i = self.field_index.get(key)
        if i is None:
            return False
        val = st[2][i]
        return val is not None and val - self._others_maxdec(st, tid, key) >= 1

    def _compute_futures(self) -> None:
        funcs = self.m.functions
        # whole-function footprints, closed over calls (fixpoint: recursion is rare)
        full: dict[str, tuple[set[tuple[str, ...]], set[tuple[str, ...]]]] = {}
        for name in funcs:
            r: set[tuple[str, ...]] = set()
            w: set[tuple[str, ...]] = set()
            for fr, fw in self._foot[name]:
                r |= fr
                w |= fw
            full[name] = (r, w)
        changed = True
        while changed:
            changed = False
            for name, fn in funcs.items():
                r, w = full[name]
                for ins in fn.code:
                    callees = [ins.callee] if ins.kind == Kind.CALL else []
                    if ins.expr and ins.expr[0] == "put" and ins.expr[2]:
                        callees.append(str(ins.expr[2]))
                    for c in callees:
                        if c in full and not (full[c][0] <= r and full[c][1] <= w):
                            r |= full[c][0]
                            w |= full[c][1]
                            changed = True
        for name in funcs:
            self._full[name] = (frozenset(full[name][0]), frozenset(full[name][1]))
        # per-pc futures: everything reachable from pc in the function, callees included
        for name, fn in funcs.items():
            n = len(fn.code)
            fut: list[tuple[set[tuple[str, ...]], set[tuple[str, ...]]]] = [
                (set(), set()) for _ in range(n)
            ]
            changed = True
            while changed:
                changed = False
                for pc in range(n - 1, -1, -1):
                    ins = fn.code[pc]
                    r = set(self._foot[name][pc][0])
                    w = set(self._foot[name][pc][1])
                    if ins.kind == Kind.CALL and ins.callee in self._full:
                        r |= self._full[ins.callee][0]
                        w |= self._full[ins.callee][1]
                    for s in self._succs(ins, pc, n):
                        r |= fut[s][0]
                        w |= fut[s][1]
                    if len(r) != len(fut[pc][0]) or len(w) != len(fut[pc][1]):
                        fut[pc] = (r, w)
                        changed = True
            self._future[name] = [(frozenset(a), frozenset(b)) for a, b in fut]

    @staticmethod
    def _succs(ins: Instr, pc: int, n: int) -> list[int]:
        if ins.kind == Kind.RET:
            return []
        if ins.kind == Kind.JUMP:
            return [ins.target] if 0 <= ins.target < n else []
        out = [pc + 1] if pc + 1 < n else []
        if ins.kind == Kind.BRANCH and 0 <= ins.target < n:
            out.append(ins.target)
        return out

    # ------------------------------------------------------------------ dynamic helpers

    def initial_states(self) -> list[State]:
        threads: list[list[Thread]] = []
        for spec in self.m.threads:
            if spec.deferred or spec.entry not in self.m.functions:
                threads.append([((), None, 0, 0, 0, 0)])
                continue
            opts: list[Thread] = [
                (fr, rv, 0, 0, 0, 0)
                for fr, rv in self._normalize((((spec.entry, 0),), None))
                # a must-act actor that can end without touching anything: another object's run
                if fr or not spec.must_act
            ]
            if not opts:
                return []  # a must-act actor that never acts: no scenario at all
            threads.append(opts)
        combos: list[tuple[Thread, ...]] = [()]
        for opts in threads:
            combos = [(*c, o) for c in combos for o in opts]
        alive = tuple(1 for _ in self.m.tracked)
        pending = tuple(0 for _ in self.m.works)
        return [(c, alive, self.m.initial, pending, frozenset()) for c in combos[:64]]

    def _normalize(self, start: tuple[Frames, int | None]) -> list[tuple[Frames, int | None]]:
        """Run invisible instructions from `start`; every visible position (or
        the empty frame stack) it can reach."""
        cached = self._norm_cache.get(start)
        if cached is not None:
            return cached
        out: list[tuple[Frames, int | None]] = []
        seen: set[tuple[Frames, int | None]] = set()
        todo = [start]
        funcs = self.m.functions
        while todo:
            cur = todo.pop()
            if cur in seen:
                continue
            seen.add(cur)
            self._ticks += 1
            if (
                self._deadline is not None
                and not self._ticks % 4096
                and time.monotonic() > self._deadline
            ):
                raise _Timeout
            frames, rv = cur
            if not frames:
                out.append(cur)
                continue
            if len(frames) > 24:
                out.append(((), rv))  # runaway recursion: end the thread
                continue
            name, pc = frames[-1]
            fn = funcs[name]
            if pc >= len(fn.code):
                todo.append((frames[:-1], rv))
                continue
            if self._visible[name][pc]:
                out.append(cur)
                continue
            ins = fn.code[pc]
            k = ins.kind
            if k == Kind.JUMP:
                todo.append(((*frames[:-1], (name, ins.target)), rv))
            elif k == Kind.CALL:
                nxt = (*frames[:-1], (name, pc + 1))
                if ins.callee in self._relevant:
                    todo.append(((*nxt, (ins.callee, 0)), None))
                else:
                    todo.append((nxt, None))
            elif k == Kind.RET:
                todo.append((frames[:-1], self._const(ins.expr)))
            elif k == Kind.BRANCH:
                truth = self._const(ins.expr, rv)
                if truth is None or truth:
                    todo.append(((*frames[:-1], (name, pc + 1)), rv))
                if truth is None or not truth:
                    todo.append(((*frames[:-1], (name, ins.target)), rv))
            else:  # EVAL / WAIT without modelled effects
                todo.append(((*frames[:-1], (name, pc + 1)), rv))
        self._norm_cache[start] = out
        return out

    def _const(self, v: Val | None, rv: int | None = None) -> int | None:
        """Evaluate a value with no modelled state in it."""
        if v is None:
            return None
        tag = v[0]
        if tag == "k":
            return _int(v[1])
        if tag == "rv":
            return rv
        if tag == "not":
            x = self._const(v[1], rv)  # type: ignore[arg-type]
            return None if x is None else int(not x)
        if tag == "and":
            a = self._const(v[1], rv)  # type: ignore[arg-type]
            b = self._const(v[2], rv)  # type: ignore[arg-type]
            if a == 0 or b == 0:
                return 0
            return 1 if a is not None and b is not None else None
        if tag == "or":
            a = self._const(v[1], rv)  # type: ignore[arg-type]
            b = self._const(v[2], rv)  # type: ignore[arg-type]
            if (a is not None and a != 0) or (b is not None and b != 0):
                return 1
            return 0 if a == 0 and b == 0 else None
        if tag == "cmp":
            return _compare(str(v[1]), self._const(v[2], rv), self._const(v[3], rv))  # type: ignore[arg-type]
        if tag == "seq":
            return self._const(v[-1], rv)  # type: ignore[arg-type]
        return None

    # ------------------------------------------------------------------ evaluation

    def _eval(self, v: Val, c: _Ctx, rv: int | None, ann: list[str]) -> int | None:
        tag = v[0]
        m = self.m
        if tag == "k":
            return _int(v[1])
        if tag == "u":
            return None
        if tag == "rv":
            return rv
        if tag == "not":
            x = self._eval(v[1], c, rv, ann)  # type: ignore[arg-type]
            return None if x is None else int(not x)
        if tag == "and":
            a = self._eval(v[1], c, rv, ann)  # type: ignore[arg-type]
            if a == 0:
                return 0
            b = self._eval(v[2], c, rv, ann)  # type: ignore[arg-type]
            if b == 0:
                return 0
            return 1 if a is not None and b is not None else None
        if tag == "or":
            a = self._eval(v[1], c, rv, ann)  # type: ignore[arg-type]
            if a:
                return 1
            b = self._eval(v[2], c, rv, ann)  # type: ignore[arg-type]
            if b:
                return 1
            return 0 if a == 0 and b == 0 else None
        if tag == "cmp":
            a = self._eval(v[2], c, rv, ann)  # type: ignore[arg-type]
            b = self._eval(v[3], c, rv, ann)  # type: ignore[arg-type]
            return _compare(str(v[1]), a, b)
        if tag == "seq":
            out: int | None = None
            for p in v[1:]:
                out = self._eval(p, c, rv, ann)  # type: ignore[arg-type]
            return out
        if tag == "rd":
            i = self.field_index.get(str(v[1]))
            if i is None:
                return None
            val = c.vals[i]
            if v[1] in self.m.slots:
                ann.append(f"{_short(str(v[1]))} {'set' if val else 'NULL' if val == 0 else '?'}")
            else:
                ann.append(f"{_short(str(v[1]))} == {_show(val)}")
            return val
        if tag == "wr":
            i = self.field_index.get(str(v[1]))
            new = self._eval(v[2], c, rv, ann)  # type: ignore[arg-type]
            if i is not None:
                c.vals[i] = new
                c.events.append(f"write {_short(str(v[1]))}={_show(new)}")
                shown = ("NULL" if new == 0 else "set") if v[1] in self.m.slots else _show(new)
                ann.append(f"{_short(str(v[1]))} = {shown}")
            return new
        if tag == "rmw":
            return self._rmw(v, c, ann)
        if tag == "put":
            return self._put(v, c, ann)
        if tag in ("sched", "cancel", "pend", "callrcu"):
            return self._work(v, c, ann)
        if tag in ("free", "freercu"):
            obj = str(v[1])
            if tag == "freercu":
                # kfree_rcu: the free happens after a grace period; the model frees
                # at once, which is what matters for later uses by this actor
                pass
            self._free(obj, c, ann)
            return None
        if tag == "release":
            obj = str(v[1])
            tid = m.release_thread.get(obj)
            if tid is not None and c.inline:
                c.calls.append(f"release:{tid}")
                ann.append("gives the last unit back through the release path")
                c.events.append(f"shrink-release {obj}")
            elif tid is not None:
                ann.append("no unit given back here")
            return None
        if tag == "rcu":
            c.rcu += _int(v[1])
            return None
        if tag in ("unlock", "trylock"):
            li = self.field_index.get(str(v[1]))
            if li is None:
                return None
            if tag == "unlock":
                c.vals[li] = 0
                ann.append("released")
                return None
            if c.vals[li] in (0, c.tid + 1):
                c.vals[li] = c.tid + 1
                ann.append("taken")
                return 1
            ann.append("busy")
            return 0
        return None

    def _rmw(self, v: Val, c: _Ctx, ann: list[str]) -> int | None:
        _, op, key, refc = v
        i = self.field_index.get(str(key))
        if i is None:
            return None
        old = c.vals[i]
        name = _short(str(key))
        if old is None:
            new: int | None = None
        elif op in ("add", "add_ret", "add_test"):
            new = min(old + 1, self.m.counter_max)
            if new == old:
                self._bounds_hit.add(
                    f"counter bound reached ({self.m.counter_max}): counters saturate"
                )
        else:
            new = max(old - 1, self.m.counter_floor)
        if op == "set":
            new = 1
        c.vals[i] = new
        verb = "inc" if op in ("add", "add_ret", "add_test") else "dec"
        c.events.append(f"{verb} {name}")
        ann.append(f"{name} {_show(old)} -> {_show(new)}")
        if new is not None and new < 0 and (refc or key in self.m.refcounts):
            raise _Stop(
                "UNDERFLOW", key_object(str(key)), f"{name} drops below zero", f"{verb} {name}"
            )
        if op in ("sub_test", "add_test"):
            return None if new is None else int(new == 0)
        if op in ("add_ret", "sub_ret"):
            return new
        return new

    def _put(self, v: Val, c: _Ctx, ann: list[str]) -> int | None:
        _, key, release, _ = v
        i = self.field_index.get(str(key))
        if i is None:
            return None
        name = _short(str(key))
        old = c.vals[i]
        new = None if old is None else max(old - 1, self.m.counter_floor)
        c.vals[i] = new
        c.events.append(f"put {name}")
        ann.append(f"{name} {_show(old)} -> {_show(new)}")
        if new is not None and new < 0:
            raise _Stop(
                "UNDERFLOW", key_object(str(key)), f"{name} drops below zero", f"put {name}"
            )
        if new == 0:
            fn = str(release) or self.m.release_bindings.get(str(key), "")
            if fn and fn in self.m.functions:
                ann.append(f"calls {fn}()")
                c.calls.append(fn)
            else:
                self._free(key_object(str(key)), c, ann)
        return None

    def _work(self, v: Val, c: _Ctx, ann: list[str]) -> int | None:
        tag, work = v[0], str(v[1])
        i = self.work_index.get(work)
        if i is None:
            return None
        owner = self.work_owner.get(work, -1)
        name = _short(work)
        if tag == "pend":
            ann.append("pending" if c.pending[i] else "not pending")
            return c.pending[i]
        if tag == "cancel":
            was = c.pending[i]
            c.pending[i] = 0
            c.events.append(f"cancel {name}")
            ann.append("was pending" if was else "was not pending")
            return was
        # sched / callrcu
        if owner >= 0 and not c.alive[owner]:
            raise _Stop(
                "WORK-AFTER-FREE",
                self.m.tracked[owner],
                f"{name} queued on a freed {self.m.tracked[owner]}",
                f"queue {name}",
            )
        if c.pending[i]:
            ann.append("already pending: no-op")
            return 0
        c.pending[i] = 1
        c.events.append(f"queue {name}")
        ann.append("queued")
        return 1

    def _free(self, obj: str, c: _Ctx, ann: list[str]) -> None:
        i = self.obj_index.get(obj)
        if i is None:
            return
        if not c.alive[i]:
            raise _Stop("DOUBLE-FREE", obj, f"struct {obj} freed twice", f"free {obj}")
        c.alive[i] = 0
        c.events.append(f"free {obj}")
        ann.append(f"frees struct {obj}")
        for w, wi in self.work_index.items():
            if self.work_owner.get(w) == i and c.pending[wi]:
                raise _Stop(
                    "WORK-AFTER-FREE",
                    obj,
                    f"struct {obj} freed while {_short(w)} is still queued",
                    f"free {obj}",
                )

    # ------------------------------------------------------------------ steps

    def enabled(self, st: State, tid: int) -> bool:
        th = st[0][tid]
        frames = th[0]
        spec = self.m.threads[tid]
        if not frames:
            if not spec.deferred or spec.work is None:
                return False
            wi = self.work_index.get(spec.work)
            if wi is None or not st[3][wi] or th[2] >= self.m.worker_runs:
                return False
            if spec.role == "rcu":
                return all(t[3] == 0 for j, t in enumerate(st[0]) if j != tid)
            return True
        name, pc = frames[-1]
        ins = self.m.functions[name].code[pc]
        if ins.kind != Kind.WAIT:
            return True
        e = ins.expr or ("gp",)
        if e[0] == "lock":
            li = self.field_index.get(str(e[1]))
            return li is None or st[2][li] in (0, tid + 1)
        if e[0] == "gp":
            return all(t[3] == 0 for j, t in enumerate(st[0]) if j != tid)
        if e[0] == "quiet":
            return not any(
                st[0][j][0] for j, t in enumerate(self.m.threads) if t.holds and j != tid
            )
        if e[0] == "barrier":
            return not any(
                st[3][self.work_index[t.work]] or st[0][j][0]
                for j, t in enumerate(self.m.threads)
                if t.role == "rcu" and t.work in self.work_index
            )
        worker = self.work_thread.get(str(e[1]))
        if worker is None or worker == tid:
            return True
        idle = not st[0][worker][0]
        if e[0] == "flushed":
            return idle and not st[3][self.work_index[str(e[1])]]
        return idle

    def step_foot(self, st: State, tid: int) -> Foot:
        th = st[0][tid]
        spec = self.m.threads[tid]
        if not th[0]:
            work = str(spec.work)
            reads: set[tuple[str, ...]] = {("o", key_object(work))}
            if spec.role == "rcu":
                reads.add(("rcu",))
            return frozenset(reads), frozenset({("w", work), ("run", work)})
        name, pc = th[0][-1]
        r, w = self._foot[name][pc]
        if spec.deferred:
            w = w | {("run", str(spec.work))}
        if spec.holds:
            w = w | {_HELD}
        return r, w

    def future_foot(self, st: State, tid: int) -> Foot:
        th = st[0][tid]
        spec = self.m.threads[tid]
        reads: set[tuple[str, ...]] = set()
        writes: set[tuple[str, ...]] = set()
        for name, pc in th[0]:
            fr, fw = self._future[name][pc]
            reads |= fr
            writes |= fw
        if spec.holds and th[0]:
            writes.add(_HELD)
        if spec.deferred and spec.entry in self._full:
            # a worker can be queued again by anyone: all it may ever do
            fr, fw = self._full[spec.entry]
            reads |= fr | {("o", key_object(str(spec.work))), ("rcu",)}
            writes |= fw | {("w", str(spec.work)), ("run", str(spec.work))}
        if spec.entry in self._full and (
            (spec.role == "release" and not th[2])
            or (not spec.deferred and spec.runs > max(th[2], 1))
        ):
            fr, fw = self._full[spec.entry]
            reads |= fr
            writes |= fw
        return frozenset(reads), frozenset(writes)

    def successors(self, st: State, tid: int) -> list[tuple[State, Event, _Stop | None]]:
        """Every outcome of thread tid's next step: (state, trace event, violation)."""
        threads = st[0]
        th = threads[tid]
        spec = self.m.threads[tid]
        frames, rv, runs, rcu, acted, inl = th
        outs: list[tuple[State, Event, _Stop | None]] = []
        if not frames:
            # a deferred thread starts: its work is dequeued
            w = str(spec.work)
            wi = self.work_index[w]
            pending = list(st[3])
            pending[wi] = 0
            fn = self.m.functions[spec.entry]
            loc = Loc(spec.entry, fn.file, fn.line, f"{spec.entry}()")
            owner = self.work_owner.get(w, -1)
            text = f"starts: {_short(w)} dequeued"
            if owner >= 0 and not st[1][owner]:
                ran = _Stop(
                    "WORK-AFTER-FREE",
                    self.m.tracked[owner],
                    f"{_short(w)} runs after struct {self.m.tracked[owner]} was freed",
                    f"run {_short(w)}",
                )
                return [(st, Event(tid, loc, text, self.step_foot(st, tid)), ran)]
            for fr, nrv in self._normalize((((spec.entry, 0),), None)):
                nth: Thread = (fr, nrv, runs + 1, rcu, acted, 0)
                new = self._finish(st, tid, nth, (st[1], st[2], tuple(pending), st[4]))
                if new is not None:
                    outs.append((new, Event(tid, loc, text, self.step_foot(st, tid)), None))
            return outs
        name, pc = frames[-1]
        fn = self.m.functions[name]
        ins = fn.code[pc]
        text = ins.loc.text
        if ins.kind == Kind.BRANCH:
            text = f"if ({_strip_if(text)})"
        used = self._freed_uses(st, ins)
        if used:
            # the step dereferences freed objects before it does anything: one
            # violation per object (it is the same whichever variant runs)
            foot = self.step_foot(st, tid)
            for why in used:
                shown = f"{text}  [{why.kind}: {why.detail}]"
                outs.append((st, Event(tid, ins.loc, shown, foot, (why.label,), True), why))
            return outs
        variants = [False]
        if ins.expr is not None and self._has_release(ins.expr) and self._release_available(st):
            variants.append(True)
        for inline in variants:
            c = _Ctx(st, tid, inline)
            ann: list[str] = []
            stop: _Stop | None = None
            truth: int | None = None
            try:
                if ins.kind == Kind.WAIT:
                    truth = 1
                    e = ins.expr or ("gp",)
                    if e[0] == "lock":
                        li = self.field_index.get(str(e[1]))
                        if li is not None:
                            c.vals[li] = tid + 1
                            ann.append("taken")
                    elif e[0] in ("idle", "flushed") and str(e[1]) not in self.work_thread:
                        # a work whose callback is not simulated has run once
                        # the wait returns: nothing of it stays queued
                        fw = self.work_index.get(str(e[1]))
                        if fw is not None and c.pending[fw]:
                            c.pending[fw] = 0
                            c.events.append(f"flush {_short(str(e[1]))}")
                            ann.append("ran (callback not simulated)")
                elif ins.expr is not None:
                    truth = self._eval(ins.expr, c, rv, ann)
            except _Stop as exc:
                stop = exc
            if stop is not None:
                ann.append(f"{stop.kind}: {stop.detail}")
            shown = text + ("  [" + "; ".join(dict.fromkeys(ann)) + "]" if ann else "")
            labels = (*c.events, stop.label) if stop is not None else tuple(c.events)
            telling = bool(ann)
            event = Event(tid, ins.loc, shown, self.step_foot(st, tid), labels, telling)
            if stop is not None:
                outs.append((st, event, stop))
                continue
            hist = st[4]
            new_acted = acted
            new_inl = 0 if c.events else inl
            if c.events:
                # events name the role and the operation, not the function, so a
                # route survives a refactor that renames or splits functions
                role = spec.role
                hist = hist | {(role, e) for e in c.events}
                new_acted = 1
            # control flow
            base = frames[:-1]
            nexts: list[tuple[Frames, int | None]] = []
            if ins.kind == Kind.RET:
                nexts.append((base, truth))
            elif ins.kind == Kind.BRANCH:
                if truth is None or truth:
                    nexts.append(((*base, (name, pc + 1)), rv))
                if truth is None or not truth:
                    nexts.append(((*base, (name, ins.target)), rv))
            else:
                nexts.append(((*base, (name, pc + 1)), rv if ins.kind == Kind.WAIT else truth))
            threads_l = list(threads)
            for call in c.calls:
                if call.startswith("release:"):
                    rt = int(call.split(":", 1)[1])
                    rspec = self.m.threads[rt]
                    # the release actor's one run happens here, inside this call
                    nexts = [((*f, (rspec.entry, 0)), None) for f, _ in nexts]
                    threads_l[rt] = ((), None, 1, 0, 1, 0)
                    new_inl = len(frames) + 1  # depth of the release frame, above the caller's
                else:
                    nexts = [((*f, (call, 0)), None) for f, _ in nexts]
            for fr0, rv0 in nexts:
                for fr, nrv in self._normalize((fr0, rv0)):
                    if new_inl and len(fr) < new_inl:
                        continue  # the inline release returned without giving anything back
                    base_st: State = (tuple(threads_l), st[1], st[2], st[3], st[4])
                    rest = (tuple(c.alive), tuple(c.vals), tuple(c.pending), hist)
                    run_no = max(runs, 1)
                    if not fr and not spec.deferred and run_no < spec.runs:
                        if spec.must_act and not new_acted:
                            continue  # this run never acted: another object's run
                        # the actor's next run starts where the last one ended
                        for fr2, rv2 in self._normalize((((spec.entry, 0),), None)):
                            again: Thread = (fr2, rv2, run_no + 1, rcu + c.rcu, 0, 0)
                            new = self._finish(base_st, tid, again, rest)
                            if new is not None:
                                outs.append((new, event, None))
                        continue
                    nth = (fr, nrv, run_no, rcu + c.rcu, new_acted, new_inl)
                    new = self._finish(base_st, tid, nth, rest)
                    if new is not None:
                        outs.append((new, event, None))
        return outs

    def _finish(
        self,
        st: State,
        tid: int,
        th: Thread,
        rest: tuple[
            tuple[int, ...], tuple[int | None, ...], tuple[int, ...], frozenset[tuple[str, ...]]
        ],
    ) -> State | None:
        """The state after thread tid's step, or None when the step ends a run of
        a must-act actor that never acted (another object's run)."""
        alive, vals, pending, hist = rest
        spec = self.m.threads[tid]
        if not th[0] and spec.must_act and not th[4]:
            return None  # this run never touched the object: another object's run
        threads = list(st[0])
        threads[tid] = th
        return (tuple(threads), alive, vals, pending, hist)

    def _freed_uses(self, st: State, ins: Instr) -> list[_Stop]:
        """A violation for every freed object instruction `ins` dereferences, in
        the order of the tracked types: each is a route of its own (an object
        picked from the set of uses would depend on string hashing)."""
        out: list[_Stop] = []
        if not ins.uses:
            return out
        for oi, u in enumerate(self.m.tracked):
            if st[1][oi] or u not in ins.uses:
                continue
            if ins.expr is not None and self._drops_ref(ins.expr, u):
                # a put on an object its last put already freed: the
                # reference was dropped once too often
                out.append(
                    _Stop(
                        "UNDERFLOW",
                        u,
                        f"a reference to struct {u} is dropped after the last one freed it",
                        f"put {u}",
                    )
                )
            else:
                out.append(_Stop("UAF", u, f"struct {u} used after it was freed", f"use {u}"))
        return out

    def _drops_ref(self, v: Val, obj: str) -> bool:
        if v[0] == "put" and key_object(str(v[1])) == obj:
            return True
        if (
            v[0] == "rmw"
            and v[1] in ("sub", "sub_ret", "sub_test")
            and key_object(str(v[2])) == obj
        ):
            return bool(v[3]) or str(v[2]) in self.m.refcounts
        return any(isinstance(p, tuple) and self._drops_ref(p, obj) for p in v[1:])

    def _has_release(self, v: Val) -> bool:
        if v[0] == "release":
            return v[1] in self.m.release_thread
        return any(isinstance(p, tuple) and self._has_release(p) for p in v[1:])

    def _release_available(self, st: State) -> bool:
        return any(st[0][t][2] == 0 for t in self.m.release_thread.values())

    # ------------------------------------------------------------------ search

    def run(self, on_progress: Callable[[int], None] | None = None) -> Result:
        started = time.monotonic()
        notes: list[str] = []
        n = len(self.m.threads)
        parent: dict[State, tuple[State | None, Event | None]] = {}
        sleep_of: dict[State, frozenset[int]] = {}
        depth: dict[State, int] = {}
        queue: deque[State] = deque()
        deadline = self.b.deadline or started + self.b.max_seconds
        self._deadline = deadline
        timed_out = False
        try:
            initial = self.initial_states()
        except _Timeout:
            initial, timed_out = [], True
        for s in initial:
            if s not in parent:
                parent[s] = (None, None)
                sleep_of[s] = frozenset()
                depth[s] = 0
                queue.append(s)
        violations: dict[tuple[object, ...], Violation] = {}
        expanded = 0
        transitions = 0
        complete = True
        first_t: float | None = None
        first_n: int | None = None
        deadlocks = 0
        reduce_on = self.b.reduction

        def trace(s: State, last: Event | None) -> tuple[Event, ...]:
            out: list[Event] = [] if last is None else [last]
            cur: State | None = s
            while cur is not None:
                p, ev = parent[cur]
                if ev is not None:
                    out.append(ev)
                cur = p
            out.reverse()
            return tuple(out)

        def record(stop: _Stop, s: State, tid: int | None, ev: Event | None) -> None:
            nonlocal first_t, first_n
            kind, obj, detail = stop.kind, stop.obj, stop.detail
            steps = trace(s, ev)
            # a violation at a step is identified by the steps it causally
            # depends on (the same in every equivalent order, so the reduced
            # search and the full one agree); a leak by everything that ran
            hist = frozenset(s[4]) if tid is None else self._causal_events(steps)
            sig = (kind, obj, hist)
            if sig not in violations:
                violations[sig] = Violation(kind, obj, detail, sig, steps)
                if first_t is None:
                    first_t = time.monotonic() - started
                    first_n = expanded

        try:
            while queue:
                s = queue.popleft()
                expanded += 1
                if expanded > self.b.max_states:
                    complete = False
                    notes.append(f"state bound reached ({self.b.max_states} states)")
                    break
                if expanded % 256 == 0:
                    if time.monotonic() > deadline:
                        timed_out = True
                        break
                    if on_progress:
                        on_progress(expanded)
                d = depth[s]
                enabled = [t for t in range(n) if self.enabled(s, t)]
                if not enabled:
                    if any(th[0] for th in s[0]):
                        deadlocks += 1
                        continue
                    if any(
                        t.deferred and t.work in self.work_index and s[3][self.work_index[t.work]]
                        for t in self.m.threads
                    ):
                        # queued work its worker may not run again: not drained
                        self._bounds_hit.add(
                            f"worker run bound reached ({self.m.worker_runs} runs): "
                            "queued work left undrained"
                        )
                        continue
                    for oi, obj in enumerate(self.m.tracked):
                        if s[1][oi] and obj in self.m.leak_checked:
                            record(
                                _Stop("LEAK", obj, f"struct {obj} is never freed", ""),
                                s,
                                None,
                                None,
                            )
                    continue
                if d >= self.b.max_depth:
                    if complete:
                        notes.append(f"depth bound reached ({self.b.max_depth} steps on one path)")
                    complete = False
                    continue
                sleep = sleep_of[s]
                chosen = enabled
                if reduce_on:
                    chosen = self._ample(s, enabled)
                foot = (
                    {t: self.step_foot(s, t) for t in set(chosen) | set(sleep)} if reduce_on else {}
                )
                done: list[int] = []
                for t in chosen:
                    if t in sleep:
                        continue
                    for new, ev, stop in self.successors(s, t):
                        transitions += 1
                        if stop is not None:
                            record(stop, s, t, ev)
                            continue
                        if reduce_on:
                            new_sleep = frozenset(
                                u
                                for u in (*sleep, *done)
                                if u != t and not _conflict(foot[u], foot[t])
                            )
                        else:
                            new_sleep = frozenset()
                        old = sleep_of.get(new)
                        if old is None:
                            parent[new] = (s, ev)
                            sleep_of[new] = new_sleep
                            depth[new] = d + 1
                            queue.append(new)
                        elif not old <= new_sleep:
                            sleep_of[new] = old & new_sleep
                            queue.append(new)
                    done.append(t)
        except _Timeout:
            timed_out = True
        if timed_out:
            complete = False
            notes.append(runaway_note(self.b.max_seconds, f"after {expanded} states explored"))
        notes.extend(sorted(self._bounds_hit))
        if self._bounds_hit and any("worker run" in n for n in self._bounds_hit):
            complete = False
        if deadlocks:
            notes.append(
                f"{deadlocks} end state(s) with an actor blocked forever (not reported as findings)"
            )
        return Result(
            violations=violations,
            states=expanded,
            transitions=transitions,
            seconds=time.monotonic() - started,
            complete=complete,
            notes=notes,
            first_violation_seconds=first_t,
            first_violation_states=first_n,
        )

    def _causal_events(self, steps: tuple[Event, ...]) -> frozenset[tuple[str, ...]]:
        """(role, event) of the last step and every step it depends on: same
        thread earlier, or a conflicting footprint, transitively."""
        keep = [len(steps) - 1]
        for i in range(len(steps) - 2, -1, -1):
            e = steps[i]
            for j in keep:
                later = steps[j]
                if (
                    later.thread == e.thread
                    or _conflict(e.foot, later.foot)
                    or _conflict(later.foot, e.foot)
                ):
                    keep.append(i)
                    break
        return frozenset(
            (self.m.threads[steps[i].thread].role, label) for i in keep for label in steps[i].labels
        )

    def _ample(self, s: State, enabled: list[int]) -> list[int]:
        """A single thread whose next step conflicts with nothing any other
        thread may still do (a persistent set), else every enabled thread."""
        if len(enabled) <= 1:
            return enabled
        futures: dict[int, Foot] | None = None
        for t in enabled:
            ft = self.step_foot(s, t)
            if _STAR in ft[1]:
                continue
            if futures is None:
                futures = {u: self.future_foot(s, u) for u in range(len(self.m.threads))}

            def guard(key: str, t: int = t) -> bool:
                return self._protected(s, t, key)

            if all(u == t or not _conflict(ft, futures[u], guard) for u in futures):
                return [t]
        return enabled


def _int(x: object) -> int:
    return x if isinstance(x, int) else 0


def _conflict(a: Foot, b: Foot, protected: Callable[[str], bool] | None = None) -> bool:
    """Whether a step with footprint `a` and one with `b` may not commute. A
    free guarded by counter K in `b` ("og", obj, K) does not conflict with a
    use of obj in `a` when `protected(K)`: it cannot happen first."""
    if _STAR in a[1] or _STAR in b[1]:
        return True
    aw = _plain(a[1])
    if aw & (b[0] | _plain(b[1])):
        return True
    for w in b[1]:
        if w[0] == "og":
            if ("o", w[1]) in a[0] and (protected is None or not protected(w[2])):
                return True
        elif w in a[0]:
            return True
    return False


def _plain(ws: frozenset[tuple[str, ...]]) -> frozenset[tuple[str, ...]]:
    """Writes with guarded frees read as plain frees."""
    if not any(w[0] == "og" for w in ws):
        return ws
    return frozenset(("o", w[1]) if w[0] == "og" else w for w in ws)


def _guarded(foot: Foot, guard: str | None) -> Foot:
    """Mark the frees of a footprint as guarded by counter `guard`."""
    if guard is None or not any(w[0] == "o" for w in foot[1]):
        return foot
    return foot[0], frozenset(("og", w[1], guard) if w[0] == "o" else w for w in foot[1])


def _decs(v: Val) -> list[str]:
    """Counters a value decrements."""
    out: list[str] = []
    if v[0] == "rmw" and v[1] in ("sub", "sub_ret", "sub_test"):
        out.append(str(v[2]))
    elif v[0] == "put":
        out.append(str(v[1]))
    for p in v[1:]:
        if isinstance(p, tuple):
            out.extend(_decs(p))
    return out


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def _compare(op: str, a: int | None, b: int | None) -> int | None:
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


def _short(key: str) -> str:
    """`pool:params.nr_items` -> `params->nr_items`."""
    return key.split(":", 1)[-1].replace(".", "->")


def _show(v: int | None) -> str:
    return "?" if v is None else str(v)


def _strip_if(text: str) -> str:
    return text[1:-1] if text.startswith("(") and text.endswith(")") else text

"""One step of one thread: the explorer's semantics of the lifecycle program
(evaluation of values, counters, puts, work, frees, waits, calls and returns;
invisible instructions run eagerly). See explore.py for the search."""

from __future__ import annotations

import time

from bot.analyze.simulate.footprint import StaticAnalysis
from bot.analyze.simulate.program import Instr, Kind, Loc, Val, key_object
from bot.analyze.simulate.state import (
    Event,
    Frames,
    State,
    StepCtx,
    Stop,
    Thread,
    Timeout,
    as_int,
    compare,
    short,
    show,
    strip_if,
)


class Stepper(StaticAnalysis):
    """Initial states and the successors of a state (see the module docstring)."""

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
                raise Timeout
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
            return as_int(v[1])
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
            return compare(str(v[1]), self._const(v[2], rv), self._const(v[3], rv))  # type: ignore[arg-type]
        if tag == "seq":
            return self._const(v[-1], rv)  # type: ignore[arg-type]
        return None

    # ------------------------------------------------------------------ evaluation

    def _eval(self, v: Val, c: StepCtx, rv: int | None, ann: list[str]) -> int | None:
        tag = v[0]
        m = self.m
        if tag == "k":
            return as_int(v[1])
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
            return compare(str(v[1]), a, b)
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
                ann.append(f"{short(str(v[1]))} {'set' if val else 'NULL' if val == 0 else '?'}")
            else:
                ann.append(f"{short(str(v[1]))} == {show(val)}")
            return val
        if tag == "wr":
            i = self.field_index.get(str(v[1]))
            new = self._eval(v[2], c, rv, ann)  # type: ignore[arg-type]
            if i is not None:
                c.vals[i] = new
                c.events.append(f"write {short(str(v[1]))}={show(new)}")
                shown = ("NULL" if new == 0 else "set") if v[1] in self.m.slots else show(new)
                ann.append(f"{short(str(v[1]))} = {shown}")
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
            c.rcu += as_int(v[1])
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

    def _rmw(self, v: Val, c: StepCtx, ann: list[str]) -> int | None:
        _, op, key, refc = v
        i = self.field_index.get(str(key))
        if i is None:
            return None
        old = c.vals[i]
        name = short(str(key))
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
        ann.append(f"{name} {show(old)} -> {show(new)}")
        if new is not None and new < 0 and (refc or key in self.m.refcounts):
            raise Stop(
                "UNDERFLOW", key_object(str(key)), f"{name} drops below zero", f"{verb} {name}"
            )
        if op in ("sub_test", "add_test"):
            return None if new is None else int(new == 0)
        if op in ("add_ret", "sub_ret"):
            return new
        return new

    def _put(self, v: Val, c: StepCtx, ann: list[str]) -> int | None:
        _, key, release, _ = v
        i = self.field_index.get(str(key))
        if i is None:
            return None
        name = short(str(key))
        old = c.vals[i]
        new = None if old is None else max(old - 1, self.m.counter_floor)
        c.vals[i] = new
        c.events.append(f"put {name}")
        ann.append(f"{name} {show(old)} -> {show(new)}")
        if new is not None and new < 0:
            raise Stop("UNDERFLOW", key_object(str(key)), f"{name} drops below zero", f"put {name}")
        if new == 0:
            fn = str(release) or self.m.release_bindings.get(str(key), "")
            if fn and fn in self.m.functions:
                ann.append(f"calls {fn}()")
                c.calls.append(fn)
            else:
                self._free(key_object(str(key)), c, ann)
        return None

    def _work(self, v: Val, c: StepCtx, ann: list[str]) -> int | None:
        tag, work = v[0], str(v[1])
        i = self.work_index.get(work)
        if i is None:
            return None
        owner = self.work_owner.get(work, -1)
        name = short(work)
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
            raise Stop(
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

    def _free(self, obj: str, c: StepCtx, ann: list[str]) -> None:
        i = self.obj_index.get(obj)
        if i is None:
            return
        if not c.alive[i]:
            raise Stop("DOUBLE-FREE", obj, f"struct {obj} freed twice", f"free {obj}")
        c.alive[i] = 0
        c.events.append(f"free {obj}")
        ann.append(f"frees struct {obj}")
        for w, wi in self.work_index.items():
            if self.work_owner.get(w) == i and c.pending[wi]:
                raise Stop(
                    "WORK-AFTER-FREE",
                    obj,
                    f"struct {obj} freed while {short(w)} is still queued",
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

    def successors(self, st: State, tid: int) -> list[tuple[State, Event, Stop | None]]:
        """Every outcome of thread tid's next step: (state, trace event, violation)."""
        threads = st[0]
        th = threads[tid]
        spec = self.m.threads[tid]
        frames, rv, runs, rcu, acted, inl = th
        outs: list[tuple[State, Event, Stop | None]] = []
        if not frames:
            # a deferred thread starts: its work is dequeued
            w = str(spec.work)
            wi = self.work_index[w]
            pending = list(st[3])
            pending[wi] = 0
            fn = self.m.functions[spec.entry]
            loc = Loc(spec.entry, fn.file, fn.line, f"{spec.entry}()")
            owner = self.work_owner.get(w, -1)
            text = f"starts: {short(w)} dequeued"
            if owner >= 0 and not st[1][owner]:
                ran = Stop(
                    "WORK-AFTER-FREE",
                    self.m.tracked[owner],
                    f"{short(w)} runs after struct {self.m.tracked[owner]} was freed",
                    f"run {short(w)}",
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
            text = f"if ({strip_if(text)})"
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
            c = StepCtx(st, tid, inline)
            ann: list[str] = []
            stop: Stop | None = None
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
                            c.events.append(f"flush {short(str(e[1]))}")
                            ann.append("ran (callback not simulated)")
                elif ins.expr is not None:
                    truth = self._eval(ins.expr, c, rv, ann)
            except Stop as exc:
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

    def _freed_uses(self, st: State, ins: Instr) -> list[Stop]:
        """A violation for every freed object instruction `ins` dereferences, in
        the order of the tracked types: each is a route of its own (an object
        picked from the set of uses would depend on string hashing)."""
        out: list[Stop] = []
        if not ins.uses:
            return out
        for oi, u in enumerate(self.m.tracked):
            if st[1][oi] or u not in ins.uses:
                continue
            if ins.expr is not None and self._drops_ref(ins.expr, u):
                # a put on an object its last put already freed: the
                # reference was dropped once too often
                out.append(
                    Stop(
                        "UNDERFLOW",
                        u,
                        f"a reference to struct {u} is dropped after the last one freed it",
                        f"put {u}",
                    )
                )
            else:
                out.append(Stop("UAF", u, f"struct {u} used after it was freed", f"use {u}"))
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

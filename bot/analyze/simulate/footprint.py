"""What the explorer knows of the program before it runs it: which
instructions are visible (touch shared state), the footprint of each (what
it reads and writes, for the reductions), the functions worth entering, the
refcount guards of frees and the decrements still to come (see explore.py)."""

from __future__ import annotations

from bot.analyze.simulate.program import Function, Instr, Kind, Val, key_object
from bot.analyze.simulate.state import (
    HELD,
    STAR,
    Bounds,
    Foot,
    Frames,
    Model,
    State,
    add_counts,
    decrements,
    guarded,
)


class StaticAnalysis:
    """The explorer's tables, computed once per model."""

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
                guarded(self._footprint(i), guards[pc]) for pc, i in enumerate(fn.code)
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
            writes.add(STAR)
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
                reads.add(HELD)
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
                    for k in decrements(ins.expr):
                        own[k] = own.get(k, 0) + 1
                    if ins.expr[0] == "put" and ins.expr[2]:
                        add_counts(own, of_function(str(ins.expr[2])))
                if ins.kind == Kind.CALL:
                    add_counts(own, of_function(ins.callee))
                best: dict[str, int] = {}
                for nxt in self._succs(ins, pc, n):
                    if nxt > pc:  # unrolled code only goes forward
                        for k, v in table[nxt].items():
                            best[k] = max(best.get(k, 0), v)
                add_counts(best, own)
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
            w = w | {HELD}
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
            writes.add(HELD)
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

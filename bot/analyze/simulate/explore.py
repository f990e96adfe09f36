"""Exploration: every interleaving of the actors' lifecycle operations.

The search, over four modules:

    state.py      the model, the state tuple, what is reported, shared helpers
    footprint.py  StaticAnalysis: visibility, footprints, guards, futures
    steps.py      Stepper: initial states and one thread's step
    explore.py    Explorer: the breadth-first search and its reductions

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

from bot.analyze.simulate.budget import runaway_note
from bot.analyze.simulate.state import (
    STAR,
    Bounds,
    Event,
    Foot,
    Model,
    Result,
    State,
    Stop,
    ThreadSpec,
    Timeout,
    Violation,
    conflict,
)
from bot.analyze.simulate.steps import Stepper

__all__ = ["Bounds", "Event", "Explorer", "Model", "Result", "ThreadSpec", "Violation"]


class Explorer(Stepper):
    """Runs a Model; see the module docstring."""

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
        except Timeout:
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

        def record(stop: Stop, s: State, tid: int | None, ev: Event | None) -> None:
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
                                Stop("LEAK", obj, f"struct {obj} is never freed", ""),
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
                                if u != t and not conflict(foot[u], foot[t])
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
        except Timeout:
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
                    or conflict(e.foot, later.foot)
                    or conflict(later.foot, e.foot)
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
            if STAR in ft[1]:
                continue
            if futures is None:
                futures = {u: self.future_foot(s, u) for u in range(len(self.m.threads))}

            def guard(key: str, t: int = t) -> bool:
                return self._protected(s, t, key)

            if all(u == t or not conflict(ft, futures[u], guard) for u in futures):
                return [t]
        return enabled

"""Explanation: a counterexample as kernel changelogs draw races.

`to_trace` turns the explorer's events into a `bot.model.Trace` (one column
per CPU or worker, each step with its function, file and line); `format_trace`
draws it as text, one column per actor, the way race fixes are explained on
linux-mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bot.analyze.simulate.scenario import entry_name
from bot.analyze.simulate.state import Model, Violation
from bot.model import Status, Trace, TraceStep

_ROLE_WORDS = {
    "teardown": "owner teardown",
    "shutdown": "owner shutdown, then free",
    "queue": "queues work",
    "release": "release path",
    "shrink": "shrink/reclaim",
    "entry": "entry point",
    "pending": "queued work",
    "worker": "work callback",
    "rcu": "RCU callback",
}

_KIND_WORDS = {
    "UAF": "use after free",
    "DOUBLE-FREE": "double free",
    "UNDERFLOW": "refcount underflow",
    "WORK-AFTER-FREE": "work on a freed object",
    "LEAK": "leak",
}


def _role_words(role: str) -> str:
    return _ROLE_WORDS.get(role, role)


def column_names(model: Model, violation: Violation) -> dict[int, str]:
    """Thread index -> column name, CPUs numbered in order of appearance."""
    names: dict[int, str] = {}
    cpus = 0
    deferred: dict[str, int] = {}
    for ev in violation.steps:
        if ev.thread in names:
            continue
        spec = model.threads[ev.thread]
        if spec.deferred:
            n = deferred.get(spec.role, 0)
            deferred[spec.role] = n + 1
            names[ev.thread] = spec.role if n == 0 else f"{spec.role}{n + 1}"
        else:
            names[ev.thread] = f"CPU{cpus}"
            cpus += 1
    return names


def to_trace(model: Model, violation: Violation) -> Trace:
    """The shortest counterexample of `violation` as a Trace."""
    last = len(violation.steps) - 1
    # steps that only dereference an object stay out of the explanation
    shown = [ev for i, ev in enumerate(violation.steps) if ev.telling or i == last]
    names = column_names(model, replace(violation, steps=tuple(shown)))
    steps = tuple(
        TraceStep(
            actor=names[ev.thread],
            text=ev.text,
            function=ev.loc.function,
            file=ev.loc.file,
            line=ev.loc.line,
        )
        for ev in shown
    )
    roles = {
        names[t]: f"{entry_name(model.threads[t].entry)}() ({_role_words(model.threads[t].role)})"
        for t in names
    }
    # CPUs first, in order of appearance, then workers: the changelog layout
    order = list(dict.fromkeys(s.actor for s in steps))
    actors = tuple(sorted(order, key=lambda a: (not a.startswith("CPU"), order.index(a))))
    return Trace(
        actors=actors, steps=steps, actor_roles=roles, summary=summary(model, violation, names)
    )


def summary(model: Model, violation: Violation, names: dict[int, str]) -> str:
    """One sentence: what went wrong, who did it."""
    what = _KIND_WORDS.get(violation.kind, violation.kind.lower())
    obj = f"struct {violation.obj}"
    if violation.kind == "LEAK":
        ran = [f"{names[t]} {entry_name(model.threads[t].entry)}()" for t in names]
        done = " and ".join([", ".join(ran[:-1]), ran[-1]] if len(ran) > 1 else ran)
        verb = "have all run" if len(ran) > 1 else "has run"
        return f"{what}: {obj} is never freed after {done} {verb} and queued work has drained"
    last = violation.steps[-1] if violation.steps else None
    freer = next(
        (ev for ev in reversed(violation.steps[:-1]) if "frees struct " + violation.obj in ev.text),
        None,
    )
    who = f"{names[last.thread]} {last.loc.function}()" if last else "an actor"
    if freer is not None and violation.kind in ("UAF", "WORK-AFTER-FREE"):
        by = f"{names[freer.thread]} {freer.loc.function}()"
        return f"{what}: {who} touches {obj} after {by} freed it"
    return f"{what}: {violation.detail} in {who}"


def format_trace(trace: Trace, width: int = 78) -> str:
    """Draw a trace with one column per actor, changelog style: the columns as the
    reports lay them out (`bot.report.common.trace_lines`), each step with its
    file and line, then what each actor is and the one-line summary."""
    from bot.report.common import trace_lines

    # The reports show only the line; here the file goes with it, since one
    # simulation may span several files.
    located = tuple(
        replace(s, text=f"{s.text}  ({s.file}:{s.line})", line=0) if s.file and s.line else s
        for s in trace.steps
    )
    lines = trace_lines(replace(trace, steps=located), indent="", width=width)
    lines += [f"{a}: {trace.actor_roles[a]}" for a in trace.actors if a in trace.actor_roles]
    if trace.summary:
        lines.append(trace.summary)
    return "\n".join(lines)


def describe_kind(kind: str) -> str:
    return _KIND_WORDS.get(kind, kind.lower())


__all__: Sequence[str] = ("column_names", "describe_kind", "format_trace", "summary", "to_trace")


def reviewer_question(kind: str, obj: str, last_fn: str, status: Status) -> str:
    """The question a finding asks the author, per kind of violation."""
    if status is Status.FIXED:
        return (
            f"The trace below shows the {describe_kind(kind)} of struct {obj} this patch "
            f"removes; is it worth naming in the changelog?"
        )
    return {
        "LEAK": (
            f"What frees struct {obj} in the order below? Every actor has finished and the queued "
            f"work has run, but nothing destroys it."
        ),
        "UAF": (
            f"What keeps struct {obj} alive until {last_fn}() is done with it in the order below?"
        ),
        "DOUBLE-FREE": f"Which of these paths owns the final free of struct {obj}?",
        "UNDERFLOW": (
            f"Which reference does this put in {last_fn}() drop? "
            f"In the order below it is dropped once too often."
        ),
        "WORK-AFTER-FREE": (
            f"Is the work cancelled (cancel_work_sync() or flush) before struct {obj} is freed? "
            f"In the order below it is still queued or running."
        ),
    }.get(kind, f"Can struct {obj} reach this state?")

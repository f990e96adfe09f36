"""Scenarios: which actors run, bound to which callbacks, from what state.

Roles come from the call graph, the ops tables found in the tree and the
scenario data in rules/scenarios/*.yaml (see default.yaml), never from the
name of a particular kernel function:

  teardown  bound to an ops slot the data lists (`.css_offline = fn`) and
            reaching a touched function within the call depth
  release   a touched function, or its nearest caller, named like a release
            path (`*release*`, `*free*`, `*put*`, `*uncharge*`)
  shrink    likewise for shrink/reclaim names and shrinker ops slots
  worker    a work/timer callback bound in the tree (INIT_WORK, timer_setup),
            run when queued; `rcu` likewise for call_rcu callbacks
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.analyze.simulate.extract import Extractor
from bot.analyze.simulate.names import glob_match
from bot.analyze.simulate.program import (
    Binding,
    Function,
    Instr,
    Key,
    Kind,
    Loc,
    Val,
    key_object,
    walk_val,
)
from bot.analyze.simulate.sources import SourceSet
from bot.analyze.simulate.state import Model, ThreadSpec
from bot.errors import InputError
from bot.yamlio import load_yaml

# The scenario folder sits next to the rule folders.
SCENARIO_DIRNAME = "scenarios"
# Upward caller search: how many callers are looked at in all, so a helper
# called from hundreds of places cannot make the review slow.
_MAX_CALLERS = 60


@dataclass(frozen=True)
class RoleSpec:
    runs: int = 1
    must_act: bool = False
    order: int = 9
    # the object the actor's entry takes (its first struct pointer parameter)
    # is freed once a run ends: a shutdown is followed by the free of what it
    # shut down
    frees_object: bool = False
    # a flag this actor clears (`registered`) starts set: a teardown clears
    # what setup set
    cleared_start_set: bool = False
    # the object stays alive while this actor runs (its caller holds it): a
    # free implied after a shutdown waits for it to finish
    holds_object: bool = False


@dataclass
class ScenarioData:
    """Everything rules/scenarios/*.yaml says, merged."""

    release_names: tuple[str, ...] = ("*release*", "*free*", "*put*", "*uncharge*")
    shrink_names: tuple[str, ...] = ("*shrink*",)
    # the shutdown role by name: kept only when it cancels or flushes a work
    # of the object it takes
    teardown_names: tuple[str, ...] = ()
    # struct types named by the member they are reached through (see Extractor)
    generic_types: tuple[str, ...] = ()
    roles: dict[str, RoleSpec] = field(default_factory=dict)
    ops_slots: dict[str, str] = field(default_factory=dict)
    counter_min: int = 1
    loop_unroll: int = 2
    worker_runs: int = 3
    counter_max: int = 8

    def role(self, name: str) -> RoleSpec:
        return self.roles.get(name, RoleSpec())


def load_scenarios(directory: Path) -> ScenarioData:
    """Merge every *.yaml scenario file of `directory` (api-effects.yaml aside).
    Raises InputError for a file that is not a mapping."""
    import yaml  # only when the data is read: see run.load_data

    data = ScenarioData()
    if not directory.is_dir():
        return data
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "api-effects.yaml":
            continue
        try:
            doc = load_yaml(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read scenario data: {exc}", source=str(path)) from exc
        if not isinstance(doc, dict):
            raise InputError("scenario data must be a mapping", source=str(path))
        if "release_names" in doc:
            data.release_names = tuple(str(x) for x in doc["release_names"])
        if "shrink_names" in doc:
            data.shrink_names = tuple(str(x) for x in doc["shrink_names"])
        if "generic_types" in doc:
            data.generic_types = tuple(str(x) for x in doc["generic_types"])
        if "teardown_names" in doc:
            data.teardown_names = tuple(str(x) for x in doc["teardown_names"])
        for role, given in (doc.get("roles") or {}).items():
            spec = given or {}
            data.roles[str(role)] = RoleSpec(
                runs=int(spec.get("runs", 1)),
                must_act=bool(spec.get("must_act", False)),
                order=int(spec.get("order", 9)),
                frees_object=bool(spec.get("frees_object", False)),
                cleared_start_set=bool(spec.get("cleared_start_set", False)),
                holds_object=bool(spec.get("holds_object", False)),
            )
        for slot, role in (doc.get("ops_slots") or {}).items():
            data.ops_slots[str(slot)] = str(role)
        initial = doc.get("initial") or {}
        data.counter_min = int(initial.get("counter_min", data.counter_min))
        bounds = doc.get("bounds") or {}
        data.loop_unroll = int(bounds.get("loop_unroll", data.loop_unroll))
        data.worker_runs = int(bounds.get("worker_runs", data.worker_runs))
        data.counter_max = int(bounds.get("counter_max", data.counter_max))
    return data


@dataclass(frozen=True)
class ActorPlan:
    """One actor to run: its role, entry function and why."""

    role: str
    entry: str
    reason: str


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(glob_match(name, p) for p in patterns)


def plan_actors(
    sources: SourceSet,
    touched: Sequence[str],
    data: ScenarioData,
    depth: int,
    callbacks: Iterable[str] = (),
) -> tuple[list[ActorPlan], list[str]]:
    """Derive actors for the touched functions; notes say what got no role."""
    callback_set = set(callbacks)
    plans: list[ActorPlan] = []
    notes: list[str] = []
    budget = _MAX_CALLERS
    for name in touched:
        if name in callback_set:
            continue  # deferred: runs when queued
        # upward: name itself, then callers level by level
        chain: dict[str, str] = {name: name}
        level = [name]
        for _ in range(depth):
            nxt: list[str] = []
            for fn in level:
                if budget <= 0:
                    break
                for caller in sources.callers(fn):
                    budget -= 1
                    if caller not in chain:
                        chain[caller] = f"{caller} -> {chain[fn]}"
                        nxt.append(caller)
            level = nxt
            if not level:
                break
        found = False
        release = next((f for f in chain if matches(f, data.release_names)), None)
        if release is not None and release not in callback_set:
            plans.append(
                ActorPlan("release", release, f"named like a release path; {chain[release]}")
            )
            found = True
        shrink = next((f for f in chain if matches(f, data.shrink_names)), None)
        if shrink is not None and shrink not in callback_set and not found:
            plans.append(ActorPlan("shrink", shrink, f"named like a shrink path; {chain[shrink]}"))
            found = True
        shutdown = next((f for f in chain if matches(f, data.teardown_names)), None)
        if shutdown is not None and shutdown not in callback_set and not found:
            plans.append(
                ActorPlan("shutdown", shutdown, f"named like a teardown; {chain[shutdown]}")
            )
            found = True
        for slot, fn, path, line in sources.ops_bindings(chain):
            role = data.ops_slots.get(slot)
            if role:
                plans.append(ActorPlan(role, fn, f".{slot} = {fn} at {path}:{line}; {chain[fn]}"))
                found = True
        if not found:
            notes.append(
                f"{name}(): no actor role found (not a release/teardown/shrink path or callback)"
            )
    unique: dict[tuple[str, str], ActorPlan] = {}
    for p in plans:
        unique.setdefault((p.role, p.entry), p)
    return list(unique.values()), notes


def _values(functions: Iterable[Function]) -> Iterator[Val]:
    """Every value (and sub-value) of every instruction's expression in `functions`."""
    for fn in functions:
        for ins in fn.code:
            if ins.expr is not None:
                yield from walk_val(ins.expr)


def _scheduled_works(functions: Iterable[Function]) -> set[Key]:
    return {str(v[1]) for v in _values(functions) if v[0] in ("sched", "callrcu")}


def _implicit_puts(functions: Iterable[Function]) -> set[Key]:
    """Counters put without a release callback named at the call."""
    return {str(v[1]) for v in _values(functions) if v[0] == "put" and not v[2]}


def bind(bindings: Sequence[Binding], work: Key) -> Binding | None:
    """The binding of a work key: exact key first, else a unique one with the
    same field name (the same work reached through another struct type)."""
    exact = [b for b in bindings if b.key == work and b.kind in ("work", "rcu", "timer")]
    if exact:
        return exact[0]
    tail = work.split(":", 1)[-1].split(".")[-1]
    same = [
        b
        for b in bindings
        if b.key
        and b.key.split(".")[-1].split(":")[-1] == tail
        and b.kind in ("work", "rcu", "timer")
    ]
    return same[0] if len({b.callback for b in same}) == 1 else None


@dataclass
class Program:
    """The translated functions of one side (pre or post) and their context."""

    extractor: Extractor
    actors: list[ActorPlan]
    bindings: list[Binding]
    works: dict[Key, Binding]  # scheduled work -> its binding
    notes: list[str]

    @property
    def functions(self) -> dict[str, Function]:
        return self.extractor.functions


# Suffix of the function a `frees_object` actor runs: its entry, then the
# free of the object the entry takes (scenario data, not code of the tree).
THEN_FREE = "+free"
# Marks that implied free: the leak invariant is not checked on it.
IMPLIED = "implied"


def entry_name(name: str) -> str:
    """The C function an actor's thread runs (its `+free` wrapper removed)."""
    return name[: -len(THEN_FREE)] if name.endswith(THEN_FREE) else name


def _add_free_after(functions: dict[str, Function], entry: str) -> None:
    """Add `entry+free`: a run of `entry`, then the free of the struct its
    first pointer parameter points to."""
    fn = functions.get(entry)
    if fn is None or not fn.params:
        return
    obj = fn.params[0]
    start = Loc(entry, fn.file, fn.line, f"{entry}()")
    freed = Loc(
        entry,
        fn.file,
        fn.line,
        f"struct {obj} freed once {entry}() has shut it down (scenario: frees_object)",
    )
    functions[entry + THEN_FREE] = Function(
        name=entry + THEN_FREE,
        file=fn.file,
        line=fn.line,
        code=[
            Instr(Kind.CALL, start, callee=entry),
            # the paths that hold the object (the queue role) finish first
            Instr(Kind.WAIT, freed, ("quiet",)),
            Instr(Kind.EVAL, freed, ("free", obj, IMPLIED)),
            Instr(Kind.RET, freed),
        ],
        params=fn.params,
    )


def build_program(
    extractor: Extractor,
    actors: Sequence[ActorPlan],
    depth: int,
    data: ScenarioData | None = None,
) -> Program:
    """Translate the actors' entry points and every bound callback they queue."""
    extractor.compile_reachable([a.entry for a in actors], depth)
    for a in actors:
        if data is not None and data.role(a.role).frees_object:
            _add_free_after(extractor.functions, a.entry)
    bindings = extractor.bindings()
    works: dict[Key, Binding] = {}
    released: set[str] = set()
    for _ in range(4):  # callbacks queue further work: a few rounds reach a fixpoint
        new = False
        # a put without a callback of its own runs the release bound to its
        # counter (percpu_ref_init(&x->ref, release, ...))
        for key in sorted(_implicit_puts(extractor.functions.values())):
            rel = next((b for b in bindings if b.kind == "release" and b.key == key), None)
            if rel is not None and rel.callback not in released:
                released.add(rel.callback)
                extractor.compile_reachable([rel.callback], depth)
                new = True
        for w in sorted(_scheduled_works(extractor.functions.values())):
            if w in works:
                continue
            b = bind(bindings, w)
            if b is None:
                continue
            works[w] = b
            extractor.compile_reachable([b.callback], depth)
            new = True
        if not new:
            break
    missing = [a.entry for a in actors if a.entry not in extractor.functions]
    notes = list(extractor.notes)
    if missing:
        more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        notes.append(f"no definition found for {', '.join(missing[:6])}{more}")
    return Program(extractor, list(actors), bindings, works, notes)


def accessed_types(functions: Iterable[Function]) -> set[str]:
    """Struct types a set of functions dereferences, updates or frees."""
    out: set[str] = set()
    for fn in functions:
        for ins in fn.code:
            out |= ins.uses
            if ins.expr is None:
                continue
            for v in walk_val(ins.expr):
                if v[0] == "rmw":
                    out.add(key_object(str(v[2])))
                elif v[0] in ("rd", "wr", "put", "sched", "cancel", "pend", "callrcu"):
                    out.add(key_object(str(v[1])))
                elif v[0] in ("free", "freercu", "release"):
                    out.add(str(v[1]))
    return out


def freed_types(
    functions: Iterable[Function],
    release_bindings: dict[Key, str],
    putters: Iterable[str] | None = None,
) -> set[str]:
    """Struct types something in the program frees explicitly (kfree, destroy,
    a put whose release callback is known), plus, for the functions named in
    `putters` (all when None), types whose last reference they drop with a
    put that frees implicitly (css_put): an object released by others' puts
    too has holders the program does not show."""
    only = None if putters is None else set(putters)
    out: set[str] = set()
    for fn in functions:
        for v in _values((fn,)):
            if v[0] in ("free", "freercu"):
                out.add(str(v[1]))
            elif (
                v[0] == "put"
                and not v[2]
                and str(v[1]) not in release_bindings
                and (only is None or fn.name in only)
            ):
                out.add(key_object(str(v[1])))
    return out


def explicitly_freed(functions: Iterable[Function]) -> set[str]:
    """Struct types with an explicit free in the program: the leak invariant
    applies to these (an object freed by its last put has holders we do not see,
    and the free a scenario implies after a shutdown is no code of the tree)."""
    return {
        str(v[1])
        for v in _values(functions)
        if v[0] in ("free", "freercu") and IMPLIED not in v[2:]
    }


def _reachable(functions: dict[str, Function], entry: str) -> list[Function]:
    seen: set[str] = set()
    todo = [entry]
    out: list[Function] = []
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        fn = functions[name]
        out.append(fn)
        for ins in fn.code:
            if ins.kind == Kind.CALL:
                todo.append(ins.callee)
            if ins.expr is not None and ins.expr[0] == "put" and ins.expr[2]:
                todo.append(str(ins.expr[2]))
    return out


def reachable_names(functions: dict[str, Function], entry: str) -> set[str]:
    """Names of the translated functions `entry` reaches, itself excluded."""
    return {fn.name for fn in _reachable(functions, entry)} - {entry}


def quiesced_works(functions: dict[str, Function], entry: str) -> set[Key]:
    """Works `entry` cancels or waits for (cancel, cancel_sync, flush)."""
    out: set[Key] = set()
    for fn in _reachable(functions, entry):
        for ins in fn.code:
            if ins.expr is None:
                continue
            if ins.kind == Kind.WAIT and ins.expr[0] in ("idle", "flushed"):
                out.add(str(ins.expr[1]))
            out |= {str(v[1]) for v in walk_val(ins.expr) if v[0] == "cancel"}
    return out


def queued_works(functions: dict[str, Function], entry: str) -> set[Key]:
    """Works `entry` queues."""
    return _scheduled_works(_reachable(functions, entry))


def program_shape(functions: dict[str, Function], entry: str) -> tuple[object, ...]:
    """What `entry` and its callees do, without source positions: two images
    of a function with the same shape run the same way."""
    return tuple(
        (
            fn.name,
            tuple((i.kind.value, i.expr, i.target, i.callee, i.negate) for i in fn.code),
        )
        for fn in sorted(_reachable(functions, entry), key=lambda f: f.name)
    )


def _decremented(functions: Iterable[Function]) -> set[Key]:
    return {
        str(v[2] if v[0] == "rmw" else v[1])
        for v in _values(functions)
        if (v[0] == "rmw" and v[1] in ("sub", "sub_ret", "sub_test")) or v[0] == "put"
    }


def make_model(
    program: Program,
    tracked: Iterable[str],
    data: ScenarioData,
    max_threads: int,
) -> tuple[Model, list[str]]:
    """Resolve a Program into the explorer's Model for the given tracked types."""
    funcs = program.functions
    tracked_t = tuple(sorted(set(tracked)))
    tset = set(tracked_t)
    notes: list[str] = []
    written: set[Key] = set()
    slots: set[Key] = set()
    key_types = program.extractor.key_types
    counters: set[Key] = set()
    refcounts: set[Key] = set()
    works: set[Key] = set()
    release_bindings = {
        b.key: b.callback for b in program.bindings if b.kind == "release" and b.key
    }
    for fn in funcs.values():
        for ins in fn.code:
            vals: list[Val] = list(walk_val(ins.expr)) if ins.expr is not None else []
            if ins.kind == Kind.WAIT and ins.expr is not None and len(ins.expr) > 1:
                works.add(str(ins.expr[1]))
            for v in vals:
                tag = v[0]
                if tag == "wr" and key_types.get(str(v[1])) in tset:
                    # a pointer slot to a tracked object (`o->table = NULL`):
                    # it starts pointing to the live object
                    slots.add(str(v[1]))
                if tag in ("wr", "rmw", "put"):
                    key = str(v[1] if tag != "rmw" else v[2])
                    if key_object(key) in tset:
                        written.add(key)
                        if tag != "wr":
                            counters.add(key)
                        if (tag == "rmw" and v[3]) or (tag == "put" and v[3]):
                            refcounts.add(key)
                elif tag in ("sched", "cancel", "pend", "callrcu"):
                    works.add(str(v[1]))
    works = {w for w in works if key_object(w) in tset}
    # a lock orders actors only when two of them take it; a lock only one takes
    # is no interleaving point
    lock_users: dict[Key, set[str]] = {}
    entries = [a.entry for a in program.actors] + [b.callback for b in program.works.values()]
    for entry in entries:
        for v in _values(_reachable(funcs, entry)):
            if v[0] in ("lock", "unlock", "trylock"):
                lock_users.setdefault(str(v[1]), set()).add(entry)
    locks = {k for k, users in lock_users.items() if len(users) >= 2}
    # rmw values are ("rmw", op, key, refcount): normalise to the key position
    fields = tuple(sorted(written | locks | slots))
    threads: list[ThreadSpec] = []
    actor_plans = sorted(program.actors, key=lambda a: data.role(a.role).order)
    decs_by_actor = {a.entry: _decremented(_reachable(funcs, a.entry)) for a in actor_plans}
    # a flag a teardown-like actor clears was set by setup the scenario does not run
    cleared: set[Key] = set()
    for a in actor_plans:
        if data.role(a.role).cleared_start_set:
            cleared |= {
                str(v[1])
                for v in _values(_reachable(funcs, a.entry))
                if v[0] == "wr" and v[2] == ("k", 0)
            }
    initial: list[int | None] = []
    for key in fields:
        if key in counters and key not in locks:
            holders = sum(
                max(1, data.role(a.role).runs) for a in actor_plans if key in decs_by_actor[a.entry]
            )
            initial.append(max(data.counter_min, holders))
        elif key in slots or key in cleared:
            initial.append(1)
        else:
            initial.append(0)  # flags clear, locks free
    deferred: list[ThreadSpec] = []
    for w in sorted(works):
        b = program.works.get(w)
        if b is None or b.callback not in funcs:
            continue
        role = "rcu" if b.kind == "rcu" else "worker"
        deferred.append(ThreadSpec(role=role, entry=b.callback, deferred=True, work=w))
    shutdown_scenario = any(data.role(a.role).frees_object for a in actor_plans)
    if shutdown_scenario:
        # the race is the holders' queueing against the shutdown: a work only
        # the shutdown queues and waits for is drained inside its own run, so
        # workers run for what the holders that fit the thread bound queue
        by_work = {d.work: d for d in deferred}
        picked: list[ThreadSpec] = []
        kept: list[ActorPlan] = []
        for a in actor_plans:
            if a.entry not in funcs:
                continue
            spec = data.role(a.role)
            new = (
                [by_work[w] for w in sorted(queued_works(funcs, a.entry)) if w in by_work]
                if spec.holds_object
                else []
            )
            new = [d for d in new if d not in picked]
            if len(kept) + len(picked) + 1 + len(new) > max_threads:
                notes.append(
                    f"thread bound reached ({max_threads}): {a.role} actor {a.entry}() not run"
                )
                continue
            kept.append(a)
            picked += new
        actor_plans = kept
        left = [d.entry for d in deferred if d not in picked]
        if left:
            notes.append(
                f"shutdown scenario: {', '.join(left)}() not run as a worker (no holder queues it)"
            )
        deferred = picked
    room = max(1, max_threads - len(deferred))
    for a in actor_plans:
        if a.entry not in funcs:
            continue
        if len(threads) >= room:
            notes.append(
                f"thread bound reached ({max_threads}): {a.role} actor {a.entry}() not run"
            )
            continue
        wrapped = a.entry + THEN_FREE
        threads.append(
            ThreadSpec(
                role=a.role,
                entry=wrapped if data.role(a.role).frees_object and wrapped in funcs else a.entry,
                must_act=data.role(a.role).must_act,
                runs=max(1, data.role(a.role).runs),
                holds=data.role(a.role).holds_object,
            )
        )
    threads.extend(deferred[: max(0, max_threads - len(threads))])
    if len(deferred) > max_threads - len([t for t in threads if not t.deferred]):
        notes.append(f"thread bound reached ({max_threads}): some deferred work not run")
    run_funcs: list[Function] = list(funcs.values())
    if shutdown_scenario:
        # only what the threads run frees: an actor the bound left out frees nothing
        run_funcs = [f for t in threads for f in _reachable(funcs, t.entry)]
    release_thread: dict[str, int] = {}
    for i, t in enumerate(threads):
        if t.role != "release":
            continue
        entry_fn = funcs.get(t.entry)
        for obj in tracked_t:
            if entry_fn is not None and obj in entry_fn.params:
                release_thread.setdefault(obj, i)
    model = Model(
        functions=funcs,
        threads=threads,
        tracked=tracked_t,
        fields=fields,
        initial=tuple(initial),
        refcounts=frozenset(refcounts),
        works=tuple(sorted(works)),
        release_bindings={k: v for k, v in release_bindings.items() if k},
        release_thread=release_thread,
        leak_checked=frozenset(explicitly_freed(run_funcs) & tset),
        slots=frozenset(slots),
        worker_runs=data.worker_runs,
        counter_max=data.counter_max,
    )
    return model, notes

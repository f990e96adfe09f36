"""Running the simulator on C text: `simulate_source` (for `bot simulate`,
tests and rule writers) and `run_side` (one image of a patch, for the check)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from bot import cache
from bot.analyze.simulate.budget import Budget, SimTimeout, runaway_note
from bot.analyze.simulate.explain import to_trace
from bot.analyze.simulate.explore import Bounds, Explorer, Model, Result
from bot.analyze.simulate.extract import Extractor
from bot.analyze.simulate.scenario import (
    SCENARIO_DIRNAME,
    ActorPlan,
    Program,
    ScenarioData,
    accessed_types,
    build_program,
    entry_name,
    freed_types,
    load_scenarios,
    make_model,
    plan_actors,
    queued_works,
    quiesced_works,
    reachable_names,
)
from bot.analyze.simulate.sources import SourceSet
from bot.analyze.simulate.vocab import Effects, load_effects
from bot.config import Settings
from bot.errors import UsageError
from bot.model import Trace

_DATA_NAMESPACE = "simulator-data"


@dataclass(frozen=True)
class SimViolation:
    """One route to one violation, with its shortest counterexample."""

    kind: str  # UAF, DOUBLE-FREE, UNDERFLOW, WORK-AFTER-FREE, LEAK
    obj: str  # struct type
    detail: str
    signature: tuple[object, ...]  # (kind, object, events): what the differential compares
    trace: Trace


@dataclass(frozen=True)
class SimResult:
    """What one simulation found, and how much it explored."""

    violations: tuple[SimViolation, ...]
    notes: tuple[str, ...]
    states: int
    transitions: int
    seconds: float
    complete: bool
    actors: tuple[str, ...] = ()  # "role entry()" per thread
    tracked: tuple[str, ...] = ()
    first_violation_seconds: float | None = None
    first_violation_states: int | None = None

    @property
    def found(self) -> bool:
        return bool(self.violations)


@dataclass
class Side:
    """One image (pre or post) ready to explore."""

    program: Program
    model: Model | None = None
    notes: list[str] = field(default_factory=list)


def data_files(rules_dir: Path) -> list[Path]:
    """Every file load_data reads: the scenario data (api-effects.yaml and the
    other *.yaml) and the shared vocabulary folder (rules/api/)."""
    scen = rules_dir / SCENARIO_DIRNAME
    files = {scen / "api-effects.yaml", *scen.glob("*.yaml")}
    files.update(p for p in (rules_dir / "api").glob("*") if p.is_file())
    return sorted(files)


def _read_data(rules_dir: Path) -> tuple[Effects, ScenarioData]:
    scen = rules_dir / SCENARIO_DIRNAME
    effects = load_effects(scen, rules_dir)
    _ = effects.fingerprint  # computed once, kept with the cached table
    return effects, load_scenarios(scen)


@lru_cache(maxsize=8)
def _load(rules_dir: Path) -> tuple[Effects, ScenarioData]:
    # bot.cache, keyed by a stamp of the files read: a review with a warm cache
    # parses no YAML (and imports no PyYAML) for the simulator
    key = f"{rules_dir}\0{cache.stamp_files(data_files(rules_dir))}"
    hit = cache.get(_DATA_NAMESPACE, key)
    if hit is not None and isinstance(hit[0], tuple) and len(hit[0]) == 2:
        effects, data = hit[0]
        if isinstance(effects, Effects) and isinstance(data, ScenarioData):
            return effects, data
    effects, data = _read_data(rules_dir)
    if effects.vocabulary is not None or not (rules_dir / "api").is_dir():
        # a vocabulary that could not be loaded is not kept: the next process tries again
        cache.put(_DATA_NAMESPACE, key, (effects, data))
    return effects, data


def load_data(settings: Settings) -> tuple[Effects, ScenarioData]:
    """API effects and scenario data from settings.rules_dir (read once per
    process, and kept in bot.cache until one of data_files() changes)."""
    return _load(Path(settings.rules_dir).resolve())


def prepare_side(
    sources: SourceSet,
    actors: Sequence[ActorPlan],
    settings: Settings,
) -> Side:
    """Translate what the actors reach in one image."""
    effects, data = load_data(settings)
    extractor = Extractor(sources, effects, loop_unroll=data.loop_unroll)
    extractor.generic_types = frozenset(data.generic_types)
    program = build_program(extractor, actors, settings.call_depth, data)
    return Side(program=program, notes=list(program.notes))


def explore_side(
    side: Side,
    tracked: Sequence[str],
    settings: Settings,
    *,
    reduction: bool = True,
    deadline: float | None = None,
) -> SimResult:
    """Explore one prepared image for the given tracked struct types, up to
    the state and step bounds (`deadline`, a time.monotonic() value, is the
    runaway stop; default: sim_max_seconds from now)."""
    _, data = load_data(settings)
    model, notes = make_model(side.program, tracked, data, settings.sim_max_threads)
    side.model = model
    bounds = Bounds(
        max_states=settings.sim_max_states,
        max_depth=settings.sim_max_steps,
        max_seconds=settings.sim_max_seconds,
        reduction=reduction,
        deadline=deadline,
    )
    if not model.threads or not model.tracked:
        why = (
            "no actor"
            if not model.threads
            else "no tracked object (nothing the actors touch is ever freed)"
        )
        return SimResult((), (*side.notes, *notes, f"nothing to simulate: {why}"), 0, 0, 0.0, True)
    result: Result = Explorer(model, bounds).run()
    violations = tuple(
        SimViolation(v.kind, v.obj, v.detail, v.signature, to_trace(model, v))
        for v in sorted(result.violations.values(), key=lambda v: (len(v.steps), v.kind, v.obj))
        # a route without a single step is the initial state itself: nothing happened
        if v.steps
    )
    return SimResult(
        violations=violations,
        notes=tuple(dict.fromkeys([*side.notes, *notes, *result.notes])),
        states=result.states,
        transitions=result.transitions,
        seconds=result.seconds,
        complete=result.complete,
        actors=tuple(f"{t.role} {entry_name(t.entry)}()" for t in model.threads),
        tracked=model.tracked,
        first_violation_seconds=result.first_violation_seconds,
        first_violation_states=result.first_violation_states,
    )


def derive_actors(sources: SourceSet, settings: Settings) -> list[ActorPlan]:
    """Actors by role for every function the overlay files define: release and
    shrink paths by name, teardown by ops slot, nested ones dropped."""
    effects, data = load_data(settings)
    names: list[str] = []
    for path in sources.files:
        facts = sources.facts(path)
        if facts is not None:
            names += [n for n in facts.functions if n not in names]
    callbacks = {b.callback for b in Extractor(sources, effects).bindings()}
    plans, _ = plan_actors(sources, names, data, settings.call_depth, callbacks)
    ex = Extractor(sources, effects, loop_unroll=data.loop_unroll)
    ex.compile_reachable([p.entry for p in plans], settings.call_depth)
    if any(p.role == "shutdown" for p in plans):
        plans = _shutdown_plans(plans, names, callbacks, ex, settings.call_depth)
    inner = {
        a.entry
        for a in plans
        for b in plans
        if a.entry != b.entry and a.entry in reachable_names(ex.functions, b.entry)
    }
    return [p for p in plans if p.entry not in inner]


def _shutdown_plans(
    plans: list[ActorPlan],
    names: Sequence[str],
    callbacks: set[str],
    ex: Extractor,
    depth: int,
) -> list[ActorPlan]:
    """As in a review: a shutdown by name only where no release path or ops
    teardown gives the scenario, and only one that quiesces a work of its
    object; then every other function that queues such a work is a queue actor."""
    rest = [p for p in plans if p.role != "shutdown"]
    if any(p.role in ("release", "teardown") for p in rest):
        return rest
    quiet: set[str] = set()
    kept: list[ActorPlan] = []
    for p in plans:
        if p.role != "shutdown":
            continue
        fn = ex.functions.get(p.entry)
        own = fn.params[0] if fn is not None and fn.params else None
        works = {w for w in quiesced_works(ex.functions, p.entry) if w.split(":", 1)[0] == own}
        if works:
            kept.append(p)
            quiet |= works
    if not kept:
        return rest
    taken = {p.entry for p in plans}
    others = [n for n in names if n not in taken and n not in callbacks]
    ex.compile_reachable(others, depth)
    queue = [
        ActorPlan("queue", n, "queues a work the shutdown cancels or flushes")
        for n in others
        if queued_works(ex.functions, n) & quiet
    ]
    return rest + kept + queue


def simulate_source(
    files: Mapping[str, str],
    entries: Sequence[str],
    settings: Settings,
    *,
    teardown: Sequence[str] = (),
    reduction: bool = True,
    tree_root: str | Path | None = None,
    auto: bool = False,
) -> SimResult:
    """Run the given entry functions of `files` (path -> C text) as concurrent
    actors (`teardown` ones with the teardown role) and report every violation.
    With `auto` and no entry, the actors are derived by role as in a review,
    every function of the files counting as touched. Raises UsageError when
    there is no actor or an entry is not defined."""
    started = time.monotonic()
    deadline = started + settings.sim_max_seconds
    sources = SourceSet(files, tree_root, budget_of(settings, deadline))
    plans = [ActorPlan("entry", e, "--entry") for e in entries]
    plans += [ActorPlan("teardown", t, "--teardown") for t in teardown]
    if not plans and auto:
        plans = derive_actors(sources, settings)
    if not plans:
        raise UsageError(
            "give at least one --entry or --teardown function"
            + (" (none found by role in the given files)" if auto else "")
        )
    for p in plans:
        if sources.find_function(p.entry) is None:
            raise UsageError(f"{p.entry}: no definition in the given files")
    try:
        side = prepare_side(sources, plans, settings)
    except SimTimeout:
        note = runaway_note(settings.sim_max_seconds, "while translating: not simulated")
        return SimResult((), (note,), 0, 0, time.monotonic() - started, False)
    side.notes.extend(sources.budget.notes)
    funcs = side.program.functions
    release = {b.key: b.callback for b in side.program.bindings if b.kind == "release" and b.key}
    tracked = sorted(freed_types(funcs.values(), release) & accessed_types(funcs.values()))
    return explore_side(side, tracked, settings, reduction=reduction, deadline=deadline)


def budget_of(settings: Settings, deadline: float | None = None) -> Budget:
    """The counted bounds of one side (settings.sim_max_files/lookups/functions)."""
    return Budget(
        max_files=settings.sim_max_files,
        max_lookups=settings.sim_max_lookups,
        max_functions=settings.sim_max_functions,
        deadline=deadline,
    )

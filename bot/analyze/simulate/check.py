"""SimulatorCheck: the simulator as a check of the analysis stage.

For every patch it simulates the pre-image and the post-image with the same
actors and the same tracked objects, then compares routes: a violation is
identified by its kind, its object and the lifecycle events that lead to it,
so a leak that was possible before by one route does not hide a new route to
it. Routes found only after the patch are INTRODUCED, routes found only before
are FIXED; each finding carries the shortest counterexample.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from bot.analyze.context import PatchAnalysis, SeriesAnalysis
from bot.analyze.simulate.budget import INCOMPLETE, REVIEW_INCOMPLETE, SimTimeout
from bot.analyze.simulate.budget import runaway_note as _runaway
from bot.analyze.simulate.explain import describe_kind, reviewer_question
from bot.analyze.simulate.extract import Extractor
from bot.analyze.simulate.run import (
    Side,
    SimResult,
    SimViolation,
    budget_of,
    explore_side,
    load_data,
    prepare_side,
)
from bot.analyze.simulate.scenario import (
    ActorPlan,
    ScenarioData,
    accessed_types,
    freed_types,
    matches,
    plan_actors,
    program_shape,
    queued_works,
    quiesced_works,
    reachable_names,
)
from bot.analyze.simulate.sources import SourceSet
from bot.analyze.simulate.vocab import Effects
from bot.config import Settings
from bot.model import Confidence, FileDiff, Finding, LineKind, Severity, Status

_SYMBOLS = {
    "LEAK": "object-never-freed",
    "UAF": "use-after-free",
    "DOUBLE-FREE": "double-free",
    "UNDERFLOW": "refcount-underflow",
    "WORK-AFTER-FREE": "work-outlives-object",
}
_SEVERITY = {"LEAK": Severity.WARNING}
_C_SUFFIXES = (".c", ".h")
IMPLIED_FREE = "(scenario: frees_object)"  # the text of the free after a shutdown


class SimulatorCheck:
    """Runs the lifecycle simulator on pre- and post-image of every patch.

    After `run`, `last_notes` says what bounded or limited the simulation
    (bounds reached, functions without a role, diff-only images)."""

    name = "simulator"

    def __init__(self, *, reduction: bool = True) -> None:
        self.reduction = reduction  # False: every order (for benchmarks and doubt)
        self.last_notes: tuple[str, ...] = ()
        self.last_results: dict[int, tuple[SimResult, SimResult]] = {}
        self._routes: dict[int, frozenset[tuple[object, ...]]] = {}  # id(finding) -> routes
        self._reasons: dict[str, str] = {}  # entry -> why it is an actor (for evidence)
        self._settings = Settings()
        self._tree_texts: dict[str, str | None] = {}

    def run(self, ctx: SeriesAnalysis, settings: Settings) -> Sequence[Finding]:
        # what is simulated is bounded by counts (budget.py); the clock is only a
        # runaway stop for the whole series, and reaching it makes the review say
        # it is incomplete
        deadline = time.monotonic() + settings.sim_max_seconds
        limit = settings.sim_max_seconds
        findings: list[Finding] = []
        notes: list[str] = []
        earlier: dict[str, str] = {}  # post-images of earlier patches of the series
        self._tree_texts = {}  # tree files read, shared by every side of every patch
        self.last_results = {}
        self._routes = {}
        for pa in ctx.patches:
            if time.monotonic() >= deadline:
                notes.append(_runaway(limit, f"before patch {pa.number}: it was not simulated"))
            else:
                try:
                    found, patch_notes = self._patch(pa, ctx, settings, earlier, deadline)
                except SimTimeout:
                    found, patch_notes = [], [_runaway(limit, "while reading: not simulated")]
                findings.extend(found)
                notes.extend(f"patch {pa.number}: {n}" for n in patch_notes)
            for img in pa.images.images:
                if img.post is not None:
                    earlier[img.path] = img.post
                else:
                    earlier.pop(img.path, None)
        self._tree_texts = {}
        # what left the simulation incomplete comes first: the text report shows
        # only a check's first notes
        notes.sort(key=lambda n: 0 if REVIEW_INCOMPLETE in n else 1 if INCOMPLETE in n else 2)
        self.last_notes = tuple(dict.fromkeys(notes))
        return self._in_series(findings)

    def _in_series(self, findings: list[Finding]) -> list[Finding]:
        """A route one patch introduces and a later patch removes is
        FIXED_IN_SERIES (fixed_by the later patch), and that later FIXED
        finding is not reported again."""
        used: set[int] = set()
        marked: dict[int, Finding] = {}
        for f in findings:
            if f.status is not Status.INTRODUCED:
                continue
            routes = self._routes.get(id(f), frozenset())
            later = next(
                (
                    g
                    for g in findings
                    if g.status is Status.FIXED
                    and id(g) not in used
                    and (g.patch_number or 0) > (f.patch_number or 0)
                    and routes & self._routes.get(id(g), frozenset())
                ),
                None,
            )
            if later is not None:
                used.add(id(later))
                marked[id(f)] = replace(
                    f, status=Status.FIXED_IN_SERIES, fixed_by=later.patch_number
                )
        return [marked.get(id(f), f) for f in findings if id(f) not in used]

    # ------------------------------------------------------------------ one patch

    def _patch(
        self,
        pa: PatchAnalysis,
        ctx: SeriesAnalysis,
        settings: Settings,
        earlier: Mapping[str, str],
        deadline: float,
    ) -> tuple[list[Finding], list[str]]:
        notes: list[str] = []
        c_images = [i for i in pa.images.images if i.path.endswith(_C_SUFFIXES)]
        touched = list(
            dict.fromkeys(
                ch.name
                for ch in pa.changes
                if ch.file.endswith(_C_SUFFIXES) and (ch.pre is not None or ch.post is not None)
            )
        )
        if not c_images or not touched:
            return [], notes
        if pa.partial:
            notes.append(
                "images rebuilt from the diff only: "
                "the simulator saw only the functions the hunks show (and not the tree)"
            )
        pre_files = dict(earlier)
        post_files = dict(earlier)
        for img in c_images:
            pre_files.pop(img.path, None)
            post_files.pop(img.path, None)
            if img.pre is not None:
                pre_files[img.path] = img.pre
            if img.post is not None:
                post_files[img.path] = img.post
        # a patch that did not apply to the tree was not written against it: its
        # callers, ops tables and callbacks there are another version's (a file
        # the patch creates may exist there already), so the simulator reads
        # only the series, as in a diff-only review
        tree = None if pa.partial else ctx.tree_root
        pre_src = SourceSet(
            pre_files, tree, budget_of(settings, deadline), tree_texts=self._tree_texts
        )
        post_src = SourceSet(
            post_files, tree, budget_of(settings, deadline), tree_texts=self._tree_texts
        )
        found = self._simulate(pa, (pre_src, post_src), touched, settings, notes)
        for side_name, src in (("pre-image", pre_src), ("post-image", post_src)):
            notes.extend(f"{side_name}: {n}" for n in src.budget.notes)
        return found, notes

    def _simulate(
        self,
        pa: PatchAnalysis,
        sources: tuple[SourceSet, SourceSet],
        touched: list[str],
        settings: Settings,
        notes: list[str],
    ) -> list[Finding]:
        pre_src, post_src = sources
        deadline = pre_src.budget.deadline
        planned = self._plan(pre_src, post_src, touched, settings, notes)
        if planned is None:
            notes.append("no actor found for the touched functions: nothing simulated")
            return []
        actors, pre, post, roleless = planned
        notes.extend(roleless)
        tracked = _tracked(pre, post, set(touched))
        if not tracked:
            notes.append("nothing the touched functions use is ever freed on the simulated paths")
            return []
        pre_res, post_res = (
            explore_side(side, tracked, settings, deadline=deadline, reduction=self.reduction)
            for side in (pre, post)
        )
        self.last_results[pa.number] = (pre_res, post_res)
        for side_name, res in (("pre-image", pre_res), ("post-image", post_res)):
            notes.extend(f"{side_name}: {n}" for n in res.notes)
        files = {fd.path: fd for fd in pa.images.files}
        touched_set = set(touched)
        self._reasons = {a.entry: f"{a.role} {a.entry}(): {a.reason}" for a in actors}
        for side in (post, pre):
            for work, b in side.program.works.items():
                field = work.split(":", 1)[-1].replace(".", "->")
                self._reasons.setdefault(
                    b.callback,
                    f"{b.kind} {b.callback}(): bound to {field} at {b.where.file}:{b.where.line}",
                )
        findings = self._compare(pa, pre_res, post_res, touched_set, files)
        both = {v.signature for v in pre_res.violations} & {
            v.signature for v in post_res.violations
        }
        if both:
            notes.append(
                f"{len(both)} route(s) found before and after the patch "
                "(pre-existing, not reported)"
            )
        return findings

    def _plan(
        self,
        pre_src: SourceSet,
        post_src: SourceSet,
        touched: list[str],
        settings: Settings,
        notes: list[str],
    ) -> tuple[list[ActorPlan], Side, Side, list[str]] | None:
        """Actors for the touched functions (the same on both sides), both
        sides translated, and a note naming touched functions no actor covers;
        None when there is no actor at all. At most `sim_max_actors` candidate
        actors are set up (a note says which were left out)."""
        effects, data = load_data(settings)
        self._settings = settings
        plans: dict[tuple[str, str], ActorPlan] = {}
        roleless: list[str] = []
        callbacks: set[str] = set()
        for src in (post_src, pre_src):
            side_callbacks = {b.callback for b in Extractor(src, effects).bindings()}
            callbacks |= side_callbacks
            found, why = plan_actors(src, touched, data, settings.call_depth, side_callbacks)
            for p in found:
                plans.setdefault((p.role, p.entry), p)
            roleless += [n.split("(", 1)[0] for n in why if n.split("(", 1)[0] not in roleless]
        actors = list(plans.values())
        if roleless and not any(a.role in ("release", "teardown", "shutdown") for a in actors):
            actors += _shutdowns_of_queued(post_src, effects, data, roleless, settings.call_depth)
        pending = [n for n in touched if n in callbacks]
        if not actors and not pending:
            return None
        actors = _capped(actors, settings.sim_max_actors, notes)
        pre = prepare_side(pre_src, actors, settings)
        post = prepare_side(post_src, actors, settings)
        # a touched callback that no actor queues is pending work of its own
        queued = {b.callback for side in (pre, post) for b in side.program.works.values()}
        extra = [
            ActorPlan("pending", cb, "a touched work callback no simulated actor queues")
            for cb in pending
            if cb not in queued
        ]
        if extra:
            actors = _capped(actors + extra, settings.sim_max_actors, notes)
            pre = prepare_side(pre_src, actors, settings)
            post = prepare_side(post_src, actors, settings)
        # a teardown by name is the scenario only where no release path or ops
        # teardown gives one: those say how the object really goes away
        owned = any(a.role in ("release", "teardown") for a in actors)
        shutdowns = {} if owned else _quiescing(actors, pre, post)
        if any(a.role == "shutdown" for a in actors):
            # a shutdown by name that quiesces no work of its object is no shutdown
            actors = [a for a in actors if a.role != "shutdown" or a.entry in shutdowns]
            if shutdowns:
                queuers = self._queuers(
                    actors=actors,
                    shutdowns=shutdowns,
                    pre=pre,
                    post=post,
                    touched=touched,
                    callbacks=callbacks,
                )
                actors = _capped(actors + queuers, settings.sim_max_actors, notes)
                roleless = [n for n in roleless if n not in {q.entry for q in queuers}]
            pre = prepare_side(pre_src, actors, settings)
            post = prepare_side(post_src, actors, settings)
        # an actor whose entry another actor calls is that actor's path, not a
        # second concurrent one (running both would free the object twice)
        # (what each actor reaches is computed once per side: not once per pair)
        reached = set().union(
            *(
                reachable_names(side.program.functions, b.entry)
                for side in (pre, post)
                for b in actors
            )
        )
        inner = {a.entry for a in actors if a.entry in reached}
        if inner and len(inner) < len(actors):
            actors = [a for a in actors if a.entry not in inner]
            for side in (pre, post):
                side.program.actors = actors
        # a touched helper reached from an actor or a queued callback is simulated
        covered = set(pre.program.functions) | set(post.program.functions)
        return actors, pre, post, _roleless([n for n in roleless if n not in covered])

    def _queuers(
        self,
        *,
        actors: list[ActorPlan],
        shutdowns: dict[str, set[str]],
        pre: Side,
        post: Side,
        touched: list[str],
        callbacks: set[str],
    ) -> list[ActorPlan]:
        """Touched paths that queue a work a shutdown quiesces, those the patch
        changes first (the thread bound keeps the first ones)."""
        taken = {a.entry for a in actors}
        candidates = [
            ActorPlan("queue", n, "queues a work the shutdown cancels or flushes")
            for n in touched
            if n not in taken and n not in callbacks
        ]
        if not candidates:
            return []
        depth = self._settings.call_depth
        for side in (pre, post):
            side.program.extractor.compile_reachable([c.entry for c in candidates], depth)
        quiet = set().union(*shutdowns.values())
        kept: list[tuple[bool, ActorPlan]] = []
        for c in candidates:
            works = queued_works(pre.program.functions, c.entry) | queued_works(
                post.program.functions, c.entry
            )
            if works & quiet:
                same = program_shape(pre.program.functions, c.entry) == program_shape(
                    post.program.functions, c.entry
                )
                kept.append((same, c))
        return [c for _, c in sorted(kept, key=lambda x: x[0])]

    def _compare(
        self,
        pa: PatchAnalysis,
        pre: SimResult,
        post: SimResult,
        touched: set[str],
        files: Mapping[str, FileDiff],
    ) -> list[Finding]:
        pre_sigs = {v.signature for v in pre.violations}
        post_sigs = {v.signature for v in post.violations}
        out: list[Finding] = []
        for status, res, other in (
            (Status.INTRODUCED, post, pre_sigs),
            (Status.FIXED, pre, post_sigs),
        ):
            groups: dict[tuple[str, str], list[SimViolation]] = {}
            for v in res.violations:
                if v.signature not in other:
                    groups.setdefault((v.kind, v.obj), []).append(v)
            # one finding per kind and place: two structs leaked together, or used
            # after free at the same line, are one problem to the reader
            merged: dict[tuple[str, str, int | None], tuple[list[str], SimViolation, int]] = {}
            sigs: dict[tuple[str, str, int | None], set[tuple[object, ...]]] = {}
            for (kind, obj), routes in groups.items():
                best = min(routes, key=lambda v: len(v.trace.steps))
                last = best.trace.steps[-1] if best.trace.steps else None
                where = (kind, last.function if last else "", last.line if last else None)
                if kind == "LEAK":
                    where = (kind, "", None)
                sigs.setdefault(where, set()).update(v.signature for v in routes)
                if where in merged:
                    objs, kept, count = merged[where]
                    objs.append(obj)
                    if len(best.trace.steps) < len(kept.trace.steps):
                        kept = best
                    merged[where] = (objs, kept, count + len(routes))
                else:
                    merged[where] = ([obj], best, len(routes))
            for where, (objs, best, count) in merged.items():
                name = " and struct ".join(objs)
                finding = self._finding(
                    pa,
                    best,
                    status=status,
                    obj=name,
                    routes=count,
                    sides=(pre, post),
                    touched=touched,
                    files=files,
                )
                self._routes[id(finding)] = frozenset(sigs[where])
                out.append(finding)
        return out

    def _finding(
        self,
        pa: PatchAnalysis,
        v: SimViolation,
        *,
        status: Status,
        obj: str,
        routes: int,
        sides: tuple[SimResult, SimResult],
        touched: set[str],
        files: Mapping[str, FileDiff],
    ) -> Finding:
        """One finding for the shortest route of one violation."""
        kind = v.kind
        pre, post = sides
        is_post = status is Status.INTRODUCED
        trace = v.trace
        anchor = next((s for s in reversed(trace.steps) if s.function in touched), None)
        if any(IMPLIED_FREE in s.text for s in trace.steps):
            # the free a scenario implies is no line of the patch: the queueing
            # that outlives it is
            anchor = next(
                (s for s in reversed(trace.steps) if s.function in touched and "[queued" in s.text),
                anchor,
            )
        if anchor is None and trace.steps:
            anchor = trace.steps[-1]
        file = anchor.file if anchor else ""
        line = anchor.line if anchor else None
        function = anchor.function if anchor else None
        if not is_post and line is not None and file in files:
            line = map_pre_line(files[file], line)
        what = describe_kind(kind)
        told = trace.summary.split(": ", 1)[-1]
        actors = "; ".join(f"{a}: {trace.actor_roles.get(a, '')}" for a in trace.actors)
        if status is Status.INTRODUCED:
            message = f"After this patch the simulator finds a {what} of struct {obj}: {told}."
        else:
            message = (
                f"Before this patch the simulator finds a {what} of struct {obj}, "
                f"which the patch removes: {told}."
            )
        entries = {s.function for s in trace.steps} | {
            r.split("()", 1)[0] for r in trace.actor_roles.values()
        }
        why = tuple(
            f"why an actor: {reason}" for entry, reason in self._reasons.items() if entry in entries
        )
        evidence = (
            f"actors: {actors}",
            *why,
            f"{routes} route(s) to this {what} {'after' if is_post else 'before'} the patch "
            f"that the {'pre' if is_post else 'post'}-image does not have",
            f"explored {pre.states} states before and {post.states} after the patch"
            + (
                ""
                if pre.complete and post.complete
                else " (a bound was reached: see the check's notes)"
            ),
        )
        # a bound cut the search short on one side: the other side's route may
        # have been there too, unseen
        bounded = not (pre.complete and post.complete)
        last_fn = trace.steps[-1].function if trace.steps else ""
        return Finding(
            rule_id=f"SIM-{kind}",
            symbol=_SYMBOLS.get(kind, kind.lower()),
            severity=_SEVERITY.get(kind, Severity.ERROR),
            confidence=Confidence.LOW if bounded else Confidence.MEDIUM,
            status=status,
            message=message,
            file=file,
            line=line,
            function=function,
            question=reviewer_question(kind, obj, last_fn, status),
            evidence=evidence,
            patch_number=pa.number,
            trace=trace,
        )


def _shutdowns_of_queued(
    src: SourceSet, effects: Effects, data: ScenarioData, names: list[str], depth: int
) -> list[ActorPlan]:
    """Teardowns by name, anywhere the tree is read, that cancel or flush a work
    the touched functions `names` queue: a patch that only changes the queueing
    path still races with the teardown of the object it queues on."""
    if not data.teardown_names:
        return []
    ex = Extractor(src, effects)
    ex.compile_reachable(names, depth)
    works = set().union(*(queued_works(ex.functions, n) for n in names if n in ex.functions))
    if not works:
        return []
    quiesce = [n for n, e in effects.items() if e.effect in ("cancel", "cancel_sync", "flush")]
    found: list[ActorPlan] = []
    for api in quiesce:
        for fn in src.callers(api):
            if not matches(fn, data.teardown_names) or fn in {p.entry for p in found}:
                continue
            ex.compile_reachable([fn], depth)
            theirs = quiesced_works(ex.functions, fn) & works
            if theirs:
                what = sorted(theirs)[0].split(":", 1)[-1]
                found.append(ActorPlan("shutdown", fn, f"named like a teardown; waits for {what}"))
    return found


def _quiescing(actors: Sequence[ActorPlan], pre: Side, post: Side) -> dict[str, set[str]]:
    """Shutdown actor entry -> the works of the object it takes (its first
    struct pointer parameter) that it cancels or flushes on either side."""
    out: dict[str, set[str]] = {}
    for a in actors:
        if a.role != "shutdown":
            continue
        works: set[str] = set()
        for side in (pre, post):
            funcs = side.program.functions
            fn = funcs.get(a.entry)
            if fn is None or not fn.params:
                continue
            works |= {
                w for w in quiesced_works(funcs, a.entry) if w.split(":", 1)[0] == fn.params[0]
            }
        if works:
            out[a.entry] = works
    return out


def _tracked(pre: Side, post: Side, touched: set[str]) -> list[str]:
    """Struct types the touched functions use that something on the simulated
    paths frees (either side: a patch may add or remove the free)."""
    focus: set[str] = set()
    freed: set[str] = set()
    for side in (pre, post):
        funcs = side.program.functions
        release = {
            b.key: b.callback for b in side.program.bindings if b.kind == "release" and b.key
        }
        focus |= accessed_types(f for n, f in funcs.items() if n in touched)
        freed |= freed_types(funcs.values(), release, touched)
    return sorted(focus & freed)


def _capped(actors: list[ActorPlan], bound: int, notes: list[str]) -> list[ActorPlan]:
    """The first `bound` candidate actors; a note names those left out."""
    if len(actors) <= bound:
        return actors
    left = actors[bound:]
    shown = ", ".join(f"{a.entry}()" for a in left[:4]) + (" ..." if len(left) > 4 else "")
    note = (
        f"actor bound reached ({bound} actors): {len(left)} more not set up ({shown}; {INCOMPLETE})"
    )
    if note not in notes:
        notes.append(note)
    return actors[:bound]


def _roleless(names: list[str]) -> list[str]:
    """One note naming the touched functions no actor covers."""
    if not names:
        return []
    shown = ", ".join(f"{n}()" for n in names[:6]) + (
        f" and {len(names) - 6} more" if len(names) > 6 else ""
    )
    return [f"no actor role (release/teardown/shrink path or callback) for {shown}"]


def map_pre_line(fd: FileDiff, line: int) -> int:
    """A pre-image line number's position in the post-image of the same file
    (a removed line maps to where it was)."""
    shift = 0
    for h in fd.hunks:
        end = h.source_start + h.source_length
        if line < h.source_start:
            break
        if line < end:
            last_target = h.target_start
            for hl in h.lines:
                if hl.target_line is not None:
                    last_target = hl.target_line
                if hl.source_line == line:
                    return hl.target_line if hl.target_line is not None else last_target
                if (
                    hl.kind is LineKind.REMOVED
                    and hl.source_line is not None
                    and hl.source_line > line
                ):
                    break
            return last_target
        shift = (h.target_start + h.target_length) - end
    return max(1, line + shift)

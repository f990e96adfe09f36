"""The review pipeline: bytes in, a Review out.

    review_inputs(args)  ingest.load -> assemble.assemble -> assemble.select -> review_series
    review_series(s)     apply.apply_series -> build_analysis -> run_checks -> Review

The CLI (`bot review`) and the Celery workers call these same functions. Nothing
here renders text or touches the network except through `bot.ingest` (lore fetch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import BinaryIO

from bot.analyze.context import Check, PatchAnalysis, SeriesAnalysis
from bot.config import Settings
from bot.errors import InputError
from bot.model import (
    AppliedSeries,
    CheckResult,
    Finding,
    Review,
    Series,
    Status,
)

Progress = Callable[[str], None]


def review_inputs(
    args: Sequence[str],
    settings: Settings,
    *,
    tree: str | None = None,
    version: int | None = None,
    repo: str | None = None,
    series_key: str | None = None,
    stdin: BinaryIO | None = None,
    progress: Progress | None = None,
) -> Review:
    """Review what the command line names: paths, `-`, Message-IDs, lore URLs or,
    with `repo`, a git revision range. Raises bot.errors.BotError subclasses for
    input that cannot be read; everything else is a result inside the Review."""
    from bot import assemble, ingest

    if repo is not None and tree is None:
        # a revision range applies to the repository it comes from, at the
        # range's base (base-commit:), in a scratch clone: never diff-only
        tree = repo
    messages = ingest.load(list(args), settings, repo=repo, stdin=stdin, progress=progress)
    if progress:
        progress(f"assembling {len(messages)} message(s)")
    series_set = assemble.assemble(messages, settings)
    try:
        series, versions, others = assemble.select(series_set, version=version, key=series_key)
        if not series.patches:
            # a cover letter alone, or every patch MISSING: nothing was reviewed,
            # which must not read as a clean pass
            raise InputError(
                f"nothing to review: none of the {series.total} patch(es) of "
                f"'{series.name}' is in the input"
            )
        return review_series(
            series,
            versions,
            settings,
            tree=tree,
            others=others,
            notes=series_set.notes,
            progress=progress,
        )
    except InputError as exc:
        # A refusal after ingest (no patch at all, an unsafe diff path) names the
        # input it came from, so the one line says which file to look at.
        what = ", ".join(args) if args else "stdin"
        exc.source = f"{what}: {exc.source}" if exc.source else what
        raise


def review_series(
    series: Series,
    versions: tuple[Series, ...],
    settings: Settings,
    *,
    tree: str | None = None,
    others: tuple[Series, ...] = (),
    notes: tuple[str, ...] = (),
    progress: Progress | None = None,
) -> Review:
    """Apply one series to `tree` (or use the diff alone), analyse it, and collect
    every finding and check outcome into a Review.

    A review on a plain tree is kept in the on-disk cache with what it asked of
    the tree (bot.review_cache): the same series on the same tree files, rules
    and code is read back instead of computed again."""
    from bot import cache, review_cache, safefs

    cache.configure(settings.cache_dir)
    entry_key = review_cache.key(
        series, versions, others=others, notes=notes, tree=tree, settings=settings
    )
    kept = review_cache.lookup(entry_key) if entry_key is not None else None
    if kept is not None:
        if progress:
            progress("the same series on the same tree files: the earlier review is reused")
        applied = AppliedSeries(
            series=series,
            tree=tree,
            applications=kept.applications,
            images=kept.images,
            base_commit=kept.base_commit,
            notes=kept.applied_notes,
        )
        return _review(versions, others, notes, applied, findings=kept.findings, checks=kept.checks)
    with safefs.asked() as journal:
        applied, findings, checks = _computed(series, tree, settings, progress)
    review = _review(versions, others, notes, applied, findings=findings, checks=checks)
    if entry_key is not None and all(c.ok for c in checks) and not _incomplete(checks):
        computed = review_cache.Kept(
            applications=applied.applications,
            images=applied.images,
            base_commit=applied.base_commit,
            applied_notes=applied.notes,
            findings=review.findings,
            checks=review.checks,
        )
        review_cache.store(entry_key, computed, journal)
    cache.flush()  # what this review parsed serves the next one
    return review


def _computed(
    series: Series, tree: str | None, settings: Settings, progress: Progress | None
) -> tuple[AppliedSeries, list[Finding], list[CheckResult]]:
    """Apply, find the touched functions, run every check."""
    from bot.apply import apply_series

    if progress:
        where = f"onto {tree}" if tree else "diff-only"
        progress(f"applying {len(series.patches)} patch(es) {where}")
    applied = apply_series(series, tree, settings, progress=progress)
    if progress:
        progress("analysing touched functions")
    analysis = build_analysis(applied, settings)
    findings, checks = run_checks(analysis, settings, load_checks(settings))
    return applied, findings, checks


def _review(
    versions: tuple[Series, ...],
    others: tuple[Series, ...],
    notes: tuple[str, ...],
    applied: AppliedSeries,
    *,
    findings: Sequence[Finding],
    checks: Sequence[CheckResult],
) -> Review:
    # MISSING slots are shown by the renderers from the Series itself.
    review_notes = list(notes) + list(applied.notes) + _incomplete(checks)
    return Review(
        series=applied.series,
        versions=versions or (applied.series,),
        applied=applied,
        findings=tuple(_ordered(findings)),
        checks=tuple(checks),
        notes=tuple(dict.fromkeys(review_notes)),
        other_series=others,
    )


def build_analysis(applied: AppliedSeries, settings: Settings) -> SeriesAnalysis:
    """Find the functions each patch touches, in its pre- and post-image."""
    from bot.analyze.cfunc import touched_functions

    patches: list[PatchAnalysis] = []
    present = {p.number: p for p in applied.series.patches}
    for images in applied.images:
        patch = present.get(images.number)
        if patch is None:
            continue
        patches.append(
            PatchAnalysis(
                number=images.number,
                patch=patch,
                images=images,
                changes=touched_functions(images),
                partial=any(img.partial for img in images.images),
            )
        )
    return SeriesAnalysis(applied=applied, patches=tuple(patches), tree_root=applied.tree)


def load_checks(settings: Settings) -> list[Check]:
    """The lifecycle rules selected by settings, then the simulator."""
    from bot.analyze.engine import load_checks as load_rule_checks

    checks: list[Check] = list(load_rule_checks(settings))
    if settings.simulate:
        from bot.analyze.simulate import SimulatorCheck

        checks.append(SimulatorCheck())
    return checks


def run_checks(
    analysis: SeriesAnalysis, settings: Settings, checks: Sequence[Check]
) -> tuple[list[Finding], list[CheckResult]]:
    """Run every check; one check raising becomes a failed result for that check
    alone (b4 does the same), so a broken rule can never hide the others."""
    findings: list[Finding] = []
    results: list[CheckResult] = []
    for check in checks:
        try:
            found = list(check.run(analysis, settings))
        except Exception as exc:  # isolating a failing check is the point
            detail = " ".join(str(exc).split()) or "no message"
            results.append(
                CheckResult(check=check.name, ok=False, error=f"{type(exc).__name__}: {detail}")
            )
            continue
        findings.extend(found)
        notes = tuple(getattr(check, "last_notes", ()) or ())
        results.append(CheckResult(check=check.name, ok=True, notes=notes))
    return findings, results


# A check note that says the review is incomplete (the simulator's runaway time
# limit: bot/analyze/simulate/budget.py) is also a note of the review itself.
INCOMPLETE_MARK = "review incomplete"


def _incomplete(checks: Sequence[CheckResult]) -> list[str]:
    return [f"{c.check}: {n}" for c in checks for n in c.notes if INCOMPLETE_MARK in n]


_STATUS_ORDER = {
    Status.INTRODUCED: 0,
    Status.FIXED_IN_SERIES: 1,
    Status.PRE_EXISTING: 2,
    Status.FIXED: 3,
}


def _ordered(findings: Sequence[Finding]) -> list[Finding]:
    """Introduced first, then by patch, file and line: the order a reviewer reads."""
    return sorted(
        findings,
        key=lambda f: (
            _STATUS_ORDER[f.status],
            f.patch_number or 0,
            f.file,
            f.line or 0,
            f.rule_id,
        ),
    )

"""A hand-built Review for the renderer tests (no test functions live here).

The series is ours and kernel-style: "[PATCH v2 0/3] mm/zblock: simplify pool
teardown", of which 1/3 and 2/3 arrived and 3/3 is MISSING; v1 had only 1/3.
Patch 1 stops its release path from scheduling the pool's destroy work (an
introduced leak, with a simulator trace) and drops a cancel from a teardown loop
(an introduced warning in a long hunk); patch 2 did not apply (one failed hunk).
There is also a pre-existing finding, a fixed one, one fixed within the series,
a failed check and a check with a note.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from bot.model import (
    AppliedSeries,
    ApplyMethod,
    CheckResult,
    Confidence,
    FileImage,
    Finding,
    HunkResult,
    Patch,
    PatchApplication,
    PatchImages,
    PatchSlot,
    RawMessage,
    Review,
    Series,
    Severity,
    Status,
    Trace,
    TraceStep,
)
from bot.report.quote import parse_diff

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "report"

COVER_ID = "cover.1700000000.git.jane@example.org"
P1_ID = "p1.1700000000.git.jane@example.org"
P2_ID = "p2.1700000000.git.jane@example.org"
V1_P1_ID = "v1p1.1690000000.git.jane@example.org"
TZ = timezone(timedelta(hours=3))
DATE = datetime(2023, 11, 14, 16, 13, 20, tzinfo=TZ)
SUBJECT_1 = "[PATCH v2 1/3] mm/zblock: do not schedule pool destruction from the release path"
SUBJECT_2 = "[PATCH v2 2/3] mm/zblock: drop the dead flag"

LEAK_QUESTION = (
    "zblock_release_pages() can run after the owner went offline. With the "
    "schedule_work() gone, who destroys a pool that was still busy at offline "
    "time once its last page is released? It looks like such a pool is leaked "
    "for good."
)


def message(
    msgid: str,
    subject: str,
    *,
    refs: tuple[str, ...] = (),
    minutes: int = 0,
    to: tuple[str, ...] = ("Andrew Morton <akpm@example.org>",),
    cc: tuple[str, ...] = (
        "linux-mm@kvack.example",
        "Reviewer One <one@example.org>",
        "Jane Hacker <jane@example.org>",
    ),
) -> RawMessage:
    return RawMessage(
        source=f"test:{msgid}",
        raw=b"",
        message_id=msgid,
        subject=subject,
        from_name="Jane Hacker",
        from_addr="jane@example.org",
        date=DATE + timedelta(minutes=minutes),
        in_reply_to=refs[-1] if refs else None,
        references=refs,
        body="",
        to=to,
        cc=cc,
    )


def patch(number: int, msgid: str, subject: str, diff_file: str, total: int = 3) -> Patch:
    title = subject.split("] ", 1)[1]
    return Patch(
        message=message(msgid, subject, refs=(COVER_ID,), minutes=number),
        number=number,
        total=total,
        title=title,
        commit_message=f"{title}\n\nSigned-off-by: Jane Hacker <jane@example.org>\n",
        diff=(FIXTURES / diff_file).read_text(),
        author_name="Jane Hacker",
        author_addr="jane@example.org",
    )


def leak_trace() -> Trace:
    return Trace(
        actors=("CPU0", "CPU1", "worker"),
        actor_roles={"CPU0": "zblock_release_pages", "CPU1": "zblock_pool_offline"},
        steps=(
            TraceStep("CPU1", "pool->dead = true", "zblock_pool_offline", "mm/zblock.c", 149),
            TraceStep(
                "CPU1", "schedule_work(&pool->destroy)", "zblock_pool_offline", "mm/zblock.c", 150
            ),
            TraceStep("worker", "atomic_read(&pool->nr_pages) == 1", "zblock_destroy_work"),
            TraceStep("worker", "returns, pool kept", "zblock_destroy_work"),
            TraceStep(
                "CPU0",
                "atomic_sub(1 << order, &pool->nr_pages) -> 0",
                "zblock_release_pages",
                "mm/zblock.c",
                129,
            ),
            TraceStep("CPU0", "returns: nothing schedules destroy", "zblock_release_pages"),
        ),
        summary="Every actor has finished and no work is pending, yet the pool is never freed.",
    )


def findings() -> tuple[Finding, ...]:
    leak = Finding(
        rule_id="MMLC001",
        symbol="release-path-stops-destroy",
        severity=Severity.ERROR,
        confidence=Confidence.HIGH,
        status=Status.INTRODUCED,
        message=(
            "The release path zblock_release_pages() no longer schedules the pool's "
            "destroy work when the last page goes away, and nothing else destroys a "
            "pool that was busy when its owner went offline."
        ),
        question=LEAK_QUESTION,
        file="mm/zblock.c",
        line=129,
        function="zblock_release_pages",
        evidence=(
            "removed call schedule_work(&pool->destroy) from zblock_release_pages()",
            "zblock_destroy_all() skips pools that are still busy",
        ),
        suggestion=(
            "If the pool must outlive the last zblock_release_pages(), take a reference "
            "on it instead of dropping the destruction."
        ),
        patch_number=1,
        trace=leak_trace(),
    )
    cancel = Finding(
        rule_id="MMLC003",
        symbol="free-without-cancel",
        severity=Severity.WARNING,
        confidence=Confidence.MEDIUM,
        status=Status.INTRODUCED,
        message="zblock_destroy_all() frees a pool whose destroy work may still be queued.",
        question="What stops the destroy work from running on a pool freed here?",
        file="mm/zblock.c",
        line=208,
        function="zblock_destroy_all",
        evidence=("removed call cancel_work_sync(&pool->destroy) before zblock_pool_free()",),
        patch_number=1,
    )
    pre = Finding(
        rule_id="MMLC002",
        symbol="create-error-path-leak",
        severity=Severity.WARNING,
        confidence=Confidence.MEDIUM,
        status=Status.PRE_EXISTING,
        message="zblock_pool_create() leaks the pool when the owner lookup fails. Long tail.",
        file="mm/zblock.c",
        line=88,
        function="zblock_pool_create",
        patch_number=2,
    )
    fixed = Finding(
        rule_id="SIM-UAF",
        symbol="use-after-free",
        severity=Severity.ERROR,
        confidence=Confidence.HIGH,
        status=Status.FIXED,
        message="The destroy work could free the pool while the release path still used it.",
        file="mm/zblock.c",
        line=128,
        function="zblock_release_pages",
        patch_number=1,
        trace=leak_trace(),
    )
    in_series = Finding(
        rule_id="MMLC005",
        symbol="flag-read-after-free",
        severity=Severity.WARNING,
        confidence=Confidence.LOW,
        status=Status.FIXED_IN_SERIES,
        message="zblock_pool_offline() reads pool->dead after queueing the destroy work.",
        file="mm/zblock.c",
        line=150,
        function="zblock_pool_offline",
        patch_number=1,
        fixed_by=2,
    )
    return (leak, cancel, in_series, pre, fixed)


def build_review(**changes: object) -> Review:
    """The reference review; keyword arguments replace Review fields."""
    p1 = patch(1, P1_ID, SUBJECT_1, "0001-zblock-release-pages.diff")
    p2 = patch(2, P2_ID, SUBJECT_2, "0002-zblock-drop-dead-flag.diff")
    cover = message(COVER_ID, "[PATCH v2 0/3] mm/zblock: simplify pool teardown")
    series = Series(
        key=COVER_ID,
        version=2,
        revision="2",
        total=3,
        name="mm/zblock: simplify pool teardown",
        author_name="Jane Hacker",
        author_addr="jane@example.org",
        cover=cover,
        slots=(PatchSlot(1, p1), PatchSlot(2, p2), PatchSlot(3, None)),
        date=DATE,
        revision_of="v1-key@example.org",
    )
    v1_patch = replace(
        patch(1, V1_P1_ID, SUBJECT_1.replace("v2", "v1"), "0001-zblock-release-pages.diff"),
    )
    v1 = Series(
        key="v1-key@example.org",
        version=1,
        revision="1",
        total=3,
        name="mm/zblock: simplify pool teardown",
        author_name="Jane Hacker",
        author_addr="jane@example.org",
        cover=None,
        slots=(PatchSlot(1, v1_patch), PatchSlot(2, None), PatchSlot(3, None)),
        date=DATE - timedelta(days=7),
    )
    files1 = parse_diff(p1)
    applied = AppliedSeries(
        series=series,
        tree="/src/linux",
        applications=(
            PatchApplication(
                number=1,
                method=ApplyMethod.GIT_AM,
                ok=True,
                hunks=(
                    HunkResult("mm/zblock.c", files1[0].hunks[0].header, True),
                    HunkResult("mm/zblock.c", files1[0].hunks[1].header, True, offset=3),
                ),
            ),
            PatchApplication(
                number=2,
                method=ApplyMethod.NOT_APPLIED,
                ok=False,
                message="1 of 2 hunks failed",
                hunks=(
                    HunkResult("include/linux/zblock.h", "@@ -40,5 +40,4 @@", True),
                    HunkResult(
                        "mm/zblock.c",
                        "@@ -150,4 +150,3 @@",
                        False,
                        reason="context does not match",
                    ),
                ),
            ),
        ),
        images=(
            PatchImages(
                number=1,
                files=files1,
                images=(FileImage("mm/zblock.c", pre="", post="", partial=True),),
            ),
        ),
        base_commit="0123456789abcdef0123456789abcdef01234567",
    )
    review = Review(
        series=series,
        versions=(v1, series),
        applied=applied,
        findings=findings(),
        checks=(
            CheckResult("MMLC001", True),
            CheckResult("MMLC004", False, error="KeyError: 'callee'"),
            CheckResult("simulator", True, notes=("state bound reached (20000 states)",)),
        ),
        notes=("v2 is incomplete: 3/3 MISSING; reviewed what arrived",),
    )
    return replace(review, **changes)  # type: ignore[arg-type]


def now_utc() -> datetime:
    return datetime.now(UTC)

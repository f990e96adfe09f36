"""The frozen dataclasses that pass between pipeline stages.

Each arrow of the pipeline is one type here (see docs/ARCHITECTURE.md):

    ingest   -> RawMessage
    assemble -> Series (inside a SeriesSet, with every version found)
    apply    -> AppliedSeries (one PatchApplication + PatchImages per patch)
    analyze  -> Finding (+ Trace from the simulator), CheckResult per check
    report   -> Review (everything a renderer needs; renderers never analyse)

Nothing in this module does I/O. Stages never pass "a patch or a series": each
function takes exactly one of these types.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

# --------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class RawMessage:
    """One mail message as received, with the headers the pipeline needs decoded.

    `raw` keeps the original bytes so nothing that was received is lost; every
    other field is derived from it by the ingest stage.
    """

    source: str  # where it came from: a file path, "path:index" for an mbox, a URL
    raw: bytes
    message_id: str  # without angle brackets; synthesised "<source>#n" if absent
    subject: str  # RFC 2047-decoded, unfolded, whitespace collapsed
    from_name: str
    from_addr: str
    date: datetime | None  # timezone-aware when the header had a zone
    in_reply_to: str | None  # without angle brackets
    references: tuple[str, ...]  # without angle brackets, oldest first
    body: str  # decoded text: text/plain parts and inline patch attachments
    index: int = 0  # position in the input, for stable ordering
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    list_id: str | None = None


# --------------------------------------------------------------------------- assemble


@dataclass(frozen=True)
class SubjectInfo:
    """What a subject's bracketed prefixes say (`[PATCH RFC -mm v3 2/5] title`)."""

    title: str  # subject without Re:/prefixes
    prefixes: tuple[str, ...]  # every bracket token, e.g. ("PATCH", "RFC", "-mm", "v3", "2/5")
    is_patch: bool  # a PATCH-like tag is present
    is_reply: bool  # starts with Re:/Aw:/...
    version: int  # 1 when no vN
    revision: str  # "3" or "5.1" as written; "1" when absent
    number: int | None  # n of n/N
    total: int | None  # N of n/N
    rfc: bool = False
    resend: bool = False


@dataclass(frozen=True)
class Patch:
    """One patch of a series: the message, its commit text and its diff."""

    message: RawMessage
    number: int  # 1-based; 1 for a single patch
    total: int
    title: str  # subject without prefixes
    commit_message: str  # text above the `---` separator
    diff: str  # the diff text (everything unidiff should see)
    base_commit: str | None = None  # from a `base-commit:` trailer
    author_name: str = ""
    author_addr: str = ""


@dataclass(frozen=True)
class PatchSlot:
    """One expected position n of N; `patch` is None when it never arrived (MISSING)."""

    number: int
    patch: Patch | None

    @property
    def missing(self) -> bool:
        return self.patch is None


@dataclass(frozen=True)
class Series:
    """One version of a patch series, with a slot for every expected patch."""

    key: str  # stable id: Message-ID of the cover letter, else of the first patch
    version: int
    revision: str  # as written ("3", "5.1")
    total: int
    name: str  # cover subject without tags, else first patch title
    author_name: str
    author_addr: str
    cover: RawMessage | None
    slots: tuple[PatchSlot, ...]
    replies: tuple[RawMessage, ...] = ()  # review replies to any message of this series
    rfc: bool = False
    date: datetime | None = None  # date of the first message
    revision_of: str | None = None  # key of the previous version of this series
    extra: tuple[Patch, ...] = ()  # patches numbered beyond N, or duplicates, kept apart

    @property
    def patches(self) -> tuple[Patch, ...]:
        return tuple(s.patch for s in self.slots if s.patch is not None)

    @property
    def missing(self) -> tuple[int, ...]:
        return tuple(s.number for s in self.slots if s.patch is None)

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass(frozen=True)
class SeriesSet:
    """Everything assembled from one input: every series found, oldest first."""

    series: tuple[Series, ...]
    orphans: tuple[RawMessage, ...] = ()  # messages that are neither patches nor replies
    notes: tuple[str, ...] = ()  # what assembly wants the reader to know

    def versions_of(self, key: str) -> tuple[Series, ...]:
        """All versions linked to the series `key`, oldest first."""
        by_key = {s.key: s for s in self.series}
        chain: list[Series] = []
        cur = by_key.get(key)
        while cur is not None:
            chain.append(cur)
            cur = by_key.get(cur.revision_of) if cur.revision_of else None
        chain.reverse()
        # and forward: later series that revise the last one
        last = chain[-1] if chain else None
        while last is not None:
            nxt = next((s for s in self.series if s.revision_of == last.key), None)
            if nxt is None:
                break
            chain.append(nxt)
            last = nxt
        return tuple(chain)


# --------------------------------------------------------------------------- diff


class LineKind(enum.StrEnum):
    CONTEXT = " "
    ADDED = "+"
    REMOVED = "-"


@dataclass(frozen=True)
class HunkLine:
    kind: LineKind
    text: str  # without the leading marker and without the newline
    source_line: int | None  # line number in the pre-image (None for added lines)
    target_line: int | None  # line number in the post-image (None for removed lines)


@dataclass(frozen=True)
class Hunk:
    source_start: int
    source_length: int
    target_start: int
    target_length: int
    section: str  # text after the second @@ (often the enclosing function)
    lines: tuple[HunkLine, ...]

    @property
    def header(self) -> str:
        sec = f" {self.section}" if self.section else ""
        return (
            f"@@ -{self.source_start},{self.source_length} "
            f"+{self.target_start},{self.target_length} @@{sec}"
        )


@dataclass(frozen=True)
class FileDiff:
    old_path: str | None  # None for a new file
    new_path: str | None  # None for a deleted file
    hunks: tuple[Hunk, ...]
    is_binary: bool = False
    is_rename: bool = False
    mode_only: bool = False

    @property
    def path(self) -> str:
        """The path the change is about (new path, else old path)."""
        return self.new_path or self.old_path or ""

    @property
    def is_new(self) -> bool:
        return self.old_path is None

    @property
    def is_deleted(self) -> bool:
        return self.new_path is None


# --------------------------------------------------------------------------- apply


class ApplyMethod(enum.StrEnum):
    GIT_AM = "git-am-3way"
    GIT_APPLY = "git-apply"
    FUZZY = "fuzzy"  # GNU patch semantics: offsets, fuzz <= 2
    NOT_APPLIED = "not-applied"
    NO_TREE = "no-tree"  # no --tree given: diff context only


@dataclass(frozen=True)
class HunkResult:
    """How one hunk of one file applied."""

    file: str
    hunk: str  # the @@ header
    applied: bool
    offset: int = 0
    fuzz: int = 0
    reason: str = ""


@dataclass(frozen=True)
class PatchApplication:
    """How patch n applied to the tree; a failure is a result, not an exception."""

    number: int
    method: ApplyMethod
    ok: bool
    hunks: tuple[HunkResult, ...] = ()
    message: str = ""  # one line for the reader
    skipped: tuple[str, ...] = ()  # e.g. binary files, said so

    @property
    def failed_hunks(self) -> tuple[HunkResult, ...]:
        return tuple(h for h in self.hunks if not h.applied)


@dataclass(frozen=True)
class FileImage:
    """The text of one touched file before and after one patch.

    When `partial` is True the text was rebuilt from the diff alone: lines the
    diff does not show are blank, so line numbers still match the hunks.
    """

    path: str
    pre: str | None  # None: file did not exist before
    post: str | None  # None: file deleted
    partial: bool = False


@dataclass(frozen=True)
class PatchImages:
    number: int
    files: tuple[FileDiff, ...]
    images: tuple[FileImage, ...]

    def image(self, path: str) -> FileImage | None:
        return next((i for i in self.images if i.path == path), None)


@dataclass(frozen=True)
class AppliedSeries:
    series: Series
    tree: str | None  # the tree the user gave (None: diff-only)
    applications: tuple[PatchApplication, ...]
    images: tuple[PatchImages, ...]  # one per present patch, in order
    base_commit: str | None = None  # commit of the tree the series was applied on
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------- C functions


@dataclass(frozen=True)
class CFunction:
    """One C function definition found by tree-sitter."""

    name: str
    file: str
    start_line: int  # 1-based, first line of the definition (return type)
    end_line: int  # 1-based, closing brace
    body: str  # full text of the definition
    calls: tuple[str, ...] = ()  # names of called functions/macros, in source order
    is_static: bool = False
    is_inline: bool = False


class ChangeKind(enum.StrEnum):
    MODIFIED = "modified"
    ADDED = "added"
    REMOVED = "removed"


@dataclass(frozen=True)
class FunctionChange:
    """A function a patch touches, with its full pre- and post-image."""

    file: str
    name: str
    kind: ChangeKind
    pre: CFunction | None
    post: CFunction | None
    hunks: tuple[int, ...] = ()  # indexes into the file's hunks


# --------------------------------------------------------------------------- findings


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Confidence(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Status(enum.StrEnum):
    INTRODUCED = "introduced"
    PRE_EXISTING = "pre-existing"
    FIXED = "fixed"
    FIXED_IN_SERIES = "fixed-in-series"


@dataclass(frozen=True)
class TraceStep:
    """One step of a counterexample: which actor did what, where."""

    actor: str  # "CPU0", "CPU1", "worker"
    text: str  # e.g. "atomic_sub_and_test(...) -> nr_pages == 0"
    function: str = ""
    file: str = ""
    line: int | None = None


@dataclass(frozen=True)
class Trace:
    """A counterexample from the simulator, one column per actor."""

    actors: tuple[str, ...]  # column order; e.g. ("CPU0", "CPU1", "worker")
    steps: tuple[TraceStep, ...]
    actor_roles: Mapping[str, str] = field(default_factory=dict)  # actor -> entry function
    summary: str = ""


@dataclass(frozen=True)
class Finding:
    """One thing the bot has to say. Matchers fill it; reporters word around it."""

    rule_id: str  # "MMLC001", or "SIM-LEAK" etc. for simulator findings
    symbol: str  # kebab-case, e.g. "release-path-stops-destroy"
    severity: Severity
    confidence: Confidence
    status: Status
    message: str  # one paragraph, statement form
    file: str
    line: int | None
    function: str | None
    question: str = ""  # the reviewer's question for the email format
    evidence: tuple[str, ...] = ()  # short lines: "removed call mem_cgroup_destroy_cache() ..."
    suggestion: str = ""
    patch_number: int | None = None  # the patch this concerns; None: the series as a whole
    trace: Trace | None = None
    fixed_by: int | None = None  # for FIXED_IN_SERIES: the patch that fixed it


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check (a rule or the simulator) over the series.

    One check crashing is a failed result for that check; the others still run.
    """

    check: str  # "MMLC001", "simulator"
    ok: bool
    error: str = ""  # one line when ok is False
    notes: tuple[str, ...] = ()  # e.g. "state bound reached (20000 states)"


@dataclass(frozen=True)
class Review:
    """Everything a renderer needs."""

    series: Series
    versions: tuple[Series, ...]  # every version of this series that was found
    applied: AppliedSeries
    findings: tuple[Finding, ...]
    checks: tuple[CheckResult, ...]
    notes: tuple[str, ...] = ()
    other_series: tuple[Series, ...] = ()  # unrelated series in the same input (not reviewed)

    @property
    def reportable(self) -> tuple[Finding, ...]:
        """Findings that count against the series: introduced ones."""
        return tuple(f for f in self.findings if f.status is Status.INTRODUCED)

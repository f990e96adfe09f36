"""Group messages into series, link versions, and pick the one to review.

    assemble(messages, settings) -> SeriesSet
    select(series_set, version=None, key=None) -> (series, versions, others)

How a message is read:
  * `Re:` (or no diff and no 0/N counter): a reply. It joins the series of the
    nearest message it answers (In-Reply-To, then References newest first), or
    failing that the series whose patch has its subject; else it is an orphan.
  * counter 0/N: a cover letter, which always starts a series of its own (a v2
    cover threaded under v1 is still v2).
  * anything else with a diff: a patch.

How a patch finds its series (Patchwork's order, made deterministic):
  1. the nearest cover or patch it references whose series has the same total,
     the same version (when the patch states one) and a free slot for its number;
  2. else the series started by earlier patches hanging off the same parent
     message, or off the same parent series, with the same version and total (a
     thread whose cover never arrived; a reroll answering its predecessors);
  3. with no references at all: a series from the same sender with the same
     version and total, begun within settings.stitch_window_minutes, with a free
     slot (git send-email without --thread);
  4. else a new series.

Versions are linked afterwards (`revision_of`): same sender, a later and higher
version (or the same version re-sent after a complete series), and evidence
that it is the same work: a shared patch title (titles of missing patches are
read from the replies that quote them), the same name, or, weakest, the same
patch count where missing patches leave nothing to compare. A patch of a higher
version threaded under the same-numbered patch of an earlier series, with the
rest not re-sent, is a partial reroll (b4's "v3 2/2 in reply to v2 2/2", or
"v5.1"): the untouched patches are carried over from the earlier version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.assemble.body import in_body_author, split_patch_body
from bot.assemble.subject import has_version_tag, normalise_title, parse_subject
from bot.config import Settings
from bot.errors import InputError, UsageError
from bot.ingest.message import MAX_REFERENCES, as_utc
from bot.model import Patch, PatchSlot, RawMessage, Series, SeriesSet, SubjectInfo

__all__ = ["assemble", "select"]

_COVER, _PATCH, _REPLY = "cover", "patch", "reply"
# A sanity bound on N of n/N: a subject claiming 1/100000 must not make us
# allocate 100000 slots. Real series stay far below this (the largest tree-wide
# series on LKML run to a few hundred patches).
_MAX_TOTAL = 999
_LATEST = datetime.max.replace(tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass
class _Msg:
    """A message with everything assembly needs read once."""

    raw: RawMessage
    info: SubjectInfo
    kind: str
    message: str
    diff: str
    base: str | None
    date: datetime | None
    refs: tuple[str, ...]  # nearest first: In-Reply-To, then References newest first
    explicit_version: bool

    @property
    def number(self) -> int:
        # An unnumbered patch is 1 of 1 (Patchwork's reading); "0/0" is too.
        return self.info.number if self.info.number else 1

    @property
    def total(self) -> int:
        total = self.info.total if self.info.total else 1
        return min(total, _MAX_TOTAL)

    @property
    def author(self) -> str:
        return (self.raw.from_addr or self.raw.from_name).lower()


@dataclass
class _Draft:
    """A series being built."""

    version: int
    revision: str
    total: int
    author: str
    author_name: str
    author_addr: str
    creator: _Msg
    explicit_version: bool
    cover: _Msg | None = None
    patches: dict[int, _Msg] = field(default_factory=dict)
    extra: list[_Msg] = field(default_factory=list)
    replies: list[_Msg] = field(default_factory=list)
    inferred: dict[int, str] = field(default_factory=dict)  # missing n -> title from replies
    carried: dict[int, _Msg] = field(default_factory=dict)  # partial reroll: n -> older patch
    revision_of: _Draft | None = None
    key: str = ""
    inherited_name: str = ""  # a partial reroll keeps the name of the series it rerolls

    def own(self) -> list[_Msg]:
        items = [self.cover] if self.cover else []
        return items + list(self.patches.values()) + self.extra

    def first_date(self) -> datetime | None:
        dates = [m.date for m in self.own() if m.date is not None]
        return min(dates) if dates else None

    def last_date(self) -> datetime | None:
        dates = [m.date for m in self.own() if m.date is not None]
        return max(dates) if dates else None

    def first_index(self) -> int:
        return min(m.raw.index for m in self.own())

    def slot_free(self, msg: _Msg) -> bool:
        n = msg.number
        if n <= self.total:
            return n not in self.patches
        return all(m.number != n for m in self.extra)

    def add(self, msg: _Msg) -> None:
        if msg.number <= self.total:
            self.patches[msg.number] = msg
        else:
            self.extra.append(msg)

    def complete(self) -> bool:
        return all(n in self.patches for n in range(1, self.total + 1))

    def titles(self) -> set[str]:
        found = {normalise_title(m.info.title) for m in self.patches.values()}
        found |= {normalise_title(t) for t in self.inferred.values()}
        found.discard("")
        return found

    def name(self) -> str:
        if self.inherited_name:
            return self.inherited_name
        if self.cover is not None and self.cover.info.title:
            return self.cover.info.title
        firsts = sorted(self.patches.items()) or [(m.number, m) for m in self.extra]
        return firsts[0][1].info.title if firsts else self.creator.info.title


def _rev_tuple(revision: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in revision.split("."):
        try:
            parts.append(int(piece))
        except ValueError:
            parts.append(0)
    return tuple(parts)


def _read(raw: RawMessage) -> _Msg:
    info = parse_subject(raw.subject)
    # Replies are most of a lore thread and never become patches: skip the
    # diff scan for them.
    message, diff, base = ("", "", None) if info.is_reply else split_patch_body(raw.body)
    if info.is_reply:
        kind = _REPLY
    elif info.number == 0 and info.total:
        kind = _COVER
    elif diff:
        kind = _PATCH
    else:
        kind = _REPLY  # no diff: a comment, a pull request or a bug report
    # linear (a set, not a list scan) and bounded: at most MAX_REFERENCES + 1
    nearest = [raw.in_reply_to] if raw.in_reply_to else []
    ordered = dict.fromkeys(r for r in [*nearest, *reversed(raw.references)] if r)
    ordered.pop(raw.message_id, None)
    refs = list(ordered)[: MAX_REFERENCES + 1]
    return _Msg(
        raw=raw,
        info=info,
        kind=kind,
        message=message,
        diff=diff,
        base=base,
        date=as_utc(raw.date),
        refs=tuple(refs),
        explicit_version=has_version_tag(info),
    )


@dataclass(frozen=True)
class _Facts:
    """What version linking compares, computed once per series."""

    draft: _Draft
    rev: tuple[int, ...]
    titles: frozenset[str]
    name: str
    complete: bool
    first: datetime | None
    last: datetime | None

    @classmethod
    def of(cls, draft: _Draft) -> _Facts:
        return cls(
            draft=draft,
            rev=_rev_tuple(draft.revision),
            titles=frozenset(draft.titles()),
            name=normalise_title(draft.name()),
            complete=draft.complete(),
            first=draft.first_date(),
            last=draft.last_date(),
        )


def _relation(earlier: _Facts, later: _Facts) -> int:
    """How strongly `later` looks like a new version of `earlier` (0: not at all).

    Both are from the same sender (the caller groups by sender).
    """
    old = (earlier.draft.version, earlier.rev)
    new = (later.draft.version, later.rev)
    if new < old:
        return 0
    if new == old and (
        # The same version again is a re-send only after a complete series;
        # the same patch posted twice in a row is a duplicate, not a revision.
        not earlier.complete
        or earlier.last is None
        or later.first is None
        or later.first <= earlier.last
    ):
        return 0
    if earlier.titles & later.titles:
        return 3
    if earlier.name == later.name:
        return 2
    if (
        new > old
        and earlier.draft.total == later.draft.total
        and not (earlier.complete and later.complete)
    ):
        return 1  # missing patches leave nothing to compare: same count is all we have
    return 0


class _Assembler:
    def __init__(self, messages: Sequence[RawMessage], settings: Settings) -> None:
        self.settings = settings
        self.notes: list[str] = []
        self.by_id: dict[str, _Msg] = {}
        self.msgs: list[_Msg] = []
        for raw in sorted(messages, key=lambda m: m.index):
            if raw.message_id in self.by_id:
                self.notes.append(f"duplicate message <{raw.message_id}> ignored ({raw.source})")
                continue
            msg = _read(raw)
            self.by_id[raw.message_id] = msg
            self.msgs.append(msg)
        self.drafts: list[_Draft] = []
        self.cover_draft: dict[str, _Draft] = {}
        self.patch_draft: dict[str, _Draft] = {}
        self.anchored: dict[tuple[str, str, int], _Draft] = {}
        self.reply_draft: dict[str, _Draft | None] = {}
        # Lookups that would otherwise scan every series per message (a mirror
        # assembles tens of thousands of messages at once).
        self.by_shape: dict[tuple[str, int, str], list[_Draft]] = {}
        self.by_title: dict[str, list[_Draft]] = {}
        self.orphans: list[_Msg] = []

    # ----------------------------------------------------------------- grouping

    def _new_draft(self, msg: _Msg) -> _Draft:
        draft = _Draft(
            version=msg.info.version,
            revision=msg.info.revision,
            total=msg.total,
            author=msg.author,
            author_name=msg.raw.from_name,
            author_addr=msg.raw.from_addr,
            creator=msg,
            explicit_version=msg.explicit_version,
        )
        self.drafts.append(draft)
        self.by_shape.setdefault((draft.author, draft.total, draft.revision), []).append(draft)
        return draft

    @staticmethod
    def _compatible(msg: _Msg, draft: _Draft) -> bool:
        if msg.total != draft.total:
            return False
        if msg.explicit_version and draft.explicit_version:
            return msg.info.revision == draft.revision
        if msg.explicit_version:
            return msg.info.version == draft.version and msg.info.revision == draft.revision
        return True  # an untagged patch under a tagged cover takes the cover's version

    def _series_of(self, msg: _Msg) -> _Draft | None:
        """The series a cover or an already placed patch is in (None for anything else)."""
        if msg.kind == _COVER:
            return self.cover_draft.get(msg.raw.message_id)
        if msg.kind == _PATCH:
            return self.patch_draft.get(msg.raw.message_id)
        return None

    def _assign(self, msg: _Msg) -> None:
        draft = self._find_draft(msg)
        draft.add(msg)
        self.patch_draft[msg.raw.message_id] = draft

    def _find_draft(self, msg: _Msg) -> _Draft:
        for ref in msg.refs:
            target = self.by_id.get(ref)
            if target is None or target.kind == _REPLY:
                continue
            draft = self._series_of(target)
            if draft is not None and self._compatible(msg, draft) and draft.slot_free(msg):
                return draft
        if msg.refs:
            # Patches of a new version that each answer a patch (or the cover) of
            # an older series hang off that series as a whole, not off the one
            # message each answers: a reroll sent patch-by-patch in reply to its
            # predecessors stays one series.
            parent = self.by_id.get(msg.refs[0])
            parent_draft = self._series_of(parent) if parent is not None else None
            where = parent_draft.creator.raw.message_id if parent_draft else msg.refs[0]
            anchor = (where, msg.info.revision, msg.total)
            draft = self.anchored.get(anchor)
            if draft is not None and draft.slot_free(msg):
                return draft
            draft = self._new_draft(msg)
            self.anchored[anchor] = draft
            return draft
        stitched = self._stitch(msg)
        return stitched if stitched is not None else self._new_draft(msg)

    def _stitch(self, msg: _Msg) -> _Draft | None:
        window = timedelta(minutes=self.settings.stitch_window_minutes)
        best: _Draft | None = None
        if not msg.author:
            return None
        for draft in self.by_shape.get((msg.author, msg.total, msg.info.revision), ()):
            if not draft.slot_free(msg):
                continue
            start = draft.first_date()
            if start is None or msg.date is None or abs(msg.date - start) > window:
                continue
            if best is None or (best.first_date() or start) <= start:
                best = draft
        return best

    def _attach_reply(self, msg: _Msg) -> _Draft | None:
        found: _Draft | None = None
        for ref in msg.refs:
            target = self.by_id.get(ref)
            if target is None:
                continue
            if target.kind == _REPLY:
                found = self.reply_draft.get(target.raw.message_id)
            else:
                found = self._series_of(target)
            if found is not None:
                break
        if found is None and msg.info.is_reply:
            found = self._draft_by_subject(msg)
        self.reply_draft[msg.raw.message_id] = found
        return found

    def _parents_first(self, kind: str) -> list[_Msg]:
        """Messages of `kind` ordered so that those they reference come first.

        Input order breaks ties. Iterative, so a deeply threaded series
        (--chain-reply-to) or a hostile References chain cannot exhaust the
        stack; a References loop is cut where it closes.
        """
        order: list[_Msg] = []
        seen: set[str] = set()

        def parents(msg: _Msg) -> list[_Msg]:
            found = (self.by_id.get(r) for r in msg.refs)
            return [p for p in found if p is not None and p.kind == kind]

        for root in self.msgs:
            if root.kind != kind or root.raw.message_id in seen:
                continue
            seen.add(root.raw.message_id)
            stack = [(root, iter(parents(root)))]
            while stack:
                node, pending = stack[-1]
                nxt = next(pending, None)
                if nxt is None:
                    stack.pop()
                    order.append(node)
                elif nxt.raw.message_id not in seen:
                    seen.add(nxt.raw.message_id)
                    stack.append((nxt, iter(parents(nxt))))
        return order

    def _draft_by_subject(self, msg: _Msg) -> _Draft | None:
        """A reply whose thread we do not have: find the series by the quoted subject."""
        title = normalise_title(msg.info.title)
        if not title:
            return None
        best: _Draft | None = None
        for draft in self.by_title.get(title, ()):
            if draft.version == msg.info.version and (
                best is None or draft.first_index() > best.first_index()
            ):
                best = draft
        return best

    def _index_titles(self) -> None:
        for draft in self.drafts:
            for title in {normalise_title(draft.name())} | draft.titles():
                self.by_title.setdefault(title, []).append(draft)

    # ----------------------------------------------------------------- versions

    def _partial_reroll_base(self, draft: _Draft) -> _Draft | None:
        """The earlier series this one partly re-sends, if every patch answers its namesake."""
        if draft.cover is not None or draft.complete() or not draft.patches:
            return None
        base: _Draft | None = None
        for n, msg in draft.patches.items():
            parent = self.by_id.get(msg.raw.in_reply_to or "")
            if parent is None or parent.kind != _PATCH:
                return None
            older = self.patch_draft.get(parent.raw.message_id)
            if older is None or older is draft or parent.number != n or older.total != draft.total:
                return None
            if base is not None and older is not base:
                return None
            base = older
        if base is None or base.author != draft.author:
            return None
        if (draft.version, _rev_tuple(draft.revision)) <= (base.version, _rev_tuple(base.revision)):
            return None
        return base

    @staticmethod
    def _order_key(draft: _Draft) -> tuple[datetime, int]:
        start = draft.first_date()
        # Undated series sort last, in input order: they cannot be placed in time.
        return (start or _LATEST, draft.first_index())

    def _link_versions(self, ordered: list[_Draft]) -> None:
        by_author: dict[str, list[tuple[int, _Facts]]] = {}
        for pos, later in enumerate(ordered):
            base = self._partial_reroll_base(later)
            if base is not None:
                later.revision_of = base
                later.inherited_name = base.name()
                for n in range(1, later.total + 1):
                    if n not in later.patches and n in base.patches:
                        later.carried[n] = base.patches[n]
            facts = _Facts.of(later)
            if base is None and later.author:
                best: tuple[int, int, tuple[int, ...], int] | None = None
                for earlier_pos, earlier in by_author.get(later.author, ()):
                    strength = _relation(earlier, facts)
                    if strength == 0:
                        continue
                    rank = (strength, earlier.draft.version, earlier.rev, earlier_pos)
                    if best is None or rank > best:
                        best = rank
                        later.revision_of = earlier.draft
            if later.author:
                by_author.setdefault(later.author, []).append((pos, facts))

    # ----------------------------------------------------------------- output

    def _patch(self, msg: _Msg, total: int) -> Patch:
        author = in_body_author(msg.raw.body)
        name, addr = author if author else (msg.raw.from_name, msg.raw.from_addr)
        return Patch(
            message=msg.raw,
            number=msg.number,
            total=total,
            title=msg.info.title,
            commit_message=msg.message,
            diff=msg.diff,
            base_commit=msg.base,
            author_name=name,
            author_addr=addr,
        )

    def run(self) -> SeriesSet:
        for msg in self.msgs:
            if msg.kind == _COVER:
                self.cover_draft[msg.raw.message_id] = draft = self._new_draft(msg)
                draft.cover = msg
        for msg in self._parents_first(_PATCH):
            self._assign(msg)
        self._index_titles()
        for msg in self._parents_first(_REPLY):
            owner = self._attach_reply(msg)
            if owner is None:
                self.orphans.append(msg)
                continue
            owner.replies.append(msg)
            n = msg.info.number
            if (
                n is not None
                and 1 <= n <= owner.total
                and n not in owner.patches
                and msg.info.title
                and (not msg.explicit_version or msg.info.version == owner.version)
            ):
                owner.inferred.setdefault(n, msg.info.title)

        ordered = sorted(self.drafts, key=self._order_key)
        for draft in ordered:
            own = sorted(draft.patches.items())
            first = draft.cover or (own[0][1] if own else draft.extra[0])
            draft.key = first.raw.message_id
        self._link_versions(ordered)
        series = tuple(self._series(d) for d in ordered)
        return SeriesSet(
            series=series,
            orphans=tuple(m.raw for m in sorted(self.orphans, key=lambda m: m.raw.index)),
            notes=tuple(self.notes),
        )

    def _series(self, draft: _Draft) -> Series:
        slots: list[PatchSlot] = []
        for n in range(1, draft.total + 1):
            msg = draft.patches.get(n) or draft.carried.get(n)
            slots.append(PatchSlot(number=n, patch=self._patch(msg, draft.total) if msg else None))
        label = f"v{draft.revision} '{draft.name()}'"
        if draft.carried:
            nums = ", ".join(f"{n}/{draft.total}" for n in sorted(draft.carried))
            self.notes.append(
                f"{label}: partial reroll, {nums} carried over from the previous version"
            )
        missing = [n for n in range(1, draft.total + 1) if slots[n - 1].patch is None]
        if missing:
            nums = ", ".join(f"{n}/{draft.total}" for n in missing)
            self.notes.append(f"{label}: missing {nums}")
        return Series(
            key=draft.key,
            version=draft.version,
            revision=draft.revision,
            total=draft.total,
            name=draft.name(),
            author_name=draft.author_name,
            author_addr=draft.author_addr,
            cover=draft.cover.raw if draft.cover else None,
            slots=tuple(slots),
            replies=tuple(m.raw for m in sorted(draft.replies, key=lambda m: m.raw.index)),
            rfc=any(m.info.rfc for m in draft.own()),
            date=draft.first_date(),
            revision_of=draft.revision_of.key if draft.revision_of else None,
            extra=tuple(
                self._patch(m, draft.total) for m in sorted(draft.extra, key=lambda m: m.number)
            ),
        )


def assemble(messages: Sequence[RawMessage], settings: Settings) -> SeriesSet:
    """Every series in the messages, oldest first, with versions linked and replies kept."""
    return _Assembler(messages, settings).run()


def _message_ids(series: Series) -> set[str]:
    ids = {p.message.message_id for p in series.patches + series.extra}
    return ids | ({series.cover.message_id} if series.cover else set())


def _newest_message(series: Series) -> tuple[datetime, int]:
    stamps: list[tuple[datetime, int]] = []
    floor = _EARLIEST
    msgs = ([series.cover] if series.cover else []) + [p.message for p in series.patches]
    for m in msgs + list(series.replies):
        stamps.append((as_utc(m.date) or floor, m.index))
    return max(stamps) if stamps else (floor, -1)


def select(
    series_set: SeriesSet, *, version: int | None = None, key: str | None = None
) -> tuple[Series, tuple[Series, ...], tuple[Series, ...]]:
    """(series to review, all its versions oldest first, the other unrelated series).

    Default: the newest version of the chain whose newest message is the latest.
    `key` (a series key, or the Message-ID of any of its patches) picks the chain
    holding that series; `version` a version within it.
    """
    if not series_set.series:
        raise InputError("no patch found in the input")
    if key is not None:
        wanted = key.strip().strip("<>")
        start = next((s for s in series_set.series if s.key == wanted), None) or next(
            (s for s in series_set.series if wanted in _message_ids(s)), None
        )
        if start is None:
            keys = ", ".join(s.key for s in series_set.series[:10])
            raise UsageError(f"no series with key {wanted}; keys found: {keys}")
        chain = series_set.versions_of(start.key)
    else:
        chains: list[tuple[Series, ...]] = []
        seen: set[str] = set()
        for s in series_set.series:
            if s.key in seen:
                continue
            chain = series_set.versions_of(s.key)
            seen.update(c.key for c in chain)
            chains.append(chain)
        chain = max(chains, key=lambda c: max(_newest_message(s) for s in c))
    if version is None:
        chosen = chain[-1]
    else:
        matching = [s for s in chain if s.version == version]
        if not matching:
            found = ", ".join(str(v) for v in sorted({s.version for s in chain}))
            raise UsageError(f"no version {version}; versions found: {found}")
        chosen = matching[-1]
    in_chain = {s.key for s in chain}
    others = tuple(s for s in series_set.series if s.key not in in_chain)
    return chosen, chain, others

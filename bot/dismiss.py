"""Dismissals that stick: "this is not a bug", remembered across versions.

A dismissal names a finding by fingerprint (bot/report/fingerprint.py), or a
whole rule by its ID, for one series of work: every version and resend of it.
With `everywhere` a fingerprint is dismissed in any series.

    store = FileStore(path)                the local store (a JSON file)
    store = RedisStore(client, prefix)     the same for the service
    dismissed_in(store, review)            fingerprint -> Dismissal for a review
    record(store, review)                  remember what a review raised (counts)
    rule_counts(store)                     per rule: raised, dismissed

Series identity is the one version linking uses (bot/assemble/series.py): the
sender's address and the normalised patch titles (and series name). A later
version by the same sender sharing a title is the same work, whatever its
Message-IDs; nothing else is (a resend under another name starts over).
Reply mail that dismisses: bot/dismiss_reply.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bot.assemble.subject import normalise_title
from bot.errors import InputError, UsageError
from bot.model import Review, Series, Status
from bot.private import default_cache_dir, owned_private, private_dir
from bot.report.fingerprint import fingerprint, looks_like_fingerprint, matches

STORE_NAME = "dismissals.json"
STORE_FORMAT = 1
# Reviews remembered for lookups by key and for the per-rule counts; the oldest
# are forgotten first. Dismissals themselves are never dropped.
MAX_REVIEWS = 5000
MAX_REASON = 500
_RULE_ID = re.compile(r"^[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*$")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class SeriesIdentity:
    """What makes two series the same work: sender and patch titles."""

    key: str  # the series key (Message-ID of the cover, else the first patch)
    author: str  # lower-cased address (name when there is none)
    titles: tuple[str, ...]  # normalised patch titles and series name, sorted
    message_ids: tuple[str, ...] = ()  # cover and patches, for lookups

    def same_work(self, other: SeriesIdentity) -> bool:
        if self.key == other.key:
            return True
        return bool(self.author) and (
            self.author == other.author and bool(set(self.titles) & set(other.titles))
        )


@dataclass(frozen=True)
class Dismissal:
    """One "not a bug": `target` is a fingerprint (or prefix) or a rule ID."""

    id: int
    target: str
    series: SeriesIdentity
    everywhere: bool
    reason: str
    by: str
    at: str  # ISO 8601, UTC

    @property
    def is_rule(self) -> bool:
        return not looks_like_fingerprint(self.target)

    def applies(self, rule_id: str, fp: str, series: SeriesIdentity) -> bool:
        hit = rule_id.upper() == self.target if self.is_rule else matches(fp, self.target)
        return hit and (self.everywhere or self.series.same_work(series))


@dataclass(frozen=True)
class ReviewRecord:
    """What one review of a series raised: introduced fingerprint -> rule ID."""

    series: SeriesIdentity
    raised: Mapping[str, str]
    at: str


@dataclass(frozen=True)
class RuleCounts:
    rule: str
    raised: int  # distinct findings introduced (a problem raised in v1..v3 counts once)
    dismissed: int  # of those, how many a dismissal covers


def identity_of(series: Series, versions: Iterable[Series] = ()) -> SeriesIdentity:
    """The series' identity, with the titles of every version given."""
    titles: set[str] = set()
    ids: list[str] = []
    for s in (series, *versions):
        titles.add(normalise_title(s.name))
        titles.update(normalise_title(p.title) for p in s.patches)
        if s is series:
            ids += [series.cover.message_id] if series.cover else []
            ids += [p.message.message_id for p in series.patches]
    author = (series.author_addr or series.author_name).strip().lower()
    return SeriesIdentity(
        key=series.key,
        author=author,
        titles=tuple(sorted(t for t in titles if t)),
        message_ids=tuple(dict.fromkeys(ids)),
    )


def normalise_target(text: str) -> str:
    """A fingerprint (lower-cased) or a rule ID (upper-cased); UsageError otherwise."""
    t = text.strip()
    if looks_like_fingerprint(t):
        return t.lower()
    if _RULE_ID.match(t.upper()):
        return t.upper()
    raise UsageError(
        f"{one(text)!r} is neither a fingerprint (8 to 20 hex digits) nor a rule ID "
        "(MMLC002, SIM-LEAK)"
    )


def one(text: str) -> str:
    return " ".join(text.split())


def now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------- store


class DismissalStore(Protocol):
    """Where dismissals and review records live; FileStore and RedisStore."""

    def add(
        self, target: str, series: SeriesIdentity, *, reason: str, by: str, everywhere: bool
    ) -> Dismissal: ...

    def undo(self, dismissal_id: int) -> Dismissal | None: ...

    def dismissals(self) -> list[Dismissal]: ...

    def record(self, record: ReviewRecord) -> None: ...

    def reviews(self) -> list[ReviewRecord]: ...

    def find_series(self, ref: str) -> ReviewRecord | None: ...


def _new(
    next_id: int, target: str, series: SeriesIdentity, *, reason: str, by: str, everywhere: bool
) -> Dismissal:
    target = normalise_target(target)
    if everywhere and not looks_like_fingerprint(target):
        raise UsageError(
            f"--everywhere takes a fingerprint, not rule {target}: "
            "a rule is turned off with --disable-rule"
        )
    return Dismissal(
        id=next_id,
        target=target,
        series=series,
        everywhere=everywhere,
        reason=one(reason)[:MAX_REASON],
        by=one(by)[:200],
        at=now(),
    )


def _lookup(records: Iterable[ReviewRecord], ref: str) -> ReviewRecord | None:
    """The newest record whose key or any Message-ID is `ref` (angle brackets optional)."""
    want = ref.strip().strip("<>")
    found = None
    for rec in records:
        if want == rec.series.key or want in rec.series.message_ids:
            found = rec
    return found


# JSON <-> data; a malformed entry is refused by the caller with one line.


def _identity_json(s: SeriesIdentity) -> dict[str, Any]:
    return {
        "key": s.key,
        "author": s.author,
        "titles": list(s.titles),
        "message_ids": list(s.message_ids),
    }


def _identity(d: Any) -> SeriesIdentity:
    if not isinstance(d, dict):
        raise ValueError("series is not an object")
    return SeriesIdentity(
        key=str(d["key"]),
        author=str(d["author"]),
        titles=tuple(str(t) for t in d["titles"]),
        message_ids=tuple(str(m) for m in d.get("message_ids", ())),
    )


def dismissal_json(d: Dismissal) -> dict[str, Any]:
    out = asdict(d)
    out["series"] = _identity_json(d.series)
    return out


def _dismissal(d: Any) -> Dismissal:
    if not isinstance(d, dict):
        raise ValueError("dismissal is not an object")
    return Dismissal(
        id=int(d["id"]),
        target=str(d["target"]),
        series=_identity(d["series"]),
        everywhere=bool(d["everywhere"]),
        reason=str(d["reason"]),
        by=str(d["by"]),
        at=str(d["at"]),
    )


def _record_json(r: ReviewRecord) -> dict[str, Any]:
    return {"series": _identity_json(r.series), "raised": dict(r.raised), "at": r.at}


def _record(d: Any) -> ReviewRecord:
    if not isinstance(d, dict) or not isinstance(d.get("raised"), dict):
        raise ValueError("review record is not an object")
    raised = {str(k): str(v) for k, v in d["raised"].items()}
    return ReviewRecord(series=_identity(d["series"]), raised=raised, at=str(d["at"]))


class FileStore:
    """The local store: one JSON file (mode 0600) in a private directory.

    Every change holds an exclusive lock on `<file>.lock` and replaces the file
    atomically (a temporary file in the same directory, fsync, rename), so two
    `bot` processes never lose each other's writes and a crash never leaves a
    half-written file. A directory or file another user owns, or that group or
    others may write, is refused; so is a file that is not this format.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- the protocol

    def add(
        self, target: str, series: SeriesIdentity, *, reason: str, by: str, everywhere: bool
    ) -> Dismissal:
        with self._change() as data:
            d = _new(
                int(data["next_id"]), target, series, reason=reason, by=by, everywhere=everywhere
            )
            data["next_id"] = d.id + 1
            data["dismissals"].append(dismissal_json(d))
        return d

    def undo(self, dismissal_id: int) -> Dismissal | None:
        with self._change() as data:
            kept, gone = [], None
            for raw in data["dismissals"]:
                if int(raw["id"]) == dismissal_id and gone is None:
                    gone = _dismissal(raw)
                else:
                    kept.append(raw)
            data["dismissals"] = kept
        return gone

    def dismissals(self) -> list[Dismissal]:
        return [_dismissal(d) for d in self._read()["dismissals"]]

    def record(self, record: ReviewRecord) -> None:
        with self._change() as data:
            reviews = [r for r in data["reviews"] if r["series"]["key"] != record.series.key]
            reviews.append(_record_json(record))
            data["reviews"] = reviews[-MAX_REVIEWS:]

    def reviews(self) -> list[ReviewRecord]:
        return [_record(r) for r in self._read()["reviews"]]

    def find_series(self, ref: str) -> ReviewRecord | None:
        return _lookup(self.reviews(), ref)

    # -- the file

    def _check_dir(self) -> None:
        if not private_dir(self.path.parent):
            raise InputError(
                "not a private directory of this user (mode 0700 expected): refused",
                source=str(self.path.parent),
            )

    def _read(self) -> dict[str, Any]:
        self._check_dir()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return {"format": STORE_FORMAT, "next_id": 1, "dismissals": [], "reviews": []}
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror or exc}", source=str(self.path)) from exc
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or not owned_private(st):
                raise InputError("not a private file of this user: refused", source=str(self.path))
            raw = fh.read()
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
                raise ValueError(f"not a dismissal store of format {STORE_FORMAT}")
            for d in data["dismissals"]:
                _dismissal(d)
            for r in data["reviews"]:
                _record(r)
            int(data["next_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"unreadable dismissal store ({one(str(exc))}): fix or remove it",
                source=str(self.path),
            ) from exc
        return data

    @contextlib.contextmanager
    def _change(self) -> Iterator[dict[str, Any]]:
        self._check_dir()
        lock = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data
            self._write(data)
        finally:
            os.close(lock)  # closing releases the lock

    def _write(self, data: dict[str, Any]) -> None:
        text = json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".dismissals.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class RedisStore:
    """The same store in Redis (the service's), under `prefix`.

    Keys: `{prefix}dismissals` (hash id -> JSON), `{prefix}dismissal-next` (the
    id counter), `{prefix}reviews` (hash series key -> JSON),
    `{prefix}review-order` (sorted set of series keys by when recorded, to trim
    to MAX_REVIEWS) and `{prefix}review-ids` (hash Message-ID -> series key).
    `client` is a redis.Redis (decode_responses either way).
    """

    def __init__(self, client: Any, prefix: str = "mmlc:dismiss:") -> None:
        self.r = client
        self.prefix = prefix

    def _k(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def add(
        self, target: str, series: SeriesIdentity, *, reason: str, by: str, everywhere: bool
    ) -> Dismissal:
        _new(0, target, series, reason=reason, by=by, everywhere=everywhere)  # refuse first
        next_id = int(self.r.incr(self._k("dismissal-next")))
        d = _new(next_id, target, series, reason=reason, by=by, everywhere=everywhere)
        self.r.hset(self._k("dismissals"), str(d.id), json.dumps(dismissal_json(d)))
        return d

    def undo(self, dismissal_id: int) -> Dismissal | None:
        raw = self.r.hget(self._k("dismissals"), str(dismissal_id))
        if raw is None or not self.r.hdel(self._k("dismissals"), str(dismissal_id)):
            return None
        return _dismissal(json.loads(raw))

    def dismissals(self) -> list[Dismissal]:
        found = [_dismissal(json.loads(v)) for v in self.r.hvals(self._k("dismissals"))]
        return sorted(found, key=lambda d: d.id)

    def record(self, record: ReviewRecord) -> None:
        key = record.series.key
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._k("reviews"), key, json.dumps(_record_json(record)))
        pipe.zadd(self._k("review-order"), {key: datetime.now(UTC).timestamp()})
        for mid in record.series.message_ids:
            pipe.hset(self._k("review-ids"), mid, key)
        pipe.execute()
        excess = int(self.r.zcard(self._k("review-order"))) - MAX_REVIEWS
        if excess > 0:
            for old in self.r.zrange(self._k("review-order"), 0, excess - 1):
                raw = self.r.hget(self._k("reviews"), old)
                if raw is not None:
                    ids = _record(json.loads(raw)).series.message_ids
                    if ids:
                        self.r.hdel(self._k("review-ids"), *ids)
                self.r.hdel(self._k("reviews"), old)
                self.r.zrem(self._k("review-order"), old)

    def reviews(self) -> list[ReviewRecord]:
        keys = self.r.zrange(self._k("review-order"), 0, -1)
        raws = self.r.hmget(self._k("reviews"), keys) if keys else []
        return [_record(json.loads(raw)) for raw in raws if raw is not None]

    def find_series(self, ref: str) -> ReviewRecord | None:
        want = ref.strip().strip("<>")
        key = self.r.hget(self._k("review-ids"), want)
        if key is None:
            key = want
        raw = self.r.hget(self._k("reviews"), key)
        return _record(json.loads(raw)) if raw is not None else None


def default_store_path() -> Path | None:
    """`dismissals.json` beside the cache: in BOT_CACHE_DIR, else
    $XDG_CACHE_HOME/mmlc-bot. BOT_DISMISS_FILE names another file; either set
    but empty means no store. `--no-cache` does not change it: dismissals are
    decisions, not a cache."""
    env = os.environ
    if "BOT_DISMISS_FILE" in env:
        return Path(env["BOT_DISMISS_FILE"]) if env["BOT_DISMISS_FILE"] else None
    cache = env.get("BOT_CACHE_DIR")
    if cache is None:
        return Path(default_cache_dir()) / STORE_NAME
    return Path(cache) / STORE_NAME if cache else None


# --------------------------------------------------------------------------- use


def introduced_fingerprints(review: Review) -> dict[str, str]:
    """Fingerprint -> rule ID of every finding the review's series introduces."""
    return {fingerprint(f): f.rule_id for f in review.findings if f.status is Status.INTRODUCED}


def record(store: DismissalStore, review: Review) -> None:
    """Remember the review: its series (for `bot dismiss KEY`) and what it raised."""
    series = identity_of(review.series, review.versions)
    store.record(ReviewRecord(series=series, raised=introduced_fingerprints(review), at=now()))


def dismissed_in(
    store: DismissalStore | Sequence[Dismissal], review: Review
) -> dict[str, Dismissal]:
    """Fingerprint -> the (oldest) dismissal covering it, for every finding of
    the review that a dismissal covers."""
    found = store if isinstance(store, Sequence) else store.dismissals()
    series = identity_of(review.series, review.versions)
    out: dict[str, Dismissal] = {}
    for f in review.findings:
        fp = fingerprint(f)
        hit = next((d for d in found if d.applies(f.rule_id, fp, series)), None)
        if hit is not None and fp not in out:
            out[fp] = hit
    return out


def rule_counts(store: DismissalStore) -> dict[str, RuleCounts]:
    """Per rule: findings raised and dismissed, over the reviews remembered.

    Reviews of the same work (v1, v2, a resend) are one group, so a finding that
    every version raises counts once.
    """
    records = store.reviews()
    dismissals = store.dismissals()
    group = list(range(len(records)))

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    by_token: dict[tuple[str, str], int] = {}
    for i, rec in enumerate(records):
        for token in [(rec.series.author, t) for t in rec.series.titles] + [("", rec.series.key)]:
            j = by_token.setdefault(token, i)
            group[root(i)] = root(j)
    raised: dict[tuple[int, str], tuple[str, SeriesIdentity]] = {}
    for i, rec in enumerate(records):
        for fp, rule in rec.raised.items():
            raised[(root(i), fp)] = (rule, rec.series)
    counts: dict[str, list[int]] = {}
    for (_, fp), (rule, series) in raised.items():
        c = counts.setdefault(rule, [0, 0])
        c[0] += 1
        if any(d.applies(rule, fp, series) for d in dismissals):
            c[1] += 1
    return {r: RuleCounts(rule=r, raised=c[0], dismissed=c[1]) for r, c in sorted(counts.items())}


__all__ = [
    "Dismissal",
    "DismissalStore",
    "FileStore",
    "RedisStore",
    "ReviewRecord",
    "RuleCounts",
    "SeriesIdentity",
    "default_store_path",
    "dismissed_in",
    "identity_of",
    "normalise_target",
    "record",
    "rule_counts",
]

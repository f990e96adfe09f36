"""The service's dismissals: bot.dismiss's RedisStore under the state prefix.

    store_for(state)                         the RedisStore (`{p}:dismiss:*` keys)
    dismissed_for(state, review)             what earlier dismissals cover in a review
    after_review(state, scope, review, res)  remember what it raised; count confirmations
    link_versions(state, scope, series)      v1 -> v2 links for the results page
    take_replies(state, scope, msgs, ...)    `bot: not-a-bug ...` replies from the mirror
    precision(state)                         per rule: raised, dismissed, confirmed
    live_dismissals(state, scope, result)    fingerprint -> Dismissal for a stored review

A dismissal names the series' work (sender and titles: bot.dismiss.SeriesIdentity),
so the review of a later version, stored after it, carries it; the results page
reads dismissals live, so a dismissal shows on every version at once.

"Confirmed" means a later version changed the flagged code: the finding was
reported on one version and the next version's review no longer reports it
(`resolved` in bot.publish.compare). Each (rule, series, function, file) counts once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from bot.assemble.subject import normalise_title
from bot.dismiss import (
    Dismissal,
    RedisStore,
    SeriesIdentity,
    dismissed_in,
    record,
    rule_counts,
)
from bot.model import Review, Series
from workers.logs import log
from workers.state import State, StoredMessage

# Replies are cheap to recognise before parsing: the command word must be in the raw mail.
_MARK = b"not-a-bug"


def store_for(state: State) -> RedisStore:
    return RedisStore(state.r, prefix=f"{state.p}:dismiss:")


def dismissed_for(state: State, review: Review) -> dict[str, Dismissal]:
    """Fingerprint -> the dismissal covering it, for a review about to be stored."""
    return dismissed_in(store_for(state), review)


def after_review(state: State, scope: str, review: Review, result: Mapping[str, Any]) -> None:
    """Remember what the review raised (reply mail finds the series by any of its
    Message-IDs; the per-rule counts read it) and count the previous version's
    findings this version resolved as confirmed."""
    record(store_for(state), review)
    cmp = result.get("comparison")
    previous = str(result.get("previous") or "")
    if not isinstance(cmp, Mapping) or not previous:
        return
    pipe = state.r.pipeline(transaction=False)
    for row in cmp.get("resolved") or ():
        if not isinstance(row, Mapping):
            continue
        rule = str(row.get("rule_id") or "")
        if rule:
            token = f"{scope}|{previous}|{row.get('function') or ''}|{row.get('file') or ''}"
            pipe.sadd(state.k("confirmed", rule), token)
            pipe.sadd(state.k("confirmed-rules"), rule)
    pipe.execute()


def link_versions(state: State, scope: str, series: Iterable[Series]) -> None:
    """Record each later version under the version it revises (`{p}:later:...`)."""
    pipe = state.r.pipeline(transaction=False)
    n = 0
    for s in series:
        if s.revision_of and s.revision_of != s.key:
            pipe.sadd(state.k("later", scope, s.revision_of), s.key)
            n += 1
    if n:
        pipe.execute()


def later_versions(state: State, scope: str, key: str) -> list[str]:
    raw = cast(set[bytes], state.r.smembers(state.k("later", scope, key)))
    return sorted(x.decode() for x in raw)


def take_replies(
    state: State, scope: str, messages: Sequence[StoredMessage], trusted: Sequence[str]
) -> list[Dismissal]:
    """Apply the `bot: not-a-bug ...` lines of replies in `messages` (a mirror batch).

    Only a reply from a trusted address or the series' author counts
    (bot.dismiss_reply). Each reply is applied once: its Message-ID goes into
    `{p}:replied:{scope}` after its dismissals are stored, so a batch read again
    after a crash does not dismiss twice.
    """
    from bot.dismiss_reply import dismiss_from_reply

    done: list[Dismissal] = []
    store = store_for(state)
    seen = state.k("replied", scope)
    for m in messages:
        if _MARK not in m.raw.lower() or state.r.sismember(seen, m.message_id):
            continue
        try:
            got = dismiss_from_reply(store, m.raw, trusted=trusted)
        except Exception as exc:  # a hostile or broken reply must not stop intake
            log.warning(
                "reply not read for dismissals",
                extra={"scope": scope, "msgid": m.message_id, "error": type(exc).__name__},
            )
            got = []
        for d in got:
            log.info(
                "finding dismissed by reply",
                extra={"scope": scope, "series": d.series.key, "target": d.target, "by": d.by},
            )
        done += got
        state.r.sadd(seen, m.message_id)
    return done


@dataclass(frozen=True)
class RulePrecision:
    rule: str
    raised: int
    dismissed: int
    confirmed: int


def precision(state: State) -> list[RulePrecision]:
    """Per rule: findings raised (a finding every version raises counts once),
    dismissed, and confirmed (a later version changed the flagged code)."""
    counts = rule_counts(store_for(state))
    rules = set(counts) | {
        x.decode() for x in cast(set[bytes], state.r.smembers(state.k("confirmed-rules")))
    }
    out = []
    for rule in sorted(rules):
        c = counts.get(rule)
        confirmed = int(state.r.scard(state.k("confirmed", rule)))
        out.append(
            RulePrecision(
                rule=rule,
                raised=c.raised if c else 0,
                dismissed=c.dismissed if c else 0,
                confirmed=confirmed,
            )
        )
    return out


def identity_of_result(state: State, result: Mapping[str, Any]) -> SeriesIdentity:
    """The series identity of a stored review: as recorded when it was reviewed,
    else rebuilt from its JSON document (sender, titles, Message-IDs)."""
    key = str(result.get("key") or "")
    found = store_for(state).find_series(key) if key else None
    if found is not None:
        return found.series
    doc = result.get("review") or {}
    series = doc.get("series") or {}
    author = series.get("author") or {}
    titles = {normalise_title(str(series.get("name") or ""))}
    ids = [str(series["cover"])] if series.get("cover") else []
    for p in doc.get("patches") or ():
        titles.add(normalise_title(str(p.get("title") or "")))
        ids.append(str(p.get("message_id") or ""))
    return SeriesIdentity(
        key=key,
        author=str(author.get("email") or author.get("name") or "").strip().lower(),
        titles=tuple(sorted(t for t in titles if t)),
        message_ids=tuple(i for i in dict.fromkeys(ids) if i),
    )


def live_dismissals(
    state: State, result: Mapping[str, Any], dismissals: Sequence[Dismissal] | None = None
) -> dict[str, Dismissal]:
    """Fingerprint -> the (oldest) dismissal covering it, for the findings of a
    stored review, from the dismissals as they are now."""
    found = store_for(state).dismissals() if dismissals is None else dismissals
    if not found:
        return {}
    identity = identity_of_result(state, result)
    out: dict[str, Dismissal] = {}
    for f in (result.get("review") or {}).get("findings") or ():
        fp, rule = str(f.get("fingerprint") or ""), str(f.get("rule_id") or "")
        if not fp or fp in out:
            continue
        hit = next((d for d in found if d.applies(rule, fp, identity)), None)
        if hit is not None:
            out[fp] = hit
    return out


__all__ = [
    "RulePrecision",
    "after_review",
    "dismissed_for",
    "identity_of_result",
    "later_versions",
    "link_versions",
    "live_dismissals",
    "precision",
    "store_for",
    "take_replies",
]

"""Compare the review of a later version with the review of the one before it.

A finding is identified across versions by (rule_id, function, file): line numbers move
between versions, and a reviewer asks "is the leak in memcg_offline still there?", not
"is line 212 still there?". Only findings a review reported (introduced by the series)
take part; pre-existing ones were never the author's to resolve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.model import Finding, Review, Status

FindingKey = tuple[str, str, str]


@dataclass(frozen=True)
class Comparison:
    """What became of the previous version's findings."""

    old_version: str
    new_version: str
    resolved: tuple[FindingKey, ...]  # reported on the old version, gone now
    still_present: tuple[FindingKey, ...]  # reported on both
    new: tuple[FindingKey, ...]  # reported only on the new version

    def as_dict(self) -> dict[str, Any]:
        def rows(keys: Sequence[FindingKey]) -> list[dict[str, str]]:
            return [{"rule_id": r, "function": f, "file": p} for r, f, p in keys]

        return {
            "old_version": self.old_version,
            "new_version": self.new_version,
            "resolved": rows(self.resolved),
            "still_present": rows(self.still_present),
            "new": rows(self.new),
        }

    def summary(self, heading: str | None = None) -> str:
        """A few lines for the review text: which findings of the old review remain.

        `heading` replaces the first line (by default it names the old version)."""
        lines = [heading or f"Compared with the review of v{self.old_version}:"]
        for label, keys in (
            ("resolved", self.resolved),
            ("still present", self.still_present),
            ("new in this version", self.new),
        ):
            if not keys:
                lines.append(f"  {label}: none")
                continue
            for rule, func, path in keys:
                where = f"{func}() in {path}" if func else path
                lines.append(f"  {label}: {rule} {where}")
        return "\n".join(lines)


def _key_of_finding(f: Finding) -> FindingKey:
    return (f.rule_id, f.function or "", f.file)


def _key_of_dict(f: Mapping[str, Any]) -> FindingKey:
    rule = str(f.get("rule_id") or f.get("rule") or f.get("id") or "")
    func = str(f.get("function") or "")
    loc = f.get("location")
    path = str(f.get("file") or (loc.get("file") if isinstance(loc, Mapping) else "") or "")
    return (rule, func, path)


def _reported(review: Review | Mapping[str, Any]) -> tuple[str, list[FindingKey]]:
    if isinstance(review, Review):
        return review.series.revision, [_key_of_finding(f) for f in review.reportable]
    series = review.get("series")
    version = ""
    if isinstance(series, Mapping):
        version = str(series.get("revision") or series.get("version") or "")
    version = version or str(review.get("revision") or review.get("version") or "")
    keys = []
    for f in review.get("findings") or ():
        if not isinstance(f, Mapping):
            continue
        status = f.get("status", Status.INTRODUCED.value)
        if status == Status.INTRODUCED.value:
            keys.append(_key_of_dict(f))
    return version, keys


def compare_reviews(old: Review | Mapping[str, Any], new: Review | Mapping[str, Any]) -> Comparison:
    """Sort the old review's findings into resolved and still present, and name the new ones.

    Either side may be a Review or its stored JSON form (`bot.report.render(r, "json")`),
    because the earlier version was usually reviewed by another worker, days ago.
    """
    old_version, old_keys = _reported(old)
    new_version, new_keys = _reported(new)
    old_set, new_set = dict.fromkeys(old_keys), dict.fromkeys(new_keys)
    return Comparison(
        old_version=old_version,
        new_version=new_version,
        resolved=tuple(k for k in old_set if k not in new_set),
        still_present=tuple(k for k in old_set if k in new_set),
        new=tuple(k for k in new_set if k not in old_set),
    )


__all__ = ["Comparison", "FindingKey", "compare_reviews"]

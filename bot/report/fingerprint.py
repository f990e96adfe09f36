"""A finding's stable fingerprint: the same problem in v2, v3 or a resend.

    fingerprint(finding)  -> "3f9c0a1b7d2e4c56a8b9"   (20 hex digits)
    short(fp)             -> "3f9c0a1b7d"             (10: text and mail)
    matches(fp, given)    -> a given full or short fingerprint names fp

What goes in is what the finding is about, never where the patch happens to put
it: the rule ID, its variant (the symbol), the object it is about (the `struct
X` types its text names), the function, and the shape of its evidence. The
shape is each evidence line with every `file:line` reduced to the file, every
free-standing number to `N` and every actor name `CPU0`, `CPU1` to `CPU`
(the simulator numbers actors in the order it sets them up), the lines sorted.
Line numbers, offsets, state counts and the patch's slot number never count.
"""

from __future__ import annotations

import hashlib
import re

from bot.model import Finding

FINGERPRINT_VERSION = "fp1"
FULL_LENGTH = 20
SHORT_LENGTH = 10
# a prefix shorter than this names too many findings to be a dismissal target
MIN_PREFIX = 8

_FILE_LINE = re.compile(r"([\w./+-]+\.[A-Za-z]{1,3}):\d+(?::\d+)?")
_BARE_LINE = re.compile(r"(?<![\w.]):\d+\b")
_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w])")
_ACTOR = re.compile(r"\b(CPU|cpu)\d+\b")
_OBJECT = re.compile(r"\bstruct\s+([A-Za-z_]\w*)")
_HEX = re.compile(r"^[0-9a-f]+$")


def evidence_shape(line: str) -> str:
    """One evidence line without the parts that move between versions."""
    text = _FILE_LINE.sub(r"\1", line)
    text = _BARE_LINE.sub("", text)
    text = _ACTOR.sub(r"\1", text)
    text = _NUMBER.sub("N", text)
    return " ".join(text.split())


def object_of(finding: Finding) -> str:
    """The types the finding names (`struct kmem_cache`), sorted; "" when none."""
    names = set(_OBJECT.findall(f"{finding.message}\n{finding.question}"))
    return ",".join(sorted(names))


def fingerprint(finding: Finding) -> str:
    """The finding's fingerprint, FULL_LENGTH lower-case hex digits."""
    shape = sorted({evidence_shape(e) for e in finding.evidence if e.strip()})
    parts = [
        FINGERPRINT_VERSION,
        finding.rule_id,
        finding.symbol,
        object_of(finding),
        finding.function or "",
        *shape,
    ]
    digest = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:FULL_LENGTH]


def short(fp: str) -> str:
    """The short form shown in text and mail (enough to dismiss it by)."""
    return fp[:SHORT_LENGTH]


def looks_like_fingerprint(text: str) -> bool:
    """Whether `text` can name a fingerprint: MIN_PREFIX..FULL_LENGTH hex digits."""
    t = text.strip().lower()
    return MIN_PREFIX <= len(t) <= FULL_LENGTH and bool(_HEX.match(t))


def matches(fp: str, given: str) -> bool:
    """A full or short fingerprint `given` (any case) names `fp`."""
    g = given.strip().lower()
    return looks_like_fingerprint(g) and fp.startswith(g)


__all__ = [
    "FULL_LENGTH",
    "MIN_PREFIX",
    "SHORT_LENGTH",
    "evidence_shape",
    "fingerprint",
    "looks_like_fingerprint",
    "matches",
    "object_of",
    "short",
]

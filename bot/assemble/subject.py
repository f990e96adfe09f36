"""Read what a subject line's prefixes say, the way Patchwork does.

    parse_subject("Re: [PATCH RFC -mm v3 2/5] mm: fix foo")
      -> SubjectInfo(title="mm: fix foo", prefixes=("PATCH", "RFC", "-mm", "v3", "2/5"),
                     is_patch=True, is_reply=True, version=3, revision="3", number=2, total=5,
                     rfc=True)

Only bracket groups at the start count (after any Re:/Fwd:), so a title such as
"sl[au]b: charge slabs" keeps its brackets. Mercurial's "[PATCH 1 of 2]",
git's "[PATCH v5.1 3/7]" partial rerolls and a "(v2)" in the title are understood.
"""

from __future__ import annotations

import re

from bot.model import SubjectInfo

__all__ = ["has_version_tag", "normalise_title", "parse_subject"]

# Reply markers in the languages mailers use (Aw: German, Sv: Nordic, Antw: Dutch,
# Odp: Polish, R: Italian is too ambiguous and left out).
# Numbers are at most 6 digits: subjects are hostile, and an unbounded \d+ both
# backtracks quadratically and makes int() refuse (over 4300 digits).
_REPLY_RE = re.compile(r"\s*(re|aw|sv|antw|odp|vs)(\[\d{1,6}\])?\s*:\s*", re.IGNORECASE)
_FORWARD_RE = re.compile(r"\s*(fwd?|tr)\s*:\s*", re.IGNORECASE)
_GROUP_RE = re.compile(r"\s*\[([^\[\]]*)\]\s*")
_SPLIT_RE = re.compile(r"[,\s]+")
_OF_RE = re.compile(r"(?<!\d)(\d{1,6})\s+of\s+(\d{1,6})(?!\d)", re.IGNORECASE)
_COUNTER_RE = re.compile(r"(?<!\d)(\d{1,6})/(\d{1,6})$")
_VERSION_RE = re.compile(r"^(?:patch-?|rfc-?)?v(\d{1,6})(?:\.(\d{1,6}))?$", re.IGNORECASE)
_TITLE_VERSION_RE = re.compile(r"\(v(\d{1,6})(?:\.(\d{1,6}))?\)", re.IGNORECASE)
_PATCH_TAGS = ("PATCH", "RFC", "RFT")
_WS = re.compile(r"\s+")


def _tokens(group: str) -> list[str]:
    """Tokens of one bracket group; "1 of 2" stays one token."""
    out: list[str] = []
    pos = 0
    for m in _OF_RE.finditer(group):
        out += [t for t in _SPLIT_RE.split(group[pos : m.start()]) if t]
        out.append(f"{m.group(1)} of {m.group(2)}")
        pos = m.end()
    out += [t for t in _SPLIT_RE.split(group[pos:]) if t]
    return out


def _is_patch_tag(token: str) -> bool:
    upper = token.upper()
    return any(upper.startswith(tag) for tag in _PATCH_TAGS)


def normalise_title(title: str) -> str:
    """A title folded for comparison: lower case, single spaces, no trailing dot."""
    return _WS.sub(" ", title).strip().rstrip(".").lower()


def parse_subject(subject: str) -> SubjectInfo:
    """The prefixes, version, n/N counter and title of a subject line."""
    text = _WS.sub(" ", subject or "").strip()
    is_reply = False
    prefixes: list[str] = []
    pos = 0
    # Re:, Fwd: and list tags ("[Qemu-devel]") come in any order, so strip them
    # in a loop until the text starts with none of them.
    while True:
        m = _REPLY_RE.match(text, pos)
        if m:
            is_reply = True
            pos = m.end()
            continue
        m = _FORWARD_RE.match(text, pos) or _GROUP_RE.match(text, pos)
        if m:
            if m.re is _GROUP_RE:
                prefixes += _tokens(m.group(1))
            pos = m.end()
            continue
        break
    title = text[pos:].lstrip(":").strip()

    version, revision = 1, "1"
    number: int | None = None
    total: int | None = None
    for token in prefixes:
        vm = _VERSION_RE.match(token)
        if vm and revision == "1":
            version = int(vm.group(1))
            revision = f"{vm.group(1)}.{vm.group(2)}" if vm.group(2) else vm.group(1)
            continue
        om = _OF_RE.fullmatch(token)
        cm = om or _COUNTER_RE.search(token)
        if cm and number is None:
            number, total = int(cm.group(1)), int(cm.group(2))
    if revision == "1":
        tm = _TITLE_VERSION_RE.search(title)
        if tm:
            version = int(tm.group(1))
            revision = f"{tm.group(1)}.{tm.group(2)}" if tm.group(2) else tm.group(1)
    upper = [t.upper() for t in prefixes]
    return SubjectInfo(
        title=title,
        prefixes=tuple(prefixes),
        is_patch=any(_is_patch_tag(t) for t in prefixes),
        is_reply=is_reply,
        version=version,
        revision=revision,
        number=number,
        total=total if total else None,
        rfc=any(t.startswith(("RFC", "RFT")) for t in upper),
        resend=any(t == "RESEND" for t in upper),
    )


def has_version_tag(info: SubjectInfo) -> bool:
    """True when the subject states a version (vN tag or "(vN)" in the title)."""
    return any(_VERSION_RE.match(t) for t in info.prefixes) or bool(
        _TITLE_VERSION_RE.search(info.title)
    )

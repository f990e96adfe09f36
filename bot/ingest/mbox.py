"""Split mbox bytes into one byte string per message.

Boundaries are `From ` lines at the start of the data or after an empty line
(mboxo/mboxrd), and only when the line carries a clock time and the next line is
a mail header: a commit message with a paragraph starting "From " is not a new
message.
`>From ` lines are un-escaped the mboxrd way (lore serves mboxrd), which is
also right for mboxo writers that escaped a body "From ".
"""

from __future__ import annotations

import re

__all__ = ["is_mbox", "split_mbox"]

_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")
# "From <sender> <asctime>": the clock time is what tells a separator from a
# body paragraph that starts with "From ".
_FROM_LINE = re.compile(rb"^From \S+.*\d{1,2}:\d{2}")
_ESCAPED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


def is_mbox(data: bytes) -> bool:
    """True when the data starts with an mbox `From ` separator line."""
    return data.lstrip(b"\r\n").startswith(b"From ")


def split_mbox(data: bytes) -> list[bytes]:
    """Each message of an mbox, separator line included, `>From ` un-escaped."""
    lines = data.splitlines(keepends=True)
    starts: list[int] = []
    prev_blank = True
    for i, line in enumerate(lines):
        if prev_blank and _FROM_LINE.match(line):
            nxt = lines[i + 1] if i + 1 < len(lines) else b""
            if _HEADER_LINE.match(nxt):
                starts.append(i)
        prev_blank = line.strip() == b""
    if not starts:
        return [data] if data.strip() else []
    messages: list[bytes] = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        chunk = b"".join(lines[start:end])
        messages.append(_ESCAPED_FROM.sub(rb"\1", chunk))
    return messages

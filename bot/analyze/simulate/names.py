"""Name patterns of the scenario data (`*release*`), matched cheaply."""

from __future__ import annotations

import fnmatch


def glob_match(name: str, pattern: str) -> bool:
    """fnmatch.fnmatchcase(name, pattern), without compiling a regex for a
    pattern whose only wildcard is `*` (the scenario data's `*release*`):
    its pieces in order, the first at the start and the last at the end."""
    if "?" in pattern or "[" in pattern:
        return fnmatch.fnmatchcase(name, pattern)
    if "*" not in pattern:
        return name == pattern
    head, *middle, tail = pattern.split("*")
    if len(name) < len(head) + len(tail) or not name.startswith(head):
        return False
    if not name.endswith(tail):
        return False
    pos, end = len(head), len(name) - len(tail)
    for piece in middle:
        found = name.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return True

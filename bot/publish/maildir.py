"""A maildir outbox: every review reply as a file, for operators who send by hand."""

from __future__ import annotations

import mailbox
from pathlib import Path

from bot.errors import InputError


def write_maildir(path: str | Path, raw: bytes) -> str:
    """Add one message to the maildir at `path` (created if needed); returns its key.

    Maildir delivery is atomic (tmp/ then rename into new/), so a reader never sees a
    half-written reply.
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise InputError("maildir outbox path is not a directory", source=str(root))
    box = mailbox.Maildir(root, create=True)
    try:
        return str(box.add(raw))
    finally:
        box.close()


__all__ = ["write_maildir"]

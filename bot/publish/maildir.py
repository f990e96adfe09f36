"""A maildir outbox: every review reply as a file, for operators who send by hand."""

from __future__ import annotations

import mailbox
from pathlib import Path

from bot.publish.outbox import TargetError


def write_maildir(path: str | Path, raw: bytes) -> str:
    """Add one message to the maildir at `path`; returns its key.

    The folder and its cur/, new/ and tmp/ are created when missing (an empty folder,
    what `mkdir -p` leaves, is a maildir to be). Delivery is atomic (tmp/ then rename
    into new/), so a reader never sees a half-written reply. A folder that cannot be
    made or written is a TargetError: nothing was written, the operator must fix it.
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise TargetError("maildir outbox path is not a directory", source=str(root))
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(mode=0o700, exist_ok=True)
        box = mailbox.Maildir(root, create=False)
        try:
            return str(box.add(raw))
        finally:
            box.close()
    except OSError as exc:
        where = exc.filename or root
        raise TargetError(
            f"maildir outbox cannot be written: {exc.strerror or exc}", source=str(where)
        ) from exc


__all__ = ["write_maildir"]

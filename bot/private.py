"""Where the bot keeps per-user state, and the one check that it is private.

The on-disk cache (bot.cache) unpickles what it reads and the review daemon
(bot.daemon) accepts requests on a socket, so both refuse a directory (or file)
that another user owns or that group or others may write. This module imports
only os and stat: the daemon's client runs it before anything heavy is loaded.
"""

from __future__ import annotations

import os
import stat

APP_NAME = "mmlc-bot"


def default_cache_dir() -> str:
    """$XDG_CACHE_HOME/mmlc-bot, else ~/.cache/mmlc-bot."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, APP_NAME)


def owned_private(st: os.stat_result) -> bool:
    """Owned by this user, and group and others cannot write it."""
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def private_dir(path: str | os.PathLike[str]) -> bool:
    """Create `path` (mode 0700) when missing; True when it is a directory this
    user owns that group and others cannot write. Anything else must not be used."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and owned_private(st)


__all__ = ["APP_NAME", "default_cache_dir", "owned_private", "private_dir"]

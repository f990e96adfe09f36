"""A private on-disk cache for data the bot derives from files it trusts.

What goes in: the loaded and validated rules, API vocabulary and simulator
data (derived from rules/), keyed by a stamp of the files they come from and by
the bot's own code. Nothing derived from patch text is stored here: a patch is
hostile input and a cache entry is unpickled.

    configure(settings.cache_dir)      once per process (pipeline, CLI, worker)
    cached("rules", stamp, compute)    compute() on a miss, stored for next time

An entry's name is a hash of its namespace, its key and the code fingerprint (the
size and mtime of every bot/*.py file), so an edited rule file or an upgraded bot
never reads a stale entry. A directory that is not the user's own, or that others
may write to, is not used (pickles from it could run code). A corrupt or
unreadable entry is a miss. Writes go to a temporary file renamed into place, so
concurrent processes (Celery workers) never read half an entry.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import tempfile
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import TypeVar, cast

T = TypeVar("T")

_FORMAT = b"mmlc-cache-1\n"
_PACKAGE = Path(__file__).resolve().parent
# Entries beyond this many are pruned, oldest first, when a new one is written.
MAX_ENTRIES = 256

# The directory configure() chose for this process: one slot, so no `global`.
_ACTIVE: list[Path | None] = [None]


def default_dir() -> Path:
    """$XDG_CACHE_HOME/mmlc-bot, else ~/.cache/mmlc-bot."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmlc-bot"


def configure(directory: Path | None) -> None:
    """Use `directory` for this process from now on (None: no disk cache)."""
    _ACTIVE[0] = directory


def active() -> Path | None:
    """The directory configure() chose, or None."""
    return _ACTIVE[0]


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Size and mtime of every module of the bot: any change of code is a new key."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(_PACKAGE)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def stamp_files(paths: Iterable[Path]) -> str:
    """A key for data read from `paths`: each path with its size and mtime."""
    h = hashlib.sha256()
    for path in sorted(paths):
        try:
            st = path.stat()
        except OSError:
            h.update(f"{path}\0missing\n".encode())
            continue
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _private_dir(directory: Path) -> bool:
    """Create `directory` (mode 0700) if needed; True when it is a directory of
    this user that no one else may write to."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = directory.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return False
    return not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _entry(directory: Path, namespace: str, key: str) -> Path:
    digest = hashlib.sha256(f"{namespace}\0{key}\0{code_fingerprint()}".encode()).hexdigest()
    return directory / f"{namespace}-{digest[:40]}.pickle"


def load(directory: Path, namespace: str, key: str) -> object | None:
    """The stored value, or None on a miss (absent, corrupt, or not ours)."""
    path = _entry(directory, namespace, key)
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(_FORMAT):
        return None
    try:
        value: object = pickle.loads(data[len(_FORMAT) :])
    except Exception:  # a truncated or foreign entry is a miss, never an error
        return None
    return value


def store(directory: Path, namespace: str, key: str, value: object) -> bool:
    """Write `value`; False when the directory is unusable or the write fails."""
    if not _private_dir(directory):
        return False
    path = _entry(directory, namespace, key)
    try:
        data = _FORMAT + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        return False
    _prune(directory)
    return True


def _prune(directory: Path) -> None:
    """Keep the newest MAX_ENTRIES entries."""
    try:
        entries = [p for p in directory.glob("*.pickle") if p.is_file()]
        if len(entries) <= MAX_ENTRIES:
            return
        entries.sort(key=lambda p: p.stat().st_mtime_ns)
        for old in entries[: len(entries) - MAX_ENTRIES]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


def cached(namespace: str, key: str, compute: Callable[[], T]) -> T:
    """compute(), through the configured directory when there is one.

    Only a value compute() returned is stored: an exception (a broken rule file,
    say) propagates and nothing is written."""
    directory = _ACTIVE[0]
    if directory is None:
        return compute()
    if _private_dir(directory):
        hit = load(directory, namespace, key)
        if hit is not None:
            return cast(T, hit)
    value = compute()
    store(directory, namespace, key, value)
    return value


__all__ = [
    "MAX_ENTRIES",
    "active",
    "cached",
    "code_fingerprint",
    "configure",
    "default_dir",
    "load",
    "stamp_files",
    "store",
]

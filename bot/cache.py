"""A private on-disk cache of what the bot derives from text it has read before.

What goes in, each keyed by what it is computed from:

* the loaded and validated rules, API vocabulary and simulator data, keyed by a
  stamp (path, size, mtime) of the rule files;
* the functions tree-sitter finds in a file's text and the control-flow graph of a
  function's text, keyed by a hash of the text itself;
* the callee summaries of a tree (bot.analyze.summaries), keyed by the function flow's
  origin (the text it was built from), the vocabulary and the depth, with
  the answers they were computed from.

A kernel tree changes slowly and a series is reviewed again after each edit, so
most texts of a review were seen by an earlier one: the parse is the same, and
reading it back is a hundred times cheaper than parsing again.

    configure(settings.cache_dir)      once per process (pipeline, CLI, worker)
    cached("rules", key, compute)      compute() on a miss, stored at flush()
    flush()                            write what this process computed

Every key is hashed together with the code fingerprint (size and mtime of every
bot/*.py file), so an upgraded or edited bot never reads an entry an older one
wrote. Entries live in one SQLite file, `cache.sqlite3`, in the directory; values
are plain data (bot.plaindata: JSON naming only the bot's own classes, read
back without running any constructor or other code), never pickles, so even a
database someone swapped in cannot run code. It can still feed a review wrong
parses, so the directory must be private too: it is created with mode 0700,
and a directory or database file not owned by the user, or writable by group
or others, is not used at all. A value of another type than its namespace
holds (see _SHAPES) is a miss. Anything that goes wrong (a locked, corrupt or
full database, a malformed entry) is a miss or a skipped write, never an
error: the cache can only make a review faster.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from bot import plaindata
from bot.private import default_cache_dir, owned_private, private_dir

if TYPE_CHECKING:
    import sqlite3

T = TypeVar("T")

DB_NAME = "cache.sqlite3"
_PACKAGE = Path(__file__).resolve().parent
# The database is trimmed to this many bytes of values (oldest entries first).
MAX_BYTES = 256 * 1024 * 1024


# What each namespace holds: the allowed types of the value (module.qualname)
# and of a tuple's items or a dict's values (its keys are names: str). A hit
# of any other shape (a foreign or corrupt entry) is a miss, never a crash
# further down the review.
_SHAPES: dict[str, tuple[frozenset[str], frozenset[str] | None]] = {
    name: (frozenset(top.split()), frozenset(items.split()) if items else None)
    for name, top, items in (
        ("cfunc", "builtins.tuple", "bot.model.CFunction"),
        ("definitions", "builtins.dict", "builtins.tuple"),
        ("flows-named", "builtins.tuple", "bot.analyze.flow.Flow"),
        ("lexical", "builtins.tuple", "builtins.frozenset builtins.tuple"),
        ("review", "bot.review_cache.Kept", ""),
        ("rules", "builtins.tuple", "bot.analyze.engine.Rule"),
        ("vocabulary", "bot.analyze.api.Vocabulary", ""),
        (
            "simulator-data",
            "builtins.tuple",
            "bot.analyze.simulate.vocab.Effects bot.analyze.simulate.scenario.ScenarioData",
        ),
        ("sim-bindings", "bot.analyze.simulate.extract._FileBindings", ""),
        ("sim-facts", "bot.analyze.cfacts.FileFacts builtins.NoneType", ""),
        ("sim-functions", "bot.analyze.simulate.extract._Translation", ""),
        ("sim-spans", "builtins.dict", "builtins.tuple builtins.NoneType"),
        ("summaries", "builtins.tuple", "bot.analyze.infer.Summary builtins.tuple"),
    )
}


def _type_name(value: object) -> str:
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}"


def _fits(namespace: str, value: object) -> bool:
    """Whether `value` has the shape `namespace` holds (unknown namespaces: any)."""
    shape = _SHAPES.get(namespace)
    if shape is None:
        return True
    top, items = shape
    if _type_name(value) not in top:
        return False
    if items is not None and isinstance(value, tuple):
        return all(_type_name(v) in items for v in value)
    if items is not None and isinstance(value, dict):
        return all(type(k) is str and _type_name(v) in items for k, v in value.items())
    return True


class _State:
    """The process's cache: where it is, its connection, writes not yet flushed."""

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.db: sqlite3.Connection | None = None
        self.broken = False
        # full key -> value, encoded when flushed (see put)
        self.pending: dict[str, object] = {}


_STATE = _State()


def default_dir() -> Path:
    """$XDG_CACHE_HOME/mmlc-bot, else ~/.cache/mmlc-bot."""
    return Path(default_cache_dir())


def configure(directory: Path | None) -> None:
    """Use `directory` for this process from now on (None: no disk cache)."""
    if directory == _STATE.directory:
        return
    flush()
    if _STATE.db is not None:
        _STATE.db.close()
    _STATE.directory = directory
    _STATE.db = None
    _STATE.broken = False


def active() -> Path | None:
    """The directory configure() chose, or None."""
    return _STATE.directory


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


def text_key(*parts: str) -> str:
    """A key for data computed from texts (a file's content, its path)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def _connect() -> sqlite3.Connection | None:
    """The database of the configured directory, opened once; None when there is
    no usable one (not configured, not private, not openable)."""
    if _STATE.db is not None or _STATE.broken or _STATE.directory is None:
        return _STATE.db
    import sqlite3

    directory = _STATE.directory
    try:
        path = directory / DB_NAME
        usable = private_dir(directory)
        if usable and path.exists():
            fst = path.lstat()
            usable = stat.S_ISREG(fst.st_mode) and owned_private(fst)
        if not usable:
            _STATE.broken = True
            return None
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        db = sqlite3.connect(path, timeout=2.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS entries "
            "(key TEXT PRIMARY KEY, value BLOB NOT NULL, stored REAL NOT NULL)"
        )
    except (OSError, sqlite3.Error):
        _STATE.broken = True
        return None
    _STATE.db = db
    return db


def _full_key(namespace: str, key: str) -> str:
    digest = hashlib.sha256(f"{namespace}\0{key}\0{code_fingerprint()}".encode()).hexdigest()
    return f"{namespace}:{digest[:40]}"


def get(namespace: str, key: str) -> tuple[object] | None:
    """The stored value in a 1-tuple (a stored None is a hit), or None on a miss
    (absent, corrupt, or no usable cache)."""
    full = _full_key(namespace, key)
    if full in _STATE.pending:
        try:  # a copy, as a read back from the disk would give
            data: bytes = plaindata.dumps((_STATE.pending[full],))
        except (ValueError, TypeError, RecursionError):
            return None
    else:
        db = _connect()
        if db is None:
            return None
        import sqlite3

        try:
            row = db.execute("SELECT value FROM entries WHERE key = ?", (full,)).fetchone()
        except sqlite3.Error:
            return None
        if row is None:
            return None
        data = row[0]
    try:
        value: object = plaindata.loads(data)
    except (ValueError, RecursionError, MemoryError):
        return None  # a truncated, foreign or malformed entry is a miss, never an error
    if not (isinstance(value, tuple) and len(value) == 1 and _fits(namespace, value[0])):
        return None
    return cast(tuple[object], value)


def put(namespace: str, key: str, value: object) -> None:
    """Keep `value` for flush(), which encodes it: a value put again under its
    key (a file's facts once its callers index is added, say) is encoded once,
    as it is then. A value plaindata cannot express is not written."""
    if _STATE.directory is None or _STATE.broken:
        return
    _STATE.pending[_full_key(namespace, key)] = value


def flush() -> None:
    """Write what this process computed since the last flush, in one transaction,
    and trim the database to MAX_BYTES."""
    if not _STATE.pending:
        return
    pending, _STATE.pending = _STATE.pending, {}
    db = _connect()
    if db is None:
        return
    import sqlite3

    now = time.time()
    rows: list[tuple[str, bytes, float]] = []
    for full, value in pending.items():
        try:
            rows.append((full, plaindata.dumps((value,)), now))
        except (ValueError, TypeError, RecursionError):
            continue  # not expressible: simply not kept
    try:
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR REPLACE INTO entries (key, value, stored) VALUES (?, ?, ?)", rows
            )
            if _used_bytes(db) > MAX_BYTES:
                # over the bound: count the values (a full scan) only now, and
                # trim to nine tenths so the next reviews do not trim again
                (total,) = db.execute(
                    "SELECT COALESCE(SUM(LENGTH(value)), 0) FROM entries"
                ).fetchone()
                if total > MAX_BYTES:
                    _trim(db, total - MAX_BYTES * 9 // 10)
    except sqlite3.Error:
        return


def _used_bytes(db: sqlite3.Connection) -> int:
    """Bytes of the database's pages in use: deleted entries leave free pages
    (reused, never returned to the file system), so the file size would stay
    over the bound after a trim."""
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    (free,) = db.execute("PRAGMA freelist_count").fetchone()
    (size,) = db.execute("PRAGMA page_size").fetchone()
    return int((pages - free) * size)


def _trim(db: sqlite3.Connection, excess: int) -> None:
    """Delete the oldest entries until `excess` bytes are gone."""
    doomed: list[tuple[str]] = []
    freed = 0
    for key, size in db.execute("SELECT key, LENGTH(value) FROM entries ORDER BY stored, key"):
        if freed >= excess:
            break
        doomed.append((key,))
        freed += size
    db.executemany("DELETE FROM entries WHERE key = ?", doomed)


def cached(namespace: str, key: str, compute: Callable[[], T]) -> T:
    """compute(), or what an earlier compute() for the same key stored.

    Only a value compute() returned is stored: an exception (a broken rule file,
    say) propagates and nothing is written."""
    if _STATE.directory is None:
        return compute()
    hit = get(namespace, key)
    if hit is not None:
        return cast(T, hit[0])
    value = compute()
    put(namespace, key, value)
    return value


def _at_exit() -> None:
    """Write what is pending and close the database: the last connection's close
    checkpoints the write-ahead log into the database file (bot.cli.run ends a
    review without Python's own teardown, which would close it)."""
    flush()
    if _STATE.db is not None:
        _STATE.db.close()
        _STATE.db = None


atexit.register(_at_exit)

__all__ = [
    "DB_NAME",
    "MAX_BYTES",
    "active",
    "cached",
    "code_fingerprint",
    "configure",
    "default_dir",
    "flush",
    "get",
    "put",
    "stamp_files",
    "text_key",
]

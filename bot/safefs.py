"""The one checked reader of the user's tree.

    read_tree_text(root, rel, max_bytes=) -> str | None
    tree_listing(root, rel_dir, suffixes) -> tuple[str, ...]

Paths come from hostile text (a patch's `#include "../../x"` or `</abs/path>`),
so every read of a tree file goes through here:

* `rel` is relative and stays in the tree once `..` is resolved lexically
  (`mm/../include/x.h` is `include/x.h`; `../x` and `/x` are None, never a read);
* every component is opened with O_NOFOLLOW relative to the one before it
  (openat): a symlink anywhere on the way, even one pointing inside the tree, is
  not followed, so nothing outside the tree is reached however it is linked;
* only a regular file (fstat of the opened descriptor, so no swap between the
  check and the read) of at most `max_bytes` is read (O_NONBLOCK: a FIFO never
  blocks the open);
* a text is kept by (path, device, inode, size, mtime), checked by one lstat
  per call: a file edited since it was read (a warm daemon, a tree updated
  between reviews) is read again, never served stale.

What a review asked of a tree, and what it was told, can be written down:

    with asked() as journal: ...   every question asked in the block, with its answer
    still_true(journal.answers)    whether the tree still gives every one of those answers
    tree_is_file(root, rel)        Path.is_file(), as a question the journal records
    note_copy(root, rel, data, mode)   a file apply copied (bot.apply reads it itself)

so a result computed from nothing but these answers can be reused while they
hold (bot.review_cache). An answer is the text's SHA-256, never its stamp alone:
a file touched but not changed still gives the same answer.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import posixpath
import stat
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "MAX_TREE_FILE",
    "Journal",
    "asked",
    "note_copy",
    "read_tree_text",
    "still_true",
    "tree_is_file",
    "tree_listing",
]

# Files larger than this are not read from the tree: the biggest mm/ files are
# ~300 KB; anything larger is generated or not C we need.
MAX_TREE_FILE = 2 * 1024 * 1024
_KEEP = 2048  # texts kept in the process

_Stamp = tuple[int, int, int, int]
_texts: OrderedDict[tuple[str, str, int], tuple[_Stamp, str]] = OrderedDict()
_listings: OrderedDict[tuple[str, str, tuple[str, ...]], tuple[_Stamp, tuple[str, ...]]] = (
    OrderedDict()
)


def _parts(rel: str) -> list[str] | None:
    """The components of a tree-relative path (`..` resolved lexically: no
    symlink is followed, so the lexical parent is the real one), or None when it
    is absolute or leaves the tree."""
    if not rel or rel.startswith("/") or "\0" in rel:
        return None
    norm = posixpath.normpath(rel)
    if norm == ".." or norm.startswith(("../", "/")):
        return None
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    return parts if parts and ".." not in parts else None


def _stamp(st: os.stat_result) -> _Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _open_dir(root: str, parts: list[str]) -> int | None:
    """A descriptor of root/parts[0]/.../parts[-1] reached without following any
    symlink (the root itself is the user's choice and may be one)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(root, flags)
    except OSError:
        return None
    for part in parts:
        try:
            nxt = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nxt
    return fd


def _read(root: str, parts: list[str], max_bytes: int) -> tuple[_Stamp, str] | None:
    dir_fd = _open_dir(root, parts[:-1])
    if dir_fd is None:
        return None
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(parts[-1], flags, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            return None  # it grew since fstat
        return _stamp(st), data.decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def read_tree_text(root: str, rel: str, max_bytes: int = MAX_TREE_FILE) -> str | None:
    """The text of the regular file `rel` under `root` (see the module docstring),
    or None when it is not one, is outside the tree, or is over `max_bytes`."""
    text = _read_tree_text(root, rel, max_bytes)
    journal = _JOURNAL.get()
    if journal is not None:
        question = ("text", root, rel, str(max_bytes))
        if question not in journal.answers:
            journal.answers[question] = _digest(text)
            journal.texts[question] = text
        elif journal.texts[question] is not text and _digest(text) != journal.answers[question]:
            journal.unstable = True  # the file changed during the review
    return text


def _read_tree_text(root: str, rel: str, max_bytes: int) -> str | None:
    parts = _parts(rel)
    if parts is None:
        return None
    key = (root, "/".join(parts), max_bytes)
    kept = _texts.get(key)
    if kept is not None:
        try:
            st = os.lstat(os.path.join(root, key[1]))
        except OSError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode) and _stamp(st) == kept[0]:
            _texts.move_to_end(key)
            return kept[1]
    found = _read(root, parts, max_bytes)
    if found is None:
        _texts.pop(key, None)
        return None
    _texts[key] = found
    if len(_texts) > _KEEP:
        _texts.popitem(last=False)
    return found[1]


def tree_listing(root: str, rel_dir: str, suffixes: tuple[str, ...]) -> tuple[str, ...]:
    """Tree-relative paths of the entries of directory `rel_dir` whose names end in
    one of `suffixes`, sorted; () when it is not a directory of the tree reached
    without a symlink. Kept per directory until the directory changes."""
    found = _tree_listing(root, rel_dir, suffixes)
    journal = _JOURNAL.get()
    if journal is not None:
        question = ("listing", root, rel_dir, "\0".join(suffixes))
        answer = "\0".join(found)
        if journal.answers.setdefault(question, answer) != answer:
            journal.unstable = True
    return found


def _tree_listing(root: str, rel_dir: str, suffixes: tuple[str, ...]) -> tuple[str, ...]:
    parts = _parts(rel_dir) if rel_dir not in ("", ".") else []
    if parts is None:
        return ()
    prefix = "/".join(parts)
    key = (root, prefix, suffixes)
    fd = _open_dir(root, parts)
    if fd is None:
        return ()
    try:
        st = os.fstat(fd)
        kept = _listings.get(key)
        if kept is not None and kept[0] == _stamp(st):
            return kept[1]
        names = sorted(n for n in os.listdir(fd) if n.endswith(suffixes))
    except OSError:
        return ()
    finally:
        os.close(fd)
    found = tuple(f"{prefix}/{n}" if prefix else n for n in names)
    _listings[key] = (_stamp(st), found)
    if len(_listings) > _KEEP:
        _listings.popitem(last=False)
    return found


# --------------------------------------------------------------------------- journal


class Journal:
    """The questions asked of trees in an `asked()` block, each with its first
    answer: (kind, root, path, detail) -> answer (a digest, a listing, a flag)."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str, str, str], str | None] = {}
        # the text first read for each question: the same object again (safefs
        # kept it) is the same answer without hashing it again
        self.texts: dict[tuple[str, str, str, str], str | None] = {}
        # a question answered two ways in one review (the tree changed meanwhile)
        self.unstable = False


_JOURNAL: contextvars.ContextVar[Journal | None] = contextvars.ContextVar(
    "mmlc_tree_journal", default=None
)


@contextmanager
def asked() -> Iterator[Journal]:
    """Write down every question this thread asks of a tree in the block (a
    context variable: a concurrent review in another thread keeps its own)."""
    journal = Journal()
    token = _JOURNAL.set(journal)
    try:
        yield journal
    finally:
        _JOURNAL.reset(token)


def _digest(data: str | bytes | None) -> str | None:
    if data is None:
        return None
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()


def tree_is_file(root: Path, rel: str) -> bool:
    """`(root / rel).is_file()` (symlinks followed, as Path does), recorded in the
    journal: the simulator picks candidate files by it."""
    found = (root / rel).is_file()
    journal = _JOURNAL.get()
    question = ("is-file", str(root), rel, "")
    if journal is not None and journal.answers.setdefault(question, str(found)) != str(found):
        journal.unstable = True
    return found


def _copy_answer(root: str, rel: str, data: bytes | None, mode: int) -> str:
    # a symlink on the way makes apply refuse the series: part of the answer
    prefixes = ["/".join(rel.split("/")[: i + 1]) for i in range(rel.count("/") + 1)]
    linked = any(os.path.islink(os.path.join(root, p)) for p in prefixes)
    return f"{linked}\0{mode:o}\0{_digest(data)}"


def note_copy(root: Path, rel: str, data: bytes | None, mode: int) -> None:
    """Record that apply copied `rel` of a plain tree: its bytes (None: not a
    regular file), its mode, and whether a symlink is on its way."""
    journal = _JOURNAL.get()
    if journal is not None:
        question = ("copy", str(root), rel, "")
        journal.answers.setdefault(question, _copy_answer(str(root), rel, data, mode))


def _copy_now(root: str, rel: str) -> str:
    """The answer note_copy() would record for `rel` now."""
    path = Path(root) / rel
    if not path.is_file():
        return _copy_answer(root, rel, None, 0)
    try:
        return _copy_answer(root, rel, path.read_bytes(), path.stat().st_mode & 0o7777)
    except OSError:
        return ""


def still_true(answers: dict[tuple[str, str, str, str], str | None]) -> bool:
    """Whether asking every question of `answers` again gets the same answer."""
    for (kind, root, rel, detail), answer in answers.items():
        if kind == "text":
            now = _digest(_read_tree_text(root, rel, int(detail)))
        elif kind == "listing":
            suffixes = tuple(detail.split("\0")) if detail else ()
            now = "\0".join(_tree_listing(root, rel, suffixes))
        elif kind == "is-file":
            now = str((Path(root) / rel).is_file())
        elif kind == "copy":
            now = _copy_now(root, rel)
        else:
            return False  # a question this version does not know how to ask
        if now != answer:
            return False
    return True

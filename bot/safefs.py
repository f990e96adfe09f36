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
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections import OrderedDict

__all__ = ["MAX_TREE_FILE", "read_tree_text", "tree_listing"]

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

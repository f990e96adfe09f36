"""Resolve command-line inputs to `RawMessage`s: files, directories, stdin, lore, git.

    load(["series.mbox"], settings)                    mbox (or t.mbox.gz), .eml, .patch/.diff
    load(["patches/"], settings)                       maildir, .eml/.patch dir, quilt dir
    load(["-"], settings, stdin=sys.stdin.buffer)      one mbox/mail/diff on stdin
    load(["<id@host>"], settings)                      thread from settings.lore_base_url
    load(["https://lore.kernel.org/l/id@host/"], ...)  same, Message-ID taken from the URL
    load(["v6.1..HEAD"], settings, repo="linux")       git format-patch of the range

Every refusal is an InputError subclass whose one line names the input.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from bot.config import Settings
from bot.errors import InputError, TooLargeError
from bot.ingest.fetch import (
    fetch_thread,
    gunzip_limited,
    is_message_id_arg,
    is_url_arg,
    msgid_from_url,
    valid_msgid,
)
from bot.ingest.gitrange import format_patch_range, is_range_arg
from bot.ingest.mbox import is_mbox, split_mbox
from bot.ingest.message import decode_bytes, looks_like_diff, looks_like_mail, parse_message
from bot.model import RawMessage

__all__ = ["load", "messages_from_bytes"]

Progress = Callable[[str], None]

# Files taken from a plain directory; anything else there (README, series,
# .DATE, editor backups) is not mail and is skipped rather than refused.
_MAIL_SUFFIXES = frozenset({".eml", ".patch", ".diff", ".mbox", ".msg", ".mail"})
# How far into a file to look for NUL bytes before calling it binary.
_BINARY_SNIFF = 8192
_LEADING_BRACKETS = re.compile(r"^\s*(\[[^\]]*\]\s*)+")
_COUNTER = re.compile(r"(?<!\d)(\d{1,6})\s*(?:/|of)\s*(\d{1,6})\s*\]")
_NUMBER_PREFIX = re.compile(r"^\d{1,4}[-_]")
# Concatenated messages (split_concatenated): a header line, an mbox separator,
# the headers a message of its own has, a multipart Content-Type's boundary.
_HEADER_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")
_FROM_SEPARATOR = re.compile(rb"^From \S+.*\d{1,2}:\d{2}")
_OWN_HEADERS = frozenset({b"from", b"subject", b"message-id"})
_MULTIPART = re.compile(
    rb"^content-type:[ \t]*multipart/[^\n]*(?:\n[ \t][^\n]*)*?boundary=(\"[^\"]+\"|[^\s;]+)",
    re.IGNORECASE | re.MULTILINE,
)


def _check_size(size: int, settings: Settings, source: str) -> None:
    if size > settings.max_input_bytes:
        raise TooLargeError(
            f"input is {size} bytes, over the limit of {settings.max_input_bytes}", source=source
        )


def _read_file(path: Path, settings: Settings) -> bytes:
    source = str(path)
    try:
        size = path.stat().st_size  # before reading: a huge file is never loaded
    except FileNotFoundError as exc:
        raise InputError("no such file or directory", source=source) from exc
    except OSError as exc:
        raise InputError(
            f"cannot read: {exc.strerror or type(exc).__name__}", source=source
        ) from exc
    if not path.is_file():
        # a FIFO or a device (/dev/zero) would block or never end
        raise InputError("not a regular file", source=source)
    _check_size(size, settings, source)
    try:
        with path.open("rb") as fh:
            data = fh.read(settings.max_input_bytes + 1)
    except OSError as exc:
        raise InputError(
            f"cannot read: {exc.strerror or type(exc).__name__}", source=source
        ) from exc
    _check_size(len(data), settings, source)  # it grew after stat()
    return data


def _title_from_filename(name: str) -> str:
    stem = name
    for suffix in (".patch", ".diff", ".txt"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = _NUMBER_PREFIX.sub("", stem)
    return " ".join(stem.replace("_", " ").replace("-", " ").split()) or name


def _bare_diff(data: bytes, source: str, name: str, index: int) -> RawMessage:
    return RawMessage(
        source=source,
        raw=data,
        message_id=f"{source}#{index}",
        subject=_title_from_filename(name),
        from_name="",
        from_addr="",
        date=None,
        in_reply_to=None,
        references=(),
        body=decode_bytes(data).replace("\r\n", "\n"),
        index=index,
    )


def split_concatenated(data: bytes) -> list[bytes]:
    """Concatenated RFC 822 messages (`cat *.eml`), each on its own.

    A message starts at a header block of its own (From:, Subject: and
    Message-ID:, ending at an empty line), or at an mbox `From ` line before
    one, after the first message's headers. A multipart message runs to its
    closing boundary (an attached message/rfc822 is part of it), and in-body
    `From:`/`Subject:` lines (git am) carry no Message-ID: neither splits. Linear
    in the lines: a block that does not qualify is skipped whole."""
    lines = data.splitlines(keepends=True)
    starts = [0]
    i = next((n for n, line in enumerate(lines) if not line.strip()), len(lines))
    closing = _closing_boundary(lines, 0, i)
    while i < len(lines):
        line = lines[i]
        head = i + 1 if _FROM_SEPARATOR.match(line) else i
        if head >= len(lines) or not _HEADER_NAME.match(lines[head]):
            if closing is not None and line.rstrip(b"\r\n") == closing:
                closing = None
            i += 1
            continue
        end = head
        names: set[bytes] = set()
        while end < len(lines) and (
            _HEADER_NAME.match(lines[end]) or lines[end][:1] in (b" ", b"\t")
        ):
            names.add(lines[end].split(b":", 1)[0].strip().lower())
            end += 1
        blank = end < len(lines) and not lines[end].strip()
        if closing is None and blank and names >= _OWN_HEADERS:
            starts.append(i)
            closing = _closing_boundary(lines, head, end)
        i = max(end, i + 1)
    return [b"".join(lines[a:b]) for a, b in itertools.pairwise([*starts, len(lines)])]


def _closing_boundary(lines: list[bytes], start: int, end: int) -> bytes | None:
    """`--BOUNDARY--` of a multipart message whose headers are lines[start:end]."""
    headers = b"".join(lines[start:end])
    found = _MULTIPART.search(headers)
    return b"--" + found.group(1).strip(b'"') + b"--" if found else None


def messages_from_bytes(
    data: bytes, source: str, *, name: str = "", start: int = 0
) -> list[RawMessage]:
    """Messages in one input's bytes: an mbox, one mail, or a bare diff (titled by `name`).

    Indexes count from `start`. Refuses (InputError naming `source`) bytes that are
    none of these, such as binary files.
    """
    if not data.strip():
        raise InputError("empty input", source=source)
    if is_mbox(data):
        chunks = split_mbox(data)
        return [parse_message(chunk, f"{source}:{i}", start + i) for i, chunk in enumerate(chunks)]
    head = data[:_BINARY_SNIFF]
    if looks_like_mail(data):
        chunks = split_concatenated(data)
        if len(chunks) > 1:
            return [
                parse_message(chunk, f"{source}:{i}", start + i) for i, chunk in enumerate(chunks)
            ]
        try:
            return [parse_message(data, source, start)]
        except InputError:
            pass  # "Index: file" starts CVS-style diffs too; try them as a diff below
    if b"\x00" in head:
        raise InputError("binary file, not a mail or patch", source=source)
    if looks_like_diff(decode_bytes(data)):
        return [_bare_diff(data, source, name or Path(source).name, start)]
    raise InputError("not a mail, mbox or patch (no headers and no diff)", source=source)


def _read_stdin(stdin: BinaryIO | None, settings: Settings) -> bytes:
    if stdin is None:
        raise InputError("'-' given but no standard input available", source="<stdin>")
    data = stdin.read(settings.max_input_bytes + 1)
    _check_size(len(data), settings, "<stdin>")
    return data


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _quilt_order(path: Path) -> list[str] | None:
    """Patch names in quilt `series` order (the file beside or one level up), if any."""
    for candidate in (path / "series", path.parent / "series"):
        if not candidate.is_file():
            continue
        try:
            text = decode_bytes(candidate.read_bytes()[: 16 * 1024 * 1024])
        except OSError:
            continue
        names: list[str] = []
        for raw_line in text.splitlines():
            line = raw_line.split("#", 1)[0].strip()
            if line:
                name = line.split()[0]  # quilt allows "-p1" options after the name
                _check_quilt_name(name, candidate)
                names.append(name)
        present = [n for n in names if (path / n).is_file()]
        if present:
            return present
    return None


def _check_quilt_name(name: str, series_file: Path) -> None:
    """A quilt `series` entry names a file inside the patches directory: an
    absolute path or a `..` component would read outside it, so it is refused."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or Path(name).is_absolute():
        raise InputError(
            f"quilt series names {name!r}, outside the patches directory: refused",
            source=str(series_file),
        )


def _strip_prefixes(subject: str) -> str:
    return _LEADING_BRACKETS.sub("", subject).strip()


def _as_stack(messages: list[RawMessage]) -> list[RawMessage]:
    """Number and thread a quilt stack so it assembles as one ordered series.

    Quilt patches have no Message-ID, numbering or threading, but the `series`
    file says they apply in this order, as one stack; without this each would
    be its own one-patch series and none would apply alone.
    """
    total = len(messages)
    if total < 2:
        return messages
    root = messages[0].message_id
    out: list[RawMessage] = []
    for n, msg in enumerate(messages, start=1):
        out.append(
            dataclasses.replace(
                msg,
                subject=f"[PATCH {n}/{total}] {_strip_prefixes(msg.subject)}",
                in_reply_to=None if n == 1 else root,
                references=() if n == 1 else (root,),
            )
        )
    return out


def _thread_unthreaded_numbered(messages: list[RawMessage]) -> list[RawMessage]:
    """Thread a directory of `git format-patch -o` files written without --thread.

    They are numbered n/N but carry no Message-ID or references, so only the
    directory says they belong together. Applied only when every file agrees on N.
    """
    if len(messages) < 2 or any(m.in_reply_to or m.references for m in messages):
        return messages
    numbers: list[tuple[int, int]] = []
    for m in messages:
        found = (
            _COUNTER.search(m.subject.split("]")[0] + "]") if m.subject.startswith("[") else None
        )
        if not found:
            return messages
        numbers.append((int(found.group(1)), int(found.group(2))))
    if len({t for _, t in numbers}) != 1:
        return messages
    root = messages[min(range(len(messages)), key=lambda i: numbers[i][0])].message_id
    return [
        m if m.message_id == root else dataclasses.replace(m, in_reply_to=root, references=(root,))
        for m in messages
    ]


def _load_directory(path: Path, settings: Settings, start: int) -> list[RawMessage]:
    messages: list[RawMessage] = []
    if _is_maildir(path):
        files = sorted(
            (f for sub in ("cur", "new") for f in (path / sub).iterdir() if f.is_file()),
            key=lambda f: (f.name, f.parent.name),
        )
        for f in files:
            data = _read_file(f, settings)
            messages += messages_from_bytes(data, str(f), name=f.name, start=start + len(messages))
        return messages

    quilt = _quilt_order(path)
    if quilt is not None:
        listed = set(quilt)
        extra = sorted(
            f.name
            for f in path.iterdir()
            if f.is_file() and f.suffix in {".patch", ".diff"} and f.name not in listed
        )
        for name in quilt + extra:
            f = path / name
            data = _read_file(f, settings)
            messages += messages_from_bytes(data, str(f), name=name, start=start + len(messages))
        return _as_stack(messages)

    files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in _MAIL_SUFFIXES)
    if not files:
        raise InputError(
            "directory holds no mail or patch files (.eml, .patch, .diff, .mbox) and is "
            "not a maildir or quilt directory",
            source=str(path),
        )
    for f in files:
        data = _read_file(f, settings)
        messages += messages_from_bytes(data, str(f), name=f.name, start=start + len(messages))
    return _thread_unthreaded_numbered(messages)


def _load_one(
    arg: str, settings: Settings, repo: str | None, stdin: BinaryIO | None, start: int
) -> list[RawMessage]:
    if arg == "-":
        return messages_from_bytes(_read_stdin(stdin, settings), "<stdin>", start=start)
    if is_url_arg(arg):
        msgid = msgid_from_url(arg)
        data = fetch_thread(msgid, settings, source=arg)
        return messages_from_bytes(data, arg, start=start)
    path = Path(arg)
    if path.is_dir():
        return _load_directory(path, settings, start)
    if path.exists():
        # a saved lore download (t.mbox.gz) is read like the fetched one
        data = gunzip_limited(_read_file(path, settings), settings.max_input_bytes, arg)
        return messages_from_bytes(data, arg, name=path.name.removesuffix(".gz"), start=start)
    if repo is not None and is_range_arg(arg):
        data = format_patch_range(repo, arg)
        _check_size(len(data), settings, f"{repo}:{arg}")
        return messages_from_bytes(data, f"{repo}:{arg}", start=start)
    if repo is None and is_range_arg(arg):
        raise InputError(
            "looks like a git revision range: give the repository too (--repo)", source=arg
        )
    if is_message_id_arg(arg):
        msgid = valid_msgid(arg)
        data = fetch_thread(msgid, settings, source=arg)
        return messages_from_bytes(data, arg, start=start)
    if path.is_symlink():
        raise InputError("broken symbolic link", source=arg)
    raise InputError("no such file or directory", source=arg)


def load(
    args: Sequence[str],
    settings: Settings,
    *,
    repo: str | None = None,
    stdin: BinaryIO | None = None,
    progress: Progress | None = None,
) -> list[RawMessage]:
    """Every message the arguments name, in argument order, indexed from 0.

    Each argument is a path (mbox, .eml, .patch/.diff, directory, maildir, quilt
    directory), `-` for stdin, a Message-ID or lore URL (fetched), or with `repo`
    a revision range `A..B`. Raises InputError/FetchError/TooLargeError with one
    line naming the input.
    """
    if not args:
        raise InputError("no input given (a path, '-', a Message-ID or a lore URL)")
    messages: list[RawMessage] = []
    for arg in args:
        try:
            got = _load_one(arg, settings, repo, stdin, len(messages))
        except (OSError, ValueError) as exc:
            # e.g. a name too long for the file system, or a NUL byte in a path
            # that came from an API rather than a shell
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise InputError(f"cannot use this input: {reason}", source=arg[:200]) from exc
        if progress is not None:
            progress(f"{arg}: {len(got)} message(s)")
        messages += got
    return _reindex(messages)


def _reindex(messages: Iterable[RawMessage]) -> list[RawMessage]:
    return [m if m.index == i else dataclasses.replace(m, index=i) for i, m in enumerate(messages)]

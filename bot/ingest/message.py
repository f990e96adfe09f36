"""Decode one mail message's bytes into a `RawMessage`.

Mail on kernel lists is hostile and messy: RFC 2047 words with unknown
charsets, raw 8-bit bytes in headers, bodies in Latin-1 that claim UTF-8,
multipart mails with the patch as an `application/octet-stream` attachment,
missing Message-IDs and dates no calendar knows. Everything here degrades to a
best-effort string; only bytes that carry no mail header at all are refused.
"""

from __future__ import annotations

import codecs
import contextlib
import email.errors
import email.header
import email.parser
import email.policy
import email.utils
import re
from datetime import UTC, datetime
from email.message import Message

from bot.errors import InputError
from bot.model import RawMessage

__all__ = [
    "MAX_LINE",
    "MAX_REFERENCES",
    "check_line_lengths",
    "decode_bytes",
    "looks_like_diff",
    "looks_like_mail",
    "parse_message",
]

# The longest line a mail or patch may have (characters): kernel source lines
# are under a thousand; a longer one is an attack on memory (a 48 MB line took
# 1.5 GB in the parsers and diff stages). Past it the input is refused.
MAX_LINE = 256 * 1024
# anchored at line starts (re.M), so the scan is linear: unanchored, every
# position of a long line would start a scan to its end
_LONG_LINE_S = re.compile(rf"(?m)^[^\n]{{{MAX_LINE + 1}}}")
_LONG_LINE_B = re.compile(_LONG_LINE_S.pattern.encode())
# Message-IDs kept of a References header: the first (the thread's root) and
# the newest ones, which is all threading reads (RFC 5322 3.6.4 trims the same
# way). 100,000 entries were deduplicated quadratically.
MAX_REFERENCES = 128

# Headers whose presence makes a block of text a mail. One is enough: quilt
# patches carry only From: and Subject:, list archives sometimes drop Date:.
_MAIL_HEADERS = frozenset(
    {"from", "subject", "message-id", "date", "to", "cc", "in-reply-to", "references"}
)

# A header line: a field name of printable ASCII without a colon, then a colon.
_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")
_MBOX_FROM = re.compile(rb"^From \S+")
_DIFF_START = re.compile(
    r"^(diff --git |diff -|Index: |--- \S.*\n\+\+\+ |GIT binary patch)", re.MULTILINE
)
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
_WS = re.compile(r"\s+")

# Attachment types that may carry a patch. text/* is always read; these others
# only when the decoded text looks like a diff, so images and tarballs are skipped.
_PATCH_SUBTYPES = frozenset({"x-patch", "x-diff", "patch", "diff"})
_BINARY_PATCH_TYPES = frozenset(
    {"application/octet-stream", "application/x-patch", "application/x-diff"}
)

# Fallback charsets for bodies whose declared charset is missing, unknown or
# wrong: UTF-8 first (most mail), then cp1252 (what "iso-8859-1" usually means
# in practice), and latin-1 last because it decodes any byte sequence.
_FALLBACK_CHARSETS = ("utf-8", "cp1252", "latin-1")


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode bytes with the declared charset if it works, else by fallbacks; never raises."""
    candidates: list[str] = []
    if charset:
        with contextlib.suppress(LookupError, ValueError, TypeError):
            candidates.append(codecs.lookup(charset.strip().strip('"')).name)
    candidates.extend(c for c in _FALLBACK_CHARSETS if c not in candidates)
    for cs in candidates:
        try:
            return data.decode(cs)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")  # unreachable: latin-1 maps every byte


def looks_like_mail(raw: bytes) -> bool:
    """True when the bytes start like a mail: an mbox `From ` line or a header line."""
    head = raw.lstrip(b"\r\n")[:2048]
    first = head.split(b"\n", 1)[0]
    return bool(_MBOX_FROM.match(first) or _HEADER_LINE.match(first))


def looks_like_diff(text: str) -> bool:
    """True when the text contains the start of a unified or git diff."""
    return _DIFF_START.search(text) is not None


def _header_text(msg: Message, name: str) -> str:
    """One header, RFC 2047-decoded, unfolded and whitespace-collapsed; "" when absent."""
    values = msg.get_all(name)
    if not values:
        return ""
    return _decode_header_value(values[0])


def _decode_header_value(value: object) -> str:
    if isinstance(value, email.header.Header):
        parts = email.header.decode_header(value)
    else:
        text = str(value)
        # compat32 keeps raw 8-bit header bytes as surrogate escapes; turn them
        # back into bytes so the charset fallback can read them.
        if any("\udc80" <= ch <= "\udcff" for ch in text):
            text = decode_bytes(text.encode("utf-8", "surrogateescape"))
        try:
            parts = email.header.decode_header(text)
        except (email.errors.HeaderParseError, ValueError, IndexError):
            return _WS.sub(" ", text).strip()
    out: list[str] = []
    for chunk, cs in parts:
        if isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, None if cs in (None, "unknown-8bit") else cs))
        else:
            out.append(chunk)
    # decode_header drops the whitespace between an encoded word and plain
    # text in some cases and keeps it in others; collapsing runs evens it out.
    return _WS.sub(" ", "".join(out)).strip()


def _first_msgid(value: str) -> str | None:
    """The first `<id>` in a header, else the first whitespace-free token with an `@`."""
    m = _ANGLE_ID.search(value)
    if m:
        return m.group(1)
    for raw_token in value.split():
        token = raw_token.strip("<>,;")
        if "@" in token:
            return token
    return None


def _all_msgids(value: str) -> list[str]:
    found = _ANGLE_ID.findall(value)
    if not found:
        found = [t.strip("<>,;") for t in value.split() if "@" in t]
    return found


def _parse_date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    return dt


def _addresses(msg: Message, name: str) -> tuple[str, ...]:
    values = [_decode_header_value(v) for v in msg.get_all(name) or []]
    try:
        pairs = email.utils.getaddresses(values)
    except (TypeError, ValueError, IndexError):
        return ()
    return tuple(addr for _, addr in pairs if addr)


def _part_text(part: Message) -> str | None:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError, AssertionError):
        payload = None
    if payload is None:
        raw = part.get_payload()
        if isinstance(raw, str):
            return raw
        return None
    if not isinstance(payload, bytes):
        return None
    try:
        charset = part.get_content_charset()
    except (ValueError, TypeError, LookupError):
        charset = None
    return decode_bytes(payload, charset)


def _body_text(msg: Message) -> str:
    """The text a reviewer reads: text/plain parts and inline patch attachments, in order."""
    if not msg.is_multipart():
        return _part_text(msg) or ""
    pieces: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        maintype, _, subtype = ctype.partition("/")
        text: str | None = None
        if ctype == "text/plain" or (maintype == "text" and subtype in _PATCH_SUBTYPES):
            text = _part_text(part)
        elif ctype in _BINARY_PATCH_TYPES:
            candidate = _part_text(part)
            if candidate is not None and looks_like_diff(candidate):
                text = candidate
        if text:
            pieces.append(text if text.endswith("\n") else text + "\n")
    return "".join(pieces)


def _safe_body_text(msg: Message, source: str) -> str:
    try:
        return _body_text(msg)
    except RecursionError as exc:  # walk() recurses once per MIME level
        raise InputError("MIME parts nested too deeply", source=source) from exc


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def check_line_lengths(data: bytes | str, source: str) -> None:
    """Raise InputError when a line of `data` is longer than MAX_LINE (one
    linear regex scan, no copy)."""
    found = _LONG_LINE_B.search(data) if isinstance(data, bytes) else _LONG_LINE_S.search(data)
    if found is not None:
        raise InputError(f"refused: a line longer than {MAX_LINE} characters", source=source)


def _references(values: list[str], msgid: str) -> tuple[str, ...]:
    """Distinct Message-IDs of the References headers, oldest first, without
    `msgid`; linear, and cut to the root and the newest MAX_REFERENCES - 1."""
    refs = dict.fromkeys(r for value in values for r in _all_msgids(_decode_header_value(value)))
    refs.pop(msgid, None)
    out = tuple(refs)
    if len(out) > MAX_REFERENCES:
        out = out[:1] + out[-(MAX_REFERENCES - 1) :]
    return out


def parse_message(raw: bytes, source: str, index: int = 0) -> RawMessage:
    """Decode one mail's bytes into a `RawMessage`.

    A leading mbox `From ` line is skipped. Raises `InputError` (naming
    `source`) only when the bytes carry no mail header at all.
    """
    data = raw
    if data.startswith(b"From "):
        # mbox separator line: not a header, and the parser would take it as one.
        nl = data.find(b"\n")
        data = data[nl + 1 :] if nl >= 0 else b""
    if not looks_like_mail(data):
        raise InputError("not a mail message (no mail headers)", source=source)
    check_line_lengths(data, source)
    try:
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
    except Exception as exc:  # the stdlib parser is not documented to raise; be safe
        raise InputError(f"cannot parse mail: {type(exc).__name__}", source=source) from exc
    keys = {k.lower() for k in msg}
    if not keys & _MAIL_HEADERS:
        raise InputError("not a mail message (no From/Subject/Message-ID)", source=source)

    msgid = _first_msgid(_header_text(msg, "Message-ID")) or f"{source}#{index}"
    in_reply_to = _first_msgid(_header_text(msg, "In-Reply-To"))
    refs = _references(msg.get_all("References") or [], msgid)
    from_name, from_addr = email.utils.parseaddr(_header_text(msg, "From"))
    list_id_text = _header_text(msg, "List-Id")
    list_id = (_first_msgid(list_id_text) or list_id_text or None) if list_id_text else None
    return RawMessage(
        source=source,
        raw=raw,
        message_id=msgid,
        subject=_header_text(msg, "Subject"),
        from_name=_WS.sub(" ", from_name).strip(),
        from_addr=from_addr.strip(),
        date=_parse_date(_header_text(msg, "Date")),
        in_reply_to=in_reply_to if in_reply_to != msgid else None,
        references=refs,
        body=_normalise_newlines(_safe_body_text(msg, source)),
        index=index,
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        list_id=list_id,
    )


def as_utc(dt: datetime | None) -> datetime | None:
    """The date in UTC; a date without a zone is taken as UTC (better than refusing it)."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)

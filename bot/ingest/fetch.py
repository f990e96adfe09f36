"""Fetch a thread by Message-ID or lore URL from a public-inbox server.

    fetch_thread("<20140415021614.GC7969@cmpxchg.org>", settings)
      GET <settings.lore_base_url>/<msgid>/t.mbox.gz -> gunzip -> mbox bytes

A Message-ID is refused before any request when it holds anything outside a
conservative character set: it becomes part of a URL path, so `/`, `?`, `#`,
`..` or spaces would let an argument choose a different resource.
"""

from __future__ import annotations

import re
import time
import zlib
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

from bot.config import Settings
from bot.errors import FetchError, InputError, TooLargeError

if TYPE_CHECKING:
    import requests

__all__ = [
    "fetch_thread",
    "gunzip_limited",
    "is_message_id_arg",
    "is_url_arg",
    "msgid_from_url",
    "valid_msgid",
]

# What a Message-ID may contain here. RFC 5322 allows more, but real ones
# (git send-email, mailers, lore) use only these; anything else is refused.
_MSGID_OK = re.compile(r"^[A-Za-z0-9._%+=~@!$-]+$")
_CHUNK = 64 * 1024


def is_url_arg(arg: str) -> bool:
    """True for an http(s) URL argument."""
    return arg.startswith(("https://", "http://"))


def is_message_id_arg(arg: str) -> bool:
    """True when an argument that is not a path is meant as a Message-ID."""
    return arg.startswith("<") or "@" in arg


def valid_msgid(arg: str) -> str:
    """The Message-ID without angle brackets; `InputError` when it is unsafe."""
    text = arg.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not text:
        raise InputError("empty Message-ID", source=arg)
    if ".." in text:
        raise InputError("refused Message-ID: contains '..'", source=arg)
    if not _MSGID_OK.match(text):
        bad = sorted({ch for ch in text if not _MSGID_OK.match(ch)})
        shown = " ".join(repr(ch) for ch in bad[:5])
        raise InputError(f"refused Message-ID: unsafe character(s) {shown}", source=arg)
    if "@" not in text:
        raise InputError("refused Message-ID: no '@'", source=arg)
    return text


def msgid_from_url(url: str) -> str:
    """The Message-ID in a lore-style URL `https://host/<list>/<msgid>/...`."""
    parts = [unquote(p) for p in urlsplit(url).path.split("/") if p]
    for part in parts:
        if "@" in part:
            return valid_msgid(part)
    raise InputError("no Message-ID in URL (expected .../<list>/<msgid>/)", source=url)


def gunzip_limited(data: bytes, limit: int, source: str) -> bytes:
    """Gunzip at most `limit` bytes (TooLargeError beyond); data without gzip magic as is."""
    if not data.startswith(b"\x1f\x8b"):
        return data  # plain mbox (a server or a file that is not compressed)
    out = bytearray()
    dec = zlib.decompressobj(wbits=31)
    try:
        chunk = dec.decompress(data, limit + 1)
        out += chunk
        while dec.unconsumed_tail and len(out) <= limit:
            out += dec.decompress(dec.unconsumed_tail, limit + 1 - len(out))
    except zlib.error as exc:
        raise InputError(f"bad gzip data: {exc}", source=source) from exc
    if len(out) > limit:
        raise TooLargeError(f"thread larger than {limit} bytes once decompressed", source=source)
    if not dec.eof:
        raise InputError("bad gzip data: truncated", source=source)
    return bytes(out)


class _DeadlinePassed(Exception):
    """The fetch's total time ran out."""


def _read_by(resp: requests.Response, deadline: float, limit: int, label: str) -> bytearray:
    """The response body, read as it arrives (read1) until `deadline`: a server
    trickling a byte a second cannot hold the fetch past it, as a timeout per
    read would let it. Each read waits at most the time left."""
    import socket

    from urllib3.exceptions import ReadTimeoutError

    raw = resp.raw
    conn = getattr(raw, "connection", None)
    sock = getattr(conn, "sock", None)
    body = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _DeadlinePassed
        if isinstance(sock, socket.socket):
            sock.settimeout(left)
        try:
            chunk = raw.read1(_CHUNK, decode_content=True)
        except (TimeoutError, ReadTimeoutError) as exc:
            raise _DeadlinePassed from exc
        if not chunk:
            return body
        body += chunk
        if len(body) > limit:
            raise TooLargeError(f"download larger than {limit} bytes", source=label)


def fetch_thread(msgid: str, settings: Settings, *, source: str | None = None) -> bytes:
    """The whole thread holding `msgid` as mbox bytes, from settings.lore_base_url.

    Every failure (offline, timeout, HTTP error, oversize) is a one-line
    FetchError/TooLargeError naming the URL.
    """
    msgid = valid_msgid(msgid)
    base = settings.lore_base_url.rstrip("/")
    url = f"{base}/{quote(msgid, safe='@!$=~+-._')}/t.mbox.gz"
    label = source or url
    limit = settings.max_input_bytes
    # Imported here: requests costs ~35 ms, and most reviews read local files.
    import requests

    timeout = settings.fetch_timeout
    deadline = time.monotonic() + timeout  # for the whole fetch, not per read
    try:
        with requests.get(url, timeout=timeout, stream=True) as resp:
            if resp.status_code == 404:
                raise FetchError(
                    f"no thread found for <{msgid}> (HTTP 404 from {url})", source=label
                )
            if resp.status_code >= 400:
                raise FetchError(f"HTTP {resp.status_code} fetching {url}", source=label)
            body = _read_by(resp, deadline, limit, label)
    except _DeadlinePassed as exc:
        raise FetchError(f"timed out after {timeout:g}s fetching {url}", source=label) from exc
    except requests.Timeout as exc:
        raise FetchError(
            f"timed out after {settings.fetch_timeout:g}s fetching {url}", source=label
        ) from exc
    except requests.ConnectionError as exc:
        raise FetchError(f"cannot connect to fetch {url} (offline?)", source=label) from exc
    except requests.RequestException as exc:
        raise FetchError(f"fetch failed: {type(exc).__name__}", source=label) from exc
    return gunzip_limited(bytes(body), limit, label)

"""Ingest: turn input bytes (mbox, mail, patch files, stdin, lore, git ranges) into RawMessages.

Nothing here groups or interprets messages; that is `bot.assemble`.
"""

from __future__ import annotations

from bot.ingest.fetch import fetch_thread, valid_msgid
from bot.ingest.mbox import split_mbox
from bot.ingest.message import parse_message
from bot.ingest.sources import load, messages_from_bytes

__all__ = [
    "fetch_thread",
    "load",
    "messages_from_bytes",
    "parse_message",
    "split_mbox",
    "valid_msgid",
]

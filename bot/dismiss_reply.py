"""Dismissals by reply mail: `bot: not-a-bug MMLC002` under a bot review.

    commands_in_reply(mail, trusted=..., author=...)   the commands a reply gives
    dismiss_from_reply(store, mail, trusted=...)       find the series, store them

A command is a line of its own, outside quotes (`> `) and above the signature
(`-- `):

    bot: not-a-bug <fingerprint|rule-id> [everywhere] [reason ...]

`<fingerprint>` is the full one or its short form from the review (8 or more hex
digits); a rule ID (`MMLC002`, `SIM-LEAK`) dismisses that rule for the series.
`everywhere` (or `--everywhere`) right after a fingerprint carries it to every
series. The words `bot:` and `not-a-bug` are read in any case. A reply counts
only when its sender is one of `trusted` (addresses, `Name <addr>` allowed) or
the series' author; anything else gives no command at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parseaddr

from bot.dismiss import Dismissal, DismissalStore, ReviewRecord, normalise_target, one
from bot.errors import BotError
from bot.model import RawMessage
from bot.report.fingerprint import looks_like_fingerprint

_COMMAND = re.compile(r"^\s*bot:\s*not-a-bug\s+(?P<target>\S+)(?P<rest>.*)$", re.IGNORECASE)
_EVERYWHERE = ("everywhere", "--everywhere")
MAX_COMMANDS = 20  # per reply: a reply is a person's decision, not a batch job


@dataclass(frozen=True)
class ReplyCommand:
    """One dismissal a reply asks for."""

    target: str  # normalised: fingerprint lower-case, rule ID upper-case
    everywhere: bool
    reason: str
    by: str  # the sender's address
    references: tuple[str, ...]  # Message-IDs the reply answers, nearest first


def _addr(text: str) -> str:
    return parseaddr(text)[1].strip().lower()


def _as_message(mail: RawMessage | bytes | str) -> RawMessage:
    if isinstance(mail, RawMessage):
        return mail
    from bot.ingest.message import parse_message

    raw = mail.encode("utf-8", "surrogateescape") if isinstance(mail, str) else mail
    return parse_message(raw, "reply")


def commands_in_reply(
    mail: RawMessage | bytes | str, *, trusted: Iterable[str] = (), author: str | None = None
) -> list[ReplyCommand]:
    """The not-a-bug commands of a reply from a trusted sender or the author.

    Quoted lines and everything under the signature are ignored, and so is a
    line whose target is neither a fingerprint nor a rule ID.
    """
    msg = _as_message(mail)
    sender = msg.from_addr.strip().lower()
    allowed = {_addr(t) for t in trusted} | ({_addr(author)} if author else set())
    allowed.discard("")
    if not sender or sender not in allowed:
        return []
    refs = tuple(
        dict.fromkeys([*([msg.in_reply_to] if msg.in_reply_to else []), *reversed(msg.references)])
    )
    out: list[ReplyCommand] = []
    for line in msg.body.splitlines():
        if line.rstrip() == "--":
            break  # the signature (`-- `) and below
        if line.lstrip().startswith(">"):
            continue
        m = _COMMAND.match(line)
        if m is None:
            continue
        try:
            target = normalise_target(m.group("target").strip(".,;:"))
        except BotError:
            continue
        words = m.group("rest").split()
        everywhere = bool(words) and words[0].lower() in _EVERYWHERE
        if everywhere:
            words = words[1:]
            if not looks_like_fingerprint(target):
                continue  # a rule is never dismissed everywhere by mail
        out.append(ReplyCommand(target, everywhere, one(" ".join(words)), sender, refs))
        if len(out) >= MAX_COMMANDS:
            break
    return out


def series_of_reply(store: DismissalStore, references: Iterable[str]) -> ReviewRecord | None:
    """The reviewed series a reply is about: the nearest message it answers
    that a recorded review knows (the patch the bot's reply answered)."""
    for ref in references:
        found = store.find_series(ref)
        if found is not None:
            return found
    return None


def dismiss_from_reply(
    store: DismissalStore, mail: RawMessage | bytes | str, *, trusted: Iterable[str] = ()
) -> list[Dismissal]:
    """Store the dismissals a reply asks for. The series comes from the reply's
    References; its author may dismiss as well as `trusted` senders. A reply
    to no series the store knows dismisses nothing."""
    msg = _as_message(mail)
    refs = [*([msg.in_reply_to] if msg.in_reply_to else []), *reversed(msg.references)]
    record = series_of_reply(store, refs)
    if record is None:
        return []
    done: list[Dismissal] = []
    for cmd in commands_in_reply(msg, trusted=trusted, author=record.series.author):
        target = cmd.target
        if looks_like_fingerprint(target):
            # a short form names the full fingerprint this series raised
            full = [fp for fp in record.raised if fp.startswith(target)]
            target = full[0] if len(full) == 1 else target
        reason = cmd.reason or "not a bug (by reply mail)"
        done.append(
            store.add(target, record.series, reason=reason, by=cmd.by, everywhere=cmd.everywhere)
        )
    return done


__all__ = ["ReplyCommand", "commands_in_reply", "dismiss_from_reply", "series_of_reply"]

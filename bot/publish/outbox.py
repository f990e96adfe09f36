"""Deliver a stored review: outbox first, each part claimed before it is sent.

The review task stores the review and its outbox entry in one atomic step; only then
is anything sent. An outbox entry has numbered parts (an email, a Patchwork check, a
maildir copy). Each part moves

    (absent) --claim--> sending --sent--> sent
                              \\--crash--> uncertain   (found "sending" on restart)
                              \\--no answer after the whole message went out-->
                                          uncertain   (SMTP: the end of DATA was sent
                                                       and the reply timed out or the
                                                       connection dropped)
    (absent) --policy--> skipped:<why>                 (muted list, dry-run, not set up)
    sending --refused--> failed:<why>                  (a permanent refusal: SMTP 5xx,
                                                        Patchwork 4xx; never retried)
    sending --nothing left--> (absent) + note:<why>    (connection refused, SMTP 4xx,
                                                        maildir not writable: tried again)

so a crash before the claim sends on restart, and a crash after the claim never sends
twice: a part found "sending" is marked uncertain and kept for the operator, with the
review still stored. Once an SMTP server accepted DATA the part is sent, whatever QUIT
answers; anything ambiguous is uncertain and never resent automatically (`bot outbox
retry ID` after checking). A send that failed before anything left the machine is
un-claimed and tried again; its reason is noted on the entry and on the target
(`{p}:target:{kind}`, `bot outbox list`, `bot_publish_target_failing`). A failing
maildir (a local target an operator must fix) is not an error of the task: the entry
stays pending, and the sweep tries it again.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.errors import BotError, FetchError, InputError

PART_SENDING = "sending"
PART_SENT = "sent"
PART_UNCERTAIN = "uncertain"


class DeliveryUncertain(BotError):
    """The message may have been delivered: the whole of it went out, and no clear
    answer came back. The part is marked uncertain and never resent automatically."""


class TargetError(InputError):
    """A publish target cannot take the part now (a maildir that cannot be written):
    nothing was delivered; the operator must fix the target, and it is tried again."""


class OutboxStore(Protocol):
    def outbox_item(self, outbox_id: str) -> dict[str, str]: ...
    def claim_part(self, outbox_id: str, part: str) -> int: ...
    def set_part(self, outbox_id: str, part: str, status: str) -> None: ...
    def clear_part(self, outbox_id: str, part: str) -> None: ...
    def note_part(self, outbox_id: str, part: str, note: str) -> None: ...
    def finish_outbox(self, outbox_id: str, status: str) -> None: ...
    def target_failed(self, kind: str, reason: str) -> None: ...
    def target_ok(self, kind: str) -> None: ...


class Senders(Protocol):
    def send_email(self, raw: bytes) -> None: ...
    def write_maildir(self, raw: bytes) -> None: ...
    def post_check(self, msgid: str, check: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class Policy:
    """What may leave the machine for this outbox entry."""

    dry_run: bool = True
    email_opt_in: bool = False  # the list opted in to review mail
    smtp: bool = False  # an SMTP server is configured
    maildir: bool = False
    patchwork: bool = False

    def skip_reason(self, kind: str) -> str:
        if kind == "maildir":
            return "" if self.maildir else "no-maildir"
        if kind == "email":
            if not self.email_opt_in:
                return "muted"
            if self.dry_run:
                return "dry-run"
            return "" if self.smtp else "no-smtp"
        if kind == "patchwork":
            if self.dry_run:
                return "dry-run"
            return "" if self.patchwork else "no-patchwork"
        return "unknown-kind"


@dataclass
class DeliveryReport:
    outbox_id: str
    sent: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    uncertain: list[int] = field(default_factory=list)
    already: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)  # tried again later

    @property
    def status(self) -> str:
        if self.deferred:
            return "pending"
        if self.uncertain:
            return "uncertain"
        return "failed" if self.failed else "done"


def email_part(raw: bytes) -> dict[str, str]:
    return {"kind": "email", "raw": base64.b64encode(raw).decode()}


def maildir_part(raw: bytes) -> dict[str, str]:
    return {"kind": "maildir", "raw": base64.b64encode(raw).decode()}


def patchwork_part(msgid: str, check: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "patchwork", "msgid": msgid, "check": dict(check)}


def parts_of(item: Mapping[str, str]) -> list[dict[str, Any]]:
    payload = json.loads(item.get("payload") or "{}")
    parts = payload.get("parts", [])
    return [p for p in parts if isinstance(p, dict)]


def deliver(
    store: OutboxStore,
    outbox_id: str,
    policy: Policy,
    senders: Senders,
    *,
    pause: Callable[[str], None] = lambda _point: None,
) -> DeliveryReport:
    """Send every part of one outbox entry that was never tried; see the module docstring.

    The caller holds the entry's lock, so a part found "sending" was left by a dead
    worker, not by a live one. Errors from a sender propagate (after un-claiming the
    part) so the task can retry them.
    """
    report = DeliveryReport(outbox_id)
    item = store.outbox_item(outbox_id)
    if not item:
        return report
    for n, part in enumerate(parts_of(item)):
        fld = f"part:{n}"
        status = item.get(fld, "")
        if status == PART_SENDING:
            store.set_part(outbox_id, fld, PART_UNCERTAIN)
            report.uncertain.append(n)
            continue
        if status == PART_UNCERTAIN:
            report.uncertain.append(n)
            continue
        if status:
            report.already.append(n)
            continue
        kind = str(part.get("kind", ""))
        reason = policy.skip_reason(kind)
        if reason:
            store.set_part(outbox_id, fld, f"skipped:{reason}")
            report.skipped[n] = reason
            continue
        if store.claim_part(outbox_id, fld) != 1:
            report.already.append(n)
            continue
        pause("publish:after-claim")
        try:
            if kind == "email":
                senders.send_email(base64.b64decode(part["raw"]))
            elif kind == "maildir":
                senders.write_maildir(base64.b64decode(part["raw"]))
            elif kind == "patchwork":
                senders.post_check(str(part["msgid"]), part.get("check") or {})
        except DeliveryUncertain as exc:
            # the server may have it: never send it again by ourselves
            store.set_part(outbox_id, fld, PART_UNCERTAIN)
            store.note_part(outbox_id, fld, exc.one_line())
            report.uncertain.append(n)
            continue
        except TargetError as exc:
            # caught before InputError: nothing was written, and it is tried again once
            # the operator fixed the target (the sweep re-queues pending entries)
            store.clear_part(outbox_id, fld)
            store.note_part(outbox_id, fld, exc.one_line())
            store.target_failed(kind, exc.one_line())
            report.deferred[n] = exc.one_line()
            continue
        except FetchError as exc:
            # transient (FetchError is an InputError, so it is caught first): nothing
            # left the machine, so trying again later is safe
            store.clear_part(outbox_id, fld)
            store.note_part(outbox_id, fld, exc.one_line())
            store.target_failed(kind, exc.one_line())
            raise
        except InputError as exc:
            # refused for good (bad address, 5xx, Patchwork 4xx): record it, go on
            store.set_part(outbox_id, fld, f"failed:{exc.one_line()[:300]}")
            report.failed[n] = exc.one_line()
            continue
        except BaseException:
            # the send did not complete: nothing left the machine, so trying again is safe
            store.clear_part(outbox_id, fld)
            raise
        pause("publish:after-send")
        store.set_part(outbox_id, fld, PART_SENT)
        store.target_ok(kind)
        report.sent.append(n)
    if not report.deferred:
        store.finish_outbox(outbox_id, report.status)
    return report


__all__ = [
    "DeliveryReport",
    "DeliveryUncertain",
    "OutboxStore",
    "Policy",
    "Senders",
    "TargetError",
    "deliver",
    "email_part",
    "maildir_part",
    "parts_of",
    "patchwork_part",
]

"""Email replies: thread a review under the message it answers, and send it over SMTP.

A review reply must land in the right thread of every reader's mail client and of the
list archive, so it carries In-Reply-To (the parent's Message-ID) and References (the
parent's References plus the parent), is addressed To the author and Cc'd as the list's
policy says, and gets a stable Message-ID derived from what it reviews: sending the
same review again produces the same Message-ID, which archives and clients de-duplicate.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate, getaddresses, parseaddr

from bot.errors import BotError, FetchError, InputError
from bot.model import RawMessage
from bot.publish.outbox import DeliveryUncertain


@dataclass(frozen=True)
class Recipients:
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()

    @property
    def all(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for addr in (*self.to, *self.cc):
            bare = parseaddr(addr)[1].lower()
            if bare:
                seen.setdefault(bare, None)
        return tuple(seen)


def stable_message_id(*parts: str, domain: str = "mmlc-bot") -> str:
    """A Message-ID (without brackets) that depends only on `parts`."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    return f"review-{digest}@{domain}"


def reply_recipients(
    parent: RawMessage,
    *,
    list_address: str = "",
    cc_list: bool = True,
    extra_cc: Sequence[str] = (),
    cc_thread: bool = False,
    own: Sequence[str] = (),
) -> Recipients:
    """To the author of `parent`; Cc the list (if the policy says so), with `cc_thread`
    everyone `parent` was sent to (its To and Cc), and `extra_cc`.

    Each address once (the author is To only), never one of `own` (the bot's own
    addresses), and never the list's address when the policy says not to Cc it."""
    to = (formataddr((parent.from_name, parent.from_addr)),) if parent.from_addr else ()
    wanted: list[str] = []
    if cc_list and list_address:
        wanted.append(list_address)
    if cc_thread:
        wanted.extend(parent.to)
        wanted.extend(parent.cc)
    wanted.extend(extra_cc)
    seen = {parent.from_addr.lower()} | {parseaddr(a)[1].lower() for a in own}
    if not cc_list and list_address:
        seen.add(parseaddr(list_address)[1].lower())
    cc: list[str] = []
    for addr in wanted:
        bare = parseaddr(addr)[1].lower()
        if not bare or "@" not in bare or bare in seen:
            continue
        seen.add(bare)
        cc.append(addr)
    return Recipients(to=to, cc=tuple(cc))


def thread_reply(
    message: EmailMessage,
    parent: RawMessage,
    *,
    from_addr: str,
    recipients: Recipients,
    message_id: str | None = None,
) -> EmailMessage:
    """Address a review reply to `parent` and make sure it threads under it.

    From/To/Cc are replaced (the list's policy decides who is copied, not reply-all);
    In-Reply-To and References are set from `parent`; an existing Message-ID is kept
    (the renderer derives it from the content) unless `message_id` is given.
    """
    for header in ("From", "To", "Cc", "In-Reply-To", "References"):
        del message[header]
    message["From"] = from_addr
    if recipients.to:
        message["To"] = ", ".join(recipients.to)
    if recipients.cc:
        message["Cc"] = ", ".join(recipients.cc)
    if message_id is not None or not message["Message-ID"]:
        del message["Message-ID"]
        message["Message-ID"] = f"<{message_id or stable_message_id(parent.message_id)}>"
    message["In-Reply-To"] = f"<{parent.message_id}>"
    refs = [r for r in parent.references if r != parent.message_id] + [parent.message_id]
    message["References"] = " ".join(f"<{r}>" for r in dict.fromkeys(refs))
    if not message["Date"]:
        message["Date"] = formatdate(localtime=False, usegmt=True)
    if not message["Subject"]:
        subject = parent.subject
        message["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    return message


def as_bytes(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=SMTP)


def envelope(raw: bytes) -> tuple[str, list[str]]:
    """Sender and recipients of a stored message, from its own From/To/Cc headers."""
    from email import message_from_bytes

    msg = message_from_bytes(raw)
    sender = parseaddr(str(msg.get("From", "")))[1]
    rcpts = [
        a
        for _, a in getaddresses([str(v) for v in msg.get_all("To", []) + msg.get_all("Cc", [])])
        if a
    ]
    return sender, rcpts


def send_smtp(
    raw: bytes,
    *,
    host: str,
    port: int,
    starttls: bool = False,
    user: str = "",
    password: str = "",
    timeout: float = 30.0,
) -> None:
    """Send one stored message.

    Raises FetchError when nothing was delivered and trying again later may work
    (connection, 4xx), InputError when the server refused the message for good (5xx),
    and DeliveryUncertain when the whole message went out (the end of DATA was sent)
    but no answer came back: the server may have queued it, so it must not be resent
    by itself. Once DATA was accepted the message is sent, whatever QUIT answers.
    """
    sender, rcpts = envelope(raw)
    if not sender or not rcpts:
        raise InputError("stored message has no From or no recipients")
    # smtplib sends bytes as they are; SMTP needs CRLF, and a server sees a message
    # with bare LFs as one line far over the 1000-octet limit (RFC 5321 4.5.3.1.6)
    wire = re.sub(rb"\r?\n", b"\r\n", raw)
    where = f"SMTP {host}:{port}"
    try:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    except (OSError, smtplib.SMTPException) as exc:
        raise FetchError(f"{where}: {exc}") from exc
    try:
        _transmit(smtp, sender, rcpts, wire, where, starttls=starttls, user=user, password=password)
    except BaseException:
        smtp.close()  # no QUIT on a connection that failed or timed out
        raise
    try:
        smtp.quit()  # a late or odd answer to QUIT changes nothing: DATA was answered
    except (OSError, smtplib.SMTPException):
        smtp.close()


def _transmit(
    smtp: smtplib.SMTP,
    sender: str,
    rcpts: list[str],
    wire: bytes,
    where: str,
    *,
    starttls: bool,
    user: str,
    password: str,
) -> None:
    try:
        if starttls:
            smtp.starttls(context=ssl.create_default_context())
        if user:
            smtp.login(user, password)
        smtp.ehlo_or_helo_if_needed()
        code, reply = smtp.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        refused: dict[str, tuple[int, bytes]] = {}
        for rcpt in rcpts:
            code, reply = smtp.rcpt(rcpt)
            if code not in {250, 251}:
                refused[rcpt] = (code, reply)
        if len(refused) == len(rcpts):
            raise smtplib.SMTPRecipientsRefused(refused)
        code, reply = smtp.docmd("DATA")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        body = re.sub(rb"(?m)^\.", b"..", wire)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        smtp.send(body + b".\r\n")
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _msg in exc.recipients.values()]
        if codes and all(code >= 500 for code in codes):
            raise InputError(f"{where} refused every recipient: {codes}") from exc
        raise FetchError(f"{where} refused the recipients for now: {codes}") from exc
    except smtplib.SMTPResponseException as exc:
        raise _refusal(where, exc.smtp_code, exc.smtp_error) from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise FetchError(f"{where}: {exc}") from exc
    # The whole message is with the server now: from here on, no answer is not a "no".
    try:
        code, reply = smtp.getreply()
    except Exception as exc:
        raise DeliveryUncertain(
            f"{where}: no answer after the message was sent ({exc or type(exc).__name__}); "
            "it may have been delivered"
        ) from exc
    if code != 250:
        raise _refusal(where, code, reply)


def _refusal(where: str, code: int, reply: bytes | str) -> BotError:
    detail = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    if code >= 500:
        return InputError(f"{where} refused the message: {code} {detail}")
    return FetchError(f"{where}: {code} {detail}")


__all__ = [
    "Recipients",
    "as_bytes",
    "envelope",
    "reply_recipients",
    "send_smtp",
    "stable_message_id",
    "thread_reply",
]

"""Publishing against real servers that misbehave: an SMTP server (aiosmtpd) that accepts
the message and answers late or answers QUIT with 421, and a maildir that is an empty
folder or cannot be written. Real redis-server and real worker processes."""

from __future__ import annotations

import asyncio
import json
import mailbox
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.errors import FetchError
from bot.publish.email import send_smtp
from bot.publish.maildir import write_maildir
from bot.publish.outbox import DeliveryUncertain, TargetError
from tests.fixtures.service.helpers import (
    ROOT,
    RedisServer,
    demo_series,
    free_port,
    fresh_redis,
    own_redis,
    wait_until,
    write_inbox,
)
from tests.test_workers import LIST, Service, _email_parts, _outbox_ids, _wait_reviewed
from workers.metrics import render_metrics

__all__ = ["fresh_redis", "own_redis"]

MAIL = (
    b"From: bot@example.net\nTo: ada@example.org\nSubject: Re: [PATCH] x\n"
    b"Message-ID: <r1@example.net>\n\nA review.\n"
)


@dataclass
class OddSmtp:
    """aiosmtpd that keeps each message it was given and then answers DATA only once
    released (`late`), or answers QUIT with 421 (`quit_421`)."""

    host: str
    port: int
    late: bool = False
    quit_421: bool = False
    received: list[bytes] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def odd_smtp(*, late: bool = False, quit_421: bool = False) -> Iterator[OddSmtp]:
    from aiosmtpd.controller import Controller

    server = OddSmtp("127.0.0.1", free_port(), late=late, quit_421=quit_421)

    class Handler:
        async def handle_DATA(self, srv: object, session: object, envelope: Any) -> str:
            server.received.append(bytes(envelope.original_content))
            while server.late and not server.release.is_set():
                await asyncio.sleep(0.05)  # the client gives up waiting first
            return "250 OK queued"

        async def handle_QUIT(self, srv: object, session: object, envelope: object) -> str:
            return "421 4.3.2 shutting down" if server.quit_421 else "221 Bye"

    controller = Controller(Handler(), hostname=server.host, port=server.port)
    controller.start()
    try:
        yield server
    finally:
        server.release.set()
        controller.stop()


# --------------------------------------------------------------------------- send_smtp


def test_an_accepted_message_is_sent_whatever_quit_answers() -> None:
    with odd_smtp(quit_421=True) as smtp:
        send_smtp(MAIL, host=smtp.host, port=smtp.port, timeout=30)  # no error: it is sent
        assert len(smtp.received) == 1


def test_no_answer_after_the_whole_message_went_out_is_uncertain_not_a_retry() -> None:
    with odd_smtp(late=True) as smtp:
        with pytest.raises(DeliveryUncertain, match="may have been delivered") as err:
            send_smtp(MAIL, host=smtp.host, port=smtp.port, timeout=1)
        assert not isinstance(err.value, FetchError)  # FetchError means: try again
        assert len(smtp.received) == 1


# --------------------------------------------------------------------------- maildir


def test_an_existing_empty_folder_becomes_the_maildir(tmp_path: Path) -> None:
    box = tmp_path / "outbox"
    box.mkdir()  # what `mkdir -p` leaves
    key = write_maildir(box, MAIL)
    assert {p.name for p in box.iterdir()} == {"cur", "new", "tmp"}
    assert mailbox.Maildir(box, create=False)[key]["Message-ID"] == "<r1@example.net>"


def test_a_maildir_that_cannot_be_made_is_a_target_error_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(TargetError, match="cannot be written: Not a directory"):
        write_maildir(tmp_path / "file" / "outbox", MAIL)


# --------------------------------------------------------------------------- the service


@contextmanager
def _service(
    tmp: Path, redis_server: RedisServer, smtp: OddSmtp, **publish: Any
) -> Iterator[Service]:
    svc = Service(tmp, redis_server, smtp, tmp / "inbox")  # type: ignore[arg-type]
    cfg = yaml.safe_load(svc.config.read_text())
    # the late server answers DATA only once released: the bot gives up after a second
    cfg["publish"]["smtp"]["timeout"] = 1 if smtp.late else 60
    cfg["publish"].update(publish)
    svc.config.write_text(yaml.safe_dump(cfg))
    try:
        yield svc
    finally:
        svc.stop()


def _cli(args: list[str], svc: Service) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env=svc.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _settled(svc: Service) -> bool:
    return svc.state.outbox_pending() == [] and svc.drained()


@pytest.mark.integration
@pytest.mark.parametrize("odd", ["late", "quit_421"])
def test_a_review_accepted_by_smtp_is_mailed_once_however_the_server_answers(
    tmp_path: Path, fresh_redis: RedisServer, odd: str
) -> None:
    v1 = demo_series(1)
    with (
        odd_smtp(late=odd == "late", quit_421=odd == "quit_421") as smtp,
        _service(tmp_path, fresh_redis, smtp) as svc,
    ):
        write_inbox(svc.inbox, list(v1.messages.values()))
        svc.start_worker()
        svc.poll()
        _wait_reviewed(svc, v1.cover_id, "the review")
        wait_until(lambda: _settled(svc), "the outbox entry to settle", timeout=120)
        (outbox_id,) = _outbox_ids(svc)
        item = svc.state.outbox_item(outbox_id)
        emails = _email_parts(svc, outbox_id)
        assert emails >= 1
        # one copy of each reply reached the server, and none is sent again
        assert len(smtp.received) == emails
        listed = _cli(["outbox", "list"], svc)
        assert listed.returncode == 0, listed.stderr
        if odd == "late":
            assert item["status"] == "uncertain"
            assert item["part:0"] == "uncertain"
            assert "may have been delivered" in item["note:0"]
            assert listed.stdout.startswith(
                f"{outbox_id} uncertain {LIST} {v1.cover_id} 0=uncertain"
            )
            assert "0: SMTP" in listed.stdout and "may have been delivered" in listed.stdout
        else:
            assert item["status"] == "done" and item["part:0"] == "sent"
            assert listed.stdout == ""
        assert "Traceback" not in svc.log_text()


@pytest.mark.integration
def test_a_failing_maildir_is_reported_not_retraced_and_delivered_once_fixed(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    v1 = demo_series(1)
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the maildir's parent should be")
    with (
        odd_smtp() as smtp,
        _service(tmp_path, fresh_redis, smtp, maildir=str(blocker / "outbox")) as svc,
    ):
        write_inbox(svc.inbox, list(v1.messages.values()))
        svc.start_worker()
        svc.poll()
        _wait_reviewed(svc, v1.cover_id, "the review")
        wait_until(
            lambda: "maildir" in svc.state.failing_targets(),
            "the maildir to be reported",
            timeout=120,
        )
        metrics = render_metrics(svc.state)[0].decode()
        assert 'bot_publish_target_failing{target="maildir"} 1.0' in metrics
        assert 'bot_publish_target_failing{target="email"} 0.0' in metrics
        listed = _cli(["outbox", "list"], svc)
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].startswith("target maildir failing since ")
        assert "Not a directory" in lines[0]
        (outbox_id,) = _outbox_ids(svc)
        assert any(line.startswith(f"{outbox_id} pending {LIST}") for line in lines)
        assert "1=retrying" in listed.stdout
        # the mail went out meanwhile, once; the maildir copy waits for the operator
        assert len(smtp.received) == _email_parts(svc, outbox_id)
        assert svc.state.outbox_item(outbox_id)["part:0"] == "sent"
        # the operator fixes it: an empty folder, as `mkdir -p` leaves it
        blocker.unlink()
        (blocker / "outbox").mkdir(parents=True)

        def swept() -> bool:
            svc.send("sweep").get(timeout=60)  # what beat does every minute
            return _settled(svc)

        wait_until(swept, "the maildir copy to be written", timeout=120, every=1.0)
        assert len(mailbox.Maildir(blocker / "outbox", create=False)) >= 1
        assert svc.state.failing_targets() == {}
        assert svc.state.outbox_item(outbox_id)["status"] == "done"
        assert len(smtp.received) == _email_parts(svc, outbox_id)  # not mailed again
        log = svc.log_text()
        assert "Traceback" not in log
        warned = [
            json.loads(line)
            for line in log.splitlines()
            if line.startswith("{") and "publish target failing" in line
        ]
        assert warned and warned[0]["level"] == "warning"

"""Publishing: outbox claims, SMTP threading, Patchwork check requests, maildir, comparison."""

from __future__ import annotations

import base64
import email.policy
import json
import mailbox
import threading
from collections.abc import Iterator, Mapping
from email import message_from_bytes
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bot.errors import FetchError, InputError
from bot.ingest import parse_message
from bot.publish.compare import compare_reviews
from bot.publish.email import reply_recipients, send_smtp, thread_reply
from bot.publish.maildir import write_maildir
from bot.publish.outbox import Policy, deliver, email_part, maildir_part, patchwork_part
from bot.publish.patchwork import PatchworkClient
from tests.fixtures.service.helpers import (
    LIST_ADDR,
    RedisServer,
    demo_series,
    fresh_redis,
    own_redis,
    smtp_sink,
)
from workers.state import State

__all__ = ["fresh_redis", "own_redis"]  # fixtures used by name below

SEND_ALL = Policy(dry_run=False, email_opt_in=True, smtp=True, maildir=True, patchwork=True)


# --------------------------------------------------------------------------- comparison


def _doc(version: str, *findings: tuple[str, str, str, str]) -> dict[str, Any]:
    return {
        "series": {"revision": version},
        "findings": [
            {"rule_id": r, "function": f, "file": p, "status": s} for r, f, p, s in findings
        ],
    }


def test_compare_sorts_old_findings_into_resolved_still_present_and_new() -> None:
    old = _doc(
        "1",
        ("MMLC001", "pool_destroy", "mm/a.c", "introduced"),
        ("MMLC002", "pool_free", "mm/a.c", "introduced"),
        ("MMLC009", "other", "mm/b.c", "pre-existing"),
    )
    new = _doc(
        "2",
        ("MMLC002", "pool_free", "mm/a.c", "introduced"),
        ("MMLC003", "pool_alloc", "mm/a.c", "introduced"),
    )
    cmp = compare_reviews(old, new)
    assert cmp.resolved == (("MMLC001", "pool_destroy", "mm/a.c"),)
    assert cmp.still_present == (("MMLC002", "pool_free", "mm/a.c"),)
    assert cmp.new == (("MMLC003", "pool_alloc", "mm/a.c"),)
    assert (cmp.old_version, cmp.new_version) == ("1", "2")
    assert "resolved: MMLC001 pool_destroy() in mm/a.c" in cmp.summary()


def test_compare_ignores_line_numbers_and_pre_existing_findings() -> None:
    old = _doc("1", ("R1", "f", "x.c", "introduced"))
    new = _doc("2", ("R1", "f", "x.c", "introduced"), ("R2", "g", "x.c", "pre-existing"))
    new["findings"][0]["line"] = 99
    cmp = compare_reviews(old, new)
    assert cmp.still_present == (("R1", "f", "x.c"),) and cmp.new == () and cmp.resolved == ()


# --------------------------------------------------------------------------- email


def _reply_to_patch(n: int = 1) -> tuple[EmailMessage, Any]:
    s = demo_series(1)
    parent = parse_message(s.messages[str(n)], "t", 0)
    msg = EmailMessage()
    msg["Subject"] = f"Re: {parent.subject}"
    msg.set_content("> +\tpool->cache = kmem_cache_create(...);\n\nIs this cache ever destroyed?\n")
    rcpt = reply_recipients(parent, list_address=LIST_ADDR, cc_list=True, extra_cc=("mm@x.org",))
    thread_reply(msg, parent, from_addr="bot <bot@example.net>", recipients=rcpt)
    return msg, parent


def test_reply_is_threaded_to_the_patch_and_addressed_per_list_policy() -> None:
    msg, parent = _reply_to_patch(2)
    assert msg["In-Reply-To"] == f"<{parent.message_id}>"
    assert msg["References"] == f"<{demo_series(1).cover_id}> <{parent.message_id}>"
    assert msg["To"] == "Ada Lovelace <ada@example.org>"
    assert msg["Cc"] == f"{LIST_ADDR}, mm@x.org"
    assert msg["Message-ID"].startswith("<review-")


def test_a_list_without_cc_policy_is_not_copied() -> None:
    parent = parse_message(demo_series(1).messages["1"], "t", 0)
    rcpt = reply_recipients(parent, list_address=LIST_ADDR, cc_list=False)
    assert rcpt.cc == () and rcpt.to == ("Ada Lovelace <ada@example.org>",)


@pytest.mark.integration
def test_send_smtp_delivers_to_a_real_smtp_server_on_loopback() -> None:
    msg, parent = _reply_to_patch(1)
    with smtp_sink() as sink:
        send_smtp(msg.as_bytes(), host=sink.host, port=sink.port)
    assert len(sink.messages) == 1
    sender, rcpts, raw = sink.messages[0]
    assert sender == "bot@example.net"
    assert sorted(rcpts) == sorted(["ada@example.org", LIST_ADDR, "mm@x.org"])
    got = message_from_bytes(raw)
    assert got["In-Reply-To"] == f"<{parent.message_id}>"


@pytest.mark.integration
def test_a_long_reply_with_unix_line_endings_reaches_the_server_intact() -> None:
    msg, _ = _reply_to_patch(1)
    body = "".join(f"> +\tline {i} of a long quoted hunk\n" for i in range(200))
    msg.set_content(body + "\nIs this cache ever destroyed?\n")
    raw = msg.as_bytes().replace(b"\r\n", b"\n")  # as stored: LF only
    assert len(raw) > 5000
    with smtp_sink() as sink:
        send_smtp(raw, host=sink.host, port=sink.port)
    got = message_from_bytes(sink.messages[0][2], policy=email.policy.default)
    assert isinstance(got, EmailMessage)
    assert got.get_content().count("of a long quoted hunk") == 200


@pytest.mark.integration
def test_a_permanent_smtp_refusal_is_an_input_error_not_a_retry() -> None:
    msg, _ = _reply_to_patch(1)
    with smtp_sink(refuse_rcpt=True) as sink, pytest.raises(InputError, match="550"):
        send_smtp(msg.as_bytes(), host=sink.host, port=sink.port)


def test_send_smtp_to_a_closed_port_is_a_transient_fetch_error() -> None:
    from tests.fixtures.service.helpers import free_port

    msg, _ = _reply_to_patch(1)
    with pytest.raises(FetchError, match="SMTP"):
        send_smtp(msg.as_bytes(), host="127.0.0.1", port=free_port(), timeout=2)


# --------------------------------------------------------------------------- outbox


class RecordingSenders:
    def __init__(self, fail_first: int = 0) -> None:
        self.emails: list[bytes] = []
        self.maildir: list[bytes] = []
        self.checks: list[tuple[str, Mapping[str, Any]]] = []
        self.fail_first = fail_first

    def send_email(self, raw: bytes) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise FetchError("SMTP 127.0.0.1:25: connection refused")
        self.emails.append(raw)

    def write_maildir(self, raw: bytes) -> None:
        self.maildir.append(raw)

    def post_check(self, msgid: str, check: Mapping[str, Any]) -> None:
        self.checks.append((msgid, check))


def _store(state: State, outbox_id: str = "ob1") -> None:
    payload = {
        "parts": [
            email_part(b"From: bot@x\nTo: a@b\n\nhi\n"),
            maildir_part(b"From: bot@x\nTo: a@b\n\nhi\n"),
            patchwork_part("p1@x", {"state": "success", "context": "mm-lifecycle"}),
        ]
    }
    assert state.commit_review("linux-mm", "k1", {"review": {}}, outbox_id, payload, 1.0)


@pytest.fixture
def state(fresh_redis: RedisServer) -> Iterator[State]:
    st = State.from_url(fresh_redis.url())
    yield st
    st.r.close()


@pytest.mark.integration
def test_a_review_is_committed_once_with_its_outbox_entry(state: State) -> None:
    _store(state)
    assert not state.commit_review("linux-mm", "k1", {"review": {"x": 1}}, "ob2", {}, 1.0)
    assert state.review_count("linux-mm", "k1") == 1
    assert state.outbox_pending() == ["ob1"]
    assert state.series("linux-mm", "k1")["state"] == "reviewed"


@pytest.mark.integration
def test_deliver_sends_each_part_once_even_when_run_again(state: State) -> None:
    _store(state)
    senders = RecordingSenders()
    first = deliver(state, "ob1", SEND_ALL, senders)
    again = deliver(state, "ob1", SEND_ALL, senders)
    assert first.sent == [0, 1, 2] and again.sent == []
    assert len(senders.emails) == len(senders.maildir) == len(senders.checks) == 1
    assert state.outbox_pending() == []
    assert state.outbox_item("ob1")["part:0"] == "sent"


@pytest.mark.integration
def test_a_part_left_sending_by_a_dead_worker_is_never_sent_again(state: State) -> None:
    _store(state)
    assert state.claim_part("ob1", "part:0") == 1  # a worker claimed it, then died
    senders = RecordingSenders()
    report = deliver(state, "ob1", SEND_ALL, senders)
    assert report.uncertain == [0] and senders.emails == []
    assert state.outbox_item("ob1")["part:0"] == "uncertain"
    assert state.result("linux-mm", "k1") is not None  # the review itself is kept


@pytest.mark.integration
def test_a_failed_send_is_unclaimed_and_sent_on_retry(state: State) -> None:
    _store(state)
    senders = RecordingSenders(fail_first=1)
    with pytest.raises(FetchError):
        deliver(state, "ob1", SEND_ALL, senders)
    assert "part:0" not in state.outbox_item("ob1")
    deliver(state, "ob1", SEND_ALL, senders)
    assert len(senders.emails) == 1


@pytest.mark.integration
def test_muted_list_and_dry_run_send_nothing_but_keep_the_maildir_copy(state: State) -> None:
    _store(state)
    senders = RecordingSenders()
    report = deliver(
        state,
        "ob1",
        Policy(dry_run=True, email_opt_in=False, smtp=True, maildir=True, patchwork=True),
        senders,
    )
    assert report.skipped == {0: "muted", 2: "dry-run"}
    assert senders.emails == [] and senders.checks == [] and len(senders.maildir) == 1
    assert state.outbox_item("ob1")["part:0"] == "skipped:muted"


@pytest.mark.integration
def test_a_part_refused_for_good_is_recorded_and_the_others_still_go(state: State) -> None:
    _store(state)

    class Refusing(RecordingSenders):
        def send_email(self, raw: bytes) -> None:
            raise InputError("SMTP 127.0.0.1:25 refused the message: 550 no such user")

    senders = Refusing()
    report = deliver(state, "ob1", SEND_ALL, senders)
    assert report.failed == {0: "SMTP 127.0.0.1:25 refused the message: 550 no such user"}
    assert report.sent == [1, 2] and report.status == "failed"
    assert state.outbox_item("ob1")["part:0"].startswith("failed:SMTP")
    assert state.outbox_pending() == []


@pytest.mark.integration
def test_opted_in_list_in_dry_run_sends_no_mail(state: State) -> None:
    _store(state)
    senders = RecordingSenders()
    report = deliver(state, "ob1", Policy(dry_run=True, email_opt_in=True, smtp=True), senders)
    assert report.skipped[0] == "dry-run" and senders.emails == []


# --------------------------------------------------------------------------- maildir


def test_maildir_outbox_holds_the_reply_for_an_operator(tmp_path: Path) -> None:
    msg, _ = _reply_to_patch(1)
    key = write_maildir(tmp_path / "outbox", msg.as_bytes())
    box = mailbox.Maildir(tmp_path / "outbox", create=False)
    assert box[key]["In-Reply-To"] == msg["In-Reply-To"]
    assert (tmp_path / "outbox" / "new").is_dir()


def test_maildir_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        write_maildir(tmp_path / "f", b"From: a@b\n\nx\n")


# --------------------------------------------------------------------------- patchwork


class _Patchwork(BaseHTTPRequestHandler):
    """A loopback stand-in for Patchwork's two endpoints, recording each request."""

    requests: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []
    fail_post: int = 0

    def log_message(self, *_args: object) -> None:
        pass

    def _reply(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, dict(self.headers), b""))
        if "msgid=known%40x" in self.path:
            self._reply(200, [{"id": 42, "msgid": "<known@x>"}])
        else:
            self._reply(200, [])

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append(("POST", self.path, dict(self.headers), body))
        if type(self).fail_post:
            type(self).fail_post -= 1
            self._reply(503, {"detail": "busy"})
        elif self.headers.get("Authorization") != "Token s3cret":
            self._reply(403, {"detail": "bad token"})
        else:
            self._reply(201, {"id": 7, **json.loads(body)})


@pytest.fixture
def patchwork() -> Iterator[str]:
    _Patchwork.requests = []
    _Patchwork.fail_post = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Patchwork)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


CHECK = {
    "state": "warning",
    "context": "mm-lifecycle",
    "description": "1 finding",
    "target_url": "https://x/r/1",
    "msgid": "known@x",
    "patch": 1,
}


@pytest.mark.integration
def test_patchwork_check_is_posted_to_the_patch_found_by_message_id(patchwork: str) -> None:
    out = PatchworkClient(patchwork, "s3cret", project="linux-mm").post_check("known@x", CHECK)
    assert out["id"] == 7
    get, post = _Patchwork.requests
    assert get[0] == "GET" and "project=linux-mm" in get[1] and "msgid=known%40x" in get[1]
    assert post[1] == "/api/patches/42/checks/"
    assert post[2]["Authorization"] == "Token s3cret"
    assert json.loads(post[3]) == {
        "state": "warning",
        "context": "mm-lifecycle",
        "description": "1 finding",
        "target_url": "https://x/r/1",
    }


@pytest.mark.integration
def test_patchwork_refusals_are_input_errors_and_outages_are_transient(patchwork: str) -> None:
    with pytest.raises(InputError, match="HTTP 403"):
        PatchworkClient(patchwork, "wrong").post_check("known@x", CHECK)
    _Patchwork.fail_post = 1
    with pytest.raises(FetchError, match="HTTP 503"):
        PatchworkClient(patchwork, "s3cret").post_check("known@x", CHECK)
    with pytest.raises(FetchError, match="no patch"):
        PatchworkClient(patchwork, "s3cret").post_check("unknown@x", CHECK)


def test_patchwork_check_with_an_unknown_state_is_refused_before_sending() -> None:
    with pytest.raises(InputError, match="state"):
        PatchworkClient("http://127.0.0.1:9", "t").post_check("a@b", {"state": "green"})


def test_email_part_round_trips_the_exact_bytes() -> None:
    raw = "Subject: \u00e9\n\nbody\n".encode()
    assert base64.b64decode(email_part(raw)["raw"]) == raw


def test_push_scopes_follow_the_repository_policy_and_lists_their_own() -> None:
    from workers.config import parse_config
    from workers.tasks import policy_for

    data: dict[str, Any] = {
        "lists": {"linux-mm": {"email": True}},
        "repos": {
            "loud": {"url": "/srv/loud.git", "email": True, "email_to": "mm@example.org"},
            "quiet": {"url": "/srv/quiet.git"},
        },
        "publish": {"dry_run": False, "smtp": {"host": "127.0.0.1"}, "maildir": "/tmp/x"},
    }
    cfg = parse_config(data, env={})
    assert policy_for(cfg, "push:loud").skip_reason("email") == ""
    assert policy_for(cfg, "push:quiet").skip_reason("email") == "muted"
    assert policy_for(cfg, "push:unknown").skip_reason("email") == "muted"
    assert policy_for(cfg, "push:quiet").skip_reason("maildir") == ""
    assert policy_for(cfg, "linux-mm").skip_reason("email") == ""
    dry = parse_config({**data, "publish": {**data["publish"], "dry_run": True}}, env={})
    assert policy_for(dry, "push:loud").skip_reason("email") == "dry-run"


def test_a_repository_opting_in_to_mail_without_an_address_is_refused() -> None:
    from workers.config import parse_config

    with pytest.raises(InputError, match=r"repos.mm.email is true but repos.mm.email_to"):
        parse_config({"repos": {"mm": {"url": "/srv/mm.git", "email": True}}}, env={})

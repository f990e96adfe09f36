"""Fetching a thread by Message-ID or lore URL from a real HTTP server on loopback."""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot.assemble import assemble
from bot.config import Settings, load_settings
from bot.errors import FetchError, InputError, TooLargeError
from bot.ingest import load

MSGID = "v5-cover@example.org"


class _Lore(BaseHTTPRequestHandler):
    """Serves <msgid>/t.mbox.gz for the one thread it knows; 404 otherwise."""

    thread: bytes = b""
    requests_seen: list[str] = []  # noqa: RUF012 - shared by design: the test reads it

    def do_GET(self) -> None:
        self.requests_seen.append(self.path)
        if self.path == f"/all/{MSGID}/t.mbox.gz":
            body = gzip.compress(self.thread)
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/broken/"):
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean


@pytest.fixture
def lore(fixtures: Path) -> Iterator[tuple[str, list[str]]]:
    """(base URL, requests seen) of a loopback server serving the partial-reroll thread."""
    _Lore.thread = (fixtures / "ingest" / "partial-reroll.mbox").read_bytes()
    seen: list[str] = []
    _Lore.requests_seen = seen
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Lore)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _settings(base: str) -> Settings:
    return load_settings().with_(lore_base_url=f"{base}/all", fetch_timeout=5.0)


@pytest.mark.integration
@pytest.mark.parametrize("arg", [MSGID, f"<{MSGID}>"])
def test_message_id_fetches_and_splits_the_thread(lore: tuple[str, list[str]], arg: str) -> None:
    base, seen = lore
    messages = load([arg], _settings(base))
    assert seen == [f"/all/{MSGID}/t.mbox.gz"]
    assert [m.message_id for m in messages][:2] == [MSGID, "v5-1@example.org"]
    assert len(messages) == 6
    chosen = assemble(messages, _settings(base)).series[-1]
    assert chosen.revision == "5.1"


@pytest.mark.integration
def test_lore_url_fetches_by_the_message_id_in_it(lore: tuple[str, list[str]]) -> None:
    base, seen = lore
    url = f"https://lore.kernel.org/linux-mm/{MSGID}/T/#u"
    messages = load([url], _settings(base))
    assert seen == [f"/all/{MSGID}/t.mbox.gz"]
    assert messages[0].source.startswith(url)


@pytest.mark.integration
def test_unknown_message_id_is_a_one_line_fetch_error(lore: tuple[str, list[str]]) -> None:
    base, _ = lore
    with pytest.raises(FetchError, match="HTTP 404") as info:
        load(["nobody@example.org"], _settings(base))
    assert "\n" not in info.value.one_line()


@pytest.mark.integration
def test_server_error_is_a_fetch_error(lore: tuple[str, list[str]]) -> None:
    base, _ = lore
    settings = load_settings().with_(lore_base_url=f"{base}/broken")
    with pytest.raises(FetchError, match="HTTP 500"):
        load([MSGID], settings)


def test_connection_refused_is_a_fetch_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the port was free a moment ago and nothing listens on it now
    settings = load_settings().with_(lore_base_url=f"http://127.0.0.1:{port}/all")
    with pytest.raises(FetchError, match="cannot connect") as info:
        load([MSGID], settings)
    assert "\n" not in info.value.one_line()


@pytest.mark.integration
def test_thread_over_the_size_limit_is_refused(lore: tuple[str, list[str]]) -> None:
    base, _ = lore
    compressed = len(gzip.compress(_Lore.thread))
    with pytest.raises(TooLargeError, match="download larger"):
        load([MSGID], _settings(base).with_(max_input_bytes=compressed - 1))
    # small on the wire, too big once gunzipped: a gzip bomb stops at the limit
    assert len(_Lore.thread) > compressed + 10
    with pytest.raises(TooLargeError, match="once decompressed"):
        load([MSGID], _settings(base).with_(max_input_bytes=compressed + 10))


@pytest.mark.integration
@pytest.mark.parametrize(
    "bad",
    [
        "a/b@example.org",
        "x@example.org?download=1",
        "x@example.org#frag",
        "x@example.org;rm -rf",
        "x@example.org|cat",
        "x`id`@example.org",
        "<x y@example.org>",
        "'x'@example.org",
        "x..y@example.org",
        "x&y@example.org",
        "https://lore.kernel.org/linux-mm/a..b@example.org/",
    ],
)
def test_unsafe_message_id_is_refused_before_any_request(
    lore: tuple[str, list[str]], bad: str
) -> None:
    base, seen = lore
    with pytest.raises(InputError, match="refused Message-ID"):
        load([bad], _settings(base))
    assert seen == []


def test_fetch_timeout_is_a_total_deadline_not_per_read() -> None:
    """A server trickling a byte every 20 ms never trips a per-read timeout of
    0.3 s; the fetch still ends, as a timeout, well before the trickle does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    sent: list[int] = []

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n")
            try:
                for _ in range(400):  # 8 s in all
                    conn.sendall(b"x")
                    sent.append(1)
                    threading.Event().wait(0.02)
            except OSError:
                return  # the client gave up: what the deadline is for

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings = load_settings().with_(lore_base_url=f"{base}/all", fetch_timeout=0.3)
    try:
        with pytest.raises(FetchError) as exc:
            load([MSGID], settings)
        assert "timed out after 0.3s" in exc.value.message
        server.join()
        assert len(sent) < 400
    finally:
        listener.close()

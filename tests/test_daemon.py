"""`bot review --daemon`: real processes and real sockets (docs/daemon.md).

Every test runs the bot from a private copy of bot/ and rules/ (so an edit of the
checkout while the tests run cannot make a daemon stale under them), with its own
XDG_RUNTIME_DIR (the daemon's socket directory) and BOT_CACHE_DIR, and a fixed
PYTHONHASHSEED so a daemon and an in-process run hash alike. A review the daemon
serves must give the stdout, stderr and exit code of the same review run
in-process. Each test stops the daemons it started.
"""

from __future__ import annotations

import contextlib
import os
import pty
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from bot import daemon
from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "objpool"
SERIES = str(EXAMPLE / "series.mbox")
TREE = str(EXAMPLE / "tree")
WAIT = 60.0


@dataclass(frozen=True)
class Result:
    code: int
    out: bytes
    err: bytes


@dataclass
class Bot:
    """The bot of one test: its checkout copy, environment and socket directory."""

    root: Path
    home: Path
    env: dict[str, str]
    pids: set[int] = field(default_factory=set)

    @property
    def socket_dir(self) -> str:
        return str(Path(self.env["XDG_RUNTIME_DIR"]) / daemon.RUNTIME_NAME)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "bot", *args]

    def run(
        self,
        *args: str,
        stdin: bytes | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Result:
        proc = subprocess.run(
            self.command(*args),
            input=stdin if stdin is not None else b"",
            capture_output=True,
            cwd=cwd or self.home,
            env={**self.env, **(env or {})},
            timeout=300,
            check=False,
        )
        self._note_daemon()
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def status(self) -> dict[str, Any] | None:
        return daemon.ask(self.socket_dir, "status")

    def wait_ready(self, *, not_pid: int | None = None, warm: bool = True) -> dict[str, Any]:
        """The status of a daemon that answers (another one than `not_pid`) and, with
        `warm`, has warmed up. It answers while it warms up, but a client that then
        waits longer than daemon.TURN_WAIT for its turn (a loaded machine) is told
        busy and reviews in-process: not what a test of served reviews means to see."""
        deadline = time.monotonic() + WAIT
        while True:
            info = self.status()
            if info is not None and info.get("pid") != not_pid:
                self.pids.add(int(info["pid"]))
                if not (warm and info.get("warming_up")):
                    return info
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def wait_gone(self, pid: int) -> None:
        """Until process `pid` (a daemon of this test) has exited."""
        deadline = time.monotonic() + WAIT
        while _alive(pid):
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.05)

    def log(self) -> str:
        path = Path(self.socket_dir) / daemon.LOG_NAME
        return path.read_text(errors="replace") if path.exists() else "(no daemon log)"

    def _note_daemon(self) -> None:
        holder = daemon.lock_holder(self.socket_dir)
        if holder and holder > 0:
            self.pids.add(holder)

    def stop_all(self) -> None:
        """Stop the daemons this test started, as `bot daemon stop` does (ask until
        the lock is free); one that does not exit is killed by its pid (it is ours:
        it holds the lock in our private directory)."""
        deadline = time.monotonic() + WAIT
        while (holder := daemon.lock_holder(self.socket_dir)) is not None:
            if holder > 0:
                self.pids.add(holder)
            daemon.ask(self.socket_dir, "stop", timeout=1.0)
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for pid in self.pids:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has exited: it is not alive)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the bot (bot/ and rules/), byte-compiled."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT / "bot", root / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "rules", root / "rules")
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(root / "bot")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return root


@pytest.fixture
def bot(checkout: Path, tmp_path: Path) -> Iterator[Bot]:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    home = tmp_path / "work"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_DAEMON")}
    env.update(
        {
            "PYTHONPATH": str(checkout),
            "XDG_RUNTIME_DIR": str(runtime),
            "BOT_CACHE_DIR": str(tmp_path / "cache"),
            "PYTHONHASHSEED": "0",
            # a daemon a failed test leaves behind goes away by itself
            daemon.IDLE_TIMEOUT_ENV: "120",
        }
    )
    env.pop("BOT_DEBUG", None)
    b = Bot(root=checkout, home=home, env=env)
    try:
        yield b
    finally:
        b.stop_all()


def with_daemon(args: Sequence[str]) -> list[str]:
    return [args[0], "--daemon", *args[1:]]


REVIEW = ("review", SERIES, "--tree", TREE)


# ------------------------------------------------------------------ served reviews


def test_first_run_starts_the_daemon_and_later_runs_are_served_identically(bot: Bot) -> None:
    reference = bot.run(*REVIEW)
    assert reference.code in (0, 1), reference.err
    assert reference.out

    first = bot.run(*with_daemon(REVIEW))  # none yet: in-process, and one is started
    assert first == reference
    assert bot.wait_ready()["served"] == 0

    cases: list[tuple[str, ...]] = [
        REVIEW,
        (*REVIEW, "--format", "json"),
        ("review", SERIES, "--format", "sarif"),  # diff-only
        ("review", "no-such.mbox"),  # exit 2, one line on stderr
        ("review", "--no-such-option", SERIES),  # usage error
    ]
    for case in cases:
        expected = bot.run(*case)
        assert bot.run(*with_daemon(case)) == expected, case
    missing = bot.run(*with_daemon(("review", "no-such.mbox")))
    assert missing.code == 2
    assert missing.out == b""
    assert missing.err.decode().count("\n") == 1
    assert missing.err.startswith(b"bot: error: no-such.mbox")

    # `-` reads the client's stdin
    mbox = Path(SERIES).read_bytes()
    stdin_case = ("review", "-", "--tree", TREE, "--format", "json")
    expected = bot.run(*stdin_case, stdin=mbox)
    assert expected.code in (0, 1)
    assert bot.run(*with_daemon(stdin_case), stdin=mbox) == expected

    # -o with a relative path lands in the client's cwd
    here, there = bot.home / "here", bot.home / "there"
    here.mkdir()
    there.mkdir()
    expected = bot.run(*REVIEW, "-o", "review.txt", cwd=here)
    served = bot.run(*with_daemon(REVIEW), "-o", "review.txt", cwd=there)
    assert served == expected
    assert (there / "review.txt").read_bytes() == (here / "review.txt").read_bytes()

    # BOT_DAEMON=1 opts in without the flag
    assert bot.run(*REVIEW, env={"BOT_DAEMON": "1"}) == reference
    served = len(cases) + 4  # and the missing file again, stdin, -o

    # the venv's `bot` script (another sys.executable path) shares the daemon
    script = Path(sys.executable).with_name("bot")
    if script.is_file():
        proc = subprocess.run(
            [str(script), *with_daemon(REVIEW)],
            capture_output=True,
            cwd=bot.home,
            env=bot.env,
            timeout=300,
            check=False,
        )
        assert Result(proc.returncode, proc.stdout, proc.stderr) == reference
        served += 1

    info = bot.status()
    assert info is not None
    assert info["served"] == served, bot.log()
    status = bot.run("daemon", "status")
    assert status.code == 0
    assert f"reviews served: {info['served']}".encode() in status.out
    assert f"pid: {info['pid']}".encode() in status.out


def test_a_served_client_imports_neither_the_settings_nor_the_pipeline(bot: Bot) -> None:
    bot.run("daemon", "start")
    served_before = bot.wait_ready()["served"]
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bot", *with_daemon(REVIEW)],
        capture_output=True,
        cwd=bot.home,
        env=bot.env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == bot.run(*REVIEW).code
    info = bot.status()
    assert info is not None and info["served"] == served_before + 1
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.decode().splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "bot.daemon" in imported
    for heavy in ("bot.config", "bot.pipeline", "bot.cache", "dataclasses", "typing"):
        assert heavy not in imported, heavy


def test_output_on_a_terminal_is_the_same_as_in_process(bot: Bot) -> None:
    """stdout on a pty: isatty() is true in the daemon too, so the text is coloured
    (--color auto) exactly as in-process."""

    def on_a_pty(args: Sequence[str]) -> tuple[int, bytes]:
        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            bot.command(*args),
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
            cwd=bot.home,
            env={**bot.env, "TERM": "xterm", "COLUMNS": "100"},
        )
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the pty closes when the last writer has gone
                break
            if not chunk:
                break
            seen += chunk
        code = proc.wait(timeout=300)
        os.close(leader)
        assert proc.stderr is not None
        assert proc.stderr.read() == b""
        return code, seen

    bot.run("daemon", "start")
    bot.wait_ready()
    expected = on_a_pty([*REVIEW, "-q"])
    assert b"\x1b[" in expected[1]
    assert on_a_pty(with_daemon([*REVIEW, "-q"])) == expected
    info = bot.status()
    assert info is not None and info["served"] == 1


def test_two_clients_at_once_get_their_own_output(bot: Bot) -> None:
    bot.run("daemon", "start")
    bot.wait_ready()
    cases = [REVIEW, (*REVIEW, "--format", "json"), ("review", SERIES, "--format", "b4")]
    expected = [bot.run(*case) for case in cases]
    procs = [
        subprocess.Popen(
            bot.command(*with_daemon(case)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=bot.home,
            env=bot.env,
        )
        for case in cases
    ]
    got = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        got.append(Result(proc.returncode, out, err))
    assert got == expected
    info = bot.status()
    assert info is not None and info["served"] == len(cases), bot.log()


def _read_to_eof(pipe: IO[bytes], timeout: float = WAIT) -> bytes:
    """What `pipe` gives until its end: every writer (the client, and the daemon
    once it has let go of the client's fds) has closed it. Fails instead of
    hanging when a writer keeps it open."""
    fd = pipe.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"the pipe is still open after {timeout:g} s (got {data!r})"
            if not sel.select(left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return data
            data += chunk


def _interrupt_a_served_review(bot: Bot, env: dict[str, str] | None = None) -> None:
    """Ctrl-C in a client whose review the daemon has begun: the client exits 130
    with one line; the daemon lets go of its stdout and stderr, logs the cancel and
    is no longer busy."""
    # `-` with a stdin that never ends: the daemon waits on it until cancelled
    # a Ctrl-C must reach the client even when the suite runs with SIGINT
    # ignored (a background job of a non-interactive shell inherits SIG_IGN, and
    # Python then leaves it ignored): a handled signal is default after exec
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    proc = subprocess.Popen(
        bot.command("review", "--daemon", "-"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=bot.home,
        env={**bot.env, **(env or {})},
    )
    signal.signal(signal.SIGINT, inherited)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        deadline = time.monotonic() + WAIT
        while not (bot.status() or {}).get("busy"):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, bot.log()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=WAIT) == 130
        # the daemon let go of the client's stdout and stderr: both end
        assert _read_to_eof(proc.stdout) == b""
        assert _read_to_eof(proc.stderr) == b"bot: interrupted\n"
    finally:
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()
    deadline = time.monotonic() + WAIT
    while (bot.status() or {}).get("busy"):
        assert time.monotonic() < deadline, bot.log()
        time.sleep(0.05)
    log = bot.log()
    assert "review cancelled" in log
    assert " review: " not in log, log  # no review failed on the client's closed fds


def test_ctrl_c_in_the_client_exits_130_and_the_daemon_drops_the_review(bot: Bot) -> None:
    bot.run("daemon", "start")
    bot.wait_ready()
    _interrupt_a_served_review(bot)
    # and it still serves
    reference = bot.run(*REVIEW)
    assert bot.run(*with_daemon(REVIEW)) == reference
    info = bot.status()
    assert info is not None and info["served"] == 2


def test_ctrl_c_before_the_served_review_began_still_drops_it(bot: Bot) -> None:
    """The daemon says busy as soon as it has the client's "go", before the review has
    its fds and can be interrupted: a Ctrl-C then must not be lost (the review would
    run on the client's stdin and pipes after all). The pause point holds the daemon
    in that window until the client has gone."""
    bot.run("daemon", "start", env={daemon.FAULT_PAUSE_ENV: "daemon:before-review"})
    bot.wait_ready()
    _interrupt_a_served_review(bot)
    assert "fault pause: daemon:before-review" in bot.log()
    # and the next one too
    _interrupt_a_served_review(bot)
    info = bot.status()
    assert info is not None and info["served"] == 2


# ------------------------------------------------------------------ stale, refused


def test_a_stale_daemon_is_replaced_and_the_review_still_succeeds(bot: Bot) -> None:
    reference = bot.run(*REVIEW)
    # a daemon with another hash seed than the client asks for
    bot.run("daemon", "start", env={"PYTHONHASHSEED": "1"})
    old = bot.wait_ready()["pid"]
    assert bot.run(*with_daemon(REVIEW)) == reference  # in-process
    bot.wait_gone(old)
    new = bot.wait_ready(not_pid=old)
    assert new["served"] == 0
    assert bot.run(*with_daemon(REVIEW)) == reference
    assert (bot.status() or {}).get("served") == 1

    # edited code: the daemon's fingerprint no longer matches the files
    module = bot.root / "bot" / "report" / "text.py"
    st = module.stat()
    os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert bot.run(*with_daemon(REVIEW)) == reference
    bot.wait_gone(new["pid"])
    newer = bot.wait_ready(not_pid=new["pid"])
    assert bot.run(*with_daemon(REVIEW)) == reference
    assert (bot.status() or {}).get("served") == 1

    # an edited rule file, too
    rule = next(iter(sorted((bot.root / "rules").glob("*/rule.yaml"))))
    st = rule.stat()
    os.utime(rule, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert bot.run(*with_daemon(REVIEW)) == reference
    bot.wait_gone(newer["pid"])
    assert "stale" in bot.log()
    bot.wait_ready(not_pid=newer["pid"])  # the one that client started


def test_a_socket_dir_writable_by_others_is_refused(bot: Bot) -> None:
    reference = bot.run(*REVIEW)
    directory = Path(bot.socket_dir)
    directory.mkdir(mode=0o700)
    directory.chmod(0o777)
    assert bot.run(*with_daemon(REVIEW)) == reference  # in-process
    # starting a daemon opens its log in the directory before the client goes on
    # (daemon.start_daemon), so a daemon started by mistake has left it by now
    assert sorted(p.name for p in directory.iterdir()) == []
    status = bot.run("daemon", "status")
    assert status.code == 1
    assert b"not running" in status.out
    start = bot.run("daemon", "start")
    assert start.code == 2
    assert start.err.startswith(b"bot: error: ")
    assert b"not a private directory" in start.err
    assert start.err.count(b"\n") == 1
    assert sorted(p.name for p in directory.iterdir()) == []


def test_a_request_with_an_impossible_umask_is_refused_and_the_daemon_serves_on(
    bot: Bot,
) -> None:
    """A umask too large for a C int (a client of the same user, but not our own)
    made os.umask raise outside the review's error handling: the daemon died."""
    import json
    import socket

    bot.run("daemon", "start")
    pid = bot.wait_ready()["pid"]
    request = {
        "op": "review",
        "argv": list(REVIEW),
        "argv0": "bot",
        "env": dict(bot.env),
        "umask": 1 << 40,
        "identity": {
            **daemon.identity(),
            "package": str((bot.root / "bot").resolve()),
            "hashseed": "",
        },
        "stdio": [{"encoding": "utf-8", "errors": "strict"}] * 3,
    }
    null = os.open(os.devnull, os.O_RDWR)
    cwd = os.open(bot.home, os.O_RDONLY | os.O_DIRECTORY)
    sock = daemon.connect(str(Path(bot.socket_dir) / daemon.SOCKET_NAME), WAIT)
    try:
        socket.send_fds(sock, [json.dumps(request).encode() + b"\n"], [null, null, null, cwd])
        reply = daemon.Lines(sock).read()
        if reply == {"status": "ready"}:
            sock.sendall(b"go\n")
            reply = daemon.Lines(sock).read()
    finally:
        sock.close()
        os.close(null)
        os.close(cwd)
    assert reply == {"status": "refused"}
    info = bot.status()
    assert info is not None and info["pid"] == pid, bot.log()
    assert info["served"] == 0


def test_only_reviews_are_served(bot: Bot) -> None:
    """`rules list` with BOT_DAEMON=1 runs in its own process; no daemon starts."""
    got = bot.run("rules", "list", env={"BOT_DAEMON": "1"})
    assert got == bot.run("rules", "list")
    assert bot.status() is None


# ------------------------------------------------------------------ stop, idle


def test_bot_daemon_stop_stops_it(bot: Bot) -> None:
    started = bot.run("daemon", "start")
    assert started.code == 0
    assert started.out.startswith(b"bot daemon: started (pid ")
    pid = bot.wait_ready()["pid"]
    again = bot.run("daemon", "start")
    assert again.out.startswith(f"bot daemon: already running (pid {pid}".encode())
    stopped = bot.run("daemon", "stop")
    assert stopped == Result(0, f"bot daemon: stopped (pid {pid})\n".encode(), b"")
    assert not _alive(pid)
    assert not Path(bot.socket_dir, daemon.SOCKET_NAME).exists()
    assert bot.run("daemon", "status").code == 1
    assert bot.run("daemon", "stop").out.startswith(b"bot daemon: not running")


def test_the_idle_timeout_stops_it(bot: Bot) -> None:
    bot.run("daemon", "start", env={daemon.IDLE_TIMEOUT_ENV: "0.5"})
    info = bot.wait_ready(warm=False)  # it may be gone once warm
    assert info["idle_timeout"] == 0.5
    bot.wait_gone(info["pid"])
    assert bot.status() is None
    assert "exiting (idle)" in bot.log()


# ------------------------------------------------------------------ the client alone


def test_socket_dir_follows_runtime_dir_then_the_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bot.cache import default_dir

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert daemon.socket_dir() == str(tmp_path / "run" / "mmlc-bot")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("BOT_CACHE_DIR", str(tmp_path / "cache"))
    assert daemon.socket_dir() == str(tmp_path / "cache")
    monkeypatch.delenv("BOT_CACHE_DIR")
    for xdg in (str(tmp_path / "xdg"), None):
        if xdg:
            monkeypatch.setenv("XDG_CACHE_HOME", xdg)
        else:
            monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        assert daemon.socket_dir() == str(default_dir().absolute())


def test_a_captured_stdout_is_reviewed_in_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sys.stdout is not fd 1 (pytest's capture): the daemon could not write to it,
    so the review runs here, and no daemon is started."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    code = main(["review", "--daemon", SERIES, "--format", "json"])
    out = capsys.readouterr().out
    assert code in (0, 1)
    assert out.lstrip().startswith("{")
    assert not (tmp_path / daemon.RUNTIME_NAME / daemon.SOCKET_NAME).exists()
    assert not (tmp_path / daemon.RUNTIME_NAME / daemon.LOG_NAME).exists()

"""Everyday use of `bot review`, `bot serve` and `bot outbox`: a revision range
applies at its base, concatenated mail on stdin is several messages, reviewing
nothing is an error, and expected failures are one line with exit 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "objpool"
GIT_ID = ["-c", "user.name=T", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]


def _bot(
    args: list[str], *, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *GIT_ID, *args], cwd=repo, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def _one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bot: error: "), err
    return lines[0]


def _findings(proc: subprocess.CompletedProcess[bytes]) -> tuple[set[tuple[str, str]], Any]:
    doc = json.loads(proc.stdout)
    return {(f["rule_id"], f["status"]) for f in doc["findings"]}, doc


EXPECTED = {
    ("MMLC001", "introduced"),
    ("SIM-LEAK", "introduced"),
    ("SIM-UAF", "fixed"),
    ("SIM-WORK-AFTER-FREE", "fixed"),
}


def _mails() -> list[bytes]:
    """The example series as separate .eml files (no mbox `From ` lines)."""
    from bot.ingest.mbox import split_mbox

    return [m.split(b"\n", 1)[1] for m in split_mbox((EXAMPLE / "series.mbox").read_bytes())]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The example tree as a git repository: tag A, then the series' two commits,
    checked out at the last one (B)."""
    r = tmp_path / "repo"
    subprocess.run(["cp", "-r", str(EXAMPLE / "tree"), str(r)], check=True)
    _git(r, "init", "-q")
    _git(r, "add", "-A")
    _git(r, "commit", "-qm", "base")
    _git(r, "tag", "A")
    for i, mail in enumerate(_mails()[1:], start=1):
        patch = tmp_path / f"{i}.eml"
        patch.write_bytes(mail)
        _git(r, "am", "-q", str(patch))
    return r


# ------------------------------------------------------------------ --repo


def test_a_range_with_tree_set_to_its_repository_applies_at_the_range_base(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    args = ["--repo", str(repo), "A..HEAD", "--tree", str(repo), "--format", "json"]
    proc = _bot(["review", *args, "-q", "--no-cache"])
    assert proc.returncode == 1, proc.stderr
    found, doc = _findings(proc)
    assert found == EXPECTED
    base = _git(repo, "rev-parse", "A")
    assert f"applied on base-commit {base[:12]} named by the series" in doc["notes"]
    assert _git(repo, "rev-parse", "HEAD") == head


def test_a_range_alone_is_reviewed_on_its_repository_without_touching_it(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    (repo / "untracked.txt").write_text("mine\n", encoding="utf-8")
    proc = _bot(["review", "--repo", str(repo), "A..HEAD", "-q", "--no-cache", "--format", "json"])
    assert proc.returncode == 1, proc.stderr
    found, doc = _findings(proc)
    assert found == EXPECTED
    assert doc["tree"] == str(repo)
    assert _git(repo, "rev-parse", "HEAD") == head
    assert _git(repo, "status", "--porcelain") == "?? untracked.txt"


# ------------------------------------------------------------------ stdin


def test_concatenated_eml_files_on_stdin_are_each_a_message() -> None:
    data = b"".join(_mails())
    proc = _bot(
        ["review", "-", "--tree", str(EXAMPLE / "tree"), "-q", "--no-cache", "--format", "json"],
        stdin=data,
    )
    assert proc.returncode == 1, proc.stderr
    found, doc = _findings(proc)
    assert found == EXPECTED
    assert [p["number"] for p in doc["patches"]] == [1, 2]


def test_split_concatenated_keeps_attachments_and_in_body_headers_in_their_message() -> None:
    from bot.ingest.sources import messages_from_bytes, split_concatenated

    inner = b"From: B <b@example.org>\nSubject: forwarded\nMessage-ID: <inner@example.org>\n\nhi\n"
    multipart = (
        b"From: A <a@example.org>\nSubject: fwd\nMessage-ID: <outer@example.org>\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed;\n boundary="XX"\n\n'
        b"--XX\nContent-Type: text/plain\n\nsee below\n"
        b"--XX\nContent-Type: message/rfc822\n\n" + inner + b"--XX--\n"
    )
    in_body = (
        b"From: A <a@example.org>\nSubject: [PATCH] x\nMessage-ID: <p@example.org>\n\n"
        b"From: Real Author <r@example.org>\nSubject: x\n\nbody\n"
    )
    third = b"Return-Path: <c@example.org>\nFrom: C <c@example.org>\nSubject: three\n"
    third += b"Message-ID: <three@example.org>\n\nend\n"
    assert split_concatenated(multipart) == [multipart]
    assert split_concatenated(in_body) == [in_body]
    assert split_concatenated(multipart + in_body + third) == [multipart, in_body, third]
    ids = [m.message_id for m in messages_from_bytes(multipart + third, "<stdin>")]
    assert ids == ["outer@example.org", "three@example.org"]


def test_reviewing_nothing_is_an_error() -> None:
    cover = _mails()[0]
    line = _one_line_error(_bot(["review", "-", "-q", "--no-cache"], stdin=cover))
    assert "nothing to review" in line


# ------------------------------------------------------------------ errors


def test_output_into_a_missing_directory_is_refused_before_the_review(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "review.txt"
    line = _one_line_error(
        _bot(["review", str(EXAMPLE / "series.mbox"), "-q", "--no-cache", "-o", str(target)])
    )
    assert "does not exist" in line
    assert not target.parent.exists()


def test_serve_with_a_port_out_of_range_is_one_line() -> None:
    line = _one_line_error(_bot(["serve", "--port", "99999"]))
    assert "--port 99999" in line


def test_outbox_with_redis_unreachable_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    line = _one_line_error(
        _bot(["outbox", "list"], env={"BOT_BROKER_URL": f"redis://127.0.0.1:{port}/0"})
    )
    assert "Redis" in line


def test_a_missing_rules_folder_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    line = _one_line_error(_bot(["rules", "list"], env={"BOT_RULES_DIR": str(tmp_path / "x")}))
    assert "BOT_RULES_DIR" in line


def test_bot_rules_dir_moves_the_rules(tmp_path: Path) -> None:
    from bot.config import load_settings

    os.environ["BOT_RULES_DIR"] = str(tmp_path)
    try:
        assert load_settings().rules_dir == tmp_path
    finally:
        del os.environ["BOT_RULES_DIR"]
    assert (Settings().rules_dir / "scenarios").is_dir()

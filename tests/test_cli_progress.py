"""The progress line: shown on a terminal for slow work, absent otherwise."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.corpus


def _review_with_stderr_on_a_pty(corpus: Path, tmp_path: Path) -> tuple[int, bytes, bytes]:
    main, sub = pty.openpty()
    env = dict(os.environ, COLUMNS="100", TERM="xterm")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot",
            "review",
            str(corpus / "seed"),
            "--tree",
            str(corpus / "kernel" / "v3.15.5"),
            "--format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=sub,
        cwd=tmp_path,
        env=env,
    )
    os.close(sub)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the pty closes when the child exits
            break
        if not chunk:
            break
        seen += chunk
    out = proc.stdout.read() if proc.stdout else b""
    code = proc.wait(timeout=120)
    os.close(main)
    return code, out, seen


def test_progress_is_shown_on_a_terminal_and_kept_out_of_stdout(
    corpus: Path, tmp_path: Path
) -> None:
    code, out, tty = _review_with_stderr_on_a_pty(corpus, tmp_path)
    assert code == 1
    # the review on stdout is clean JSON, the status line went to the terminal only
    assert out.lstrip().startswith(b"{")
    assert b"\x1b[" not in out
    stages = (b"reading input", b"assembling", b"applying", b"analysing")
    assert any(s in tty for s in stages), tty[-400:]


def test_no_progress_without_a_terminal(corpus: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "review", str(corpus / "seed"), "--format", "json"],
        capture_output=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr == b""

"""Our b4 output through b4's own check runner (b4 >= 0.16, a dev extra).

b4 pipes a patch message to each `review-perpatch-check-cmd` and parses what it
prints; this runs b4's real runner on a real subprocess that prints our output.
"""

from __future__ import annotations

import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.test_report_support import P1_ID

ROOT = Path(__file__).resolve().parent.parent

checks = pytest.importorskip("b4.review.checks", reason="b4 (dev extra) runs the checks")

SCRIPT = """\
import email, sys
msg = email.message_from_bytes(sys.stdin.buffer.read())
assert msg["Message-ID"], "b4 pipes the patch message"
from bot.report import render
from tests.test_report_support import build_review, findings
if sys.argv[1] == "warning-only":
    review = build_review(findings=(findings()[1],), checks=())
else:
    review = build_review()
sys.stdout.write(render(review, "b4"))
"""


@pytest.mark.parametrize(
    ("mode", "status", "summary"),
    [
        ("full", "fail", "1 error, 1 warning introduced: MMLC001"),
        # b4 turns a status it does not know into "fail": "warn" surviving proves ours is valid
        ("warning-only", "warn", "1 warning introduced: MMLC003"),
    ],
)
def test_b4_runner_reads_our_result_unchanged(
    mode: str, status: str, summary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    msg = EmailMessage()
    msg["From"] = "Jane Hacker <jane@example.org>"
    msg["Subject"] = "[PATCH v2 1/3] mm/zblock: do not schedule pool destruction"
    msg["Message-ID"] = f"<{P1_ID}>"
    msg.set_content("diff --git a/mm/zblock.c b/mm/zblock.c\n")
    results = checks.run_perpatch_checks(
        [(P1_ID, msg)], [f"{sys.executable} {script} {mode}"], str(tmp_path)
    )
    (res,) = results[P1_ID]
    assert res["tool"] == "mm-lifecycle"
    assert res["status"] == status
    assert res["summary"].startswith(summary)
    assert res["details"].splitlines()[0].startswith("[1/3] MMLC00")

"""The review that started the project, end to end on the real seed thread.

April 2014: "memcg, slab: do not schedule cache destruction when last page goes
away" removed cache destruction from memcg_release_pages(); the reviewer answered
that after cgroup destruction the now-empty cache would leak unless slab took a
reference. These tests read ../shared/corpus in place and skip without it.
"""

from __future__ import annotations

import email
import email.policy
import functools
import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import Settings
from bot.model import Finding, Review, Status
from bot.pipeline import review_inputs
from bot.report import render, render_email_messages

pytestmark = pytest.mark.corpus

V3_1_MSGID = "7740d66b62befa271d368a7b7c5d881fef3ebc90.1398235153.git.vdavydov@parallels.com"


@functools.cache
def _review(corpus: Path, *names: str, tree: bool = True) -> Review:
    """The review of these seed mails; made once per module and asserted on by
    every test that needs it (a Review is frozen: no test can change it)."""
    args = [str(corpus / "seed" / n) for n in names]
    return review_inputs(
        args, Settings(), tree=str(corpus / "kernel" / "v3.15.5") if tree else None
    )


def _introduced(review: Review, rule: str) -> list[Finding]:
    return [f for f in review.findings if f.rule_id == rule and f.status is Status.INTRODUCED]


def test_seed_folder_assembles_three_versions_and_reviews_v3(corpus: Path) -> None:
    review = review_inputs([str(corpus / "seed")], Settings(simulate=False))
    versions = {s.version: s for s in review.versions}
    assert sorted(versions) == [1, 2, 3]
    v1, v2, v3 = versions[1], versions[2], versions[3]
    assert v1.cover is not None
    assert [s.number for s in v1.slots if not s.missing] == [3, 4]
    assert v1.missing == (1, 2)
    assert [s.number for s in v2.slots if not s.missing] == [1, 2]
    assert v3.complete and v3.cover is not None and v3.total == 3
    assert review.series.version == 3
    # the unrelated prerequisite stays a series of its own, not a "duplicate" in v2
    prereq = [s for s in review.other_series if "charge slabs to kmemcg" in s.name]
    assert len(prereq) == 1
    assert all("charge slabs" not in p.title for s in review.versions for p in s.patches)


def test_v3_patch1_on_v3_15_5_reports_the_leak_the_reviewer_saw(corpus: Path) -> None:
    review = _review(corpus, "v3-0001-patch-1of3.eml")
    app = review.applied.applications[0]
    assert app.ok, app.message
    found = _introduced(review, "MMLC001")
    assert len(found) == 1
    f = found[0]
    assert (f.file, f.function) == ("mm/slab.h", "memcg_release_pages")
    evidence = "\n".join(f.evidence)
    assert "mem_cgroup_destroy_cache" in evidence
    assert "schedule_work(&" in evidence and "destroy)" in evidence
    assert "leak" in (f.question + f.message).lower()
    assert "offline" in (f.question + f.message).lower()
    assert "reference" in f.suggestion.lower()


def test_same_finding_diff_only_on_v2(corpus: Path) -> None:
    review = _review(corpus, "v2-0001-patch-1of3.eml", tree=False)
    found = _introduced(review, "MMLC001")
    assert [(f.file, f.function) for f in found] == [("mm/slab.h", "memcg_release_pages")]


def test_email_format_replies_to_the_patch(corpus: Path) -> None:
    review = _review(corpus, "v3-0001-patch-1of3.eml")
    messages = render_email_messages(review)
    assert len(messages) == 1
    msg = email.message_from_bytes(bytes(messages[0]), policy=email.policy.default)
    assert msg["Subject"].startswith("Re: [PATCH -mm v3 1/3]")
    assert V3_1_MSGID in msg["In-Reply-To"]
    assert V3_1_MSGID in msg["References"]
    body = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert V3_1_MSGID in render(review, "email")
    assert "> " in body and "MMLC001" in body
    assert "memcg_release_pages" in body


def test_patch2_of_v3_gives_no_release_path_finding(corpus: Path) -> None:
    whole = _review(
        corpus,
        "v3-0000-cover-0of3.eml",
        "v3-0001-patch-1of3.eml",
        "v3-0002-patch-2of3.eml",
        "v3-0003-patch-3of3.eml",
    )
    assert [f for f in _introduced(whole, "MMLC001") if f.patch_number == 2] == []
    alone = _review(corpus, "v3-0002-patch-2of3.eml", tree=False)
    assert _introduced(alone, "MMLC001") == []


def test_v3_patch3_names_the_hunk_that_fails(corpus: Path) -> None:
    review = _review(
        corpus,
        "v3-0000-cover-0of3.eml",
        "v3-0001-patch-1of3.eml",
        "v3-0002-patch-2of3.eml",
        "v3-0003-patch-3of3.eml",
    )
    third = next(a for a in review.applied.applications if a.number == 3)
    assert len(third.failed_hunks) == 1
    failed = third.failed_hunks[0]
    assert failed.file and failed.hunk.startswith("@@ ")
    text = render(review, "text")
    assert failed.hunk in text


def test_simulator_finds_the_leak_introduced_and_the_uaf_removed(corpus: Path) -> None:
    review = _review(corpus, "v3-0001-patch-1of3.eml")
    leaks = _introduced(review, "SIM-LEAK")
    assert leaks, [(f.rule_id, f.status) for f in review.findings]
    uafs = [f for f in review.findings if f.rule_id == "SIM-UAF" and f.status is Status.FIXED]
    assert uafs
    for f in (leaks[0], uafs[0]):
        assert f.trace is not None and len(f.trace.actors) >= 2
    leak_text = " ".join(s.text + " " + s.function for s in leaks[0].trace.steps)  # type: ignore[union-attr]
    assert "schedule_work" in leak_text or "destroy" in leak_text
    uaf_fns = {s.function for s in uafs[0].trace.steps}  # type: ignore[union-attr]
    assert "mem_cgroup_destroy_cache" in uaf_fns
    sim = next(c for c in review.checks if c.check == "simulator")
    assert sim.ok


def test_cli_exit_code_and_json_for_the_seed(
    corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "review",
            str(corpus / "seed" / "v3-0001-patch-1of3.eml"),
            "--tree",
            str(corpus / "kernel" / "v3.15.5"),
            "--format",
            "json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    doc = json.loads(out)
    assert any(f["rule_id"] == "MMLC001" and f["status"] == "introduced" for f in doc["findings"])

"""Dismissals: stable fingerprints, the file and Redis stores, `bot dismiss`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.dismiss import (
    DismissalStore,
    FileStore,
    RedisStore,
    dismissed_in,
    identity_of,
    record,
    rule_counts,
)
from bot.errors import InputError, UsageError
from bot.report import render
from bot.report.common import introduced
from bot.report.fingerprint import fingerprint, short
from tests.test_report_support import build_review, findings

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------- fingerprints


def test_fingerprint_ignores_lines_offsets_counts_and_actor_numbers() -> None:
    f = findings()[0]
    moved = replace(
        f,
        line=(f.line or 0) + 40,
        patch_number=3,
        file=f.file,
        evidence=(
            *tuple(e.replace(":129", ":170").replace("CPU0", "CPU1") for e in f.evidence),
            "explored 91 states",
        ),
    )
    again = replace(moved, evidence=(*moved.evidence[:-1], "explored 12 states"))
    assert fingerprint(moved) == fingerprint(again)
    assert fingerprint(replace(f, line=999)) == fingerprint(f)
    assert len(fingerprint(f)) == 20 and short(fingerprint(f)) == fingerprint(f)[:10]


def test_fingerprint_changes_with_rule_function_object_or_evidence() -> None:
    f = findings()[0]
    fp = fingerprint(f)
    assert fingerprint(replace(f, rule_id="MMLC002")) != fp
    assert fingerprint(replace(f, function="other_fn")) != fp
    assert fingerprint(replace(f, evidence=("removed call kfree(pool)",))) != fp
    assert fingerprint(replace(f, message=f.message + " struct other_thing")) != fp


def test_fingerprint_is_in_json_and_text() -> None:
    review = build_review()
    doc = json.loads(render(review, "json"))
    assert [x["fingerprint"] for x in doc["findings"]] == [fingerprint(f) for f in review.findings]
    assert f"fingerprint {short(fingerprint(review.findings[0]))}" in render(review, "text")


# ----------------------------------------------------------------- stores


@pytest.fixture
def file_store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "state" / "dismissals.json")


@pytest.fixture
def redis_store() -> Iterator[RedisStore]:
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"no Redis at 127.0.0.1:6379: {exc}")
    prefix = f"test-dismiss-{uuid.uuid4().hex}:"
    yield RedisStore(client, prefix)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


@pytest.fixture(params=["file", "redis"])
def store(request: pytest.FixtureRequest) -> DismissalStore:
    name = "file_store" if request.param == "file" else "redis_store"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def _v3_of(review_findings: tuple[object, ...] | None = None):  # type: ignore[no-untyped-def]
    """The same work as build_review()'s series, resent as v3 with new Message-IDs."""
    review = build_review()
    series = review.series
    slots = tuple(
        replace(
            s,
            patch=None
            if s.patch is None
            else replace(
                s.patch,
                message=replace(s.patch.message, message_id=f"v3-{s.number}@example.org"),
            ),
        )
        for s in series.slots
    )
    v3 = replace(series, key="v3-cover@example.org", version=3, revision="3", slots=slots)
    moved = tuple(replace(f, line=(f.line or 0) + 7) for f in review.findings)
    return replace(review, series=v3, versions=(v3,), findings=moved)


def test_a_dismissal_carries_to_a_later_version_and_not_to_other_work(
    store: DismissalStore,
) -> None:
    v2 = build_review()
    record(store, v2)
    leak = introduced(v2)[0]
    d = store.add(
        short(fingerprint(leak)),
        identity_of(v2.series, v2.versions),
        reason="the pool holds a reference",
        by="maint@example.org",
        everywhere=False,
    )
    assert d.id >= 1
    v3 = _v3_of()
    hits = dismissed_in(store, v3)
    assert set(hits) == {fingerprint(leak)}
    assert len(introduced(v3, hits)) == len(introduced(v3)) - 1
    # another author's series with the same code: not covered without everywhere
    other = replace(v3, series=replace(v3.series, author_addr="else@example.org", key="o@x"))
    assert dismissed_in(store, other) == {}
    store.add(fingerprint(leak), d.series, reason="", by="m", everywhere=True)
    assert set(dismissed_in(store, other)) == {fingerprint(leak)}


def test_rule_dismissal_list_undo_and_counts(store: DismissalStore) -> None:
    v2 = build_review()
    record(store, v2)
    record(store, _v3_of())  # the same work again: counted once
    ident = identity_of(v2.series, v2.versions)
    d = store.add("mmlc001", ident, reason="", by="me", everywhere=False)
    assert d.target == "MMLC001"
    assert [x.id for x in store.dismissals()] == [d.id]
    counts = rule_counts(store)
    raised = {f.rule_id for f in introduced(v2)}
    assert set(counts) == raised
    assert counts["MMLC001"].raised == 1 and counts["MMLC001"].dismissed == 1
    assert all(c.dismissed == 0 for r, c in counts.items() if r != "MMLC001")
    gone = store.undo(d.id)
    assert gone is not None and gone.target == "MMLC001"
    assert store.dismissals() == [] and store.undo(d.id) is None
    assert rule_counts(store)["MMLC001"].dismissed == 0
    found = store.find_series(f"<{v2.series.slots[0].patch.message.message_id}>")  # type: ignore[union-attr]
    assert found is not None and found.series.key == v2.series.key


def test_bad_targets_are_usage_errors(store: DismissalStore) -> None:
    ident = identity_of(build_review().series)
    with pytest.raises(UsageError):
        store.add("not a target!", ident, reason="", by="", everywhere=False)
    with pytest.raises(UsageError):
        store.add("MMLC001", ident, reason="", by="", everywhere=True)


def test_file_store_is_private_json_and_refuses_a_shared_or_broken_file(
    file_store: FileStore,
) -> None:
    file_store.add(
        "deadbeefdead", identity_of(build_review().series), reason="r", by="b", everywhere=False
    )
    path = file_store.path
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert json.loads(path.read_text())["dismissals"][0]["target"] == "deadbeefdead"
    os.chmod(path, 0o666)
    with pytest.raises(InputError, match="not a private file"):
        file_store.dismissals()
    os.chmod(path, 0o600)
    path.write_text("{not json")
    with pytest.raises(InputError, match="unreadable dismissal store"):
        file_store.dismissals()
    assert "\n" not in InputError("x").one_line()


def test_concurrent_cli_writers_lose_nothing(tmp_path: Path) -> None:
    code = (
        "import sys; from bot.dismiss import FileStore, SeriesIdentity\n"
        "s = FileStore(sys.argv[1]); ident = SeriesIdentity('k', 'a@b', ('t',))\n"
        "for i in range(15): s.add('MMLC00' + str(i % 6 + 1), ident, reason=str(i), by='x', "
        "everywhere=False)\n"
    )
    path = tmp_path / "d" / "dismissals.json"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=ROOT) for _ in range(4)]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    ids = [d.id for d in FileStore(path).dismissals()]
    assert sorted(ids) == list(range(1, 61))


# ----------------------------------------------------------------- the CLI


def _bot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )


def test_cli_dismiss_then_a_later_version_is_clean(tmp_path: Path, fixtures: Path) -> None:
    env = {**os.environ, "BOT_DISMISS_FILE": str(tmp_path / "st" / "dismissals.json")}
    series = ROOT / "examples" / "objpool" / "series.mbox"
    tree = ROOT / "examples" / "objpool" / "tree"
    first = _bot("review", str(series), "--tree", str(tree), "--format", "json", env=env)
    assert first.returncode == 1, first.stderr
    doc = json.loads(first.stdout)
    key = doc["series"]["key"]
    fps = [f["fingerprint"] for f in doc["findings"] if f["status"] == "introduced"]
    assert fps
    bad = _bot("dismiss", key, "0123456789abcdef", env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "not one this series raised" in bad.stderr
    for fp in fps:
        ok = _bot("dismiss", f"<{key}>", fp[:10], "--reason", "by design", env=env)
        assert ok.returncode == 0, ok.stderr
    listed = _bot("dismiss", "--list", "--json", env=env)
    assert [d["target"] for d in json.loads(listed.stdout)] == fps
    again = _bot("review", str(series), "--tree", str(tree), "--format", "json", env=env)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["summary"]["introduced"] == 0 and doc["summary"]["dismissed"] == len(fps)
    assert all(f["dismissed"] for f in doc["findings"] if f["status"] == "introduced")
    text = _bot("review", str(series), "--tree", str(tree), env=env).stdout
    assert "Dismissed (not counted" in text and "by design" in text
    undo = _bot("dismiss", "--undo", "1", env=env)
    assert undo.returncode == 0
    assert _bot("review", str(series), "--tree", str(tree), "-q", env=env).returncode == 1
    counts = json.loads(_bot("dismiss", "--counts", "--json", env=env).stdout)
    assert sum(c["raised"] for c in counts.values()) == len(fps)
    assert sum(c["dismissed"] for c in counts.values()) == len(fps) - 1

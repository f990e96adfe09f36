"""Shared by the results-page and dismissal tests (no tests here): versions of our
demo series (tests/fixtures/service) where v2 fixes only patch 1, so the reference
leak MMLC002 finds in patch 2 is still present, and a v3 that fixes both; a served
app (uvicorn, a real socket) on a Redis of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tests.fixtures.service.helpers import (
    HERE,
    ROOT,
    DemoSeries,
    demo_series,
    free_port,
    mail,
    wait_until,
    worker_env,
)

TOKEN = "web-token-for-tests-0123456789"
_TITLES = (
    "mm/demo_pool: add a pool backed by its own slab cache",
    "mm/demo_pool: add alloc, free and a hierarchy shrinker",
)
_FIXED_WALK = (
    "+\t\tif (ret < 0) {\n+\t\t\tmem_cgroup_iter_break(root, memcg);\n+\t\t\treturn ret;\n+\t\t}\n"
)
_LEAKY_WALK = "+\t\tif (ret < 0)\n+\t\t\treturn ret;\n"


def leaky_patch_2() -> str:
    """v2's patch 2 with the walk's mem_cgroup_iter_break() left out again."""
    diff = (HERE / "v2-2.diff").read_text()
    assert _FIXED_WALK in diff
    diff = diff.replace(_FIXED_WALK, _LEAKY_WALK)
    diff = diff.replace("@@ -26,6 +27,26 @@", "@@ -26,6 +27,24 @@")
    diff = diff.replace("| 21 +++++++++++++++++++++", "| 19 +++++++++++++++++++")
    return diff.replace("21 insertions(+)", "19 insertions(+)")


def series(version: int, diffs: tuple[str, str], *, tag: str = "demo") -> DemoSeries:
    """Cover letter and two patches of `version`, with these diffs."""
    start = datetime(2024, 3, 4, 10, 0, tzinfo=UTC) + timedelta(days=version - 1)
    vtag = "" if version == 1 else f" v{version}"
    cover_id = f"{tag}-v{version}-0@example.org"
    ids = (f"{tag}-v{version}-1@example.org", f"{tag}-v{version}-2@example.org")
    msgs = {
        "cover": mail(
            msgid=cover_id,
            subject=f"[PATCH{vtag} 0/2] mm/demo_pool: a slab-backed object pool",
            body=f"This adds a small object pool with its own kmem_cache (v{version}).\n",
            date=start,
        )
    }
    for n, mid in enumerate(ids, start=1):
        body = "Explain.\n\nSigned-off-by: Ada Lovelace <ada@example.org>\n" + diffs[n - 1]
        msgs[str(n)] = mail(
            msgid=mid,
            subject=f"[PATCH{vtag} {n}/2] {_TITLES[n - 1]}",
            body=body,
            date=start + timedelta(seconds=n),
            irt=cover_id,
            refs=(cover_id,),
        )
    return DemoSeries(version, cover_id, ids, msgs)


def three_versions() -> tuple[DemoSeries, DemoSeries, DemoSeries]:
    """v1 (two findings' worth of trouble), v2 (the walk still leaks), v3 (all fixed)."""
    fixed = ((HERE / "v2-1.diff").read_text(), (HERE / "v2-2.diff").read_text())
    v2 = series(2, (fixed[0], leaky_patch_2()))
    return demo_series(1), v2, series(3, fixed)


def bot_reply_to(parent: DemoSeries, n: int, msgid: str, body: str, frm: str) -> bytes:
    """Someone's answer to the bot's review of patch n (the review answered the patch)."""
    patch = parent.patch_ids[n - 1]
    review = f"bot-review-{patch}"
    return mail(
        msgid=msgid,
        subject=f"Re: [PATCH {n}/2] {_TITLES[n - 1]}",
        body=f"On Mon, mm-bot wrote:\n> Is the reference leaked?\n\n{body}\n\n-- \nsig\n",
        date=datetime(2024, 3, 4, 13, 0, tzinfo=UTC),
        frm=frm,
        irt=review,
        refs=(parent.cover_id, patch, review),
    )


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def served_app(broker: str, config: Path, log: Path, **extra: str) -> Iterator[Served]:
    """`uvicorn --factory workers.webhook:app_from_env` as the service runs it."""
    port = free_port()
    env = worker_env(broker, {"BOT_SERVICE_CONFIG": str(config), **extra})
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "workers.webhook:app_from_env",
             "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"uvicorn exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, "the app to answer", timeout=90, every=0.2)
        yield Served(url, proc, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=30)

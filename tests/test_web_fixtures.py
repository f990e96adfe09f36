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
from typing import Any

import httpx
import yaml

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


@dataclass
class Seeded:
    """A Redis holding real reviews of v1 and v2 (the walk still leaking in v2) and
    a series still waiting for a patch; `config` enables web dismissals."""

    config: Path
    state: Any
    v1: DemoSeries
    v2: DemoSeries
    waiting: DemoSeries


def _store(state: Any, scope: str, *raws: bytes) -> list[str]:
    from bot.ingest.mirror import routing_keys
    from workers.state import StoredMessage

    items = []
    for raw in raws:
        k = routing_keys(raw, "x")
        items.append(
            StoredMessage(
                k.message_id, k.root, k.title, k.author, k.is_patch, raw, k.date, k.quotes_patch
            )
        )
    state.store_messages(scope, items)
    return sorted({i.root for i in items})


@contextmanager
def seeded(tmp: Path, broker: str, scope: str, *, web: bool = True) -> Iterator[Seeded]:
    """Review v1 and v2 with the real tasks, run eagerly in this process."""
    from workers import tasks
    from workers.celery_app import app

    config = tmp / "service.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp / "data"),
                "lists": {scope: {"address": "linux-mm@kvack.org"}},
                "publish": {"maildir": str(tmp / "outbox")},
                "web": {"dismiss": web},
            }
        )
    )
    names = ("broker_url", "result_backend", "task_always_eager", "task_eager_propagates")
    saved = {k: app.conf[k] for k in names}
    old_env = os.environ.get("BOT_SERVICE_CONFIG")
    os.environ["BOT_SERVICE_CONFIG"] = str(config)
    app.conf.update(
        broker_url=broker,
        result_backend=broker,
        task_always_eager=True,
        task_eager_propagates=True,
    )
    try:
        state = tasks.state()
        v1, v2, _v3 = three_versions()
        waiting = series(1, ("", ""), tag="later")
        tasks.assemble_thread(scope, _store(state, scope, *v1.messages.values()))
        tasks.assemble_thread(scope, _store(state, scope, *v2.messages.values()))
        tasks.assemble_thread(scope, _store(state, scope, waiting.messages["cover"]))
        assert state.result(scope, v2.cover_id) is not None
        yield Seeded(config, state, v1, v2, waiting)
    finally:
        app.conf.update(saved)
        if old_env is None:
            os.environ.pop("BOT_SERVICE_CONFIG", None)
        else:
            os.environ["BOT_SERVICE_CONFIG"] = old_env

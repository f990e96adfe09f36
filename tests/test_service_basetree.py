"""The base tree of a series in service mode: the list's trees, small git repositories
made here and fetched by the service (GitPython) into local mirrors, tried in order.
Real redis-server and worker; the series come through a v2 inbox."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.service.helpers import (
    RedisServer,
    Worker,
    demo_series,
    fresh_redis,
    own_redis,
    wait_until,
    worker_env,
    write_inbox,
)
from workers.celery_app import make_app
from workers.state import State

__all__ = ["fresh_redis", "own_redis"]

pytestmark = pytest.mark.integration


def git(*args: str, cwd: Path) -> str:
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    env.update(GIT_AUTHOR_NAME="Ada", GIT_AUTHOR_EMAIL="ada@example.org")
    env.update(GIT_COMMITTER_NAME="Ada", GIT_COMMITTER_EMAIL="ada@example.org")
    out = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)
    return out.stdout.decode().strip()


def commit(work: Path, path: str, text: str, title: str) -> str:
    (work / path).parent.mkdir(parents=True, exist_ok=True)
    (work / path).write_text(text)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", title, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def kernel(tmp: Path) -> tuple[Path, dict[str, str]]:
    """One repository with a branch per tree: mm-new already has a demo_pool.c of its
    own (the demo series cannot apply there), mm-unstable is the base plus a doc
    change, master (mainline) has a commit no mm branch has."""
    work = tmp / "kernel"
    git("init", "-q", "-b", "master", str(work), cwd=tmp)
    base = commit(work, "mm/Makefile", "obj-y += demo_pool.o\n", "base")
    git("checkout", "-q", "-b", "mm-new", cwd=work)
    new = commit(work, "mm/demo_pool.c", "/* another pool */\n", "mm: another pool")
    git("checkout", "-q", "-b", "mm-unstable", base, cwd=work)
    unstable = commit(work, "Documentation/mm.txt", "mm\n", "docs: mm")
    git("checkout", "-q", "master", cwd=work)
    mainline = commit(work, "README", "Linux\n", "mainline only")
    return work, {"base": base, "mm-new": new, "mm-unstable": unstable, "master": mainline}


def _as(raw: bytes, author: str) -> bytes:
    return raw.replace(b"Ada Lovelace <ada@example.org>", author.encode())


def _with_base(raw: bytes, sha: str) -> bytes:
    return raw.rstrip(b"\n") + f"\n\nbase-commit: {sha}\n".encode()


def test_each_series_gets_the_first_tree_it_applies_to_or_its_base_commit(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    work, tips = kernel(tmp_path)
    free = demo_series(1, tag="free")  # no base-commit: the first tree it applies to
    based_raw = demo_series(1, tag="based")
    grace = "Grace Hopper <grace@example.org>"
    based = {
        k: _as(v if k == "cover" else _with_base(v, tips["master"]), grace)
        for k, v in based_raw.messages.items()
    }
    write_inbox(tmp_path / "inbox", [*free.messages.values(), *based.values()])
    config = tmp_path / "service.yaml"
    cfg: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "trees": [
            {"name": "mm-new", "path": str(work), "branch": "mm-new"},
            {"name": "mm-unstable", "url": f"file://{work}", "branch": "mm-unstable"},
            {"name": "mainline", "path": str(work), "branch": "master"},
        ],
        "lists": {
            "mm": {
                "mirror": str(tmp_path / "inbox"),
                "trees": ["mm-new", "mm-unstable", "mainline"],
            }
        },
    }
    config.write_text(yaml.safe_dump(cfg))
    state = State.from_url(fresh_redis.url())
    client = make_app(fresh_redis.url())
    worker = Worker(
        worker_env(fresh_redis.url(), {"BOT_SERVICE_CONFIG": str(config)}),
        log=tmp_path / "w1.log",
    )
    try:
        fetched = client.send_task("workers.tasks.fetch_trees").get(timeout=120)
        assert fetched == {
            "mm-new": tips["mm-new"],
            "mm-unstable": tips["mm-unstable"],
            "mainline": tips["master"],
        }
        client.send_task("workers.tasks.poll_mirror", args=["mm"]).get(timeout=120)

        def reviewed(key: str) -> dict[str, Any]:
            def done() -> bool:
                info = state.series("mm", key)
                assert info.get("state") != "failed", info
                return state.result("mm", key) is not None

            wait_until(done, f"{key} reviewed", timeout=240, every=0.2)
            result = state.result("mm", key)
            assert result is not None
            return result

        first = reviewed(free.cover_id)
        assert first["base_tree"]["name"] == "mm-unstable"
        assert first["base_tree"]["why"] == "the whole series applies (2 patches)"
        assert first["base_tree"]["tried"][0].startswith("tree mm-new: patch 1/2")
        doc = first["review"]
        assert doc["base_commit"] == tips["mm-unstable"]
        assert doc["notes"][0] == "base tree mm-unstable: the whole series applies (2 patches)"
        assert all(p["applied"]["ok"] for p in doc["patches"])
        assert "MMLC002" in {f["rule_id"] for f in doc["findings"]}

        second = reviewed(based_raw.cover_id)
        assert second["base_tree"]["name"] == "mainline"
        short = tips["master"][:12]
        assert second["base_tree"]["why"] == f"has the series' base-commit {short}"
        assert second["review"]["base_commit"] == tips["master"]
        assert (
            f"base tree mainline: has the series' base-commit {short}" in second["review"]["notes"]
        )

        # the schedule fetches again: a tree's view follows its branch
        git("checkout", "-q", "mm-unstable", cwd=work)
        moved = commit(work, "Documentation/mm.txt", "mm, more\n", "docs: more")
        again = client.send_task("workers.tasks.fetch_trees").get(timeout=120)
        assert again["mm-unstable"] == moved
        view = tmp_path / "data" / "trees" / "mm-unstable"
        assert git("rev-parse", "HEAD", cwd=view) == moved
        assert not (view / "Documentation").exists()  # a view checks nothing out
    finally:
        worker.stop()
        state.r.close()

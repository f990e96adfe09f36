"""Push reviews apply onto the pushed repository at the range's base, and a push that
creates a branch is reviewed for every commit the branch adds to the default branch
(bounded by repos.<name>.max_commits). Real redis-server, real worker, real git."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.service.helpers import (
    HERE,
    RedisServer,
    Worker,
    fresh_redis,
    own_redis,
    pushed_repo,
    wait_until,
    worker_env,
)
from workers.celery_app import make_app
from workers.state import State

__all__ = ["fresh_redis", "own_redis"]

pytestmark = pytest.mark.integration

ZERO = "0" * 40


def git(*args: str, cwd: Path) -> str:
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    env.update(GIT_AUTHOR_NAME="Ada", GIT_AUTHOR_EMAIL="ada@example.org")
    env.update(GIT_COMMITTER_NAME="Ada", GIT_COMMITTER_EMAIL="ada@example.org")
    out = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)
    return out.stdout.decode().strip()


def commit(work: Path, title: str) -> str:
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", f"{title}\n\nSigned-off-by: Ada <ada@example.org>", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def branch_repo(tmp: Path) -> tuple[Path, str]:
    """main: a base and demo_pool.c (v1 1/2); a new branch `feature` off main adds
    v1 2/2 (which needs demo_pool.c from main) and two more commits. Both pushed to a
    bare repository; returns (it, the branch's tip)."""
    bare, work = tmp / "feat.git", tmp / "feat-work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp)
    git("init", "-q", "-b", "main", str(work), cwd=tmp)
    (work / "mm").mkdir()
    (work / "mm" / "Makefile").write_text("obj-y += demo_pool.o\n")
    commit(work, "mm: base")
    git("apply", str(HERE / "v1-1.diff"), cwd=work)
    commit(work, "mm/demo_pool: add the pool")
    git("push", "-q", str(bare), "main", cwd=work)
    git("checkout", "-q", "-b", "feature", cwd=work)
    git("apply", str(HERE / "v1-2.diff"), cwd=work)
    commit(work, "mm/demo_pool: alloc, free and a shrinker")
    (work / "mm" / "demo_pool.txt").write_text("A pool.\n")
    commit(work, "mm/demo_pool: describe the pool")
    (work / "mm" / "demo_pool.txt").write_text("A pool with its own cache.\n")
    tip = commit(work, "mm/demo_pool: say where objects come from")
    git("push", "-q", str(bare), "feature", cwd=work)
    return bare, tip


def _service(tmp: Path, redis: RedisServer, repos: dict[str, Any]) -> tuple[State, Worker, Any]:
    config = tmp / "service.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp / "data"), "repos": repos}))
    env = worker_env(redis.url(), {"BOT_SERVICE_CONFIG": str(config)})
    return State.from_url(redis.url()), Worker(env, log=tmp / "w1.log"), make_app(redis.url())


def _reviewed(state: State, tmp: Path, scope: str, key: str) -> dict[str, Any]:
    def done() -> bool:
        info = state.series(scope, key)
        assert info.get("state") != "failed", (info, (tmp / "w1.log").read_text()[-3000:])
        return state.result(scope, key) is not None

    wait_until(done, f"the review of {scope} {key}", timeout=180, every=0.2)
    result = state.result(scope, key)
    assert result is not None
    return result


def test_a_push_is_applied_onto_the_pushed_repository_at_its_base(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    bare, before, after = pushed_repo(tmp_path, "mm")
    state, worker, client = _service(tmp_path, fresh_redis, {"mm": {"url": str(bare)}})
    try:
        client.send_task("workers.tasks.review_push", args=["mm", before, after, "refs/heads/main"])
        doc = _reviewed(state, tmp_path, "push:mm", f"{before}..{after}")["review"]
    finally:
        worker.stop()
        state.r.close()
    assert doc["base_commit"] == before
    assert doc["tree"] == "mm"
    assert f"applied on base-commit {before[:12]} named by the series" in doc["notes"]
    assert not any("plain directory" in n for n in doc["notes"])
    assert [p["applied"]["ok"] for p in doc["patches"]] == [True, True]


def test_a_new_branch_is_reviewed_for_every_commit_it_adds_bounded(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    bare, tip = branch_repo(tmp_path)
    main = git("rev-parse", "main", cwd=bare)
    repos = {"wide": {"url": str(bare)}, "narrow": {"url": str(bare), "max_commits": 2}}
    state, worker, client = _service(tmp_path, fresh_redis, repos)
    try:
        for name in repos:
            client.send_task(
                "workers.tasks.review_push", args=[name, ZERO, tip, "refs/heads/feature"]
            )
        wide = _reviewed(state, tmp_path, "push:wide", f"{ZERO}..{tip}")
        narrow = _reviewed(state, tmp_path, "push:narrow", f"{ZERO}..{tip}")
    finally:
        worker.stop()
        state.r.close()
    titles = [p["title"] for p in wide["review"]["patches"]]
    assert titles == [
        "mm/demo_pool: alloc, free and a shrinker",
        "mm/demo_pool: describe the pool",
        "mm/demo_pool: say where objects come from",
    ]
    assert wide["review"]["base_commit"] == main
    assert all(p["applied"]["ok"] for p in wide["review"]["patches"])
    assert wide["push"] == {"range": f"{main}..{tip}", "base": main, "reviewed": 3, "added": 3}
    assert any("new branch feature" in n and "main" in n for n in wide["review"]["notes"])
    # the leak in 2/2 of the demo is found: the pool's file came from main
    assert "MMLC002" in {f["rule_id"] for f in wide["review"]["findings"]}

    assert [p["title"] for p in narrow["review"]["patches"]] == titles[1:]
    assert narrow["push"]["reviewed"] == 2 and narrow["push"]["added"] == 3
    cut = [n for n in narrow["review"]["notes"] if "only the newest 2" in n]
    assert cut and "adds 3 commits" in cut[0]
    assert "only the newest 2" in " ".join(narrow["text"].split())

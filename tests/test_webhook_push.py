"""A real git server hook posts a push to the running webhook; a real worker reviews it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml

from tests.fixtures.service.helpers import (
    HERE,
    RedisServer,
    Worker,
    free_port,
    fresh_redis,
    own_redis,
    pushed_repo,
    undocumented_keys,
    wait_until,
    worker_env,
)
from workers.celery_app import QUEUES, make_app
from workers.config import load_service_config
from workers.state import State
from workers.webhook import create_app

__all__ = ["fresh_redis", "own_redis"]

pytestmark = pytest.mark.integration

SECRET = "post-receive-secret"

HOOK = """#!{python}
# post-receive: tell the review bot about every updated ref (generic signed form)
import hashlib, hmac, json, sys, urllib.request, uuid
for line in sys.stdin:
    before, after, ref = line.split()
    body = json.dumps({{"repository": "mm", "before": before, "after": after, "ref": ref}}).encode()
    sig = "sha256=" + hmac.new({secret!r}.encode(), body, hashlib.sha256).hexdigest()
    req = urllib.request.Request({url!r}, data=body, method="POST", headers={{
        "Content-Type": "application/json", "X-Bot-Signature-256": sig,
        "X-Bot-Delivery": str(uuid.uuid4())}})
    with urllib.request.urlopen(req, timeout=10) as resp:
        print("review bot:", resp.status, resp.read().decode())
"""


def git(*args: str, cwd: Path) -> str:
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    env.update(GIT_AUTHOR_NAME="Ada", GIT_AUTHOR_EMAIL="ada@example.org")
    env.update(GIT_COMMITTER_NAME="Ada", GIT_COMMITTER_EMAIL="ada@example.org")
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout + out.stderr


@pytest.fixture
def webhook(tmp_path: Path, fresh_redis: RedisServer) -> Iterator[tuple[str, State, Path]]:
    """The webhook (uvicorn on loopback) and one real worker, configured for repo `mm`."""
    server_repo = tmp_path / "server.git"
    config = tmp_path / "service.yaml"
    config.write_text(
        yaml.safe_dump(
            {"data_dir": str(tmp_path / "data"), "repos": {"mm": {"url": str(server_repo)}}}
        )
    )
    env = {"BOT_SERVICE_CONFIG": str(config), "BOT_WEBHOOK_SECRET": SECRET}
    cfg = load_service_config(str(config))
    cfg = type(cfg)(**{**cfg.__dict__, "webhook_secret": SECRET})
    state = State.from_url(fresh_redis.url())
    client = make_app(fresh_redis.url())

    def enqueue(repo: str, before: str, after: str, ref: str) -> None:
        client.send_task("workers.tasks.review_push", args=[repo, before, after, ref])

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cfg, state, enqueue), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn to start", timeout=20, every=0.02)
    worker = Worker(worker_env(fresh_redis.url(), env), log=tmp_path / "w1.log")
    try:
        yield f"http://127.0.0.1:{port}/hooks/generic", state, tmp_path
    finally:
        worker.stop()
        server.should_exit = True
        thread.join(timeout=10)
        state.r.close()


def test_a_git_push_through_a_post_receive_hook_is_reviewed_once(
    webhook: tuple[str, State, Path],
) -> None:
    url, state, tmp = webhook
    server_repo, work = tmp / "server.git", tmp / "work"
    git("init", "-q", "--bare", "-b", "main", str(server_repo), cwd=tmp)
    git("init", "-q", "-b", "main", str(work), cwd=tmp)
    (work / "mm").mkdir()
    (work / "mm" / "Makefile").write_text("obj-y += demo_pool.o\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "mm: base", cwd=work)
    git("push", "-q", str(server_repo), "main", cwd=work)
    hook = server_repo / "hooks" / "post-receive"
    hook.write_text(HOOK.format(python=sys.executable, secret=SECRET, url=url))
    hook.chmod(0o755)
    before = git("rev-parse", "HEAD", cwd=work).strip()
    for n in (1, 2):
        git("apply", str(HERE / f"v1-{n}.diff"), cwd=work)
        git("add", ".", cwd=work)
        git(
            "commit",
            "-q",
            "-m",
            f"mm/demo_pool: part {n}\n\nSigned-off-by: Ada <ada@example.org>",
            cwd=work,
        )
    after = git("rev-parse", "HEAD", cwd=work).strip()
    pushed = git("push", str(server_repo), "main", cwd=work)
    assert "review bot: 202" in pushed and '"queued"' in pushed

    scope, key = "push:mm", f"{before}..{after}"
    wait_until(
        lambda: state.result(scope, key) is not None, "the push review", timeout=120, every=0.2
    )
    result = state.result(scope, key)
    assert result is not None
    assert [p["title"] for p in result["review"]["patches"]] == [
        "mm/demo_pool: part 1",
        "mm/demo_pool: part 2",
    ]
    # the same push delivered again (a new delivery ID) is not reviewed again
    redo = subprocess.run(
        [str(hook)],
        input=f"{before} {after} refs/heads/main\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"duplicate"' in redo.stdout
    r = state.r
    wait_until(lambda: all(r.llen(q) == 0 for q in QUEUES) and r.hlen("unacked") == 0, "drain")
    assert state.review_count(scope, key) == 1
    metrics = httpx.get(url.replace("/hooks/generic", "/metrics"), timeout=10).text
    assert "bot_series_reviewed_total 1.0" in metrics
    assert "bot_review_latency_seconds_count 1.0" in metrics


def test_push_reviews_go_to_the_maildir_and_mail_only_where_the_repository_opted_in(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    import mailbox
    from email import message_from_bytes

    from tests.fixtures.service.helpers import smtp_sink

    loud, loud_before, loud_after = pushed_repo(tmp_path, "loud")
    quiet, quiet_before, quiet_after = pushed_repo(tmp_path, "quiet")
    outbox_dir = tmp_path / "outbox"
    state = State.from_url(fresh_redis.url())
    client = make_app(fresh_redis.url())
    with smtp_sink() as sink:
        config = tmp_path / "service.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(tmp_path / "data"),
                    "repos": {
                        "loud": {
                            "url": str(loud),
                            "email": True,
                            "email_to": ["mm-reviews@example.org"],
                        },
                        "quiet": {"url": str(quiet)},
                    },
                    "publish": {
                        "dry_run": False,
                        "from": "mm-bot <bot@example.net>",
                        "smtp": {"host": sink.host, "port": sink.port},
                        "maildir": str(outbox_dir),
                    },
                }
            )
        )
        env = worker_env(fresh_redis.url(), {"BOT_SERVICE_CONFIG": str(config)})
        worker = Worker(env, log=tmp_path / "w1.log")
        try:
            pushes = [
                ("loud", loud_before, loud_after, "refs/heads/main"),
                ("quiet", quiet_before, quiet_after, "refs/heads/main"),
            ]
            for push in pushes:
                client.send_task("workers.tasks.review_push", args=list(push))

            def settled() -> bool:
                r = state.r
                done = all(state.result(f"push:{p[0]}", f"{p[1]}..{p[2]}") for p in pushes)
                idle = all(r.llen(q) == 0 for q in QUEUES) and r.hlen("unacked") == 0
                return done and idle and state.outbox_pending() == []

            wait_until(settled, "both pushes reviewed and published", timeout=120, every=0.2)
            # the same range queued again, and its delivery re-queued: nothing sent twice
            client.send_task("workers.tasks.review_push", args=list(pushes[0]))
            for outbox_id in state.outbox_ids():
                client.send_task("workers.tasks.publish_outbox", args=[outbox_id])
            wait_until(settled, "the repeated tasks to run")

            assert len(sink.messages) == 1
            sender, rcpts, raw = sink.messages[0]
            mail = message_from_bytes(raw)
            assert sender == "bot@example.net" and rcpts == ["mm-reviews@example.org"]
            subject = " ".join(str(mail["Subject"]).split())  # unfolded
            assert subject == f"[review] loud main {loud_before[:12]}..{loud_after[:12]}: 1 finding"
            assert "mm/demo_pool: part 2" in raw.decode()
            box = mailbox.Maildir(outbox_dir, create=False)
            subjects = sorted(" ".join(str(m["Subject"]).split()) for m in box)
            assert len(subjects) == 2
            assert subjects[0] == subject
            assert subjects[1].startswith(f"[review] quiet main {quiet_before[:12]}..")
            statuses = {
                state.outbox_item(i)["scope"]: {
                    k: v for k, v in state.outbox_item(i).items() if k.startswith("part:")
                }
                for i in state.outbox_ids()
            }
            assert statuses == {
                "push:loud": {"part:0": "sent", "part:1": "sent"},
                "push:quiet": {"part:0": "sent", "part:1": "skipped:muted"},
            }
            assert state.review_count("push:loud", f"{loud_before}..{loud_after}") == 1
            assert undocumented_keys(state.r) == []
        finally:
            worker.stop()
            state.r.close()

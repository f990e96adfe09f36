"""The Celery tasks: each takes keys, re-reads state, skips work already done, chains on.

    poll_all()                          beat: one poll_mirror per configured list
    fetch_trees()                       beat: fetch the configured base trees
    poll_mirror(scope)                  ingest: fetch the mirror, store new mail, queue threads
    assemble_thread(scope, roots)       ingest: assemble; queue a review of each complete series
    review_series(scope, key, partial)  analyze: review one series once; store it + outbox entry
                                        (a partial review is followed, once, by the review
                                        of the complete series when its patches arrive)
    review_push(repo, before, after)    analyze: fetch an allow-listed repo, review the range;
                                        store it + outbox entry (maildir, opt-in mail)
    publish_outbox(outbox_id)           publish: deliver one outbox entry (see bot.publish.outbox)
    sweep()                             beat: review series whose wait ran out; re-queue
                                        series whose claim lapsed without a review (their
                                        worker died) and outbox entries nobody delivered

No task waits on another (never `.get()` in a task): each queues the next. Only transient
errors (Redis, network, git fetch, SMTP) are retried, with jittered exponential backoff;
anything else marks the series failed, because retrying a bad patch cannot help.
A review that runs out of time (the worker's limits, never the sender's) is marked
failed too, with the reason; `bot series retry` (or pushing the range again) retries it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any, cast

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from kombu.exceptions import OperationalError

from bot.config import Settings, load_settings
from bot.errors import BotError, FetchError
from bot.ingest.mirror import PublicInboxMirror
from bot.publish.outbox import Policy, deliver
from workers import faults
from workers.basetree import choose_tree, sync_trees
from workers.celery_app import SOFT_TIME_LIMIT, app
from workers.config import ServiceConfig, load_service_config
from workers.dismissals import after_review, dismissed_for, take_replies
from workers.gitviews import fetch_mirror
from workers.intake import ingest_mirror
from workers.leases import LEASE_SECONDS, Lease
from workers.logs import log
from workers.push import review_pushed
from workers.review import (
    assemble_roots,
    build_outbox,
    build_push_outbox,
    build_result,
    pick,
    route_threads,
    supersede_partial,
)
from workers.state import SeriesState, State

# Errors that may go away by themselves: a Redis blip, the network, a remote git server.
TRANSIENT: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    OperationalError,
    FetchError,
    ConnectionError,
    TimeoutError,
    socket.timeout,
)
_RETRY: dict[str, Any] = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 8,
    "acks_late": True,
    "Request": "workers.celery_app:OwnLimitsRequest",
}
# A task that finds its series or outbox entry leased by another worker looks again
# this many times, a lease's length apart (a dead holder's lease has lapsed by then).
LOOK_AGAIN_TIMES = 3
# An outbox entry still pending this long after its review was stored is re-queued.
OUTBOX_STALE_SECONDS = float(os.environ.get("BOT_OUTBOX_STALE_SECONDS", "120"))


class ServiceTask(Task):  # type: ignore[misc]
    """A task that marks its series failed when the worker's hard time limit kills it
    (Celery calls `on_failure` in the worker's main process then; a soft limit is
    caught by the task itself)."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        if isinstance(exc, TimeLimitExceeded):
            timed_out(self.name, list(args or ()), dict(kwargs or {}), "hard")


def timed_out(name: str, args: list[Any], kwargs: dict[str, Any], which: str) -> None:
    """Mark the series (or push range) of a review task that ran out of time failed,
    so it is not left `complete` with no result, and may be retried."""
    limit = SOFT_TIME_LIMIT if which == "soft" else app.conf.task_time_limit
    reason = f"review timed out ({which} limit {float(limit or 0):g} s)"
    if name.endswith(".review_series") and len(args) >= 2:
        scope, key = str(args[0]), str(args[1])
    elif name.endswith(".review_push") and len(args) >= 3:
        scope, key = f"push:{args[0]}", push_key(str(args[1]), str(args[2]))
    else:
        return
    del kwargs
    state().mark_failed(scope, key, reason)
    log.error("review failed", extra={"scope": scope, "series": key, "error": reason})


def _task(**opts: Any) -> Callable[[Callable[..., Any]], Any]:
    """`app.task`, typed: the decorated object is a Celery task (Any to mypy)."""
    return cast(Callable[[Callable[..., Any]], Any], app.task(base=ServiceTask, **opts))


@cache
def _state_for(url: str) -> State:
    return State.from_url(url)


def state() -> State:
    """The State on the app's broker Redis (one client per URL and process)."""
    return _state_for(str(app.conf.broker_url))


def config() -> ServiceConfig:
    return load_service_config()


def settings() -> Settings:
    return load_settings()


def _enqueue_assembly(scope: str, roots: list[str]) -> None:
    assemble_thread.apply_async((scope, roots))


# --------------------------------------------------------------------------- ingest


@_task(**_RETRY)
def poll_all() -> list[str]:
    """Queue a poll of every list that has a mirror configured."""
    names = [lst.name for lst in config().lists if lst.mirror]
    for name in names:
        poll_mirror.apply_async((name,))
    return names


@_task(**_RETRY)
def poll_mirror(scope: str) -> dict[str, int]:
    """Fetch the list's mirror and store every message after the cursor."""
    cfg = config()
    lst = cfg.list(scope)
    if not lst.mirror:
        log.warning("no mirror configured", extra={"scope": scope})
        return {}
    st = state()
    lease = st.poll_lease(scope)
    if not lease.acquire():
        # the poll already running will see the same new mail; a dead worker's lease
        # lapses within BOT_LEASE_SECONDS, and the next poll says so
        log.info("poll skipped: a live worker is polling", extra={"scope": scope})
        return {"skipped": 1}
    with lease.kept():
        died = st.start_poll(scope, lease.token)
        if died:
            log.warning(
                "the last poll died with its worker; its lock lapsed and polling resumes",
                extra={"scope": scope, "holder": died},
            )
        try:
            faults.pause(st, "poll:after-claim")
            mirror = PublicInboxMirror(lst.mirror, cfg.data_dir / "mirrors" / scope)
            mirror.sync()
            stats = ingest_mirror(
                st,
                scope,
                mirror,
                _enqueue_assembly,
                batch_size=cfg.batch_size,
                on_batch=lambda batch: take_replies(st, scope, batch, lst.trusted),
            )
        finally:
            st.finish_poll(scope, lease.token)
    log.info(
        "mirror polled", extra={"scope": scope, "stored": stats.stored, "walked": stats.walked}
    )
    return {"walked": stats.walked, "stored": stats.stored, "threads": stats.threads}


@_task(**_RETRY)
def fetch_trees() -> dict[str, str]:
    """Fetch every configured base tree (beat, every BOT_TREE_FETCH_INTERVAL)."""
    return sync_trees(config())


@_task(**_RETRY)
def assemble_thread(scope: str, roots: list[str]) -> dict[str, str]:
    """Assemble the threads; queue a review of each complete series not yet reviewed."""
    try:
        outcome = route_threads(state(), scope, roots, settings())
    except TRANSIENT:
        raise
    except BotError as exc:
        # hostile or broken mail: say so in one line; retrying cannot help
        log.warning("threads not assembled", extra={"scope": scope, "error": exc.one_line()})
        return {}
    for key, current in outcome.items():
        if current == SeriesState.COMPLETE:
            review_series.apply_async((scope, key, False))
            log.info("series complete", extra={"scope": scope, "series": key})
    return outcome


# --------------------------------------------------------------------------- analyze


@_task(**_RETRY)
def review_series(scope: str, key: str, partial: bool = False, waited: int = 0) -> str:
    """Review one series exactly once; store the review and its outbox entry together."""
    st = state()
    info = st.series(scope, key)
    done = _settled(st, scope, key, info)
    if done:
        st.settle_claim(scope, key)
        return "skipped: " + done
    lease = st.review_lease(scope, key)
    if not lease.acquire():
        # a duplicate task, or the task of a worker that died holding the lease (a pool
        # process killed: its task comes back at once): look again once a dead holder's
        # lease has lapsed; the sweep re-queues the claim if this gives up too
        log.info("review deferred: claimed", extra={"scope": scope, "series": key})
        if waited < LOOK_AGAIN_TIMES:
            review_series.apply_async(
                (scope, key, partial), {"waited": waited + 1}, countdown=LEASE_SECONDS
            )
        return "skipped: in progress elsewhere"
    st.track_claim(scope, key)
    with lease.kept():
        try:
            return _review_claimed(st, scope, key, info, partial, lease=lease)
        except SoftTimeLimitExceeded:
            timed_out("workers.tasks.review_series", [scope, key], {}, "soft")
            return "failed: timed out"


def _settled(st: State, scope: str, key: str, info: Mapping[str, str]) -> str:
    """Why the series needs no review now ('' when it does)."""
    if info.get("state") in {
        SeriesState.REVIEWED,
        SeriesState.SUPERSEDED,
        SeriesState.MERGED,
        SeriesState.FAILED,
    }:
        return info["state"]
    # a stored review blocks another one, unless it was partial and the complete
    # review is still owed (the commit script re-checks that atomically)
    if st.result(scope, key) is not None and info.get("partial") != "1":
        return "already reviewed"
    return ""


def _review_claimed(
    st: State, scope: str, key: str, info: dict[str, str], partial: bool, *, lease: Lease
) -> str:
    """Review a series whose lease this task holds; the claim is settled before any
    task is queued (a re-queued review tracks a claim of its own)."""
    roots = json.loads(info.get("roots") or "[]") or [key]
    got = assemble_roots(st, scope, roots, settings())
    chosen = pick(got.series_set, key)
    if chosen is None:
        st.mark_failed(scope, key, "series no longer assembles from the stored messages")
        return "failed: not found"
    series, versions, others = chosen
    owed = info.get("partial") == "1"  # a partial review is stored; this one completes it
    if not series.complete and (owed or not partial):
        st.settle_claim(scope, key)  # the wait's own sweep reviews it when it runs out
        return "waiting: incomplete"
    partial = not series.complete  # the sweep may find it complete by now
    cfg = config()
    lst = cfg.list(scope)
    started = float(info.get("complete_at") or info.get("first_seen") or time.time())
    try:
        from bot.pipeline import review_series as pipeline_review

        # the base tree: base-commit, else the list's trees in order (workers.basetree)
        base = choose_tree(cfg, lst, series, settings())
        review = pipeline_review(series, versions, settings(), tree=base.path, others=others)
        if base.notes:
            review = replace(review, notes=tuple(dict.fromkeys((*base.notes, *review.notes))))
        # dismissed on an earlier version (by reply, page or CLI): shown so, not asked again
        dismissed = dismissed_for(st, review)
        result = build_result(st, scope, review, partial=partial, dismissed=dismissed)
        if base.name:
            result["base_tree"] = base.as_dict()
        if owed:
            old = st.result(scope, key) or {}
            supersede_partial(result, old, review, reviewed_at=info.get("reviewed_at"))
        outbox = build_outbox(review, result, lst, cfg, dismissed)
    except TRANSIENT:
        raise
    except BotError as exc:
        st.mark_failed(scope, key, exc.one_line())
        log.error("review failed", extra={"scope": scope, "series": key, "error": exc.one_line()})
        return "failed: " + exc.one_line()
    faults.pause(st, "review:before-commit")
    # remembered before the commit, so a reply to the review always finds its series
    after_review(st, scope, review, result)
    # the complete review after a partial one is a second delivery: its own outbox entry
    round_ = "/complete" if owed else ""
    outbox_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{scope}/{key}{round_}").hex
    mode = "complete" if owed else ("partial" if partial else "first")
    committed = st.commit_review(
        scope, key, result, outbox_id, outbox, time.time() - started, mode=mode
    )
    st.settle_claim(scope, key)
    if not committed:
        return "skipped: another worker committed first"
    log.info(
        "series reviewed",
        extra={"scope": scope, "series": key, "partial": partial, "supersedes_partial": owed},
    )
    publish_outbox.apply_async((outbox_id,))
    if partial and st.series(scope, key).get("state") == SeriesState.COMPLETE:
        # the missing patches arrived while this partial review was being written, and
        # the review assembly queued then skipped (this claim) or will find it reviewed:
        # queue the complete review now, without the claim in its way
        lease.release()
        review_series.apply_async((scope, key, False))
    return "reviewed" + (" (supersedes the partial review)" if owed else "")


def _repo_cache(cfg: ServiceConfig, name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "repo"
    return cfg.data_dir / "repos" / f"{safe}.git"


def fetch_repo(cfg: ServiceConfig, name: str) -> Path:
    """Clone or fetch an allow-listed repository into the data dir (bare, hooks unused)."""
    repo_cfg = cfg.repo(name)
    if repo_cfg is None:
        raise BotError(f"repository {name!r} is not on the allow-list")
    return fetch_mirror(repo_cfg.url, _repo_cache(cfg, name))


_HEX_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def push_key(before: str, after: str) -> str:
    return f"{before}..{after}"


@_task(**_RETRY)
def review_push(repo: str, before: str, after: str, ref: str = "") -> str:
    """Review the commits a push added to an allow-listed repository, once per range."""
    st = state()
    if not (_HEX_RE.match(before) and _HEX_RE.match(after)):
        # the webhook checked this already; a task put on the queue by other means
        # must not hand git an option or a revision expression either
        log.error("push refused: commit ids are not hex", extra={"scope": f"push:{repo}"})
        return "failed: commit ids are not full hex ids"
    scope, key = f"push:{repo}", push_key(before, after)
    if st.result(scope, key) is not None:
        return "skipped: already reviewed"
    try:
        return _review_push(st, repo, before, after, ref)
    except SoftTimeLimitExceeded:
        timed_out("workers.tasks.review_push", [repo, before, after], {}, "soft")
        return "failed: timed out"


def _review_push(st: State, repo: str, before: str, after: str, ref: str) -> str:
    scope, key = f"push:{repo}", push_key(before, after)
    cfg = config()
    started = time.time()
    st.reopen(scope, key)  # pushed again after it failed (a timeout): review it again
    st.update_series(scope, key, {"state": SeriesState.COMPLETE, "ref": ref})
    repo_cfg = cfg.repo(repo)
    try:
        path = fetch_repo(cfg, repo)
        # applied onto the pushed repository at the range's base; a new branch is
        # reviewed from its merge-base with the default branch (workers.push)
        result = review_pushed(
            path,
            repo,
            before,
            after,
            ref,
            settings=settings(),
            max_commits=repo_cfg.max_commits if repo_cfg else 50,
        )
        outbox = build_push_outbox(result, cfg.repo(repo), cfg)
    except TRANSIENT:
        raise
    except BotError as exc:
        st.mark_failed(scope, key, exc.one_line())
        return "failed: " + exc.one_line()
    faults.pause(st, "review:before-commit")
    outbox_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{scope}/{key}").hex
    if not st.commit_review(scope, key, result, outbox_id, outbox, time.time() - started):
        return "skipped: another worker committed first"
    log.info("push reviewed", extra={"scope": scope, "series": key})
    publish_outbox.apply_async((outbox_id,))
    return "reviewed"


# --------------------------------------------------------------------------- publish


class _RealSenders:
    """The real network senders behind the outbox's seam."""

    def __init__(self, cfg: ServiceConfig) -> None:
        self.cfg = cfg

    def send_email(self, raw: bytes) -> None:
        from bot.publish.email import send_smtp

        smtp = self.cfg.smtp
        assert smtp is not None  # the policy skips email without SMTP
        send_smtp(
            raw,
            host=smtp.host,
            port=smtp.port,
            starttls=smtp.starttls,
            user=smtp.user,
            password=smtp.password,
            timeout=smtp.timeout,
        )

    def write_maildir(self, raw: bytes) -> None:
        from bot.publish.maildir import write_maildir

        assert self.cfg.maildir is not None
        write_maildir(self.cfg.maildir, raw)

    def post_check(self, msgid: str, check: Mapping[str, Any]) -> None:
        from bot.publish.patchwork import PatchworkClient

        pw = self.cfg.patchwork
        assert pw is not None
        PatchworkClient(pw.url, pw.token, pw.project, pw.timeout).post_check(msgid, check)


def policy_for(cfg: ServiceConfig, scope: str) -> Policy:
    """What may be sent for a review in `scope`: a list's policy, or for `push:<repo>`
    the repository's (mail only when it opted in and names where to)."""
    if scope.startswith("push:"):
        repo = cfg.repo(scope.removeprefix("push:"))
        opted_in = repo is not None and repo.email and bool(repo.email_to)
    else:
        opted_in = cfg.list(scope).email
    return Policy(
        dry_run=cfg.dry_run,
        email_opt_in=opted_in,
        smtp=cfg.smtp is not None,
        maildir=cfg.maildir is not None,
        patchwork=cfg.patchwork is not None and bool(cfg.patchwork.url),
    )


@_task(**_RETRY)
def publish_outbox(outbox_id: str, waited: int = 0) -> dict[str, Any]:
    """Deliver one stored review; a part is never sent twice (see bot.publish.outbox)."""
    st = state()
    faults.pause(st, "publish:start")
    item = st.outbox_item(outbox_id)
    if not item or item.get("status") not in {"pending", None}:
        return {"skipped": item.get("status", "missing") if item else "missing"}
    lease = Lease(st.r, st.k("outbox", outbox_id, "lock"))
    if not lease.acquire():
        # a worker is delivering it right now; if it died, its lease lapses: look again
        # then (the sweep re-queues pending entries too)
        if waited < LOOK_AGAIN_TIMES:
            publish_outbox.apply_async(
                (outbox_id,), {"waited": waited + 1}, countdown=LEASE_SECONDS
            )
        return {"skipped": "locked"}
    with lease.kept():
        cfg = config()
        report = deliver(
            st,
            outbox_id,
            policy_for(cfg, item.get("scope", "")),
            _RealSenders(cfg),
            pause=lambda point: faults.pause(st, point),
        )
    where = {"series": item.get("key"), "scope": item.get("scope"), "outbox": outbox_id}
    for n, why in report.deferred.items():
        # one line, no traceback: the entry stays pending and the sweep tries it again
        log.warning("publish target failing; will retry", extra={**where, "part": n, "error": why})
    for n in report.uncertain:
        log.warning(
            "outbox part uncertain: not resent (bot outbox list)", extra={**where, "part": n}
        )
    log.info("outbox delivered", extra={**where, "sent": len(report.sent)})
    return {
        "sent": report.sent,
        "skipped": report.skipped,
        "uncertain": report.uncertain,
        "failed": report.failed,
        "deferred": report.deferred,
    }


# --------------------------------------------------------------------------- sweep


@_task(**_RETRY)
def sweep() -> dict[str, int]:
    """Review incomplete series whose wait ran out; re-queue stale outbox entries."""
    st = state()
    cfg = config()
    now = time.time()
    partial = 0
    scopes = {lst.name: lst for lst in cfg.lists}
    for name, lst in scopes.items():
        for key in st.waiting_since(name, now - lst.wait_seconds):
            review_series.apply_async((name, key, True))
            partial += 1
    lapsed = 0
    for scope, key in st.lapsed_claims(now):
        info = st.series(scope, key)
        if _settled(st, scope, key, info) or scope.startswith("push:"):
            st.settle_claim(scope, key)
            continue
        log.warning(
            "review claim lapsed without a review (its worker died): series re-queued",
            extra={"scope": scope, "series": key},
        )
        st.requeued_claim(scope, key, now)
        review_series.apply_async((scope, key, info.get("state") == SeriesState.INCOMPLETE))
        lapsed += 1
    requeued = 0
    for outbox_id in st.outbox_pending():
        item = st.outbox_item(outbox_id)
        if item and float(item.get("created", now)) < now - OUTBOX_STALE_SECONDS:
            publish_outbox.apply_async((outbox_id,))
            requeued += 1
    return {"partial_reviews": partial, "claims_requeued": lapsed, "outbox_requeued": requeued}


__all__ = [
    "TRANSIENT",
    "assemble_thread",
    "fetch_repo",
    "fetch_trees",
    "policy_for",
    "poll_all",
    "poll_mirror",
    "publish_outbox",
    "push_key",
    "review_push",
    "review_series",
    "state",
    "sweep",
    "timed_out",
]

"""The Celery app: Redis as broker and result backend, three declared queues.

    ingest   poll a mirror, store messages, assemble threads into series
    analyze  review one series or one pushed commit range
    publish  deliver one outbox entry (SMTP, Patchwork, maildir)

Every queue is declared and `task_create_missing_queues` is off so a typo in a route
fails loudly instead of feeding a queue no worker reads. Tasks are acknowledged late
and re-queued if their worker dies, which is safe because every task takes a key,
re-reads state and skips work already done (see workers.tasks).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger
from celery.worker.request import Request
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from workers.state import broker_url

QUEUES = ("ingest", "analyze", "publish")

# A task whose worker died is redelivered once this many seconds have passed without
# an ack (kombu's Redis transport restores unacked messages after it). It must exceed
# the longest task (the hard limit below), or a slow review would run twice.
VISIBILITY_TIMEOUT = float(os.environ.get("BOT_VISIBILITY_TIMEOUT", "3600"))
# A review of a big series on a big tree takes tens of seconds; ten minutes is a stuck one.
# These are the limits of the worker that runs a task (read from its own environment):
# a limit written into a task message by whoever queued it is ignored (OwnLimitsRequest).
SOFT_TIME_LIMIT = float(os.environ.get("BOT_TASK_SOFT_LIMIT", "600"))
HARD_TIME_LIMIT = float(os.environ.get("BOT_TASK_HARD_LIMIT", "660"))
# Seconds between sweeps for series whose wait ran out and outbox entries left behind.
SWEEP_INTERVAL = float(os.environ.get("BOT_SWEEP_INTERVAL", "60"))


class OwnLimitsRequest(Request):  # type: ignore[misc]
    """A task request that runs under the worker's time limits, never the message's.

    Celery copies the sender's `task_time_limit` into every message it sends and lets
    the message win, so a webhook, beat or CLI started with other settings (or none)
    would decide how long a worker may run. The worker's settings decide here."""

    @property
    def time_limits(self) -> tuple[None, None]:
        return (None, None)  # Celery then uses the task's limits, from this worker's config

    @time_limits.setter
    def time_limits(self, _value: object) -> None:
        pass  # the message's `timelimit` header


def make_app(url: str | None = None) -> Celery:
    url = url or broker_url()
    app = Celery("workers", broker=url, backend=url, include=["workers.tasks"])
    exchange = Exchange("bot", type="direct")  # type: ignore[no-untyped-call]
    app.conf.update(
        task_queues=tuple(
            Queue(q, exchange, routing_key=q)  # type: ignore[no-untyped-call]
            for q in QUEUES
        ),
        task_default_queue="ingest",
        task_default_exchange="bot",
        task_default_routing_key="ingest",
        task_create_missing_queues=False,
        task_routes={
            "workers.tasks.poll_all": {"queue": "ingest", "routing_key": "ingest"},
            "workers.tasks.poll_mirror": {"queue": "ingest", "routing_key": "ingest"},
            "workers.tasks.assemble_thread": {"queue": "ingest", "routing_key": "ingest"},
            "workers.tasks.sweep": {"queue": "ingest", "routing_key": "ingest"},
            "workers.tasks.fetch_trees": {"queue": "ingest", "routing_key": "ingest"},
            "workers.tasks.review_series": {"queue": "analyze", "routing_key": "analyze"},
            "workers.tasks.review_push": {"queue": "analyze", "routing_key": "analyze"},
            "workers.tasks.publish_outbox": {"queue": "publish", "routing_key": "publish"},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=SOFT_TIME_LIMIT,
        task_time_limit=HARD_TIME_LIMIT,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=7 * 24 * 3600,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT,
            # how often a worker looks for unacked messages to restore (seconds, and
            # every n-th look actually scans); lowered by the tests, not in production
            "unacked_restore_interval": float(os.environ.get("BOT_RESTORE_INTERVAL", "10")),
            "unacked_restore_throttle": int(os.environ.get("BOT_RESTORE_THROTTLE", "10")),
        },
        result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        beat_schedule={
            "poll-all-lists": {
                "task": "workers.tasks.poll_all",
                "schedule": float(os.environ.get("BOT_POLL_INTERVAL", "300")),
            },
            "sweep": {"task": "workers.tasks.sweep", "schedule": SWEEP_INTERVAL},
            "fetch-trees": {
                "task": "workers.tasks.fetch_trees",
                "schedule": float(os.environ.get("BOT_TREE_FETCH_INTERVAL", "3600")),
            },
        },
        timezone="UTC",
    )
    return app


app = make_app()


def _json_logs(logger: Any = None, **_kw: Any) -> None:
    if os.environ.get("BOT_LOG_FORMAT", "json") == "json":
        from workers.logs import use_json

        use_json(logger)


after_setup_logger.connect(_json_logs)
after_setup_task_logger.connect(_json_logs)

__all__ = [
    "HARD_TIME_LIMIT",
    "QUEUES",
    "SOFT_TIME_LIMIT",
    "VISIBILITY_TIMEOUT",
    "OwnLimitsRequest",
    "app",
    "make_app",
]

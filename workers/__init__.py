"""The service: Celery workers on Redis around the same bot.pipeline the CLI uses.

`celery -A workers worker -Q analyze` finds the app here. See docs/service.md.
"""

from workers.celery_app import app

__all__ = ["app"]

"""Publishing: the only code that sends anything (SMTP, Patchwork, a maildir outbox).

Dry-run by default; mail is per-list opt-in; everything goes through the outbox so a
crash never sends twice and never loses a review (see bot.publish.outbox).
"""

from bot.publish.compare import Comparison, compare_reviews

__all__ = ["Comparison", "compare_reviews"]

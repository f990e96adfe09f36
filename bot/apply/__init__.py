"""Apply stage: put a series onto a kernel tree (or use the diff alone).

    apply_series(series, tree, settings, progress=) -> AppliedSeries

bot.apply.series drives it: bot.apply.parse reads the series, bot.apply.scratch
makes the scratch repository, bot.apply.strategies holds the fallbacks (git am -3,
git apply, GNU-patch-style fuzzy apply in bot.apply.fuzzy), bot.apply.guard the
checks against hostile paths and mails.
"""

from __future__ import annotations

from bot.apply.series import apply_series

__all__ = ["apply_series"]

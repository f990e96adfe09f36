"""Apply stage: put a series onto a kernel tree (or use the diff alone).

    apply_series(series, tree, settings, progress=) -> AppliedSeries

See bot.apply.series for the scratch-repository handling and the fallbacks
(git am -3, git apply, GNU-patch-style fuzzy apply in bot.apply.fuzzy).
"""

from __future__ import annotations

from bot.apply.series import apply_series

__all__ = ["apply_series"]

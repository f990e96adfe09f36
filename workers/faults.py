"""Fault-injection pauses, so tests can kill a worker at an exact step.

`BOT_FAULT_PAUSE=review:before-commit` makes a worker record in Redis that it reached
that point and then sleep, where the test kills it with SIGKILL, or lets it go on
(`State.release_fault`) once the test has arranged what must happen meanwhile. Unset
(always, in production), `pause` returns at once. Points: review:before-commit, publish:start,
publish:after-claim, publish:after-send, poll:after-claim.
"""

from __future__ import annotations

import os
import time
from typing import Protocol


class _Marks(Protocol):
    def mark_fault(self, point: str) -> None: ...
    def fault_released(self, point: str) -> bool: ...


def armed(point: str) -> bool:
    return point in {p.strip() for p in os.environ.get("BOT_FAULT_PAUSE", "").split(",") if p}


def pause(state: _Marks, point: str) -> None:
    """Stop here (for BOT_FAULT_PAUSE_SECONDS, default 600, or until the test releases
    the point) when `point` is armed."""
    if not armed(point) or state.fault_released(point):
        return
    state.mark_fault(point)
    deadline = time.monotonic() + float(os.environ.get("BOT_FAULT_PAUSE_SECONDS", "600"))
    while time.monotonic() < deadline and not state.fault_released(point):
        time.sleep(0.05)


__all__ = ["armed", "pause"]

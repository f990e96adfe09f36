"""The simulator's work bounds: counts, never the clock.

What gets simulated must not depend on how busy the machine is, so every
stage is bounded by a count of the work it does, proportional to the input
(per side of a patch: files read, lookups answered, functions translated;
per patch: actors set up; per exploration: states and steps). Past a bound
the work is cut where it is, deterministically, and a note says the
simulation is incomplete. A wall-clock limit remains only as a runaway stop
(`sim_max_seconds`, per series): reaching it makes the review say it is
incomplete. See docs/simulator.md, "Bounds".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# The phrase every note of a count bound that cut work short carries.
INCOMPLETE = "simulation incomplete"
# The phrase the runaway stop's note starts with: the review lifts such a note
# into its own notes (bot.pipeline), so no reader misses it.
REVIEW_INCOMPLETE = "review incomplete"


class SimTimeout(Exception):
    """The runaway time limit passed while reading or translating sources."""


def runaway_note(seconds: float, what: str) -> str:
    """The note for the runaway stop: the review is incomplete, and says so."""
    return (
        f"{REVIEW_INCOMPLETE}: the simulator's runaway time limit ({seconds:g} s per "
        f"series) was reached {what}; the machine may be overloaded, run the review again"
    )


@dataclass
class Budget:
    """Counted bounds of one side (pre- or post-image) of one patch, shared by
    its SourceSet and every Extractor on it, and the series' runaway deadline."""

    max_files: int = 2_000  # tree files read (candidates)
    max_lookups: int = 5_000  # definition, layout and caller lookups
    max_functions: int = 400  # distinct functions translated
    deadline: float | None = None  # time.monotonic() value: the runaway stop only
    lookups: int = 0
    translated: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def check_deadline(self) -> None:
        """Raise SimTimeout once the runaway deadline has passed."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SimTimeout("runaway time limit reached while reading sources")

    def lookup(self) -> bool:
        """Count one lookup; False (answer: not found) past the bound."""
        self.check_deadline()
        if self.lookups >= self.max_lookups:
            self.note(
                f"lookup bound reached ({self.max_lookups} lookups): later definitions, "
                f"layouts and callers taken as not found ({INCOMPLETE})"
            )
            return False
        self.lookups += 1
        return True

    def translate(self, name: str) -> bool:
        """Count the translation of `name` (once per name); False past the bound."""
        if name in self.translated:
            return True
        if len(self.translated) >= self.max_functions:
            self.note(
                f"translation bound reached ({self.max_functions} functions): "
                f"further calls not followed ({INCOMPLETE})"
            )
            return False
        self.translated.add(name)
        return True

    def files(self, overlay: list[str], tree: list[str]) -> list[str]:
        """The candidate files: every overlay file, tree files up to the bound."""
        room = max(0, self.max_files - len(overlay))
        if len(tree) > room:
            self.note(
                f"file bound reached ({self.max_files} files): {len(tree) - room} tree "
                f"file(s) next to the touched ones not read ({INCOMPLETE})"
            )
        return overlay + tree[:room]

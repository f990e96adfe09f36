"""What the analysis stage hands to every check (rules engine, simulator).

The pipeline builds one SeriesAnalysis from an AppliedSeries and the C
functions tree-sitter found; checks only read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.config import Settings
from bot.model import AppliedSeries, Finding, FunctionChange, Patch, PatchImages


@dataclass(frozen=True)
class PatchAnalysis:
    """One patch, its file images and the functions it touches."""

    number: int
    patch: Patch
    images: PatchImages
    changes: tuple[FunctionChange, ...]
    partial: bool  # True: images rebuilt from the diff alone (no tree, or it did not apply)


@dataclass(frozen=True)
class SeriesAnalysis:
    applied: AppliedSeries
    patches: tuple[PatchAnalysis, ...]
    # Root of the user's tree at the series base (pre-image of patch 1), when one was
    # given; checks may read other files from it to follow calls. Never written to.
    tree_root: str | None = None


class Check(Protocol):
    """A check over a whole series. Raising is allowed: the pipeline turns it into
    a failed CheckResult and runs the other checks."""

    name: str

    def run(self, ctx: SeriesAnalysis, settings: Settings) -> Sequence[Finding]: ...

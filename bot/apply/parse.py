"""The series as apply_series reads it: every present patch's diff parsed once.

parse_all(series) -> [Parsed]   a hostile path refuses the whole series
touched_paths(parsed)           every path the series reads or writes
series_base(series)             the base-commit the series names
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.analyze.diff import NoNewline, parse_diff_detail
from bot.errors import InputError, UnsafePatchError
from bot.model import FileDiff, Patch, Series


@dataclass
class Parsed:
    """One present patch with its diff parsed (or the reason it could not be)."""

    patch: Patch
    files: tuple[FileDiff, ...] = ()
    no_newline: tuple[NoNewline, ...] = ()
    error: str = ""
    strip: int = 1  # -p level for git apply

    @property
    def binaries(self) -> list[FileDiff]:
        return [f for f in self.files if f.is_binary]

    @property
    def skipped(self) -> tuple[str, ...]:
        return tuple(f"binary patch for {f.path} skipped" for f in self.binaries)


def _strip_level(diff_text: str) -> int:
    """-p level git apply needs: 0 for `git diff --no-prefix` output, else 1."""
    m = re.search(r"^diff --git (\S+) (\S+)", diff_text, re.M)
    if m is None or m.group(1).startswith("a/"):
        return 1
    old, new = m.group(1), m.group(2)
    no_prefix = "/" not in old or old.split("/")[0] == new.split("/")[0]
    return 0 if no_prefix else 1


def parse_all(series: Series) -> list[Parsed]:
    """Parse every present patch's diff. A hostile path anywhere refuses the whole
    series before anything is applied; a malformed diff is that patch's result."""
    parsed: list[Parsed] = []
    for patch in series.patches:
        source = f"patch {patch.number}/{patch.total}"
        try:
            files, no_nl = parse_diff_detail(patch.diff, source)
        except UnsafePatchError:
            raise
        except InputError as exc:
            parsed.append(Parsed(patch, error=exc.message))
            continue
        if not files:
            parsed.append(Parsed(patch, error="no diff found in the patch"))
            continue
        parsed.append(Parsed(patch, files, no_nl, strip=_strip_level(patch.diff)))
    return parsed


def touched_paths(parsed: Sequence[Parsed]) -> list[str]:
    """Every path any patch of the series reads or writes, in first-seen order."""
    paths: dict[str, None] = {}
    for p in parsed:
        for f in p.files:
            for path in (f.old_path, f.new_path):
                if path is not None:
                    paths.setdefault(path, None)
    return list(paths)


def series_base(series: Series) -> str | None:
    """The first `base-commit:` any patch of the series names."""
    return next((p.base_commit for p in series.patches if p.base_commit), None)

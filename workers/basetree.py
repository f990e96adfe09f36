"""The base tree of a series in service mode, chosen the way a maintainer would.

    sync_tree(cfg, tree)           fetch one configured tree (bare mirror of its branch)
                                   and point its view at the branch's tip
    sync_trees(cfg)                every configured tree (the `fetch_trees` task, on a
                                   schedule)
    choose_tree(cfg, lst, series)  where to apply a series, and why

A list names its trees in order (`lists.<name>.trees`, e.g. mm-new, mm-unstable,
mm-stable, linux-next, mainline), each one of the service's `trees:` entries
`{name, url or path, branch}`. For a series:

    1. the first tree whose mirror has the series' `base-commit:` (applied there);
    2. else the first tree the whole series applies to (every patch);
    3. else the tree most of the series applies to (the first of those), saying so.

Without trees the list's `tree` (a local checkout) is used, as before. The review's
notes say which tree and why; the stored result has `base_tree`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.errors import BotError, FetchError
from bot.model import Series
from workers.config import ListConfig, ServiceConfig, TreeConfig
from workers.gitviews import commit_of, fetch_mirror, make_view, move_view
from workers.logs import log


@dataclass(frozen=True)
class Choice:
    path: str | None  # what bot.pipeline applies onto (None: diff only)
    name: str = ""  # the configured tree's name ('' for lists.<name>.tree or none)
    why: str = ""
    tried: tuple[str, ...] = field(default=())  # one line per tree passed over

    @property
    def notes(self) -> tuple[str, ...]:
        if not self.name:
            return ()
        return (f"base tree {self.name}: {self.why}", *self.tried)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "why": self.why, "tried": list(self.tried)}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "tree"


def mirror_path(cfg: ServiceConfig, tree: TreeConfig) -> Path:
    return cfg.data_dir / "trees" / "mirrors" / f"{_safe(tree.name)}.git"


def view_path(cfg: ServiceConfig, tree: TreeConfig) -> Path:
    # the last component is the tree's name: what a review's reader sees as the tree
    return cfg.data_dir / "trees" / _safe(tree.name)


def sync_tree(cfg: ServiceConfig, tree: TreeConfig) -> str:
    """Fetch the tree's branch into its mirror and point its view at the tip."""
    mirror = fetch_mirror(tree.url, mirror_path(cfg, tree), branch=tree.branch)
    tip = commit_of(mirror, f"refs/heads/{tree.branch}")
    if tip is None:
        raise FetchError(f"tree {tree.name}: branch {tree.branch} not found at {tree.url}")
    view = view_path(cfg, tree)
    if (view / ".git").exists():
        move_view(view, tip)
    else:
        make_view(mirror, view, tip)
    return tip


def sync_trees(cfg: ServiceConfig) -> dict[str, str]:
    """Fetch every configured tree; a tree that fails is logged and left as it was."""
    out: dict[str, str] = {}
    for tree in cfg.trees:
        try:
            out[tree.name] = sync_tree(cfg, tree)
        except BotError as exc:
            log.warning("tree not fetched", extra={"tree": tree.name, "error": exc.one_line()})
            out[tree.name] = "failed: " + exc.one_line()
    return out


def _ready(cfg: ServiceConfig, tree: TreeConfig) -> Path:
    """The tree's view, fetched now if the schedule has not fetched it yet."""
    view = view_path(cfg, tree)
    if not (view / ".git").exists():
        sync_tree(cfg, tree)
    return view


def choose_tree(cfg: ServiceConfig, lst: ListConfig, series: Series, settings: Settings) -> Choice:
    """Where to apply `series` (see the module docstring)."""
    from bot.apply import apply_series

    trees = [t for name in lst.trees if (t := cfg.tree(name)) is not None]
    if not trees:
        return Choice(lst.tree)
    views = [(t, _ready(cfg, t)) for t in trees]
    base = next((p.base_commit for p in series.patches if p.base_commit), None)
    if base:
        for t, view in views:
            found = commit_of(mirror_path(cfg, t), base)
            if found:
                return Choice(str(view), t.name, f"has the series' base-commit {found[:12]}")
    tried: list[str] = []
    best: tuple[int, TreeConfig, Path] | None = None
    present = len(series.patches)
    for t, view in views:
        applied = apply_series(series, str(view), settings)
        failed = [a.number for a in applied.applications if not a.ok]
        if not failed:
            why = f"the whole series applies ({present} patch{'es' if present != 1 else ''})"
            if base:
                why += f"; base-commit {base[:12]} is in none of the list's trees"
            return Choice(str(view), t.name, why, tuple(tried))
        total = series.total
        shown = ", ".join(f"{n}/{total}" for n in failed)
        tried.append(f"tree {t.name}: patch {shown} did not apply")
        ok = present - len(failed)
        if best is None or ok > best[0]:
            best = (ok, t, view)
    assert best is not None
    ok, t, view = best
    why = f"no tree takes the whole series; {ok} of {present} patches apply here"
    return Choice(
        str(view), t.name, why, tuple(x for x in tried if not x.startswith(f"tree {t.name}:"))
    )


__all__ = ["Choice", "choose_tree", "mirror_path", "sync_tree", "sync_trees", "view_path"]

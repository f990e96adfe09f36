"""Settings: one default table, a comment per key.

Environment variables override only URLs and secrets (and the corpus path used by
tests and benches); everything else is a command-line option or a value here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

_HERE = Path(__file__).resolve().parent.parent


def default_rules_dir() -> Path:
    """rules/ shipped inside the installed package (bot/rules: setup.py copies
    it into a wheel), else the checkout's rules/ (a source tree or an editable
    install). BOT_RULES_DIR overrides both (load_settings)."""
    packaged = Path(__file__).resolve().parent / "rules"
    return packaged if packaged.is_dir() else _HERE / "rules"


@dataclass(frozen=True)
class Settings:
    # Where `bot review <Message-ID>` fetches `<base>/<msgid>/t.mbox.gz` from.
    lore_base_url: str = "https://lore.kernel.org/all"
    # Seconds before a lore fetch gives up (one-line error, exit 2).
    fetch_timeout: float = 20.0
    # Refuse any single input (file, stdin, fetched mbox) larger than this many bytes.
    max_input_bytes: int = 50 * 1024 * 1024
    # Minutes within which unthreaded patches of the same author and version are
    # stitched into one series (Patchwork uses a similar window for the same reason:
    # git-send-email without --thread sends the patches seconds apart).
    stitch_window_minutes: int = 60
    # Folder holding the rules (one folder per rule) and rules/api/*.yaml
    # (BOT_RULES_DIR overrides it).
    rules_dir: Path = field(default_factory=default_rules_dir)
    # Simulator bounds: counts of work, so the same input gets the same review on
    # any machine under any load; reaching one is reported, never silent
    # (docs/simulator.md, "Bounds").
    sim_max_threads: int = 4
    sim_max_steps: int = 400  # operations per actor, loops unrolled
    sim_max_states: int = 200_000  # per exploration (one side of one patch)
    sim_max_files: int = 2_000  # tree files read per side of a patch
    sim_max_lookups: int = 5_000  # definition/layout/caller lookups per side of a patch
    sim_max_functions: int = 400  # functions translated per side of a patch
    sim_max_actors: int = 16  # candidate actors set up per patch
    # Runaway stop only (per series): reaching it says "review incomplete".
    sim_max_seconds: float = 60.0
    # Call depth followed into helpers the tree or the series defines.
    call_depth: int = 3
    # Where scratch worktrees are created (None: the system temp dir).
    scratch_dir: Path | None = None
    # Where tests and benches find the shared corpus (read in place, never copied).
    corpus_dir: Path = field(default_factory=lambda: _HERE.parent / "shared" / "corpus")
    # Rules to run (empty: all) and rules to skip; set by --rule / --disable-rule.
    enabled_rules: tuple[str, ...] = ()
    disabled_rules: tuple[str, ...] = ()
    # Run the lifecycle simulator in the analysis stage.
    simulate: bool = True
    # Private on-disk cache of the loaded rules, vocabulary and simulator data
    # (bot.cache); None: none. load_settings() uses $XDG_CACHE_HOME/mmlc-bot.
    cache_dir: Path | None = None

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def load_settings() -> Settings:
    """Defaults, with URL/path overrides from the environment."""
    s = Settings()
    env = os.environ
    if "BOT_LORE_BASE_URL" in env:
        s = replace(s, lore_base_url=env["BOT_LORE_BASE_URL"].rstrip("/"))
    if "BOT_CORPUS_DIR" in env:
        s = replace(s, corpus_dir=Path(env["BOT_CORPUS_DIR"]))
    if env.get("BOT_RULES_DIR"):
        s = replace(s, rules_dir=Path(env["BOT_RULES_DIR"]))
    if "BOT_SCRATCH_DIR" in env:
        s = replace(s, scratch_dir=Path(env["BOT_SCRATCH_DIR"]))
    # BOT_CACHE_DIR set but empty: no disk cache.
    cache = env.get("BOT_CACHE_DIR")
    if cache is None:
        from bot.cache import default_dir

        s = replace(s, cache_dir=default_dir())
    elif cache:
        s = replace(s, cache_dir=Path(cache))
    return s

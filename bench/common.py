"""Helpers shared by the bench scripts: where things are, how to time them.

The scripts run as plain files (`.venv/bin/python bench/eval.py`), so this module
is imported by its bare name; it only uses the standard library and `bot.config`.
A missing input (corpus, checkpatch, eval trees) is a `Skip`: the script prints
one line saying what is missing and how to provide it, and exits 0, because a
bench that cannot run here is not a failure of the code under test.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The checkpatch the bench compares against; step 2 of bench/README.md puts it here.
DEFAULT_CHECKPATCH = Path("/work/tools/linux-source-6.12/scripts/checkpatch.pl")
# ... or the 6.12 tree scripts/prepare-eval-trees.sh builds (its data files beside it).
HELDOUT_CHECKPATCH = Path("~/.cache/heldout-linux/linux-6.12/scripts/checkpatch.pl").expanduser()
# Where scripts/prepare-eval-trees.sh builds the eval-dev case repos.
DEFAULT_EVAL_TREES = Path("/work/eval-trees")


class Skip(Exception):
    """An input the bench needs is absent; the message says which and how to get it."""


def corpus_dir(override: str | None = None) -> Path:
    """The shared corpus: `override`, else the bot's setting (BOT_CORPUS_DIR or
    ../shared/corpus). Raises Skip when it is not there."""
    if override:
        path = Path(override)
    else:
        from bot.config import load_settings

        path = load_settings().corpus_dir
    if not (path / "README.md").is_file():
        raise Skip(f"corpus not found at {path} (set BOT_CORPUS_DIR or pass --corpus)")
    return path


def checkpatch_path() -> Path:
    """checkpatch.pl from BOT_CHECKPATCH, else DEFAULT_CHECKPATCH, else the
    eval trees' HELDOUT_CHECKPATCH. Raises Skip when it is absent, naming the tar
    command that extracts it."""
    named = os.environ.get("BOT_CHECKPATCH")
    if named:
        path = Path(named)
    else:
        path = next(
            (p for p in (DEFAULT_CHECKPATCH, HELDOUT_CHECKPATCH) if p.is_file()), DEFAULT_CHECKPATCH
        )
    if not path.is_file():
        raise Skip(
            f"checkpatch.pl not found at {path} (set BOT_CHECKPATCH, or extract "
            "scripts/checkpatch.pl, scripts/spelling.txt and scripts/const_structs.checkpatch "
            "from /usr/src/linux-source-6.12.tar.xz; see bench/README.md)"
        )
    return path


def bot_command() -> list[str]:
    """The `bot` command as a user runs it: the venv's console script when it is
    next to this interpreter, else `python -m bot` (the same entry point)."""
    script = Path(sys.executable).with_name("bot")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "bot"]


def child_env() -> dict[str, str]:
    """Environment for bot subprocesses: the checkout importable, no debug output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("BOT_DEBUG", None)
    return env


@dataclass(frozen=True)
class Timed:
    """Wall and CPU times of repeated runs of one thing, in seconds."""

    label: str
    times: tuple[float, ...]
    cpu: tuple[float, ...] = ()

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else float("nan")

    @property
    def spread(self) -> str:
        return f"min {min(self.times):.3f} s, max {max(self.times):.3f} s"


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its waited-for children. On a
    shared, loaded machine wall time stretches with other people's work; CPU time
    much less, so the benches print both."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds (see cpu_seconds) of one call of `fn`."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def machine_note() -> str:
    """CPU count and load average, printed with every figure so a slow number on a
    busy machine can be told from a slow bot."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPU(s), load average {one:.2f} (1 min) {five:.2f} (5 min)"


def run_quiet(
    cmd: Sequence[str],
    ok_codes: Sequence[int],
    *,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> str:
    """Run `cmd` with output captured; return stdout. An exit code outside
    `ok_codes` raises RuntimeError with the command's last stderr line. `env`
    adds to child_env()."""
    proc = subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**child_env(), **(env or {})},
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode not in ok_codes:
        last = (proc.stderr.strip().splitlines() or ["no stderr"])[-1]
        raise RuntimeError(f"{Path(cmd[0]).name} exited {proc.returncode}: {last}")
    return proc.stdout


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM) in MB; ru_maxrss when /proc
    is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_main(name: str, main: Callable[[list[str]], int]) -> None:
    """Run a bench's main(), turning Skip into one line and exit 0, and any
    bot.errors.BotError into one line and its exit code."""
    from bot.errors import BotError

    try:
        code = main(sys.argv[1:])
    except Skip as exc:
        print(f"{name}: skipped: {exc}")
        code = 0
    except BotError as exc:
        print(f"{name}: error: {exc.one_line()}", file=sys.stderr)
        code = exc.exit_code
    except RuntimeError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)

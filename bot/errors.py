"""The bot's one exception tree, and the exit codes the CLI maps it to.

    BotError                      exit 3 unless a subclass says otherwise
    +-- UsageError                exit 2: bad command line (unknown option, bad range)
    +-- InputError                exit 2: input that cannot be read or is refused
    |   +-- FetchError            exit 2: a Message-ID/lore URL could not be fetched
    |   +-- UnsafePatchError      exit 2: a diff path is absolute, has `..`, crosses a symlink,
    |                                     or the patch is an ed script
    |   +-- TooLargeError         exit 2: input over the configured size limit
    +-- InternalError             exit 3: a bug in the bot

Not applying is *not* an error: it is a PatchApplication result. A rule or the
simulator failing is *not* an error either: it is a failed CheckResult.
Only `bot.cli.main` calls sys.exit.
"""

from __future__ import annotations

EXIT_OK = 0  # reviewed, nothing introduced
EXIT_FINDINGS = 1  # reviewed, the series introduces at least one finding
EXIT_USAGE = 2  # bad usage or unreadable / refused input
EXIT_INTERNAL = 3  # internal error


class BotError(Exception):
    """Base of every error the bot raises on purpose."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source

    def one_line(self) -> str:
        """The single line the CLI prints: `source: message`, no newlines."""
        text = f"{self.source}: {self.message}" if self.source else self.message
        return " ".join(text.split())


class UsageError(BotError):
    exit_code = EXIT_USAGE


class InputError(BotError):
    exit_code = EXIT_USAGE


class FetchError(InputError):
    pass


class UnsafePatchError(InputError):
    pass


class TooLargeError(InputError):
    pass


class InternalError(BotError):
    exit_code = EXIT_INTERNAL

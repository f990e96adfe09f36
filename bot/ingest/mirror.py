"""Read a public-inbox v2 archive through git: clone or fetch each epoch, walk new commits.

A v2 inbox keeps its mail in time-based git "epochs" (`git/0.git`, `git/1.git`, ...).
Every commit adds exactly one message as the blob `m` at the top of the tree; a commit
whose tree holds `d` instead records a deletion (spam removal) and carries no mail.
See public-inbox-v2-format(5).

    mirror = PublicInboxMirror("https://lore.kernel.org/linux-mm", cache / "linux-mm")
    mirror.sync()                                  # clone new epochs, fetch known ones
    for msg in mirror.walk({0: "<last sha>"}):    # everything after the stored cursor
        ...                                        # msg.epoch, msg.commit, msg.raw

The caller owns the cursor: it stores `msg.commit` per epoch only after the message
is safely queued, so a crash re-reads (and de-duplicates) instead of losing mail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parsedate_to_datetime
from pathlib import Path

from bot.errors import FetchError, InputError

# A mirror URL may only use these git transports; `ext::` and friends would run commands.
_ALLOWED_PROTOCOLS = "file:https:http:git:ssh"
# Epoch directories are plain integers; anything else under git/ is not ours to read.
_EPOCH_RE = re.compile(r"^(\d+)\.git$")
# git writes this message when a rev-list range names a commit it does not have.
_UNKNOWN_REV_HINTS = ("bad revision", "unknown revision", "Invalid revision")


@dataclass(frozen=True)
class MirrorMessage:
    """One message read from one epoch commit."""

    epoch: int
    commit: str  # hex sha of the commit that added the message
    raw: bytes


@dataclass(frozen=True)
class MessageKeys:
    """The routing headers of a message: enough to group it by thread and by title.

    This is deliberately not a parser: `bot.ingest.parse_message` makes the RawMessage.
    The service only needs to know which thread a message joins before assembly.
    """

    message_id: str
    root: str  # the thread root: first References entry, else In-Reply-To, else itself
    title: str  # subject without Re:/[...] prefixes, lower-cased, whitespace collapsed
    author: str  # From address, lower-cased
    is_patch: bool  # a [PATCH ...]-style tag and not a reply
    date: float | None = None  # the Date header as epoch seconds, when it parses
    quotes_patch: bool = False  # a reply to a patch ("Re: [PATCH 1/4] ..."): names its title


_ID_RE = re.compile(r"<([^<>\s]+)>")
_PREFIX_RE = re.compile(r"^\s*(?:(?:re|aw|fwd?)\s*:\s*|\[[^\]]*\]\s*)", re.IGNORECASE)
_PATCH_TAG_RE = re.compile(r"\[[^\]]*\b(?:PATCH|RFC)\b[^\]]*\]", re.IGNORECASE)
_REPLY_RE = re.compile(r"^\s*(?:re|aw)\s*:", re.IGNORECASE)
_ADDR_RE = re.compile(r"<([^<>\s]+@[^<>\s]+)>|([^\s<>\"]+@[^\s<>\"]+)")
_HEADER_PARSER = BytesHeaderParser(policy=compat32)


def _ids(value: str | None) -> list[str]:
    return _ID_RE.findall(value or "")


def normalise_title(subject: str) -> str:
    """A subject reduced to what stays the same across versions of a series."""
    text = " ".join(subject.split())
    while True:
        stripped = _PREFIX_RE.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return text.strip().lower()


def routing_keys(raw: bytes, fallback_id: str) -> MessageKeys:
    """Read the thread-routing headers of a raw message (headers only, never the body)."""
    headers = _HEADER_PARSER.parsebytes(raw, headersonly=True)
    mids = _ids(str(headers.get("Message-ID", "") or ""))
    message_id = mids[0] if mids else fallback_id
    refs = _ids(str(headers.get("References", "") or ""))
    irt = _ids(str(headers.get("In-Reply-To", "") or ""))
    root = refs[0] if refs else (irt[0] if irt else message_id)
    subject = " ".join(str(headers.get("Subject", "") or "").split())
    match = _ADDR_RE.search(str(headers.get("From", "") or ""))
    author = (match.group(1) or match.group(2)).lower() if match else ""
    is_patch = bool(_PATCH_TAG_RE.search(subject)) and not _REPLY_RE.match(subject)
    return MessageKeys(
        message_id=message_id,
        root=root,
        title=normalise_title(subject),
        author=author,
        is_patch=is_patch,
        date=_date(str(headers.get("Date", "") or "")),
        quotes_patch=bool(_PATCH_TAG_RE.search(subject)) and bool(_REPLY_RE.match(subject)),
    )


def _date(value: str) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_ALLOW_PROTOCOL"] = _ALLOWED_PROTOCOLS
    env["GIT_TERMINAL_PROMPT"] = "0"  # a private mirror must fail, not hang on a prompt
    return env


def _is_url(source: str) -> bool:
    return "://" in source


class PublicInboxMirror:
    """A local bare copy of every epoch of one public-inbox v2 archive.

    `source` is the inbox URL (`https://lore.kernel.org/linux-mm`) or a local inbox
    directory; epochs are cloned into `cache_dir/git/N.git`.
    """

    def __init__(self, source: str, cache_dir: Path) -> None:
        if re.match(r"^[A-Za-z0-9+.-]+::", source):
            # git's "<transport>::<address>" form (ext::, fd::) runs helpers: never
            raise InputError("mirror git transport is not allowed", source=source)
        if _is_url(source):
            scheme = source.split("://", 1)[0].lower()
            if scheme not in {"https", "http", "git", "ssh", "file"}:
                raise InputError(f"mirror URL scheme {scheme!r} is not allowed", source=source)
        elif not Path(source).is_dir():
            raise InputError("mirror source is neither a URL nor a directory", source=source)
        self.source = source.rstrip("/")
        self.cache_dir = Path(cache_dir)

    # ------------------------------------------------------------------ epochs

    def epoch_url(self, epoch: int) -> str:
        """Where epoch N is cloned from: public-inbox-httpd (lore) serves it at
        `<inbox URL>/N`; a directory (or file://, ssh) holds it at `git/N.git`."""
        if self.source.lower().startswith(("https://", "http://")):
            return f"{self.source}/{epoch}"
        return f"{self.source}/git/{epoch}.git"

    def local_epochs(self) -> list[int]:
        """Epochs already cloned into the cache, in order."""
        root = self.cache_dir / "git"
        if not root.is_dir():
            return []
        found = (_EPOCH_RE.match(p.name) for p in root.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def _remote_has(self, epoch: int) -> bool:
        import git

        if not _is_url(self.source):
            return (Path(self.source) / "git" / f"{epoch}.git").is_dir()
        try:
            git.Git().execute(
                ["git", "ls-remote", "--heads", self.epoch_url(epoch)], env=_git_env()
            )
        except git.GitCommandError:
            return False
        return True

    def sync(self) -> list[int]:
        """Fetch every known epoch and clone any new one; return the epochs now local.

        A new epoch appears when the archive rolls over (about every gigabyte); it is
        found by probing the epoch after the newest one we have.
        """
        import git

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        epochs = self.local_epochs()
        try:
            for epoch in epochs:
                repo = git.Repo(self.cache_dir / "git" / f"{epoch}.git")
                repo.git.execute(["git", "fetch", "--quiet", "--prune", "origin"], env=_git_env())
            nxt = (epochs[-1] + 1) if epochs else 0
            while self._remote_has(nxt):
                dest = self.cache_dir / "git" / f"{nxt}.git"
                git.Repo.clone_from(
                    self.epoch_url(nxt), dest, mirror=True, env=_git_env(), multi_options=[]
                )
                epochs.append(nxt)
                nxt += 1
        except git.GitCommandError as exc:
            detail = " ".join(str(exc.stderr or exc).split())[:300]
            raise FetchError(f"git fetch failed: {detail}", source=self.source) from exc
        return epochs

    # ------------------------------------------------------------------ walking

    def head(self, epoch: int) -> str | None:
        """The newest commit of an epoch, or None when it has none yet."""
        import git

        repo = git.Repo(self.cache_dir / "git" / f"{epoch}.git")
        try:
            return str(repo.git.rev_parse("--verify", "--quiet", "HEAD")).strip() or None
        except git.GitCommandError:
            return None

    def pending(self, cursors: Mapping[int, str], *, since: datetime | None = None) -> int:
        """How many commits `walk` would visit (for a progress bar)."""
        return sum(len(self._revs(e, cursors.get(e), since)) for e in self.local_epochs())

    def _revs(self, epoch: int, cursor: str | None, since: datetime | None) -> list[str]:
        import git

        repo = git.Repo(self.cache_dir / "git" / f"{epoch}.git")
        if self.head(epoch) is None:
            return []
        args = ["--reverse"]
        if since is not None:
            # public-inbox commits carry the message's Date as their commit date
            args.append(f"--since={since.isoformat()}")
        rng = f"{cursor}..HEAD" if cursor else "HEAD"
        try:
            out = str(repo.git.rev_list(*args, rng))
        except git.GitCommandError as exc:
            if cursor and any(h in str(exc.stderr) for h in _UNKNOWN_REV_HINTS):
                # The cursor is gone (the archive was rewritten to purge a message):
                # walk the whole epoch again; the seen-set drops what we already have.
                out = str(repo.git.rev_list(*args, "HEAD"))
            else:
                raise FetchError(
                    f"cannot walk epoch {epoch}: {exc.stderr}", source=self.source
                ) from exc
        return out.split()

    def walk(
        self, cursors: Mapping[int, str], *, since: datetime | None = None
    ) -> Iterator[MirrorMessage]:
        """Every message added after the cursor of each epoch, oldest epoch first."""
        import git

        for epoch in self.local_epochs():
            revs = self._revs(epoch, cursors.get(epoch), since)
            if not revs:
                continue
            repo = git.Repo(self.cache_dir / "git" / f"{epoch}.git")
            try:
                for sha in revs:
                    raw = _read_message(repo, sha)
                    if raw is not None:
                        yield MirrorMessage(epoch=epoch, commit=sha, raw=raw)
                    else:
                        # a deletion commit: still advances the cursor, carries no mail
                        yield MirrorMessage(epoch=epoch, commit=sha, raw=b"")
            finally:
                repo.close()


def _read_message(repo: object, sha: str) -> bytes | None:
    """The `m` blob of one commit via the persistent `git cat-file --batch`; None if absent."""
    import git

    assert isinstance(repo, git.Repo)
    try:
        _hex, kind, _size, stream = repo.git.stream_object_data(f"{sha}:m")
    except (ValueError, git.GitCommandError):
        return None
    data = stream.read()
    return data if kind in (b"blob", "blob") else None


__all__ = [
    "MessageKeys",
    "MirrorMessage",
    "PublicInboxMirror",
    "normalise_title",
    "routing_keys",
]

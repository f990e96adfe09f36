"""Service configuration: lists to follow, repositories the webhook may fetch, publishing.

Read from the YAML file named by `BOT_SERVICE_CONFIG` (none: every default below, which
is a service that follows nothing, sends nothing and only stores reviews). Secrets come
from the environment only, never from the file:

    BOT_WEBHOOK_SECRET   HMAC-SHA256 key for GitHub-style and generic push deliveries
    BOT_GITLAB_TOKEN     the X-Gitlab-Token value GitLab sends
    BOT_SMTP_PASSWORD    SMTP login password (with smtp.user)
    BOT_PATCHWORK_TOKEN  Patchwork API token
    BOT_WEB_TOKEN        what the results page asks for before it lets anyone dismiss
                         (with `web: {dismiss: true}`; 16 characters or more)

Example (docs/service.md has the full table):

    lists:
      linux-mm:
        mirror: https://lore.kernel.org/linux-mm
        address: linux-mm@kvack.org
        email: true          # opt in: reviews of this list may be mailed (muted otherwise)
        cc_list: true        # Cc the list on replies
        cc_thread: true      # Cc everyone the patch was sent to
        mail_clean: false    # a series with no finding gets no mail
        trusted: [akpm@linux-foundation.org]   # their `bot: not-a-bug` replies count
        trees: [mm-unstable, mainline]         # base trees to try, in order
    web:
      dismiss: false         # the results page may dismiss (also needs BOT_WEB_TOKEN)
    trees:                   # base trees, fetched into data_dir/trees on a schedule
      - name: mm-unstable
        url: https://git.kernel.org/pub/scm/linux/kernel/git/akpm/mm.git
        branch: mm-unstable
      - {name: mainline, path: /srv/git/linux.git, branch: master}
    repos:
      mm:
        url: https://git.kernel.org/pub/scm/linux/kernel/git/akpm/mm.git
        email: true          # opt in: push reviews are mailed to email_to
        email_to: [mm-reviews@example.org]
    publish:
      dry_run: true          # default: nothing leaves the machine
      from: "mm-lifecycle-bot <bot@example.org>"
      smtp: {host: 127.0.0.1, port: 25, timeout: 30}   # seconds for each reply
      maildir: /var/lib/bot/outbox
      patchwork: {url: https://patchwork.kernel.org, project: linux-mm}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.errors import InputError
from bot.yamlio import load_yaml


@dataclass(frozen=True)
class ListConfig:
    name: str
    mirror: str = ""  # public-inbox URL or local inbox directory; empty: not polled
    address: str = ""  # the list's posting address, for Cc
    email: bool = False  # per-list opt-in; muted by default
    cc_list: bool = True
    cc: tuple[str, ...] = ()
    # Seconds to wait for the missing patches of a series before reviewing what arrived.
    wait_seconds: float = 6 * 3600
    # Review series whose tree is this local git checkout (None: diff context only).
    tree: str | None = None
    # Addresses whose `bot: not-a-bug ...` replies dismiss findings (the series'
    # author may always dismiss in its own series).
    trusted: tuple[str, ...] = ()
    # A series with no finding is mailed only when the list opts in.
    mail_clean: bool = False
    # Cc everyone the patch was sent to (its To and Cc), as a reviewer replying all.
    cc_thread: bool = True
    # Names of `trees` entries to try as the base, in order (workers.basetree).
    trees: tuple[str, ...] = ()


@dataclass(frozen=True)
class TreeConfig:
    name: str  # mm-new, mm-unstable, linux-next, mainline, ...
    url: str  # fetched from: a URL, a file:// URL or a local path
    branch: str = "master"


@dataclass(frozen=True)
class RepoConfig:
    name: str  # what the push payload names (owner/name, path_with_namespace, or ours)
    url: str  # where we fetch from: never the URL in the payload
    # Opt in: push reviews of this repository may be mailed to `email_to` (muted
    # otherwise; the maildir outbox gets a copy either way).
    email: bool = False
    email_to: tuple[str, ...] = ()
    # A push is reviewed up to this many commits (the newest; the review says so).
    max_commits: int = 50


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    user: str = ""
    password: str = ""  # from BOT_SMTP_PASSWORD
    timeout: float = 30.0


@dataclass(frozen=True)
class PatchworkConfig:
    url: str = ""  # base URL, e.g. https://patchwork.kernel.org
    project: str = ""
    token: str = ""  # from BOT_PATCHWORK_TOKEN
    context: str = "mm-lifecycle"
    timeout: float = 20.0


@dataclass(frozen=True)
class ServiceConfig:
    lists: tuple[ListConfig, ...] = ()
    repos: tuple[RepoConfig, ...] = ()
    trees: tuple[TreeConfig, ...] = ()  # base trees, kept as local mirrors
    dry_run: bool = True
    from_addr: str = "mm-lifecycle-bot <mm-lifecycle-bot@localhost>"
    smtp: SmtpConfig | None = None
    maildir: str | None = None
    patchwork: PatchworkConfig | None = None
    webhook_secret: str = ""
    gitlab_token: str = ""
    # Largest webhook body accepted, bytes (GitHub caps payloads at 25 MB; a push
    # event for a normal push is a few kB, so 1 MB leaves room and refuses floods).
    webhook_max_bytes: int = 1024 * 1024
    # What one HTTP client may hold (workers.httpguard): seconds for a request's
    # head and for its body, idle keep-alive seconds, connections at once (503 past
    # it), and the largest request head in bytes.
    webhook_header_timeout: float = 10.0
    webhook_read_timeout: float = 10.0
    webhook_keep_alive: int = 5
    webhook_max_connections: int = 64
    webhook_max_header_bytes: int = 16 * 1024
    # Where mirrors and fetched repositories are kept.
    data_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("BOT_DATA_DIR", ".bot-data"))
    )
    # Messages stored per Redis transaction while walking a mirror.
    batch_size: int = 200
    review_url: str = ""  # base of target_url in Patchwork checks ({key} appended)
    # The results page may dismiss findings only when `web.dismiss` is true AND a
    # token is set (BOT_WEB_TOKEN): off unless both are configured.
    web_dismiss: bool = False
    web_token: str = ""  # from BOT_WEB_TOKEN

    @property
    def web_dismissals(self) -> bool:
        return self.web_dismiss and len(self.web_token) >= 16

    def list(self, name: str) -> ListConfig:
        for lst in self.lists:
            if lst.name == name:
                return lst
        return ListConfig(name=name)

    def repo(self, name: str) -> RepoConfig | None:
        return next((r for r in self.repos if r.name == name), None)

    def tree(self, name: str) -> TreeConfig | None:
        return next((t for t in self.trees if t.name == name), None)


def _bool(v: Any, where: str) -> bool:
    if isinstance(v, bool):
        return v
    raise InputError(f"{where} must be true or false")


def _strings(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise InputError(f"{where} must be an address or a list of addresses")


def _positive(spec: dict[str, Any], key: str, default: float) -> float:
    value = float(spec.get(key, default))
    if not value > 0:
        raise InputError(f"webhook.{key} must be a positive number")
    return value


def _trees(given: Any) -> tuple[TreeConfig, ...]:
    if given is None:
        return ()
    if not isinstance(given, list):
        raise InputError("trees must be a list of {name, url or path, branch}")
    out: list[TreeConfig] = []
    for i, spec in enumerate(given):
        if not isinstance(spec, dict) or not spec.get("name"):
            raise InputError(f"trees[{i}] needs a name")
        url = spec.get("url") or spec.get("path")
        if not url:
            raise InputError(f"trees[{i}] ({spec['name']}) needs a url or a path")
        branch = str(spec.get("branch") or "master")
        if branch.startswith("-") or ".." in branch:
            raise InputError(f"trees[{i}].branch is not a branch name")
        out.append(TreeConfig(name=str(spec["name"]), url=str(url), branch=branch))
    return tuple(out)


def parse_config(data: dict[str, Any], env: dict[str, str] | None = None) -> ServiceConfig:
    """Build a ServiceConfig from the YAML mapping, with secrets from `env`."""
    env = dict(os.environ) if env is None else env
    lists: list[ListConfig] = []
    for name, given in (data.get("lists") or {}).items():
        spec = given or {}
        if not isinstance(spec, dict):
            raise InputError(f"lists.{name} must be a mapping")
        lists.append(
            ListConfig(
                name=str(name),
                mirror=str(spec.get("mirror", "")),
                address=str(spec.get("address", "")),
                email=_bool(spec.get("email", False), f"lists.{name}.email"),
                cc_list=_bool(spec.get("cc_list", True), f"lists.{name}.cc_list"),
                cc=tuple(str(c) for c in spec.get("cc", ()) or ()),
                wait_seconds=float(spec.get("wait_seconds", 6 * 3600)),
                tree=str(spec["tree"]) if spec.get("tree") else None,
                trusted=_strings(spec.get("trusted"), f"lists.{name}.trusted"),
                mail_clean=_bool(spec.get("mail_clean", False), f"lists.{name}.mail_clean"),
                cc_thread=_bool(spec.get("cc_thread", True), f"lists.{name}.cc_thread"),
                trees=_strings(spec.get("trees"), f"lists.{name}.trees"),
            )
        )
    trees = _trees(data.get("trees"))
    known = {t.name for t in trees}
    for lst in lists:
        unknown = [t for t in lst.trees if t not in known]
        if unknown:
            raise InputError(f"lists.{lst.name}.trees names no configured tree: {unknown[0]}")
    repos = []
    for name, spec in (data.get("repos") or {}).items():
        if not isinstance(spec, dict) or not spec.get("url"):
            raise InputError(f"repos.{name} needs a url")
        to = spec.get("email_to") or ()
        email_to = (str(to),) if isinstance(to, str) else tuple(str(a) for a in to)
        email = _bool(spec.get("email", False), f"repos.{name}.email")
        if email and not email_to:
            raise InputError(f"repos.{name}.email is true but repos.{name}.email_to is empty")
        max_commits = int(spec.get("max_commits", 50))
        if max_commits < 1:
            raise InputError(f"repos.{name}.max_commits must be 1 or more")
        repos.append(
            RepoConfig(
                name=str(name),
                url=str(spec["url"]),
                email=email,
                email_to=email_to,
                max_commits=max_commits,
            )
        )
    pub = data.get("publish") or {}
    smtp = None
    if pub.get("smtp"):
        s = pub["smtp"]
        smtp = SmtpConfig(
            host=str(s.get("host", "127.0.0.1")),
            port=int(s.get("port", 25)),
            starttls=_bool(s.get("starttls", False), "publish.smtp.starttls"),
            user=str(s.get("user", "")),
            password=env.get("BOT_SMTP_PASSWORD", ""),
            timeout=float(s.get("timeout", 30.0)),
        )
    pw = None
    if pub.get("patchwork"):
        p = pub["patchwork"]
        pw = PatchworkConfig(
            url=str(p.get("url", "")).rstrip("/"),
            project=str(p.get("project", "")),
            token=env.get("BOT_PATCHWORK_TOKEN", ""),
            context=str(p.get("context", "mm-lifecycle")),
        )
    hook = data.get("webhook") or {}
    if not isinstance(hook, dict):
        raise InputError("webhook must be a mapping")
    web = data.get("web") or {}
    if not isinstance(web, dict):
        raise InputError("web must be a mapping")
    return ServiceConfig(
        lists=tuple(lists),
        repos=tuple(repos),
        trees=trees,
        dry_run=_bool(pub.get("dry_run", True), "publish.dry_run"),
        from_addr=str(pub.get("from", ServiceConfig.from_addr)),
        smtp=smtp,
        maildir=str(pub["maildir"]) if pub.get("maildir") else None,
        patchwork=pw,
        webhook_secret=env.get("BOT_WEBHOOK_SECRET", ""),
        gitlab_token=env.get("BOT_GITLAB_TOKEN", ""),
        webhook_max_bytes=int(hook.get("max_bytes", 1024 * 1024)),
        webhook_header_timeout=_positive(hook, "header_timeout", 10.0),
        webhook_read_timeout=_positive(hook, "read_timeout", 10.0),
        webhook_keep_alive=int(_positive(hook, "keep_alive", 5)),
        webhook_max_connections=int(_positive(hook, "max_connections", 64)),
        webhook_max_header_bytes=int(_positive(hook, "max_header_bytes", 16 * 1024)),
        data_dir=Path(str(data.get("data_dir") or env.get("BOT_DATA_DIR", ".bot-data"))),
        batch_size=int(data.get("batch_size", 200)),
        review_url=str(pub.get("review_url", "")),
        web_dismiss=_bool(web.get("dismiss", False), "web.dismiss"),
        web_token=env.get("BOT_WEB_TOKEN", ""),
    )


def load_service_config(path: str | None = None) -> ServiceConfig:
    """Read `path` (default `BOT_SERVICE_CONFIG`); no file means every default."""
    path = path or os.environ.get("BOT_SERVICE_CONFIG")
    if not path:
        return parse_config({})
    try:
        data = load_yaml(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise InputError(f"cannot read service config: {exc.strerror}", source=path) from exc
    except yaml.YAMLError as exc:
        raise InputError(f"service config is not valid YAML: {exc}", source=path) from exc
    if not isinstance(data, dict):
        raise InputError("service config must be a mapping", source=path)
    try:
        return parse_config(data)
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad service config: {exc}", source=path) from exc


__all__ = [
    "ListConfig",
    "PatchworkConfig",
    "RepoConfig",
    "ServiceConfig",
    "SmtpConfig",
    "TreeConfig",
    "load_service_config",
    "parse_config",
]

"""A flag that decides an exit's cleanup, no longer set on one path.

`cleanup-flag-unset` (MMLC007): functions remember on which paths they took
something with a local flag (`bool page_in_pagecache = false; ...
page_in_pagecache = true;`) and let the exit decide by it (`out: if
(!page_in_pagecache) restore_reserve_on_error(...);`). When the patch removes a
`flag = true;` and sets the flag on fewer places than before, the path that
went through the removed assignment now reaches the exit with the flag unset:
the exit runs the undo or release the flag used to skip there (a reservation
restored twice, a put of what the path never took), or skips the one it used
to run. A flag renamed by the patch is followed through the exit's test of it.

The exit's call is a release (vocabulary put/free/destroy roles, a lifecycle
name) or an undo (`restore`, `cancel`, `unreserve`, `uncharge`...: the
bot.analyze.errpaths words). Registered into bot.analyze.rules_match.MATCHERS
when imported.
"""

from __future__ import annotations

import re

from bot.analyze.api import PUT_ROLES, RELEASE_ROLES
from bot.analyze.flow import Assign, Call, Flow
from bot.analyze.naming import UNDO_CALL, split_verb
from bot.analyze.rules_match import MATCHERS, Env, Hit, Matcher, Side

_SET = frozenset({"true", "1"})
_FLAG = re.compile(r"!?\(?\s*([A-Za-z_]\w*)\s*\)?")


def _cleanup(env: Env, call: Call) -> bool:
    if any(r.role in PUT_ROLES | RELEASE_ROLES for r in env.vocab.roles_of(call.name)):
        return True
    verb = split_verb(call.name)
    if verb is not None and verb[0] in ("put", "free", "destroy", "release"):
        return True
    return UNDO_CALL.search(call.name) is not None


def _sets(flow: Flow, flag: str) -> list[int]:
    """Lines where `flow` sets `flag` to true."""
    return sorted(
        ev.line
        for n in flow.nodes.values()
        for ev in n.events
        if isinstance(ev, Assign) and ev.lhs.strip() == flag and ev.rhs.strip() in _SET
    )


def _flag_tests(call: Call) -> list[tuple[str, bool]]:
    """(flag, negated) for each guard of `call` that is a plain flag test."""
    out: list[tuple[str, bool]] = []
    for guard in call.guards:
        g = "".join(guard.split())
        m = _FLAG.fullmatch(g)
        if m is not None:
            out.append((m.group(1), g.startswith("!")))
    return out


def _successor(cleanup: Call, pre: Flow, post: Flow, flag: str, negated: bool) -> str | None:
    """The flag the patched function tests before the same cleanup: `flag`
    itself, or the one new flag test there (the flag renamed)."""
    after = [t for d in post.calls if d.name == cleanup.name for t in _flag_tests(d)]
    if (flag, negated) in after:
        return flag
    before = {f for d in pre.calls if d.name == cleanup.name for f, _ in _flag_tests(d)}
    new = {f for f, neg in after if neg == negated and f not in before}
    return next(iter(new)) if len(new) == 1 else None


def cleanup_flag_unset(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A `flag = true;` removed while the exit still decides a cleanup by the
    flag and the patch sets it on fewer places than before."""
    if pre.flow is None or post.flow is None or pre.flow.name != post.flow.name:
        return []
    if not pre.removed_lines:
        return []
    hits: list[Hit] = []
    seen: set[str] = set()
    for c in pre.flow.calls:
        if not _cleanup(env, c):
            continue
        for flag, negated in _flag_tests(c):
            sets = _sets(pre.flow, flag)
            gone = [ln for ln in sets if ln in pre.removed_lines]
            if not gone or flag in seen:
                continue
            # the same cleanup after the patch, tested on the flag or its new name
            renamed = _successor(c, pre.flow, post.flow, flag, negated)
            if renamed is None or len(_sets(post.flow, renamed)) >= len(sets):
                continue
            seen.add(flag)
            state = "unset" if negated else "set"
            hits.append(
                Hit(
                    key=("cleanup-flag-unset", c.name, flag),
                    line=None,
                    removed_line=gone[0],
                    fields={
                        "function": post.flow.name,
                        "flag": flag if renamed == flag else f"{flag} (now {renamed})",
                        "cleanup": c.text,
                        "test": f"{'!' if negated else ''}{renamed}",
                        "effect": "now runs" if negated else "now skips",
                    },
                    evidence=(
                        f"before: `{flag} = true;` at {pre.file}:{gone[0]}, one of "
                        f"{len(sets)} places that set it",
                        f"after: {len(_sets(post.flow, renamed))} place(s) set {renamed}, and "
                        f"`{c.text}` still runs only if `{'!' if negated else ''}{renamed}`",
                        f"on the path through line {gone[0]} the flag is left {state}",
                    ),
                    variant="cleanup-flag-unset",
                )
            )
    return hits


MATCHERS["cleanup-flag-unset"] = Matcher(
    "cleanup-flag-unset", "change", cleanup_flag_unset, cleanup_flag_unset.__doc__ or ""
)

__all__ = ["cleanup_flag_unset"]

"""A free that now frees a pointer recomputed from another object.

`free-target-recomputed` (MMLC003): a free or destroy of the pointer the
function was given or made (`pmd_free(&init_mm, pmd_start)`) becomes a free of
an expression computed from some other object through a conversion
(`pmd_free(&init_mm, (pmd_t *)page_to_virt(pud_page(*pud)))`), while the
pointer it used to free is still there. Where the two differ (another layout,
another configuration, a slab-backed table), the object the function owns is
not freed and the recomputed one is freed a second time by its real owner: a
leak and a double free. The review asks why the pointer it holds is not the
one it frees.

Release calls come from the vocabulary (free, destroy and rcu_free roles) or
from a lifecycle name (`*_free`, `*_destroy`, `*_release`: bot.analyze.infer).
Registered into bot.analyze.rules_match.MATCHERS when imported.
"""

from __future__ import annotations

import re

from bot.analyze.api import RELEASE_ROLES
from bot.analyze.entry_locks import section_params
from bot.analyze.flow import Assign, Call, Flow, norm_object
from bot.analyze.naming import split_verb
from bot.analyze.rules_match import MATCHERS, Env, Hit, Matcher, Side, _loc

_IDENT = re.compile(r"[A-Za-z_]\w*")
_NAMED_RELEASE = frozenset({"free", "destroy", "release"})


def _release_arg(env: Env, call: Call) -> int | None:
    """The index of the object a release call frees: the vocabulary's, -1 when
    only its name says it releases (any argument may be the object), None when
    it is no release."""
    roles = [r for r in env.vocab.roles_of(call.name) if r.role in RELEASE_ROLES]
    if roles:
        return roles[0].object_arg
    verb = split_verb(call.name)
    return -1 if verb is not None and verb[0] in _NAMED_RELEASE else None


def _names(expr: str) -> set[str]:
    return set(_IDENT.findall(re.sub(r"\(\s*(?:const\s+)?(?:struct\s+)?\w+\s*\*+\s*\)", "", expr)))


def _aliases(flow: Flow, var: str) -> set[str]:
    """Right-hand sides assigned to `var` or from it in `flow` (squashed)."""
    out: set[str] = set()
    for n in flow.nodes.values():
        for ev in n.events:
            if isinstance(ev, Assign):
                lhs, rhs = "".join(ev.lhs.split()), "".join(ev.rhs.split())
                if lhs == var:
                    out.add(rhs)
                elif rhs == var:
                    out.add(lhs)
    return out


def free_target_recomputed(env: Env, pre: Side, post: Side) -> list[Hit]:
    """A release of a pointer the function holds now releases an expression
    computed from another object, and the pointer is still there."""
    if pre.flow is None or post.flow is None or pre.flow.name != post.flow.name:
        return []
    if not pre.removed_lines or not post.removed_lines:
        return []
    added = [c for c in post.flow.calls if c.line in post.removed_lines]
    # diff-only, the hunk header may be all that shows the parameters
    params = set(post.flow.params) - {""} or set(section_params(post.diff, post.flow.name) or ())
    hits: list[Hit] = []
    for c in pre.flow.calls:
        if c.line not in pre.removed_lines or c.in_condition:
            continue
        index = _release_arg(env, c)
        if index is None:
            continue
        for d in added:
            if d.name != c.name or len(d.args) != len(c.args):
                continue
            differ = [
                i
                for i, (a, b) in enumerate(zip(c.args, d.args, strict=True))
                if norm_object(a) != norm_object(b)
            ]
            if len(differ) != 1 or index not in (-1, differ[0]):
                continue
            old, new = c.args[differ[0]].strip(), d.args[differ[0]].strip()
            if not _IDENT.fullmatch(old) or "(" not in new.replace(" ", "").lstrip("("):
                continue  # only a held pointer replaced by a computed one
            if old in _names(new):
                continue  # still computed from the pointer it held
            if old not in params and not any(
                old in _names(" ".join(k.args)) for k in post.flow.calls if k is not d
            ):
                continue  # the pointer is gone from the function: a rewrite
            squashed = "".join(new.split())
            if squashed in _aliases(post.flow, old) or any(
                squashed in _aliases(post.flow, n) for n in _names(new)
            ):
                continue  # the function says the two are the same pointer
            hits.append(
                Hit(
                    key=("free-target-recomputed", c.name, old),
                    line=d.line,
                    removed_line=c.line,
                    fields={
                        "function": post.flow.name,
                        "object": old,
                        "free": d.text,
                        "old": c.text,
                        "new": new,
                    },
                    evidence=(
                        f"before: `{c.text}` at {_loc(pre.file, c)} released {old}",
                        f"after: `{d.text}` at {_loc(post.file, d)} releases a pointer "
                        f"computed from another object, and {old} is still used",
                    ),
                    variant="free-target-recomputed",
                )
            )
            break
    return hits


MATCHERS["free-target-recomputed"] = Matcher(
    "free-target-recomputed",
    "change",
    free_target_recomputed,
    free_target_recomputed.__doc__ or "",
)

__all__ = ["free_target_recomputed"]

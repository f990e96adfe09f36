"""The lifecycle rules engine: rules as data, run differentially over a series.

    load_rules(rules_dir)   every rules/<ID>/rule.yaml, checked against rules/rule.schema.json
    load_checks(settings)   one Check per enabled rule (settings.enabled_rules/disabled_rules)

A rule names matchers (bot.analyze.rules_match.MATCHERS) and words what they find.
For each patch, each matcher runs on the pre- and post-image of every function the
patch touches, with calls followed into helpers the series or the tree defines.
A finding is INTRODUCED when only the post-image has it, FIXED when only the
pre-image had it, PRE_EXISTING when both do; one introduced by patch i and gone
after patch j is FIXED_IN_SERIES with fixed_by=j. Matchers find; rule.yaml words.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from bot import cache
from bot.analyze.api import Vocabulary, load_schema, load_vocabulary
from bot.analyze.changes import (
    changed_calls,
    changed_lines,
    one_per_line,
    post_line_of_removed,
    shown_lines,
)
from bot.analyze.context import Check, PatchAnalysis, SeriesAnalysis
from bot.analyze.flow_source import SourceView, flow_of
from bot.analyze.infer import extend_vocabulary
from bot.analyze.rules_match import MATCHERS, Env, Hit, Side, member_declarations
from bot.config import Settings
from bot.errors import InputError, UsageError
from bot.model import (
    ChangeKind,
    Confidence,
    FileDiff,
    Finding,
    FunctionChange,
    LineKind,
    Severity,
    Status,
)
from bot.yamlio import load_yaml

RULE_FILE = "rule.yaml"
# libyaml's loader when present: the pure-Python one costs ~0.5 s per review.


def _yaml(text: str) -> Any:
    return load_yaml(text)


SCHEMA_FILE = "rule.schema.json"


@dataclass(frozen=True)
class Variant:
    """Wording for one kind of hit of a rule (rule.yaml `variants:`)."""

    message: str | None = None
    question: str | None = None
    suggestion: str | None = None
    confidence: str | None = None
    severity: str | None = None


@dataclass(frozen=True)
class Rule:
    """One rules/<ID>/rule.yaml."""

    id: str
    symbol: str
    name: str
    severity: str
    confidence: str
    message: str
    question: str
    suggestion: str
    rationale: str
    references: tuple[str, ...]
    matchers: tuple[str, ...]
    variants: Mapping[str, Variant]
    folder: Path

    def examples(self, prefix: str) -> list[Path]:
        return sorted(self.folder.glob(f"{prefix}*.patch"))


def _rule_schema(rules_dir: Path) -> dict[str, Any]:
    return load_schema(rules_dir / SCHEMA_FILE, "rule")


def rule_folders(rules_dir: Path) -> list[Path]:
    """Every folder under rules/ holding a rule.yaml (api/ and scenarios/ are data)."""
    return sorted(p.parent for p in rules_dir.glob(f"*/{RULE_FILE}"))


def _schema_errors(schema: dict[str, Any], doc: Any) -> list[Any]:
    """jsonschema's errors for `doc`, in document order: asked only when the quick
    check (bot.schema_check) cannot prove `doc` valid, since jsonschema costs
    ~0.06 s to import."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    return sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))


def validate_rules(rules_dir: Path, *, examples: bool = True) -> list[str]:
    """Check every rule.yaml against the schema and the engine; one line per problem.

    With `examples` (what `bot rules validate` does) a rule must also ship a
    README.md and at least one bad and one good example patch."""
    return _checked_rules(rules_dir, examples=examples)[0]


def _checked_rules(
    rules_dir: Path, *, examples: bool
) -> tuple[list[str], list[tuple[Path, dict[str, Any]]]]:
    """(problems, (folder, parsed rule.yaml) of every rule): each file is read and
    parsed once, for the check and for building the rules."""
    docs: list[tuple[Path, dict[str, Any]]] = []
    import yaml

    from bot.schema_check import conforms

    problems: list[str] = []
    try:
        schema = _rule_schema(rules_dir)
    except InputError as exc:
        return [exc.one_line()], docs
    ids: dict[str, str] = {}
    symbols: dict[str, str] = {}
    folders = rule_folders(rules_dir)
    if not folders:
        problems.append(f"{rules_dir}: no rules (*/rule.yaml)")
    for folder in folders:
        rel = folder.name
        try:
            doc = _yaml((folder / RULE_FILE).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            problems.append(f"{rel}/{RULE_FILE}: cannot parse: {' '.join(str(exc).split())}")
            continue
        errors = [] if conforms(schema, doc) else _schema_errors(schema, doc)
        for err in errors:
            where = "/".join(str(p) for p in err.absolute_path) or "(top)"
            problems.append(f"{rel}/{RULE_FILE}: {where}: {err.message}")
        if errors or not isinstance(doc, dict):
            continue
        docs.append((folder, doc))
        rid = doc["id"]
        if rid != rel:
            problems.append(f"{rel}/{RULE_FILE}: id {rid} does not match its folder name")
        for seen, value, what in ((ids, rid, "id"), (symbols, doc["symbol"], "symbol")):
            if value in seen:
                problems.append(f"{rel}/{RULE_FILE}: {what} {value} already used by {seen[value]}")
            seen[value] = rel
        for m in doc["match"]:
            if m["matcher"] not in MATCHERS:
                problems.append(f"{rel}/{RULE_FILE}: unknown matcher {m['matcher']!r}")
        if examples:
            for kind in ("bad", "good"):
                if not list(folder.glob(f"{kind}*.patch")):
                    problems.append(f"{rel}: no {kind}.patch example")
            if not (folder / "README.md").is_file():
                problems.append(f"{rel}: no README.md")
        fields = string.Formatter()
        for key in ("message", "question", "suggestion"):
            try:
                list(fields.parse(doc[key]))
            except ValueError as exc:
                problems.append(f"{rel}/{RULE_FILE}: {key}: bad template: {exc}")
    return problems, docs


def load_rules(rules_dir: Path) -> list[Rule]:
    """Every rule, validated; raises InputError (one line) on a broken rule file.
    Cached until a rule file changes, in the process and in bot.cache."""
    rules_dir = Path(rules_dir).resolve()
    files = [*rules_dir.glob(f"*/{RULE_FILE}"), rules_dir / SCHEMA_FILE]
    return list(_load_rules_cached(rules_dir, cache.stamp_files(files)))


@lru_cache(maxsize=8)
def _load_rules_cached(rules_dir: Path, stamp: str) -> tuple[Rule, ...]:
    # the stamp is the key: an edited rule file reloads, here and in bot.cache
    return cache.cached("rules", stamp, lambda: _read_rules(rules_dir))


def _read_rules(rules_dir: Path) -> tuple[Rule, ...]:
    problems, docs = _checked_rules(rules_dir, examples=False)
    if problems:
        more = (
            f" (and {len(problems) - 1} more; run `bot rules validate`)"
            if len(problems) > 1
            else ""
        )
        raise InputError(f"invalid rules: {problems[0]}{more}", source=str(rules_dir))
    rules: list[Rule] = []
    for folder, doc in docs:
        variants = {
            name: Variant(**dict(spec or {})) for name, spec in (doc.get("variants") or {}).items()
        }
        rules.append(
            Rule(
                id=doc["id"],
                symbol=doc["symbol"],
                name=doc["name"],
                severity=doc["severity"],
                confidence=doc["confidence"],
                message=doc["message"].strip(),
                question=doc["question"].strip(),
                suggestion=doc["suggestion"].strip(),
                rationale=doc["rationale"].strip(),
                references=tuple(doc.get("references") or ()),
                matchers=tuple(m["matcher"] for m in doc["match"]),
                variants=variants,
                folder=folder,
            )
        )
    return tuple(rules)


def select_rules(rules: Sequence[Rule], settings: Settings) -> list[Rule]:
    """The rules settings enable (all by default) minus the disabled ones; an
    unknown rule ID or symbol is a usage error."""
    known = {r.id for r in rules} | {r.symbol for r in rules}
    for rid in (*settings.enabled_rules, *settings.disabled_rules):
        if rid not in known:
            raise UsageError(f"unknown rule {rid!r} (see `bot rules list`)")
    enabled = set(settings.enabled_rules)
    disabled = set(settings.disabled_rules)
    return [
        r
        for r in rules
        if (not enabled or r.id in enabled or r.symbol in enabled)
        and r.id not in disabled
        and r.symbol not in disabled
    ]


# --------------------------------------------------------------------------- preparing a series


@dataclass
class _PatchSides:
    pa: PatchAnalysis
    pre: SourceView
    post: SourceView


@dataclass
class _Prepared:
    """What every rule shares for one series: views and the calls the series adds."""

    env: Env
    patches: list[_PatchSides]
    notes: list[str] = field(default_factory=list)
    # both sides of each touched function, built once for every rule
    _sides: dict[int, tuple[FunctionChange, Side, Side]] = field(default_factory=dict)

    def sides(self, ps: _PatchSides, ch: FunctionChange) -> tuple[Side, Side]:
        got = self._sides.get(id(ch))
        if got is None or got[0] is not ch:
            got = (ch, *_sides(ps, ch))
            self._sides[id(ch)] = got
        return got[1], got[2]


def _views(ctx: SeriesAnalysis) -> list[_PatchSides]:
    state: dict[str, str | None] = {}
    out: list[_PatchSides] = []
    for pa in ctx.patches:
        pre_files = dict(state)
        post_files = dict(state)
        for img in pa.images.images:
            pre_files[img.path] = img.pre
            post_files[img.path] = img.post
        for diff in pa.images.files:
            if diff.old_path and diff.new_path and diff.old_path != diff.new_path:
                renamed = pa.images.image(diff.new_path)
                if renamed is not None:
                    pre_files[diff.old_path] = renamed.pre
        # a partial image's lines the diff shows (a blank one is the code's own)
        pre_shown: dict[str, frozenset[int]] = {}
        post_shown: dict[str, frozenset[int]] = {}
        if pa.partial:
            for diff in pa.images.files:
                shown_pre, shown_post = shown_lines(diff)
                for path in {diff.path, diff.old_path or diff.path}:
                    pre_shown[path] = shown_pre
                post_shown[diff.path] = shown_post
        out.append(
            _PatchSides(
                pa,
                SourceView(pre_files, ctx.tree_root, pa.partial, shown=pre_shown),
                SourceView(post_files, ctx.tree_root, pa.partial, shown=post_shown),
            )
        )
        for img in pa.images.images:
            state[img.path] = img.post
    return out


_PREPARED: dict[int, tuple[SeriesAnalysis, _Prepared]] = {}


def _prepare(ctx: SeriesAnalysis, settings: Settings, vocab: Vocabulary | None = None) -> _Prepared:
    hit = _PREPARED.get(id(ctx))
    if hit is not None and hit[0] is ctx:
        return hit[1]
    patches = _views(ctx)
    depth = max(settings.call_depth, 0)
    # The data vocabulary plus what the series' own code says of the names it
    # calls (bodies in the images and the tree, else naming conventions).
    flows = [
        f
        for ps in patches
        for ch in ps.pa.changes
        for fn in (ch.pre, ch.post)
        if fn is not None and (f := flow_of(fn)) is not None
    ]
    views = [v for ps in reversed(patches) for v in (ps.post, ps.pre)]
    data = vocab if vocab is not None else load_vocabulary(settings.rules_dir)
    vocab, inference = extend_vocabulary(data, views, flows, depth)
    added, removed = changed_calls(ch for ps in patches for ch in ps.pa.changes)
    members = member_declarations(
        hl.text
        for ps in patches
        for diff in ps.pa.images.files
        for h in diff.hunks
        for hl in h.lines
        if hl.kind is LineKind.ADDED
    )
    env = Env(
        vocab=vocab,
        depth=depth,
        added=added,
        removed=removed,
        infer=inference,
        members_added=members,
    )
    prepared = _Prepared(env, patches)
    # Only the latest few series: a long-running worker must not grow without bound.
    if len(_PREPARED) > 4:
        _PREPARED.clear()
    _PREPARED[id(ctx)] = (ctx, prepared)
    return prepared


# --------------------------------------------------------------------------- lines


# --------------------------------------------------------------------------- findings


class _SafeFields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _render(template: str, fields: Mapping[str, str]) -> str:
    # a family the bot inferred from names reads as the kernel's own word
    shown = {k: v.replace("inferred:", "") for k, v in fields.items()}
    return " ".join(template.format_map(_SafeFields(shown)).split())


@dataclass(frozen=True)
class _Raw:
    """A hit with where it came from, before statuses are decided."""

    patch: int
    change: FunctionChange
    hit: Hit
    side: str  # "pre" or "post": which image `hit.line` refers to

    @property
    def key(self) -> tuple[str, ...]:
        return (self.change.file, self.change.name, *self.hit.key)


def _finding(
    rule: Rule, raw: _Raw, status: Status, diff: FileDiff | None, fixed_by: int | None
) -> Finding:
    hit = raw.hit
    v = rule.variants.get(hit.variant) if hit.variant else None
    fields = {"rule": rule.id, "file": raw.change.file, **hit.fields}
    message = _render((v.message if v and v.message else rule.message), fields)
    question = _render((v.question if v and v.question else rule.question), fields)
    suggestion = _render((v.suggestion if v and v.suggestion else rule.suggestion), fields)
    line = hit.line
    if hit.removed_line is not None:
        line = (
            post_line_of_removed(diff, hit.removed_line) if raw.side == "post" else hit.removed_line
        )
    return Finding(
        rule_id=rule.id,
        symbol=rule.symbol,
        severity=Severity(v.severity if v and v.severity else rule.severity),
        confidence=Confidence(v.confidence if v and v.confidence else rule.confidence),
        status=status,
        message=message,
        file=raw.change.file,
        line=line,
        function=raw.change.name,
        question=question,
        evidence=hit.evidence,
        suggestion=suggestion,
        patch_number=raw.patch,
        fixed_by=fixed_by,
    )


def _sides(ps: _PatchSides, ch: FunctionChange) -> tuple[Side, Side]:
    pre_flow = flow_of(ch.pre) if ch.pre is not None else None
    post_flow = flow_of(ch.post) if ch.post is not None else None
    pre_file = ch.pre.file if ch.pre is not None else ch.file
    diff = next((d for d in ps.pa.images.files if d.path == ch.file), None)
    removed, added = changed_lines(diff)
    changed = frozenset(c.name for c in ps.pa.changes)
    shown_pre, shown_post = shown_lines(diff) if ps.pa.partial else (None, None)
    return (
        Side(pre_flow, ps.pre, pre_file, removed, changed, shown_pre, diff),
        Side(post_flow, ps.post, ch.file, added, changed, shown_post, diff),
    )


def _moved(patches: Sequence[_PatchSides]) -> dict[str, Side]:
    """Functions the series removes in one place and adds in another (a move
    between files, or within one): name -> the side holding the old body. A moved
    function is compared with its old body, not reviewed as new code."""
    removed: dict[str, Side] = {}
    added: set[str] = set()
    for ps in patches:
        for ch in ps.pa.changes:
            if ch.pre is not None and ch.post is None:
                diff = next((d for d in ps.pa.images.files if d.path == ch.file), None)
                removed_lines, _ = changed_lines(diff)
                changed = frozenset(c.name for c in ps.pa.changes)
                removed[ch.name] = Side(
                    flow_of(ch.pre), ps.pre, ch.pre.file, removed_lines, changed
                )
            elif ch.pre is None and ch.post is not None:
                added.add(ch.name)
    return {n: side for n, side in removed.items() if n in added and side.flow is not None}


def _table_change(diff: FileDiff, hit: Hit) -> FunctionChange:
    """The change a table hit belongs to: the table (`struct type name`), in
    the place of a function."""
    return FunctionChange(
        diff.path, hit.fields.get("function", "?"), ChangeKind.MODIFIED, None, None
    )


def run_rule(
    rule: Rule,
    ctx: SeriesAnalysis,
    settings: Settings,
    notes: list[str] | None = None,
    vocab: Vocabulary | None = None,
) -> list[Finding]:
    """All findings of one rule over the series, with their differential status.
    What the rule could not look at is appended to `notes`. `vocab`: the
    vocabulary the checks were loaded with (else it is loaded here)."""
    prep = _prepare(ctx, settings, vocab)
    env = prep.env
    introduced: list[_Raw] = []
    fixed: list[_Raw] = []
    undone: list[_Raw] = []
    existing: list[_Raw] = []
    moved = _moved(prep.patches)
    for ps in prep.patches:
        for ch in ps.pa.changes:
            if ch.post is None and ch.name in moved:
                continue  # judged where it moved to, against this body
            try:
                pre, post = prep.sides(ps, ch)
                if ch.pre is None and ch.name in moved:
                    pre = moved[ch.name]
            except RecursionError:
                # hostile or generated code nested deeper than Python's stack: skip
                # this function, say so, and keep checking the others
                if notes is not None:
                    notes.append(f"patch {ps.pa.number}: {ch.name}() nested too deeply; skipped")
                continue
            if (ch.pre is not None and pre.flow is None) or (
                ch.post is not None and post.flow is None
            ):
                if notes is not None:
                    notes.append(
                        f"patch {ps.pa.number}: {ch.name}() could not be analysed "
                        "(unparsable or nested too deeply); skipped"
                    )
                continue
            for name in rule.matchers:
                m = MATCHERS[name]
                if m.kind == "table":
                    continue  # run once per file diff, below
                if m.kind == "change":
                    introduced += [_Raw(ps.pa.number, ch, h, "post") for h in m.fn(env, pre, post)]
                    # The reverse of a change (a destroy or put gained) is not a fix of
                    # anything by itself; it only counts as one for a problem an
                    # earlier patch of the series introduced.
                    undone += [_Raw(ps.pa.number, ch, h, "pre") for h in m.fn(env, post, pre)]
                    continue
                before = {h.key: h for h in m.fn(env, pre, post)} if pre.flow else {}
                after = {h.key: h for h in m.fn(env, post, pre)} if post.flow else {}
                for k, h in after.items():
                    (existing if k in before else introduced).append(
                        _Raw(ps.pa.number, ch, h, "post")
                    )
                for k, h in before.items():
                    if k not in after:
                        fixed.append(_Raw(ps.pa.number, ch, h, "pre"))
    tables = [MATCHERS[n] for n in rule.matchers if MATCHERS[n].kind == "table"]
    for ps in prep.patches if tables else ():
        for fdiff in ps.pa.images.files:
            removed, added = changed_lines(fdiff)
            pre = Side(None, ps.pre, fdiff.old_path or fdiff.path, removed, diff=fdiff)
            post = Side(None, ps.post, fdiff.path, added, diff=fdiff)
            for m in tables:
                introduced += [
                    _Raw(ps.pa.number, _table_change(fdiff, h), h, "post")
                    for h in m.fn(env, pre, post)
                ]
    if notes is not None:
        said = prep.env.infer.note() if prep.env.infer is not None else ""
        if said and "path-reference-leak" in rule.matchers:
            notes.append(said)
        for ps in prep.patches:
            if ps.pre.truncated or ps.post.truncated:
                notes.append(
                    f"patch {ps.pa.number}: call graph too large to follow completely; "
                    "some helpers were not followed"
                )
    diffs = {(ps.pa.number, d.path): d for ps in prep.patches for d in ps.pa.images.files}
    findings: list[Finding] = []
    fixed_left = list(fixed) + undone
    intro_keys: set[tuple[str, ...]] = set()
    for raw in introduced:
        if raw.key in intro_keys:
            continue
        intro_keys.add(raw.key)
        later = next((f for f in fixed_left if f.key == raw.key and f.patch > raw.patch), None)
        diff = diffs.get((raw.patch, raw.change.file))
        if later is not None:
            fixed_left.remove(later)
            findings.append(_finding(rule, raw, Status.FIXED_IN_SERIES, diff, later.patch))
        else:
            findings.append(_finding(rule, raw, Status.INTRODUCED, diff, None))
    seen: set[tuple[str, ...]] = set(intro_keys)
    for raw in fixed_left:
        if raw.key in seen or raw in undone:
            continue
        seen.add(raw.key)
        findings.append(
            _finding(rule, raw, Status.FIXED, diffs.get((raw.patch, raw.change.file)), None)
        )
    for raw in existing:
        if raw.key in seen:
            continue
        seen.add(raw.key)
        findings.append(
            _finding(rule, raw, Status.PRE_EXISTING, diffs.get((raw.patch, raw.change.file)), None)
        )
    return one_per_line(findings)


class RuleCheck:
    """One rule as a pipeline Check."""

    def __init__(self, rule: Rule, vocab: Vocabulary | None = None) -> None:
        self.rule = rule
        self.vocab = vocab  # loaded once with the rules: one vocabulary per review
        self.name = rule.id
        self.last_notes: tuple[str, ...] = ()

    def run(self, ctx: SeriesAnalysis, settings: Settings) -> Sequence[Finding]:
        notes: list[str] = []
        findings = run_rule(self.rule, ctx, settings, notes, self.vocab)
        self.last_notes = tuple(dict.fromkeys(notes))
        return findings


def load_checks(settings: Settings) -> list[Check]:
    """One Check per rule that settings enable (all by default)."""
    vocab = load_vocabulary(settings.rules_dir)  # a broken one is an input error up front
    rules = select_rules(load_rules(settings.rules_dir), settings)
    return [RuleCheck(r, vocab) for r in rules]


__all__ = [
    "Rule",
    "RuleCheck",
    "Variant",
    "load_checks",
    "load_rules",
    "post_line_of_removed",
    "rule_folders",
    "run_rule",
    "select_rules",
    "validate_rules",
]

"""C function definitions in kernel source, and the functions a patch touches.

    parse_functions(text, path)  every function definition (tree-sitter-c, plus a
                                 brace-matching scan for what tree-sitter misses)
    find_function(text, path, name)
    call_graph(functions)        calls between the given functions
    touched_functions(images)    the functions each hunk changes, pre and post

Kernel code is full of macros tree-sitter cannot know: `list_for_each_entry(...) {`,
`SYSCALL_DEFINEn(name, ...)`, `__releases(x)` after the parameter list. Tree-sitter
recovers from most of them with ERROR nodes inside a function; what it cannot turn
into a `function_definition` at file scope is found by a lexical scan over the text
with comments, strings and preprocessor lines blanked out. Calls are read lexically
from that same blanked text, so macros used like calls count as calls (the
masking and the scan are in cscan.py).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from bot import cache
from bot.analyze.cscan import (
    CLOSER,
    IDENT_BEFORE,
    INLINE_WORDS,
    LABEL,
    NOT_CALLS,
    calls_in,
    clip,
    mask,
    normalise_name,
    scan_functions,
    ts_functions,
)
from bot.model import (
    CFunction,
    ChangeKind,
    FileDiff,
    FileImage,
    FunctionChange,
    Hunk,
    LineKind,
    PatchImages,
)

__all__ = [
    "C_SUFFIXES",
    "call_graph",
    "find_function",
    "function_name_from_section",
    "parse_functions",
    "touched_functions",
]

# Files whose hunks touched_functions looks into.
C_SUFFIXES = (".c", ".h")


def function_name_from_section(section: str) -> str | None:
    """The function a hunk header's section text (`static void foo(int x)`) names, or
    None when it is not a function head (a struct, a declaration ending in `;`)."""
    text = section.strip()
    if text and "(" not in text:
        return _name_from_cut_section(text)
    if not text or text.endswith(";") or "=" in text.split("(", 1)[0]:
        return None
    head = text.split("(", 1)[0]
    m = IDENT_BEFORE.search(head)
    if not m:
        return None
    name = m.group(1)
    if name in NOT_CALLS or head.lstrip().startswith("#"):
        return None
    return normalise_name(name, text[text.index("(") :])


# `diff -p` (quilt, akpm's -mm patches) cuts the section at 40 columns: a long
# head loses its parameter list (`static __always_inline void do_slab_free`).
CUT_SECTION = 39
_CUT_HEAD = re.compile(r"(?:[A-Za-z_]\w*[\s*]+)+\**([A-Za-z_]\w*)")
_TYPE_WORDS = frozenset(
    {
        "void",
        "int",
        "long",
        "char",
        "bool",
        "short",
        "unsigned",
        "signed",
        "const",
        "struct",
        "union",
        "enum",
        "static",
        "inline",
        "extern",
        "__init",
        "__always_inline",
        "noinline",
    }
)


def _name_from_cut_section(text: str) -> str | None:
    """The function a section cut before its `(` names: a head of storage and
    type words ending in an identifier, as long as `diff -p` cuts at. The name
    may itself be cut (a prefix of the real one); a partial image knows the
    function by it, as its hunks show no more."""
    if len(text) < CUT_SECTION or text.lstrip().startswith("#"):
        return None
    m = _CUT_HEAD.fullmatch(text)
    if m is None or m.group(1) in NOT_CALLS or m.group(1) in _TYPE_WORDS:
        return None
    first = text.split(maxsplit=1)[0]
    if first in ("struct", "union", "enum", "typedef") and len(text.split()) < 3:
        return None
    return m.group(1)


def function_at(text: str, path: str, line: int) -> str | None:
    """The name of the function of `text` whose definition spans `line`."""
    for f in parse_functions(text, path):
        if f.start_line <= line <= f.end_line:
            return f.name
    return None


def parse_functions(text: str, path: str) -> tuple[CFunction, ...]:
    """Every function definition in `text` (the file `path`), in file order."""
    return _parse_cached(text, path)


# Checks look up the same pre/post images again and again (find_function for each
# callee); parsing a 7000-line file takes a tenth of a second, hashing it microseconds.
# One review of a three-patch series asks for ~70 distinct texts (pre/post images and
# per-hunk segments of partial ones) in a cycle: a cache smaller than that misses on
# every call of the next pass.
@functools.lru_cache(maxsize=256)
def _parse_cached(text: str, path: str) -> tuple[CFunction, ...]:
    """parse_functions through bot.cache: a text parsed by an earlier review (a tree
    file, an unchanged image) is read back instead of parsed again."""
    return cache.cached("cfunc", cache.text_key(path, text), lambda: _parse(text, path))


def _parse(text: str, path: str) -> tuple[CFunction, ...]:
    """parse_functions without the caches: tree-sitter, then the lexical scan."""
    masked = mask(text)
    found = ts_functions(text)
    # Kernel functions start at column 0; a tree-sitter "definition" starting
    # indented is a loop macro (`list_for_each_entry(...) {`) in a partial image.
    lines = text.split("\n")
    found = [
        f
        for f in found
        if f.start < len(lines) and lines[f.start][:1] not in (" ", "\t") and f.name != ""
    ]
    line_starts = [0, *itertools.accumulate(len(line) + 1 for line in lines[:-1])]
    closers = [i for i, line in enumerate(lines) if line[:1] == "}" and CLOSER.match(line)]
    found = [clip(f, closers, line_starts) for f in found]
    spans = [(f.body_offset, f.end_offset) for f in found]
    for extra in scan_functions(masked):
        if not any(lo <= extra.body_offset < hi for lo, hi in spans):
            found.append(clip(extra, closers, line_starts))
    found.sort(key=lambda f: (f.start, f.body_offset))
    result: list[CFunction] = []
    for f in found:
        body = "\n".join(lines[f.start : f.end + 1])
        header = masked[line_starts[min(f.start, len(line_starts) - 1)] : f.body_offset]
        words = set(re.findall(r"[A-Za-z_]\w*", header.split("(", 1)[0]))
        result.append(
            CFunction(
                name=f.name,
                file=path,
                start_line=f.start + 1,
                end_line=f.end + 1,
                body=body,
                calls=calls_in(masked[f.body_offset : f.end_offset]),
                is_static="static" in words,
                is_inline=bool(words & INLINE_WORDS),
            )
        )
    return tuple(result)


def find_function(text: str, path: str, name: str) -> CFunction | None:
    """The first definition of `name` in `text`, or None."""
    if name not in text and not name.startswith(("sys_", "compat_sys_")):
        return None
    return next((f for f in parse_functions(text, path) if f.name == name), None)


def call_graph(functions: Sequence[CFunction]) -> dict[str, tuple[str, ...]]:
    """For each function, the calls it makes to other functions of the same set."""
    names = {f.name for f in functions}
    graph: dict[str, tuple[str, ...]] = {}
    for f in functions:
        calls = tuple(c for c in f.calls if c in names)
        prev = graph.get(f.name, ())
        graph[f.name] = tuple(dict.fromkeys(prev + calls))
    return graph


# --------------------------------------------------------------------------- touched


def _changed_lines(hunk: Hunk) -> tuple[list[int], list[int]]:
    """Pre-image lines removed and post-image lines added by one hunk (1-based).

    A pure insertion also marks the pre-image line just above it, so the pre-side
    function is found even when nothing was removed there."""
    pre = [ln.source_line for ln in hunk.lines if ln.kind is LineKind.REMOVED and ln.source_line]
    post = [ln.target_line for ln in hunk.lines if ln.kind is LineKind.ADDED and ln.target_line]
    return pre, post


def _enclosing(funcs: Sequence[CFunction], line: int) -> CFunction | None:
    """The function whose lines include `line`, if any."""
    for f in funcs:
        if f.start_line <= line <= f.end_line:
            return f
    return None


@functools.lru_cache(maxsize=64)
def _split_lines(text: str) -> tuple[str, ...]:
    """`text` split at newlines (once per image: every hunk of it asks)."""
    return tuple(text.split("\n"))


@functools.lru_cache(maxsize=4096)
def _body_calls(body: str) -> tuple[str, ...]:
    """The calls in a function body (the same partial body recurs per changed line)."""
    return calls_in(mask(body))


def _hunk_lines(text: str, start: int, length: int) -> tuple[list[str], int]:
    """Lines of `text` up to the hunk's last line, and the 0-based index of the first
    one kept: the hunk's own first line (or the end of a shorter text)."""
    head = list(_split_lines(text)[: start - 1 + length])
    return head, min(max(start - 1, 0), len(head))


def _shifted(funcs: Sequence[CFunction], lines: int) -> list[CFunction]:
    """`funcs` with their line numbers moved down by `lines`."""
    if not lines:
        return list(funcs)
    return [replace(f, start_line=f.start_line + lines, end_line=f.end_line + lines) for f in funcs]


def _is_comment_line(line: str) -> bool:
    """Whether a line is (part of) a comment, judged by its edges."""
    s = line.strip()
    return s.startswith(("*", "/*", "//")) or s.endswith("*/")


def _inside_named(lines: Sequence[str], changed: int) -> bool:
    """Whether hunk-relative line `changed` lies inside the function whose head the
    partial image does not show, judged by kernel indentation around it."""
    if any(line.startswith("}") for line in lines[:changed]):
        return False  # the function closed above the change
    for idx, line in enumerate(lines):
        if not line.strip() or _is_comment_line(line) or line.startswith("#"):
            continue
        if line.startswith("}"):  # idx >= changed here
            return not line.startswith("};")
        if line.rstrip() == "{":
            # the body's opening brace: the header's function starts right here
            return idx <= changed
        return idx <= changed and (line[:1] in (" ", "\t") or bool(LABEL.match(line)))
    return False


def _partial_functions(
    image_text: str, hunk: Hunk, pre_side: bool, path: str, changed: Sequence[int]
) -> list[tuple[CFunction, int, bool]]:
    """Functions enclosing the changed lines of one hunk in a partial image, each with
    the changed line that hit it and whether it continues from above the hunk
    (head not shown: named from the hunk's section header)."""
    start = hunk.source_start if pre_side else hunk.target_start
    length = hunk.source_length if pre_side else hunk.target_length
    if length == 0 or not changed:
        return []
    # One hunk alone, cut after its last line so a function it leaves open ends
    # with it; parsed without the lines above (line numbers shifted back after), so
    # the parse is as small as the hunk and the same hunk text parses once.
    head, keep_from = _hunk_lines(image_text, start, length)
    funcs = _shifted(parse_functions("\n".join(head[keep_from:]), path), keep_from)
    seg_lines = head[start - 1 : start - 1 + length]
    out: list[tuple[CFunction, int, bool]] = []
    header_name = function_name_from_section(hunk.section)
    for line in changed:
        f = _enclosing(funcs, line)
        continued = False
        if f is None and header_name is not None:
            first_start = min((g.start_line for g in funcs), default=start + length)
            if line < first_start and _inside_named(seg_lines, line - start):
                end = start + length - 1
                for idx, text in enumerate(seg_lines):
                    if text.startswith("}") and not text.startswith("};"):
                        end = start + idx
                        break
                body = "\n".join(seg_lines[: end - start + 1])
                f = CFunction(
                    name=header_name,
                    file=path,
                    start_line=start,
                    end_line=end,
                    body=body,
                    calls=_body_calls(body),
                )
                continued = True
        if f is not None:
            out.append((f, line, continued))
    return out


def _merge_partial(a: CFunction, b: CFunction, text: str) -> CFunction:
    """One function seen through two hunks of a partial image: span both."""
    lo, hi = min(a.start_line, b.start_line), max(a.end_line, b.end_line)
    body = "\n".join(text.split("\n")[lo - 1 : hi])
    return CFunction(
        name=a.name,
        file=a.file,
        start_line=lo,
        end_line=hi,
        body=body,
        calls=_body_calls(body),
        is_static=a.is_static or b.is_static,
        is_inline=a.is_inline or b.is_inline,
    )


@dataclass
class _Touch:
    """One definition a patch touches on one side, and the hunks that touch it."""

    fn: CFunction
    hunks: list[int]


def _side(diff: FileDiff, image: FileImage, pre_side: bool) -> list[_Touch]:
    """Touched definitions on one side of one file, in order of first touch.

    Two definitions of one name (an `#ifdef` pair) stay apart; a function seen
    through two hunks of a partial image, the second naming it only by its
    section header, is one definition spanning both."""
    text = image.pre if pre_side else image.post
    touched: list[_Touch] = []
    if text is None:
        return touched
    full = None if image.partial else parse_functions(text, diff.path)
    for index, hunk in enumerate(diff.hunks):
        pre, post = _changed_lines(hunk)
        changed = pre if pre_side else post
        if full is not None:
            hits = [(f, False) for ln in changed if (f := _enclosing(full, ln)) is not None]
        else:
            hits = [
                (f, cont)
                for f, _, cont in _partial_functions(text, hunk, pre_side, diff.path, changed)
            ]
        for f, continued in hits:
            same = [t for t in touched if t.fn.name == f.name]
            entry = next((t for t in same if t.fn.start_line == f.start_line), None)
            if entry is None and continued and same:
                entry = same[-1]
                entry.fn = _merge_partial(entry.fn, f, text)
            if entry is None:
                touched.append(_Touch(f, [index]))
            elif index not in entry.hunks:
                entry.hunks.append(index)
    return touched


def _pair(pre: list[_Touch], post: list[_Touch]) -> list[tuple[_Touch | None, _Touch | None]]:
    """Match pre- and post-side definitions of the same name: first those a common
    hunk changes, then the rest in order; what is left has no touched counterpart."""
    pairs: list[tuple[_Touch | None, _Touch | None]] = []
    free = list(post)
    unpaired: list[_Touch] = []
    for p in pre:
        q = next((q for q in free if q.fn.name == p.fn.name and set(q.hunks) & set(p.hunks)), None)
        if q is None:
            unpaired.append(p)
            continue
        free.remove(q)
        pairs.append((p, q))
    for p in unpaired:
        q = next((q for q in free if q.fn.name == p.fn.name), None)
        if q is not None:
            free.remove(q)
        pairs.append((p, q))
    pairs += [(None, q) for q in free]
    order = {id(t): i for i, t in enumerate([*pre, *post])}
    pairs.sort(key=lambda pq: min(order[id(t)] for t in pq if t is not None))
    return pairs


def _lookup(text: str | None, path: str, name: str, partial: bool, near: int) -> CFunction | None:
    """The definition of `name` on the other side of a change; with several (one
    per `#ifdef` branch), the one nearest to where the known side sits."""
    if text is None or partial:
        return None
    same = [f for f in parse_functions(text, path) if f.name == name]
    return min(same, key=lambda f: abs(f.start_line - near), default=None)


def touched_functions(images: PatchImages) -> tuple[FunctionChange, ...]:
    """The functions each hunk of the patch changes, with full pre and post bodies.

    A function found only in the post-image is ADDED, only in the pre-image REMOVED,
    matched by name within the file."""
    changes: list[FunctionChange] = []
    for diff in images.files:
        # Makefiles, Kconfig, scripts and docs have no C functions to speak of.
        if diff.is_binary or not diff.hunks or not diff.path.endswith(C_SUFFIXES):
            continue
        image = images.image(diff.path) or (images.image(diff.old_path) if diff.old_path else None)
        if image is None:
            continue
        pairs = _pair(_side(diff, image, pre_side=True), _side(diff, image, pre_side=False))
        for pre_hit, post_hit in pairs:
            pre_fn = pre_hit.fn if pre_hit else None
            post_fn = post_hit.fn if post_hit else None
            known = pre_hit or post_hit
            if known is None:  # _pair never yields an empty pair
                continue
            name = known.fn.name
            if pre_fn is None:
                near = post_fn.start_line if post_fn else 0
                pre_fn = _lookup(image.pre, diff.old_path or diff.path, name, image.partial, near)
                if pre_fn is None and image.partial and image.pre is not None:
                    pre_fn = _partial_counterpart(diff, image.pre, name, pre_side=True)
            if post_fn is None:
                near = pre_fn.start_line if pre_fn else 0
                post_fn = _lookup(image.post, diff.path, name, image.partial, near)
                if post_fn is None and image.partial and image.post is not None:
                    post_fn = _partial_counterpart(diff, image.post, name, pre_side=False)
            if pre_fn is None and post_fn is None:
                continue
            if image.partial and pre_hit is not None and post_hit is not None:
                # both sides through the same hunks: a hunk that only removes (or
                # only adds) lines continues the function on the other side too
                extra_pre = [i for i in post_hit.hunks if i not in pre_hit.hunks]
                extra_post = [i for i in pre_hit.hunks if i not in post_hit.hunks]
                pre_fn = _widen(pre_hit.fn, diff, image.pre, extra_pre, pre_side=True)
                post_fn = _widen(post_hit.fn, diff, image.post, extra_post, pre_side=False)
            hunks = sorted(
                set((pre_hit.hunks if pre_hit else []) + (post_hit.hunks if post_hit else []))
            )
            kind = (
                ChangeKind.ADDED
                if pre_fn is None
                else ChangeKind.REMOVED
                if post_fn is None
                else ChangeKind.MODIFIED
            )
            changes.append(FunctionChange(diff.path, name, kind, pre_fn, post_fn, tuple(hunks)))
    return tuple(changes)


def _widen(
    fn: CFunction, diff: FileDiff, text: str | None, hunks: list[int], *, pre_side: bool
) -> CFunction:
    """`fn` merged with the regions of `hunks` on this side that continue it
    (named only by the section header, no head of their own)."""
    if text is None:
        return fn
    for index in hunks:
        hunk = diff.hunks[index]
        start = hunk.source_start if pre_side else hunk.target_start
        length = hunk.source_length if pre_side else hunk.target_length
        every = list(range(start, start + length))
        for f, _, continued in _partial_functions(text, hunk, pre_side, diff.path, every):
            if f.name == fn.name and continued:
                fn = _merge_partial(fn, f, text)
                break
    return fn


def _partial_counterpart(
    diff: FileDiff, text: str, name: str, *, pre_side: bool
) -> CFunction | None:
    """In a partial image, the other side of a function touched on one side only:
    look at every hunk's region on this side, context lines included."""
    found: CFunction | None = None
    for hunk in diff.hunks:
        start = hunk.source_start if pre_side else hunk.target_start
        length = hunk.source_length if pre_side else hunk.target_length
        if length == 0:
            continue
        every = list(range(start, start + length))
        for f, _, _ in _partial_functions(text, hunk, pre_side, diff.path, every):
            if f.name == name:
                found = f if found is None else _merge_partial(found, f, text)
                break
    return found

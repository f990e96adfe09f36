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
from that same blanked text, so macros used like calls count as calls.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bot import cache
from bot.analyze.csource import parse
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

if TYPE_CHECKING:
    import tree_sitter

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

# Words followed by `(` that are not calls.
_NOT_CALLS = frozenset(
    {
        "if",
        "while",
        "for",
        "switch",
        "return",
        "sizeof",
        "typeof",
        "__typeof__",
        "__typeof",
        "_Alignof",
        "alignof",
        "__alignof__",
        "__attribute__",
        "__attribute",
        "asm",
        "__asm__",
        "__asm",
        "volatile",
        "__volatile__",
        "_Generic",
        "_Static_assert",
        "static_assert",
        "do",
        "else",
        "case",
        "goto",
        "defined",
        "__builtin_expect",
        "__builtin_constant_p",
        "__builtin_offsetof",
    }
)
_INLINE_WORDS = frozenset({"inline", "__inline", "__inline__", "__always_inline"})
# Annotations written after a parameter list (`foo(...) __releases(x)`): skipped when
# looking back from `{` for the function's own parameter list.
# Kernel spells them all `__lowercase` (__releases, __acquires, __must_hold, ...).
_TRAILING_ANNOTATION = re.compile(r"__[a-z_]+$")
_SYSCALL = re.compile(r"^(COMPAT_)?SYSCALL_DEFINE\d$")
_IDENT_CALL = re.compile(r"(?<![\w.>])([A-Za-z_]\w*)\s*\(")
_IDENT_BEFORE = re.compile(r"([A-Za-z_]\w*)\s*$")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_CLOSER = re.compile(r"^\}\s*(?:/[*/].*)?$")
_LABEL = re.compile(r"^[A-Za-z_]\w*:\s*$")
# Where _mask has to look again: outside directives, and inside one.
_MASK_STOP = re.compile(r"[\n/\"']")
_DIRECTIVE_STOP = re.compile(r"[\n\\/]")
_NOT_NEWLINE = re.compile(r"[^\n]")
_PARENS = re.compile(r"[()]")
_BRACES = re.compile(r"[{}]")
_NEWLINE = re.compile(r"\n")


# --------------------------------------------------------------------------- masking


def _blank(text: str) -> str:
    """`text` with every character but newlines turned into a space."""
    return _NOT_NEWLINE.sub(" ", text)


def _mask(text: str) -> str:
    """Return `text` with comments, string/char literals and preprocessor lines
    replaced by spaces (newlines kept), so offsets and line numbers still match."""
    out = list(text)
    n = len(text)
    i = 0
    line_start = True
    while i < n:
        c = text[i]
        if c == "\n":
            line_start = True
            i += 1
            continue
        if line_start and c in " \t":
            i += 1
            continue
        if line_start and c == "#":
            # A directive runs to the end of the line, or further with `\` continuations;
            # `#define F(x) { ... }` must not count as a brace at file scope.
            while i < n and text[i] != "\n":
                if text[i] == "\\" and i + 1 < n and text[i + 1] == "\n":
                    out[i] = " "
                    i += 2
                    continue
                if text.startswith("/*", i):
                    end = text.find("*/", i + 2)
                    end = n if end < 0 else end + 2
                    out[i:end] = _blank(text[i:end])
                    i = end
                    continue
                # Plain directive text up to the next character that matters here.
                m = _DIRECTIVE_STOP.search(text, i + 1)
                end = m.start() if m else n
                out[i:end] = " " * (end - i)
                i = end
            continue
        line_start = False
        if c == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out[i:end] = _blank(text[i:end])
            i = end
            continue
        if c == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out[i:end] = " " * (end - i)
            i = end
            continue
        if c in "\"'":
            quote = c
            j = i + 1
            while j < n and text[j] != quote and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            end = min(j + 1, n)
            lo, hi = i + 1, (end - 1 if end - 1 > i else end)
            if hi > lo:
                out[lo:hi] = _blank(text[lo:hi])
            i = end
            continue
        # Ordinary code: nothing changes until the next newline, slash or quote.
        m = _MASK_STOP.search(text, i + 1)
        i = m.start() if m else n
    return "".join(out)


def _calls_in(masked_body: str) -> tuple[str, ...]:
    """Names used like calls in a masked body, in source order, duplicates kept once."""
    seen: dict[str, None] = {}
    for m in _IDENT_CALL.finditer(masked_body):
        name = m.group(1)
        if name in _NOT_CALLS:
            continue
        seen.setdefault(name, None)
    return tuple(seen)


def _normalise_name(name: str, args: str) -> str:
    """`SYSCALL_DEFINE3(mprotect, ...)` is the function `sys_mprotect`; the kernel
    names it so, and callers and backtraces use that name."""
    m = _SYSCALL.match(name)
    if not m:
        return name
    first = args.strip().lstrip("(").split(",", 1)[0].strip().rstrip(")").strip()
    if not re.fullmatch(r"[A-Za-z_]\w*", first):
        return name
    return ("compat_sys_" if m.group(1) else "sys_") + first


def function_name_from_section(section: str) -> str | None:
    """The function a hunk header's section text (`static void foo(int x)`) names, or
    None when it is not a function head (a struct, a declaration ending in `;`)."""
    text = section.strip()
    if not text or "(" not in text or text.endswith(";") or "=" in text.split("(", 1)[0]:
        return None
    head = text.split("(", 1)[0]
    m = _IDENT_BEFORE.search(head)
    if not m:
        return None
    name = m.group(1)
    if name in _NOT_CALLS or head.lstrip().startswith("#"):
        return None
    return _normalise_name(name, text[text.index("(") :])


# --------------------------------------------------------------------------- parsing


@dataclass
class _Found:
    """A definition found by either parser, before it becomes a CFunction."""

    name: str
    start: int  # 0-based line
    end: int  # 0-based line, inclusive
    body_offset: int  # char offset of the opening brace of the body
    end_offset: int  # char offset just past the closing brace


def _declarator_name(node: tree_sitter.Node | None) -> tuple[str | None, str]:
    """Follow `declarator` fields down to the identifier a definition declares;
    also return the text of the innermost parameter list."""
    params = ""
    while node is not None:
        if node.type in ("identifier", "field_identifier", "type_identifier"):
            return (node.text or b"").decode("utf-8", "replace"), params
        if node.type == "function_declarator":
            p = node.child_by_field_name("parameters")
            if p is not None:
                params = (p.text or b"").decode("utf-8", "replace")
        nxt = node.child_by_field_name("declarator")
        if nxt is None:
            nxt = next(
                (c for c in node.named_children if c.type not in ("attribute_specifier",)),
                None,
            )
        node = nxt
    return None, params


def _ts_functions(text: str, data: bytes) -> list[_Found]:
    """Function definitions tree-sitter finds at file scope (inside #if blocks too)."""
    tree = parse(data)
    found: list[_Found] = []
    # tree-sitter speaks UTF-8 byte offsets, the masked text str offsets. They
    # differ after each non-ASCII character (an author's name in a comment) by
    # its extra bytes: keep those steps, sorted, to convert in O(log n).
    steps: list[int] = []  # byte offset just past each non-ASCII character
    extra: list[int] = []  # extra bytes up to and including that character
    total = 0
    for m in _NON_ASCII.finditer(text):
        total += len(m.group().encode("utf-8", "replace")) - 1
        steps.append(m.end() + total)
        extra.append(total)

    def char_at(byte_offset: int) -> int:
        k = bisect.bisect_right(steps, byte_offset) - 1
        return byte_offset - (extra[k] if k >= 0 else 0)

    # Iterative walk: hostile input can nest ERROR nodes deeper than Python recursion.
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        for child in reversed(node.children):
            if child.type == "function_definition":
                name, params = _declarator_name(child.child_by_field_name("declarator"))
                body = child.child_by_field_name("body")
                if name and body is not None:
                    found.append(
                        _Found(
                            name=_normalise_name(name, params),
                            start=child.start_point.row,
                            end=child.end_point.row,
                            body_offset=char_at(body.start_byte),
                            end_offset=char_at(child.end_byte),
                        )
                    )
                # Definitions nested in a function are misparses of
                # `for_each_node(n) {` style loop macros: do not descend.
                continue
            if child.child_count:
                stack.append(child)
    return found


def _paren_partners(masked: str) -> dict[int, int]:
    """Offset of each `)` -> offset of its `(`, in one pass (unmatched ones absent)."""
    partners: dict[int, int] = {}
    stack: list[int] = []
    for m in _PARENS.finditer(masked):
        i = m.start()
        if masked[i] == "(":
            stack.append(i)
        elif stack:
            partners[i] = stack.pop()
    return partners


def _scan_functions(masked: str) -> list[_Found]:
    """Brace-matching scan: every `{` at file scope preceded by `name(...)` whose
    declaration starts at column 0 is a function body."""
    found: list[_Found] = []
    partners = _paren_partners(masked)
    newlines = [m.start() for m in _NEWLINE.finditer(masked)]
    depth = 0
    n = len(masked)
    skip_to = 0  # braces before this offset lie inside a function already found
    for m in _BRACES.finditer(masked):
        i = m.start()
        if i < skip_to:
            continue
        if masked[i] == "{":
            if depth == 0:
                head = _function_head(masked, i, partners)
                if head is not None:
                    name, start_offset = head
                    end = _matching_brace(masked, i)
                    found.append(
                        _Found(
                            name=name,
                            # Lines before an offset = newlines before it.
                            start=bisect.bisect_left(newlines, start_offset),
                            end=bisect.bisect_left(newlines, end),
                            body_offset=i,
                            end_offset=min(end + 1, n),
                        )
                    )
                    skip_to = end + 1
                    continue
            depth += 1
        else:
            # Partial images start mid-function: never go below file scope.
            depth = max(0, depth - 1)
    return found


def _matching_brace(masked: str, open_at: int) -> int:
    """Offset of the `}` closing the `{` at `open_at` (end of text if none)."""
    depth = 0
    for m in _BRACES.finditer(masked, open_at):
        if masked[m.start()] == "{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return m.start()
    return len(masked) - 1


# How far back from `{` a function head may reach. Parameter lists of real kernel
# functions are a few hundred characters; the bound keeps hostile text linear.
_HEAD_REACH = 4096


def _function_head(masked: str, brace: int, partners: dict[int, int]) -> tuple[str, int] | None:
    """If the `{` at `brace` opens a function body, return (name, start offset)."""
    j = brace - 1
    for _ in range(8):  # a few trailing annotations at most
        while j >= 0 and masked[j].isspace():
            j -= 1
        if j < 0 or masked[j] != ")":
            return None
        open_paren = partners.get(j, -1)
        if open_paren < 0 or j - open_paren > _HEAD_REACH:
            return None
        ident = _ident_before(masked, open_paren)
        if ident is None:
            return None
        name_at, name = ident
        if name in _NOT_CALLS:
            return None
        k = name_at - 1
        while k >= 0 and masked[k].isspace():
            k -= 1
        if _TRAILING_ANNOTATION.match(name) and k >= 0 and masked[k] == ")":
            # `foo(...) __releases(x) {`: the parameter list is further back.
            j = k
            continue
        start = _declaration_start(masked, name_at)
        if "=" in masked[start:name_at]:
            return None
        if start != masked.rfind("\n", 0, start) + 1:
            return None
        return _normalise_name(name, masked[open_paren : j + 1]), start
    return None


def _ident_before(masked: str, at: int) -> tuple[int, str] | None:
    """The identifier ending just before `at` (spaces allowed), with its offset."""
    k = at - 1
    while k >= 0 and masked[k].isspace():
        k -= 1
    end = k + 1
    while k >= 0 and (masked[k].isalnum() or masked[k] == "_"):
        k -= 1
    word = masked[k + 1 : end]
    if not word or word[0].isdigit():
        return None
    return k + 1, word


def _declaration_start(masked: str, name_at: int) -> int:
    """Walk back from a function name to the first character of its declaration:
    just after the previous `;`, `}` or `{`, or after a blank line."""
    k = name_at - 1
    last_nonspace = name_at
    limit = max(name_at - _HEAD_REACH, 0)
    while k >= limit:
        ch = masked[k]
        if ch in ";{}":
            break
        if ch == "\n":
            prev = masked.rfind("\n", 0, k)
            if masked[prev + 1 : k].strip() == "":
                break
        if not ch.isspace():
            last_nonspace = k
        k -= 1
    # last_nonspace is the earliest non-space character seen; back up to its line start.
    return last_nonspace


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
    data = text.encode("utf-8", "replace")
    masked = _mask(text)
    found = _ts_functions(text, data)
    # Kernel functions start at column 0; a tree-sitter "definition" starting
    # indented is a loop macro (`list_for_each_entry(...) {`) in a partial image.
    lines = text.split("\n")
    found = [
        f
        for f in found
        if f.start < len(lines) and lines[f.start][:1] not in (" ", "\t") and f.name != ""
    ]
    line_starts = [0, *itertools.accumulate(len(line) + 1 for line in lines[:-1])]
    closers = [i for i, line in enumerate(lines) if line[:1] == "}" and _CLOSER.match(line)]
    found = [_clip(f, closers, line_starts) for f in found]
    spans = [(f.body_offset, f.end_offset) for f in found]
    for extra in _scan_functions(masked):
        if not any(lo <= extra.body_offset < hi for lo, hi in spans):
            found.append(_clip(extra, closers, line_starts))
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
                calls=_calls_in(masked[f.body_offset : f.end_offset]),
                is_static="static" in words,
                is_inline=bool(words & _INLINE_WORDS),
            )
        )
    return tuple(result)


def _clip(f: _Found, closers: list[int], line_starts: list[int]) -> _Found:
    """End a function at the first column-0 `}` after its opening brace.

    Kernel style closes a function, and only a function, at column 0. Braces
    opened in both branches of an `#ifdef` inside a body (`if (a) {` / `#else` /
    `if (b) {`) otherwise make the function run on over its neighbours."""
    brace_line = bisect.bisect_right(line_starts, f.body_offset) - 1
    k = bisect.bisect_right(closers, brace_line)
    if k < len(closers) and closers[k] < f.end:
        end = closers[k]
        return _Found(f.name, f.start, end, f.body_offset, line_starts[end] + 1)
    return f


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
    return _calls_in(_mask(body))


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
        return idx <= changed and (line[:1] in (" ", "\t") or bool(_LABEL.match(line)))
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

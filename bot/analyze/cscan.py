"""The lexical side of finding C function definitions: masking, the brace
scan, and tree-sitter's file-scope definitions as offsets into the text.

    mask(text)                 comments, strings and directives blanked (offsets kept)
    calls_in(masked_body)      names used like calls, in source order
    ts_functions(text)         file-scope definitions tree-sitter finds
    scan_functions(masked)     `name(...) {` at column 0 that tree-sitter missed
    clip(found, ...)           end a definition at the first column-0 `}`

cfunc.parse_functions puts these together into CFunctions.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from bot.analyze.csource import code_tree

if TYPE_CHECKING:
    import tree_sitter

__all__ = [
    "CLOSER",
    "IDENT_BEFORE",
    "INLINE_WORDS",
    "LABEL",
    "NOT_CALLS",
    "Found",
    "calls_in",
    "clip",
    "declared_names",
    "file_scope_names",
    "mask",
    "normalise_name",
    "scan_functions",
    "ts_functions",
]

# Words followed by `(` that are not calls.
NOT_CALLS = frozenset(
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
INLINE_WORDS = frozenset({"inline", "__inline", "__inline__", "__always_inline"})
# Annotations written after a parameter list (`foo(...) __releases(x)`): skipped when
# looking back from `{` for the function's own parameter list.
# Kernel spells them all `__lowercase` (__releases, __acquires, __must_hold, ...).
_TRAILING_ANNOTATION = re.compile(r"__[a-z_]+$")
_SYSCALL = re.compile(r"^(COMPAT_)?SYSCALL_DEFINE\d$")
_IDENT_CALL = re.compile(r"(?<![\w.>])([A-Za-z_]\w*)\s*\(")
IDENT_BEFORE = re.compile(r"([A-Za-z_]\w*)\s*$")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
CLOSER = re.compile(r"^\}\s*(?:/[*/].*)?$")
LABEL = re.compile(r"^[A-Za-z_]\w*:\s*$")
# Where mask has to look again: outside directives, and inside one.
_MASK_STOP = re.compile(r"[/\"']|\n[ \t]*#")
_DIRECTIVE_HEAD = re.compile(r"[ \t]*#")
_DIRECTIVE_STOP = re.compile(r"[\n\\/]")
_PARENS = re.compile(r"[()]")
_BRACES = re.compile(r"[{}]")
_NEWLINE = re.compile(r"\n")


# --------------------------------------------------------------------------- masking


def _blank(text: str) -> str:
    """`text` with every character but newlines turned into a space."""
    if "\n" not in text:
        return " " * len(text)
    return "\n".join(" " * len(line) for line in text.split("\n"))


def mask(text: str) -> str:
    """Return `text` with comments, string/char literals and preprocessor lines
    replaced by spaces (newlines kept), so offsets and line numbers still match.

    A directive is a `#` first on a line (after blanks) that the scan reaches
    at a line start: not one on the line after an unterminated literal, which
    runs on to the next line."""
    n = len(text)
    spans: list[tuple[int, int]] = []  # [lo, hi) to blank, in order, disjoint
    head = _DIRECTIVE_HEAD.match(text)
    i = _directive(text, head.end() - 1, spans) if head else 0
    while True:
        m = _MASK_STOP.search(text, i)
        if m is None:
            break
        at = m.start()
        c = text[at]
        if c == "\n":  # a directive: `#` first on its line
            i = _directive(text, m.end() - 1, spans)
        elif c == "/":
            if text.startswith("/*", at):
                end = text.find("*/", at + 2)
                end = n if end < 0 else end + 2
                spans.append((at, end))
                i = end
            elif text.startswith("//", at):
                end = text.find("\n", at)
                end = n if end < 0 else end
                spans.append((at, end))
                i = end
            else:
                i = at + 1
        else:  # a quote: the literal runs to its closing quote or the line's end
            j = at + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            end = min(j + 1, n)
            lo, hi = at + 1, (end - 1 if end - 1 > at else end)
            if hi > lo:
                spans.append((lo, hi))
            i = end
    pieces: list[str] = []
    done = 0
    for lo, hi in spans:  # in order and disjoint
        pieces.append(text[done:lo])
        pieces.append(_blank(text[lo:hi]))
        done = hi
    pieces.append(text[done:])
    return "".join(pieces)


def _directive(text: str, i: int, spans: list[tuple[int, int]]) -> int:
    """Blank the directive whose `#` is at `i`: to the end of its line, or
    further with `\\` continuations (`#define F(x) { ... }` must not count as a
    brace at file scope). Returns where it ends (its newline, or the end)."""
    n = len(text)
    while i < n and text[i] != "\n":
        if text[i] == "\\" and i + 1 < n and text[i + 1] == "\n":
            spans.append((i, i + 1))
            i += 2
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            spans.append((i, end))
            i = end
            continue
        # Plain directive text up to the next character that matters here.
        m = _DIRECTIVE_STOP.search(text, i + 1)
        end = m.start() if m else n
        spans.append((i, end))
        i = end
    return i


def calls_in(masked_body: str) -> tuple[str, ...]:
    """Names used like calls in a masked body, in source order, duplicates kept once."""
    seen: dict[str, None] = {}
    for m in _IDENT_CALL.finditer(masked_body):
        name = m.group(1)
        if name in NOT_CALLS:
            continue
        seen.setdefault(name, None)
    return tuple(seen)


def normalise_name(name: str, args: str) -> str:
    """`SYSCALL_DEFINE3(mprotect, ...)` is the function `sys_mprotect`; the kernel
    names it so, and callers and backtraces use that name."""
    m = _SYSCALL.match(name)
    if not m:
        return name
    first = args.strip().lstrip("(").split(",", 1)[0].strip().rstrip(")").strip()
    if not re.fullmatch(r"[A-Za-z_]\w*", first):
        return name
    return ("compat_sys_" if m.group(1) else "sys_") + first


# --------------------------------------------------------------------------- parsing


@dataclass
class Found:
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


def ts_functions(text: str) -> list[Found]:
    """Function definitions tree-sitter finds at file scope (both arms of an
    #if too), in the text's one shared parse (csource.code_tree)."""
    tree = code_tree(text).tree
    found: list[Found] = []
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
                        Found(
                            name=normalise_name(name, params),
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


def scan_functions(masked: str) -> list[Found]:
    """Brace-matching scan: every `{` at file scope preceded by `name(...)` whose
    declaration starts at column 0 is a function body."""
    found: list[Found] = []
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
                        Found(
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
        if name in NOT_CALLS:
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
        return normalise_name(name, masked[open_paren : j + 1]), start
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


def clip(f: Found, closers: list[int], line_starts: list[int]) -> Found:
    """End a function at the first column-0 `}` after its opening brace.

    Kernel style closes a function, and only a function, at column 0. Braces
    opened in both branches of an `#ifdef` inside a body (`if (a) {` / `#else` /
    `if (b) {`) otherwise make the function run on over its neighbours."""
    brace_line = bisect.bisect_right(line_starts, f.body_offset) - 1
    k = bisect.bisect_right(closers, brace_line)
    if k < len(closers) and closers[k] < f.end:
        end = closers[k]
        return Found(f.name, f.start, end, f.body_offset, line_starts[end] + 1)
    return f


# A declaration line: type words (and stars), then declarators up to `;` or `=`.
_DECL = re.compile(
    r"^[ \t]*(?:(?:const|static|volatile|unsigned|signed|long|short|struct|union|enum|"
    r"__\w+)\s+)*[A-Za-z_]\w*(?:\s+|\s*\*+\s*)(?:const\s+)?\**\s*([A-Za-z_]\w*)\s*(?:\[[^\]]*\]\s*)*"
    r"(?P<rest>[=;,][^\n]*)$"
)
_MORE = re.compile(r",\s*\**\s*([A-Za-z_]\w*)")
_NOT_TYPES = frozenset({"return", "goto", "else", "case", "do", "sizeof", "typeof"})


def declared_names(lines: Iterable[str]) -> frozenset[str]:
    """Names declared by the declaration lines among `lines` (`struct page *a, *b;`)."""
    out: set[str] = set()
    for line in lines:
        m = _DECL.match(line)
        if m is None or line.split()[0] in _NOT_TYPES:
            continue
        out.add(m.group(1))
        rest = m.group("rest")
        if rest.startswith(",") or ("," in rest and "(" not in rest):
            out.update(_MORE.findall(rest))
    return frozenset(out)


# A line at column 0 that starts with a letter and ends a statement: a file-scope
# declaration (one regex pass: a partial image is mostly blank lines).
_SCOPE_LINE = re.compile(r"^[A-Za-z][^\n]*;[ \t\r\f\v]*$", re.MULTILINE)


@lru_cache(maxsize=256)
def file_scope_names(text: str) -> frozenset[str]:
    """Names declared at column 0 (globals and statics of a file); once per text."""
    return declared_names(_SCOPE_LINE.findall(text))

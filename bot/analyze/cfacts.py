"""What a whole parse of a C file gives: its function definitions (syntax
trees), struct layouts and who calls what, kept per text.

    parse_file(path, source)       definitions (every #ifdef variant) and structs
    parsed(path, text)             parse_file, once per text in the process
    facts(path, text)              FileFacts: the names a file defines, its struct
                                   layouts and (when asked) its callers index,
                                   from the process, bot.cache or a parse
    definition(path, text, name, whole=...)
                                   one definition's syntax tree, from a parse of
                                   its checked span alone when the whole file was
                                   not parsed in this process
    type_headers(lexicon)          the `<...-defs.h>`/`<..._types.h>` includes

The simulator's SourceSet (simulate/sources.py) reads files through these;
the lexical pre-filters and the parser are in csource.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot import cache
from bot.analyze.csource import (
    CodeText,
    Lexicon,
    Span,
    TextKey,
    bounded_put,
    called_names,
    code_text,
    code_tree,
    disk_key,
    forget_trees,
    parse_span,
    same_subtree,
    span_of,
    text_key,
)

if TYPE_CHECKING:
    from tree_sitter import Node

__all__ = [
    "FileFacts",
    "FileInfo",
    "clear_memos",
    "declarator_name",
    "definition",
    "facts",
    "is_parsed",
    "node_text",
    "parse_file",
    "parsed",
    "type_headers",
    "type_name",
]


def node_text(node: Node | None) -> str:
    if node is None or node.text is None:
        return ""
    return node.text.decode("utf-8", "replace")


def type_name(type_node: Node | None) -> str | None:
    """`struct foo` -> "foo"; a typedef name -> itself; primitives -> None."""
    if type_node is None:
        return None
    if type_node.type in ("struct_specifier", "union_specifier"):
        name = type_node.child_by_field_name("name")
        return node_text(name) or None
    if type_node.type == "type_identifier":
        return node_text(type_node)
    return None


def declarator_name(decl: Node | None) -> tuple[str | None, bool]:
    """The identifier a declarator declares, and whether it is a pointer."""
    pointer = False
    while decl is not None:
        if decl.type in ("identifier", "field_identifier"):
            return node_text(decl), pointer
        if decl.type == "pointer_declarator":
            pointer = True
        if decl.type == "function_declarator":
            return None, pointer
        nxt = decl.child_by_field_name("declarator")
        if nxt is None:
            nxt = next(
                (
                    c
                    for c in decl.named_children
                    if "declarator" in c.type or c.type == "identifier"
                ),
                None,
            )
        decl = nxt
    return None, pointer


@dataclass
class FileInfo:
    """One parsed file: function definitions and struct layouts."""

    path: str
    source: bytes
    functions: dict[str, list[Node]] = field(default_factory=dict)
    structs: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # struct -> field -> struct type
    arms: tuple[tuple[int, int], ...] = ()  # later #else arms (csource.Code.arms)
    _callers: dict[str, list[str]] | None = None

    def callers(self) -> dict[str, list[str]]:
        """Called name -> functions of this file calling it (lexical, macros included)."""
        if self._callers is None:
            index: dict[str, list[str]] = {}
            for fname, nodes in self.functions.items():
                body = b"".join(self.source[n.start_byte : n.end_byte] for n in nodes).decode(
                    "utf-8", "replace"
                )
                for callee in called_names(body):
                    index.setdefault(callee, []).append(fname)
            self._callers = index
        return self._callers


def _function_name(fn: Node) -> str | None:
    decl = fn.child_by_field_name("declarator")
    while decl is not None and decl.type != "function_declarator":
        decl = decl.child_by_field_name("declarator")
    if decl is None:
        return None
    name = decl.child_by_field_name("declarator")
    if name is None or name.type != "identifier":
        return None
    return node_text(name)


def _collect_struct(node: Node, out: dict[str, dict[str, str]]) -> None:
    name = type_name(node)
    body = node.child_by_field_name("body")
    if not name or body is None:
        return
    fields: dict[str, str] = out.setdefault(name, {})

    def scan(lst: Node) -> None:
        for fd in lst.named_children:
            if fd.type in ("preproc_ifdef", "preproc_if", "preproc_else", "preproc_elif"):
                scan(fd)  # members under #ifdef CONFIG_...: the configured layout
                continue
            if fd.type != "field_declaration":
                continue
            ftype = fd.child_by_field_name("type")
            if ftype is not None and ftype.type in ("struct_specifier", "union_specifier"):
                inner = ftype.child_by_field_name("body")
                if inner is not None and ftype.child_by_field_name("name") is None:
                    scan(inner)  # anonymous union/struct: its members belong to the parent
                    continue
            tname = type_name(ftype)
            for d in fd.children_by_field_name("declarator"):
                fname, _ = declarator_name(d)
                if fname and tname:
                    fields[fname] = tname

    scan(body)


def parse_file(path: str, text: str | bytes) -> FileInfo:
    """Parse one C file: its function definitions (every #ifdef variant) and
    structs, from the one parse of its text every reader shares (conditional
    lines blanked: csource.code_tree); `source` holds the bytes parsed."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    code = code_tree(text)
    tree = code.tree
    info = FileInfo(path=path, source=code.data, arms=code.arms)
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "function_definition":
            name = _function_name(node)
            if name:
                info.functions.setdefault(name, []).append(node)
            continue
        if (
            node.type in ("struct_specifier", "union_specifier")
            and node.child_by_field_name("body") is not None
        ):
            _collect_struct(node, info.structs)
        stack.extend(reversed(node.children))
    return info


_PARSE_CACHE: dict[TextKey, FileInfo] = {}
# Parsed files kept across reviews in one process (a worker reviews many
# series on the same tree); keyed by path and text hash, so edits re-parse.
_PARSE_CACHE_MAX = 256


def parsed(path: str, text: str) -> FileInfo:
    """parse_file of `text` (the content of `path`), once per text in the process."""
    key = text_key(path, text)
    info = _PARSE_CACHE.get(key)
    if info is None:
        info = bounded_put(_PARSE_CACHE, key, parse_file(path, text), _PARSE_CACHE_MAX)
    return info


@dataclass
class FileFacts:
    """What the lookups need of one file's parse besides its syntax trees: the
    functions it defines (in the parse's order, and as a set), its struct
    layouts and, once asked for, its callers index (FileInfo.callers). Kept per
    text in the process and in bot.cache, so a file whose facts are known is
    parsed only when one of its functions is translated or its bindings are
    searched, never to confirm a definition, read a layout or find callers."""

    functions: tuple[str, ...]
    defined: frozenset[str]
    structs: dict[str, dict[str, str]]
    callers: dict[str, list[str]] | None = None

    @classmethod
    def of(cls, info: FileInfo) -> FileFacts:
        return cls(tuple(info.functions), frozenset(info.functions), info.structs)


def _verified_span(source: bytes, node: Node) -> Span | None:
    """The span of `node` (a definition in the parse of the whole `source`)
    when parsing that span alone gives the same subtree, else None."""
    span = span_of(node)
    alone = parse_span(source, span)
    return span if alone is not None and same_subtree(alone, node) else None


_FACTS_CACHE: dict[TextKey, FileFacts] = {}
_FACTS_CACHE_MAX = 4096
_FACTS_NAMESPACE = "sim-facts"


def facts(path: str, text: str, *, callers: bool = False) -> FileFacts:
    """The FileFacts of `text` (the content of `path`): from the process's
    memo, else bot.cache, else a parse; with `callers` its callers index too."""
    key = text_key(path, text)
    found = _FACTS_CACHE.get(key)
    changed = False
    disk = disk_key(path, text)
    if found is None:
        hit = cache.get(_FACTS_NAMESPACE, disk) if disk is not None else None
        if hit is not None and isinstance(hit[0], FileFacts):
            found = hit[0]
        else:
            found = FileFacts.of(parsed(path, text))
            changed = True
        bounded_put(_FACTS_CACHE, key, found, _FACTS_CACHE_MAX)
    if callers and found.callers is None:
        found.callers = parsed(path, text).callers()
        changed = True
    if changed and disk is not None:
        cache.put(_FACTS_NAMESPACE, disk, found)
    return found


# text -> function -> the span of its definition (see `definition`)
# when a parse of that span alone was checked to give the very subtree the
# whole file's parse gives; None when it did not. In bot.cache per text.
_SPANS: dict[TextKey, dict[str, Span | None]] = {}
_SPANS_NAMESPACE = "sim-spans"


def _checked_spans(path: str, text: str) -> dict[str, Span | None]:
    key = text_key(path, text)
    spans = _SPANS.get(key)
    if spans is None:
        disk = disk_key(path, text)
        hit = cache.get(_SPANS_NAMESPACE, disk) if disk is not None else None
        spans = dict(hit[0]) if hit is not None and isinstance(hit[0], dict) else {}
        bounded_put(_SPANS, key, spans, _FACTS_CACHE_MAX)
    return spans


def _record_span(path: str, text: str, name: str, span: Span | None) -> None:
    spans = _checked_spans(path, text)
    spans[name] = span
    disk = disk_key(path, text)
    if disk is not None:
        cache.put(_SPANS_NAMESPACE, disk, spans)


_SPAN_CACHE: dict[tuple[TextKey, Span], tuple[FileInfo, Node] | None] = {}
_SPAN_CACHE_MAX = 4096
_SOURCES: dict[TextKey, CodeText] = {}
_SOURCES_MAX = 64


def _span_definition(path: str, text: str, name: str, span: Span) -> tuple[FileInfo, Node] | None:
    """The definition of `name` in `text` from a parse of its span alone (a
    FileInfo holding just that definition), or None if that parse has no one
    top-level node there."""
    key = (text_key(path, text), span)
    if key not in _SPAN_CACHE:
        code = _SOURCES.get(key[0])
        if code is None:
            # the bytes every span of the text is parsed from, blanked once
            code = bounded_put(_SOURCES, key[0], code_text(text), _SOURCES_MAX)
        node = parse_span(code.data, span)
        found = None
        if node is not None and (node.start_byte, node.end_byte) == span[:2]:
            info = FileInfo(path=path, source=code.data, arms=code.arms)
            info.functions[name] = [node]
            found = (info, node)
        bounded_put(_SPAN_CACHE, key, found, _SPAN_CACHE_MAX)
    return _SPAN_CACHE[key]


def is_parsed(path: str, text: str) -> bool:
    """Whether this process holds a whole parse of `text`."""
    return text_key(path, text) in _PARSE_CACHE


def definition(path: str, text: str, name: str, *, whole: bool) -> tuple[FileInfo, Node] | None:
    """The definition of `name` in `text` (the content of `path`); among #ifdef
    variants the longest body (the configured one; stubs are empty). Unless
    the caller holds a `whole` parse of the file, a definition whose span was
    checked is parsed alone: the span gives the same subtree (see _SPANS). A
    whole parse checks the span for the next process (with a disk cache only:
    in the process the whole parse is kept anyway)."""
    spans = _checked_spans(path, text)
    span = spans.get(name)
    if span is not None and not whole:
        found = _span_definition(path, text, name, span)
        if found is not None:
            return found
    info = parsed(path, text)
    node = max(info.functions[name], key=lambda n: n.end_byte - n.start_byte)
    if name not in spans and cache.active() is not None:
        _record_span(path, text, name, _verified_span(info.source, node))
    return (info, node)


# What a config-off stub returns: nothing, a number, NULL/true/false, an errno.
_STUB_RETURN = re.compile(rb"return\s*(?:-?\s*(?:\d\w*|NULL|true|false|[A-Z][A-Z0-9_]*))?\s*;")


def is_stub(node: Node) -> bool:
    """Whether a function definition's body does nothing: `{}` or a lone
    `return 0;` / `return NULL;` / `return -ENOSYS;`, the shape of the
    `#else` variant a header gives for a feature configured off."""
    body = node.child_by_field_name("body")
    if body is None:
        return False
    stmts = [c for c in body.named_children if c.type != "comment"]
    if not stmts:
        return True
    if len(stmts) > 1 or stmts[0].type != "return_statement":
        return False
    return _STUB_RETURN.fullmatch(stmts[0].text or b"") is not None


# Headers that, by kernel convention, only define types (`backing-dev-defs.h`,
# `mm_types.h`): an included header's own includes of these are read too, so
# struct layouts one include away are known.
_TYPE_HEADER = re.compile(r"[\w/.\-]+(?:-defs|_types)\.h")


def type_headers(lex: Lexicon) -> tuple[str, ...]:
    """The `#include <...-defs.h>` and `<..._types.h>` of a file, as tree paths."""
    return tuple(
        f"include/{inc}"
        for delim, inc in lex.includes
        if delim == "<" and _TYPE_HEADER.fullmatch(inc)
    )


def clear_memos() -> None:
    """Forget every parse and fact kept in this process."""
    for memo in (_PARSE_CACHE, _FACTS_CACHE, _SPANS, _SPAN_CACHE, _SOURCES):
        memo.clear()
    forget_trees()

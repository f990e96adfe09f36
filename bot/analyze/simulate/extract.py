"""Extraction: C source -> lifecycle program (see program.py).

`SourceSet` finds function definitions, struct layouts, callback bindings and
ops tables in the files a review has (patch images first, then the tree).
`Extractor` translates the functions reachable from the actors' entry points,
a few call levels deep, into `Function`s of `Instr`: counter and refcount
updates, flag stores and loads, work scheduling, frees, RCU, and every
dereference of a struct pointer (a "use" of that struct type). Everything
else becomes an unknown value, so a branch on it goes both ways.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bot import cache
from bot.analyze.simulate.budget import Budget
from bot.analyze.simulate.names import glob_match
from bot.analyze.simulate.program import (
    UNKNOWN,
    Binding,
    Function,
    Instr,
    Key,
    Kind,
    Loc,
    Val,
)
from bot.analyze.simulate.vocab import ApiEffect, Effects
from bot.safefs import read_tree_text

if TYPE_CHECKING:
    # tree-sitter is imported where a parse happens: a review whose facts all come
    # from bot.cache parses nothing and does not load it (~10 ms).
    import tree_sitter
    from tree_sitter import Node

# Iterator macros (list_for_each_entry, for_each_*, css_for_each_*, hlist_...):
# a call statement without `;` followed by a body.
_ITERATOR_NAMES = ("*for_each*",)
# Files bigger than this are not parsed to follow calls (generated tables).
_MAX_FILE_BYTES = 2_000_000
_BINDING_EFFECTS = ("bind", "call_rcu", "bind_release")


@lru_cache(maxsize=1)
def _parser() -> tree_sitter.Parser:
    import tree_sitter
    import tree_sitter_c

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_c.language()))


def _text(node: Node | None) -> str:
    if node is None or node.text is None:
        return ""
    return node.text.decode("utf-8", "replace")


def _type_name(type_node: Node | None) -> str | None:
    """`struct foo` -> "foo"; a typedef name -> itself; primitives -> None."""
    if type_node is None:
        return None
    if type_node.type in ("struct_specifier", "union_specifier"):
        name = type_node.child_by_field_name("name")
        return _text(name) or None
    if type_node.type == "type_identifier":
        return _text(type_node)
    return None


def _declarator_name(decl: Node | None) -> tuple[str | None, bool]:
    """The identifier a declarator declares, and whether it is a pointer."""
    pointer = False
    while decl is not None:
        if decl.type in ("identifier", "field_identifier"):
            return _text(decl), pointer
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
    _callers: dict[str, list[str]] | None = None

    def callers(self) -> dict[str, list[str]]:
        """Called name -> functions of this file calling it (lexical, macros included)."""
        if self._callers is None:
            index: dict[str, list[str]] = {}
            for fname, nodes in self.functions.items():
                body = b"".join(self.source[n.start_byte : n.end_byte] for n in nodes).decode(
                    "utf-8", "replace"
                )
                for callee in _called_names(body):
                    index.setdefault(callee, []).append(fname)
            self._callers = index
        return self._callers


def _callees(fn: Function) -> list[str]:
    """Functions `fn` calls, release callbacks of its puts included."""
    out: list[str] = []
    for ins in fn.code:
        if ins.kind == Kind.CALL:
            out.append(ins.callee)
        elif ins.expr is not None and ins.expr[0] == "put" and ins.expr[2]:
            out.append(str(ins.expr[2]))
    return list(dict.fromkeys(out))


def _function_name(fn: Node) -> str | None:
    decl = fn.child_by_field_name("declarator")
    while decl is not None and decl.type != "function_declarator":
        decl = decl.child_by_field_name("declarator")
    if decl is None:
        return None
    name = decl.child_by_field_name("declarator")
    if name is None or name.type != "identifier":
        return None
    return _text(name)


def _collect_struct(node: Node, out: dict[str, dict[str, str]]) -> None:
    name = _type_name(node)
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
            tname = _type_name(ftype)
            for d in fd.children_by_field_name("declarator"):
                fname, _ = _declarator_name(d)
                if fname and tname:
                    fields[fname] = tname

    scan(body)


def parse_file(path: str, source: bytes) -> FileInfo:
    """Parse one C file: its function definitions (every #ifdef variant) and structs."""
    tree = _parser().parse(source)
    info = FileInfo(path=path, source=source)
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


# The lexical scans below give exactly what these regexes give, faster: the
# regex engine tries a pattern that starts with `^`, `\b` or a class at every
# position of a 200 KB file, a literal first character it finds by a fast scan.
#   definitions  re.finditer(r"^(?:[A-Za-z_][^;{}()\n=]*?[\s*])?([A-Za-z_]\w*)\s*\(", text, re.M)
#   struct bodies re.findall(r"\bstruct\s+([A-Za-z_]\w*)\s*\{", text)
#   called names  set(re.findall(r"\b([A-Za-z_]\w*)\s*\(", text))
_DEF_START = re.compile(r"(?:[A-Za-z_][^;{}()\n=]*?[\s*])?([A-Za-z_]\w*)\s*\(")
_LINE_START = re.compile(r"\n[A-Za-z_]")
_STRUCT_BODY = re.compile(r"struct\s+([A-Za-z_]\w*)\s*\{")
_WORD_CHAR = re.compile(r"\w")
_CALL_REVERSED = re.compile(r"\(\s*(\w+)")  # `name (` read backwards
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


def _def_starts(text: str) -> Iterator[re.Match[str]]:
    """Possible definition heads at column 0: the matches of the `^...` regex
    above. A match starts at a line start with a letter or `_`, past the end of
    the previous match (a head may run onto the next line)."""
    end = 0
    starts = (h.start() + 1 for h in _LINE_START.finditer(text))
    for pos in (0, *starts) if text[:1] in _NAME_START else starts:
        if pos < end:
            continue
        m = _DEF_START.match(text, pos)
        if m is not None:
            end = m.end()
            yield m


def _struct_bodies(text: str) -> list[str]:
    """Names of `struct name {` at a word start, in order (the regex above)."""
    out: list[str] = []
    pos = 0
    while (m := _STRUCT_BODY.search(text, pos)) is not None:
        start = m.start()
        if start > 0 and _WORD_CHAR.match(text, start - 1):
            pos = start + 1  # inside a word (`mystruct x {`): no match starts here
            continue
        out.append(m.group(1))
        pos = m.end()
    return out


def _called_names(text: str) -> frozenset[str]:
    """Every identifier followed by `(` (the regex above). Read backwards from
    each `(`: the whole word before it (maximal, so at a word boundary), when
    that word starts with a letter or `_`."""
    return frozenset(w[::-1] for w in _CALL_REVERSED.findall(text[::-1]) if w[-1] in _NAME_START)


@dataclass(frozen=True)
class Lexicon:
    """What a file defines, found lexically (kernel style: a definition starts
    at column 0), so only files that define what is looked for get parsed."""

    defines: frozenset[str]
    structs: frozenset[str]


def _lexicon(text: str) -> Lexicon:
    defines: set[str] = set()
    for m in _def_starts(text):
        # a definition reaches its body before any `;` (a prototype or a call does not)
        brace = text.find("{", m.end())
        semi = text.find(";", m.end())
        if brace != -1 and (semi == -1 or brace < semi):
            defines.add(m.group(1))
    return Lexicon(frozenset(defines), frozenset(_struct_bodies(text)))


K = TypeVar("K")
V = TypeVar("V")


def _bounded_put(table: dict[K, V], key: K, value: V, limit: int) -> V:
    """table[key] = value, dropping the oldest entry first when a new key would
    take the table past `limit` (the memos below live as long as a worker)."""
    if key not in table and len(table) >= limit:
        table.pop(next(iter(table)))
    table[key] = value
    return value


_LEX_CACHE: dict[tuple[str, int, int], Lexicon] = {}
_PARSE_CACHE: dict[tuple[str, int, int], FileInfo] = {}
# Parsed files kept across reviews in one process (a worker reviews many
# series on the same tree); keyed by path and text hash, so edits re-parse.
_PARSE_CACHE_MAX = 256
_LEX_CACHE_MAX = 8192

TextKey = tuple[str, int, int]


def _text_key(path: str, text: str) -> TextKey:
    """A file's cache key: its path and its text (length and hash), so an edit
    of the file is a new key."""
    return (path, len(text), hash(text))


# `^\s*#\s*include\s*([<"])([\w/.\-]+)[>"]` (re.M), matched from the `#` on (see _directives)
_INCLUDE = re.compile(r'#\s*include\s*([<"])([\w/.\-]+)[>"]')
_HASH_INCLUDE = re.compile(r"#\s*include")


def _directives(text: str, tail: re.Pattern[str]) -> Iterator[re.Match[str]]:
    """The matches `re.finditer("^\\s*" + tail.pattern, text, re.M)` would give
    (`tail` starting with `#`), without trying the pattern at every line start:
    only a `#` that is the first non-space of its line (or of the text) can
    start one, and only past the end of the previous match."""
    end = 0
    for hit in _HASH_INCLUDE.finditer(text):
        pos = hit.start()
        line = text.rfind("\n", 0, pos) + 1
        if line < end or (line < pos and not text[line:pos].isspace()):
            continue
        m = tail.match(text, pos)
        if m is not None:
            end = m.end()
            yield m


# `.slot = fn` (or `= &fn`) in an initialiser: ops tables
_INITIALISER = re.compile(r"\.\s*(\w+)\s*=\s*&?\s*(\w+)\s*[,}\n]")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class FileIndex:
    """Lexical facts of one file text that every SourceSet asks for, found in
    one pass per text and shared across SourceSets and reviews (see
    `file_index`): its #include lines, the names it calls, its `.slot = fn`
    initialisers."""

    includes: tuple[tuple[str, str], ...]  # ("<" or '"', included path) in order
    # every identifier followed by `(` (calls, macro uses, definitions,
    # prototypes): `name(` occurs in the text exactly when name is in it
    called: frozenset[str]
    initialisers: tuple[tuple[str, str, int], ...]  # (slot, function, line) in order


def _file_index(text: str) -> FileIndex:
    includes = tuple((m.group(1), m.group(2)) for m in _directives(text, _INCLUDE))
    inits: list[tuple[str, str, int]] = []
    line, pos = 1, 0
    for m in _INITIALISER.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        inits.append((m.group(1), m.group(2), line))
    return FileIndex(includes, _called_names(text), tuple(inits))


_INDEX_CACHE: dict[TextKey, FileIndex] = {}
_INDEX_CACHE_MAX = 8192
# a text's Lexicon and FileIndex go to bot.cache together: a file read for
# either is, in practice, read for both (every candidate's index for ops
# tables and callers, its lexicon for every name not found before it)
_SCAN_NAMESPACE = "sim-scan"
_DISK_KEYS: dict[TextKey, str] = {}


@lru_cache(maxsize=1)
def parser_stamp() -> str:
    """The files of tree-sitter and its C grammar (size, mtime): facts derived
    from a parse are keyed by it too, since another version may parse otherwise."""
    from importlib.util import find_spec

    files: list[Path] = []
    for name in ("tree_sitter", "tree_sitter_c"):
        # the package's folder without importing it (a cached review parses nothing)
        spec = find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin:
            folder = Path(origin).parent
            files += [f for f in folder.iterdir() if f.suffix in (".so", ".pyd", ".py")]
    return cache.stamp_files(files)


def _disk_key(path: str, text: str) -> str | None:
    """bot.cache.text_key(path, text, parser_stamp()), hashed once per text;
    None when no disk cache is configured (nothing to look up, nothing to hash)."""
    if cache.active() is None:
        return None
    key = _text_key(path, text)
    found = _DISK_KEYS.get(key)
    if found is None:
        found = _bounded_put(
            _DISK_KEYS, key, cache.text_key(path, text, parser_stamp()), _INDEX_CACHE_MAX
        )
    return found


def _scan(path: str, text: str) -> None:
    """Fill the lexicon and index memos for `text`: from bot.cache, else by scanning."""
    key = _text_key(path, text)
    disk = _disk_key(path, text)
    hit = cache.get(_SCAN_NAMESPACE, disk) if disk is not None else None
    if (
        hit is not None
        and isinstance(hit[0], tuple)
        and len(hit[0]) == 2
        and isinstance(hit[0][0], Lexicon)
        and isinstance(hit[0][1], FileIndex)
    ):
        lex, index = hit[0]
    else:
        lex = _LEX_CACHE.get(key) or _lexicon(text)
        index = _INDEX_CACHE.get(key) or _file_index(text)
        if disk is not None:
            cache.put(_SCAN_NAMESPACE, disk, (lex, index))
    _bounded_put(_LEX_CACHE, key, lex, _LEX_CACHE_MAX)
    _bounded_put(_INDEX_CACHE, key, index, _INDEX_CACHE_MAX)


def file_index(path: str, text: str) -> FileIndex:
    """The FileIndex of `text` (the content of `path`), computed once per text."""
    key = _text_key(path, text)
    index = _INDEX_CACHE.get(key)
    if index is None:
        _scan(path, text)
        index = _INDEX_CACHE[key]
    return index


def _lexicon_cached(path: str, text: str) -> Lexicon:
    key = _text_key(path, text)
    lex = _LEX_CACHE.get(key)
    if lex is None:
        _scan(path, text)
        lex = _LEX_CACHE[key]
    return lex


def _parse_cached(path: str, text: str) -> FileInfo:
    key = _text_key(path, text)
    info = _PARSE_CACHE.get(key)
    if info is None:
        info = _bounded_put(
            _PARSE_CACHE, key, parse_file(path, text.encode("utf-8")), _PARSE_CACHE_MAX
        )
    return info


# (start byte, end byte, start row, start column, end row, end column)
Span = tuple[int, int, int, int, int, int]


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


def _span(node: Node) -> Span:
    return (node.start_byte, node.end_byte, *node.start_point, *node.end_point)


def _parse_span(source: bytes, span: Span) -> Node | None:
    """The one top-level node a parse of `span` of `source` alone gives (the
    rest of the text is skipped: tree-sitter's included ranges), or None."""
    import tree_sitter

    start, end, srow, scol, erow, ecol = span
    parser = tree_sitter.Parser(
        _parser().language,
        included_ranges=[tree_sitter.Range((srow, scol), (erow, ecol), start, end)],
    )
    children = parser.parse(source).root_node.children
    return children[0] if len(children) == 1 else None


def _same_subtree(a: Node, b: Node) -> bool:
    """Whether two syntax trees are the same node for node: kind, position,
    field, flags, in order (two parses of the same bytes: same text too)."""
    ca, cb = a.walk(), b.walk()
    while True:
        na, nb = ca.node, cb.node
        if na is None or nb is None or ca.field_id != cb.field_id:
            return False
        if (
            na.kind_id != nb.kind_id
            or na.start_byte != nb.start_byte
            or na.end_byte != nb.end_byte
            or na.start_point != nb.start_point
            or na.end_point != nb.end_point
            or na.is_named != nb.is_named
            or na.is_missing != nb.is_missing
            or na.is_extra != nb.is_extra
            or na.is_error != nb.is_error
            or na.has_error != nb.has_error
            or na.child_count != nb.child_count
        ):
            return False
        if ca.goto_first_child():
            if not cb.goto_first_child():
                return False
            continue
        while True:
            if ca.goto_next_sibling():
                if not cb.goto_next_sibling():
                    return False
                break
            if not ca.goto_parent():
                return not cb.goto_parent()
            if not cb.goto_parent():
                return False


def _verified_span(source: bytes, node: Node) -> Span | None:
    """The span of `node` (a definition in the parse of the whole `source`)
    when parsing that span alone gives the same subtree, else None."""
    span = _span(node)
    alone = _parse_span(source, span)
    return span if alone is not None and _same_subtree(alone, node) else None


_FACTS_CACHE: dict[TextKey, FileFacts] = {}
_FACTS_CACHE_MAX = 4096
_FACTS_NAMESPACE = "sim-facts"


def _facts_cached(path: str, text: str, *, callers: bool = False) -> FileFacts:
    """The FileFacts of `text` (the content of `path`): from the process's
    memo, else bot.cache, else a parse; with `callers` its callers index too."""
    key = _text_key(path, text)
    facts = _FACTS_CACHE.get(key)
    changed = False
    disk = _disk_key(path, text)
    if facts is None:
        hit = cache.get(_FACTS_NAMESPACE, disk) if disk is not None else None
        if hit is not None and isinstance(hit[0], FileFacts):
            facts = hit[0]
        else:
            facts = FileFacts.of(_parse_cached(path, text))
            changed = True
        _bounded_put(_FACTS_CACHE, key, facts, _FACTS_CACHE_MAX)
    if callers and facts.callers is None:
        facts.callers = _parse_cached(path, text).callers()
        changed = True
    if changed and disk is not None:
        cache.put(_FACTS_NAMESPACE, disk, facts)
    return facts


# text -> function -> the span of its definition (see SourceSet._definition)
# when a parse of that span alone was checked to give the very subtree the
# whole file's parse gives; None when it did not. In bot.cache per text.
_SPANS: dict[TextKey, dict[str, Span | None]] = {}
_SPANS_NAMESPACE = "sim-spans"


def _checked_spans(path: str, text: str) -> dict[str, Span | None]:
    key = _text_key(path, text)
    spans = _SPANS.get(key)
    if spans is None:
        disk = _disk_key(path, text)
        hit = cache.get(_SPANS_NAMESPACE, disk) if disk is not None else None
        spans = dict(hit[0]) if hit is not None and isinstance(hit[0], dict) else {}
        _bounded_put(_SPANS, key, spans, _FACTS_CACHE_MAX)
    return spans


def _record_span(path: str, text: str, name: str, span: Span | None) -> None:
    spans = _checked_spans(path, text)
    spans[name] = span
    disk = _disk_key(path, text)
    if disk is not None:
        cache.put(_SPANS_NAMESPACE, disk, spans)


_SPAN_CACHE: dict[tuple[TextKey, Span], tuple[FileInfo, Node] | None] = {}
_SPAN_CACHE_MAX = 4096
_SOURCES: dict[TextKey, bytes] = {}
_SOURCES_MAX = 64


def _span_definition(path: str, text: str, name: str, span: Span) -> tuple[FileInfo, Node] | None:
    """The definition of `name` in `text` from a parse of its span alone (a
    FileInfo holding just that definition), or None if that parse has no one
    top-level node there."""
    key = (_text_key(path, text), span)
    if key not in _SPAN_CACHE:
        source = _SOURCES.get(key[0])
        if source is None:
            # the bytes every span of the text is parsed from, encoded once
            source = _bounded_put(_SOURCES, key[0], text.encode("utf-8"), _SOURCES_MAX)
        node = _parse_span(source, span)
        found = None
        if node is not None and (node.start_byte, node.end_byte) == span[:2]:
            info = FileInfo(path=path, source=source)
            info.functions[name] = [node]
            found = (info, node)
        _bounded_put(_SPAN_CACHE, key, found, _SPAN_CACHE_MAX)
    return _SPAN_CACHE[key]


# Headers that, by kernel convention, only define types (`backing-dev-defs.h`,
# `mm_types.h`): an included header's own includes of these are read too, so
# struct layouts one include away are known.
# `^\s*#\s*include\s*<([\w/.\-]+(?:-defs|_types)\.h)>` (re.M), from the `#` on
_TYPE_HEADER = re.compile(r"#\s*include\s*<([\w/.\-]+(?:-defs|_types)\.h)>")


_TYPE_HEADER_CACHE: dict[TextKey, tuple[str, ...]] = {}


def _type_headers(root: Path, rel: str) -> list[str]:
    """The type-definition headers `rel` includes that exist under `root`."""
    text = read_tree_text(str(root), rel, _MAX_FILE_BYTES)  # the checked reader
    if text is None:
        return []
    key = _text_key(rel, text)
    found = _TYPE_HEADER_CACHE.get(key)
    if found is None:
        found = _bounded_put(
            _TYPE_HEADER_CACHE,
            key,
            tuple(f"include/{m.group(1)}" for m in _directives(text, _TYPE_HEADER)),
            _INDEX_CACHE_MAX,
        )
    return [f for f in found if ".." not in f and (root / f).is_file()]


class SourceSet:
    """The C text the simulator may read: overlay files (patch images) win over
    the tree; the tree is searched in the directories of the overlay files and
    the headers they include, never wholesale. `budget` counts what it reads
    and looks up (see budget.py); past its runaway deadline every lookup
    raises SimTimeout."""

    def __init__(
        self,
        files: Mapping[str, str],
        tree_root: str | Path | None = None,
        budget: Budget | None = None,
        *,
        tree_texts: dict[str, str | None] | None = None,
    ) -> None:
        self.budget = budget or Budget()
        self.files = dict(files)
        self.tree_root = Path(tree_root) if tree_root else None
        # tree files read so far (None: not there). `tree_texts` shares them
        # between the SourceSets of one review, which read one tree that does
        # not change meanwhile: each file is read once, not once per side and patch.
        self._texts: dict[str, str | None] = {} if tree_texts is None else tree_texts
        self._parsed: dict[str, FileInfo] = {}
        self._lex: dict[str, Lexicon | None] = {}
        self._candidates: list[str] | None = None
        self._facts: dict[str, FileFacts | None] = {}
        self._def_paths: dict[str, str | None] = {}  # function -> the file defining it
        self._defs: dict[str, tuple[FileInfo, Node] | None] = {}
        self._structs: dict[str, dict[str, str] | None] = {}
        self._listings: dict[str, dict[str, list[str]]] = {}  # see _listing

    # -- files

    def text(self, path: str) -> str | None:
        if path in self.files:
            return self.files[path]
        if path in self._texts:
            return self._texts[path]
        result: str | None = None
        if self.tree_root is not None:
            # paths come from #include lines of hostile patch text: bot.safefs
            # keeps the read in the tree, off symlinks and size-bounded
            result = read_tree_text(str(self.tree_root), path, _MAX_FILE_BYTES)
        self._texts[path] = result
        return result

    def candidates(self) -> list[str]:
        """Overlay paths first, then tree files next to them and headers they include."""
        if self._candidates is not None:
            return self._candidates
        out: list[str] = []
        seen = set(self.files)
        if self.tree_root is not None:
            root = self.tree_root.resolve()
            # the directories of touched .c files (mm/): a header directory such as
            # include/linux holds thousands of unrelated files, so only included
            # headers are read from there
            dirs: list[str] = []
            for path in self.files:
                parent = str(Path(path).parent)
                if path.endswith(".c") and parent not in dirs:
                    dirs.append(parent)
            includes: list[str] = []
            for path, text in self.files.items():
                for delim, inc in file_index(path, text).includes:
                    rel = f"include/{inc}" if delim == "<" else str(Path(path).parent / inc)
                    includes.append(rel)
            for rel in includes:
                if rel not in seen and ".." not in rel and (root / rel).is_file():
                    out.append(rel)
                    seen.add(rel)
                    out += [d for d in _type_headers(root, rel) if d not in seen]
                    seen.update(out)
            for d in dirs:
                folder = (root / d).resolve()
                if not folder.is_relative_to(root) or not folder.is_dir():
                    continue
                for f in sorted(folder.iterdir()):
                    if f.suffix in (".c", ".h") and f.is_file():
                        rel = str(f.relative_to(root))
                        if rel not in seen:
                            out.append(rel)
                            seen.add(rel)
        self._candidates = self.budget.files(list(self.files), out)
        return self._candidates

    def tick(self) -> None:
        """Raise SimTimeout once the runaway deadline has passed."""
        self.budget.check_deadline()

    def lexicon(self, path: str) -> Lexicon | None:
        if path not in self._lex:
            self.tick()
            text = self.text(path)
            self._lex[path] = None if text is None else _lexicon_cached(path, text)
        return self._lex[path]

    def parsed(self, path: str) -> FileInfo | None:
        """The parse of `path` (syntax trees: for translating and bindings)."""
        if path not in self._parsed:
            self.tick()
            text = self.text(path)
            if text is None:
                return None
            self._parsed[path] = _parse_cached(path, text)
        return self._parsed[path]

    def facts(self, path: str) -> FileFacts | None:
        """What `path` defines (see FileFacts), without a parse when known."""
        if path not in self._facts:
            self.tick()
            text = self.text(path)
            self._facts[path] = None if text is None else _facts_cached(path, text)
        return self._facts[path]

    def _callers_index(self, path: str) -> dict[str, list[str]]:
        facts = self.facts(path)
        if facts is None:
            return {}
        if facts.callers is None:
            text = self.text(path)
            if text is not None:
                facts = _facts_cached(path, text, callers=True)
        return facts.callers or {}

    # -- lookups

    def defines(self, name: str) -> bool:
        """Whether some file defines `name` (find_function is not None)."""
        if name in self._defs:
            return self._defs[name] is not None
        if name not in self._def_paths:
            self._def_paths[name] = (
                self._first_file(name, "defines", lambda lex: lex.defines, lambda f: f.defined)
                if self.budget.lookup()
                else None
            )
        return self._def_paths[name] is not None

    def definition_path(self, name: str) -> str | None:
        """The file find_function takes the definition of `name` from (no parse)."""
        return self._def_paths.get(name) if self.defines(name) else None

    def find_function(self, name: str) -> tuple[FileInfo, Node] | None:
        """The definition of `name`; among #ifdef variants the longest body
        (the configured one; stubs are empty)."""
        if name in self._defs:
            return self._defs[name]
        found: tuple[FileInfo, Node] | None = None
        path = self._def_paths.get(name) if self.defines(name) else None
        if path is not None:
            found = self._definition(path, name)
        self._defs[name] = found
        return found

    def _definition(self, path: str, name: str) -> tuple[FileInfo, Node] | None:
        """The definition of `name` in `path`. A file with no whole parse in
        this process where the span of that definition was checked is not
        parsed whole: the span alone gives the same subtree (see _SPANS). A
        whole parse checks the span for the next process (with a disk cache
        only: in the process the whole parse is kept anyway)."""
        text = self.text(path)
        if text is None:
            return None
        spans = _checked_spans(path, text)
        span = spans.get(name)
        whole = path in self._parsed or _text_key(path, text) in _PARSE_CACHE
        if span is not None and not whole:
            self.tick()
            found = _span_definition(path, text, name, span)
            if found is not None:
                return found
        info = self.parsed(path)
        if info is None:
            return None
        node = max(info.functions[name], key=lambda n: n.end_byte - n.start_byte)
        if name not in spans and cache.active() is not None:
            _record_span(path, text, name, _verified_span(info.source, node))
        return (info, node)

    def struct_fields(self, struct: str) -> dict[str, str] | None:
        """Field name -> struct type of the fields of `struct` that are structs."""
        if struct in self._structs:
            return self._structs[struct]
        path = None
        if self.budget.lookup():
            path = self._first_file(struct, "structs", lambda x: x.structs, lambda f: f.structs)
        facts = self.facts(path) if path is not None else None
        result = None if facts is None else facts.structs[struct]
        self._structs[struct] = result
        return result

    def _listing(
        self, which: str, listed: Callable[[Lexicon], Iterable[str]]
    ) -> dict[str, list[str]]:
        """Name -> the candidate files whose lexicon lists it, in candidate order:
        built in one pass, so a lookup does not walk every candidate (a name the
        tree does not define, such as kfree, would walk all of mm/)."""
        found = self._listings.get(which)
        if found is None:
            found = {}
            for path in self.candidates():
                lex = self.lexicon(path)
                if lex is not None:
                    for listed_name in listed(lex):
                        found.setdefault(listed_name, []).append(path)
            self._listings[which] = found
        return found

    def _first_file(
        self,
        name: str,
        which: str,
        listed: Callable[[Lexicon], Iterable[str]],
        known: Callable[[FileFacts], Container[str]],
    ) -> str | None:
        """The first candidate file whose lexicon lists `name` (a scan without a
        parse) and whose facts (its parse) then confirm it, or None."""
        for path in self._listing(which, listed).get(name, ()):
            facts = self.facts(path)
            if facts is not None and name in known(facts):
                return path
        return None

    def ops_bindings(self, functions: Iterable[str]) -> list[tuple[str, str, str, int]]:
        """(slot, function, file, line) for `.slot = function` initialisers naming
        any of `functions`."""
        names = set(functions)
        out: list[tuple[str, str, str, int]] = []
        for path in self.candidates():
            text = self.text(path)
            if text is None:
                continue
            out += [
                (slot, fn, path, line)
                for slot, fn, line in file_index(path, text).initialisers
                if fn in names
            ]
        return out

    def callers(self, name: str) -> list[str]:
        """Functions in the candidate files whose bodies call `name` (only files
        whose index lists `name(` are parsed)."""
        out: list[str] = []
        if not self.budget.lookup():
            return out
        # `\bname\s*\(` occurs in a text exactly when the index lists an
        # identifier `name`; any other name is searched for in the text
        call = None if _IDENTIFIER.fullmatch(name) else re.compile(rf"\b{re.escape(name)}\s*\(")
        for path in self.candidates():
            text = self.text(path)
            if text is None:
                continue
            if call is None:
                if name not in file_index(path, text).called:
                    continue
            elif name not in text or not call.search(text):
                continue
            out.extend(f for f in self._callers_index(path).get(name, ()) if f != name)
        return out


# --------------------------------------------------------------------------- translation


@dataclass
class _Chain:
    owner: str | None  # struct type of the object the path starts at
    path: list[str]
    cur: str | None  # struct type of the expression so far, when known


class _FnCompiler:
    """Translates one function definition into a Function."""

    def __init__(self, ex: Extractor, info: FileInfo, node: Node, name: str) -> None:
        self.ex = ex
        self.info = info
        self.node = node
        self.name = name
        self.code: list[list[Any]] = []  # [kind, loc, expr, target, callee, uses]
        self.env: dict[str, str] = {}
        self.uses: set[str] = set()
        self.labels: dict[str, int] = {}
        self.gotos: list[tuple[int, str]] = []
        self.loops: list[tuple[list[int], list[int]]] = []  # (break jumps, continue jumps)
        self.calls: list[str] = []
        self.notes: list[str] = []
        self.loc_node: Node = node

    # -- emission

    def _loc(self, node: Node) -> Loc:
        text = " ".join(_text(node).split())
        if len(text) > 72:
            text = text[:69] + "..."
        return Loc(self.name, self.info.path, node.start_point[0] + 1, text)

    def emit(
        self, kind: Kind, node: Node, expr: Val | None = None, target: int = -1, callee: str = ""
    ) -> int:
        uses = frozenset(self.uses)
        self.uses = set()
        self.code.append([kind, self._loc(node), expr, target, callee, uses])
        return len(self.code) - 1

    def here(self) -> int:
        return len(self.code)

    def patch(self, idx: int, target: int) -> None:
        self.code[idx][3] = target

    # -- entry

    def learn_types(self) -> None:
        """Fill the type environment from parameters and every local declaration,
        without translating anything (enough to resolve binding keys)."""
        self._params()
        stack = [self.node.child_by_field_name("body")]
        while stack:
            n = stack.pop()
            if n is None:
                continue
            if n.type == "declaration":
                tname = _type_name(n.child_by_field_name("type"))
                for d in n.children_by_field_name("declarator"):
                    name, _ = _declarator_name(d)
                    if name and tname:
                        self.env[name] = tname
            stack.extend(n.named_children)

    def _params(self) -> list[str]:
        params: list[str] = []
        decl = self.node.child_by_field_name("declarator")
        while decl is not None and decl.type != "function_declarator":
            decl = decl.child_by_field_name("declarator")
        if decl is not None:
            plist = decl.child_by_field_name("parameters")
            for p in plist.named_children if plist is not None else []:
                if p.type != "parameter_declaration":
                    continue
                tname = _type_name(p.child_by_field_name("type"))
                pname, _ = _declarator_name(p.child_by_field_name("declarator"))
                if pname and tname:
                    self.env[pname] = tname
                    params.append(tname)
        return params

    def compile(self) -> Function:
        params = self._params()
        body = self.node.child_by_field_name("body")
        if body is not None:
            self.stmt(body)
        self.emit(Kind.RET, self.node.child_by_field_name("body") or self.node)
        for idx, label in self.gotos:
            target = self.labels.get(label)
            if target is None:
                self.code[idx][0] = Kind.RET
                self.code[idx][2] = None
            else:
                self.patch(idx, target)
        fn = Function(
            name=self.name,
            file=self.info.path,
            line=self.node.start_point[0] + 1,
            params=tuple(params),
            notes=self.notes,
        )
        fn.code = [
            Instr(kind=k, loc=loc, expr=e, target=t, callee=c, uses=u)
            for k, loc, e, t, c, u in self.code
        ]
        return fn

    # -- statements

    def block(self, children: list[Node]) -> None:
        i = 0
        while i < len(children):
            child = children[i]
            loop_macro = self._iterator_macro(child)
            if loop_macro is not None and i + 1 < len(children):
                self.iterator_loop(child, loop_macro, children[i + 1])
                i += 2
                continue
            self.stmt(child)
            i += 1

    def _iterator_macro(self, node: Node) -> Node | None:
        """The call of an iterator macro written without `;` before its body."""
        if node.type != "expression_statement":
            return None
        semi = node.children[-1] if node.children else None
        call = node.named_children[0] if node.named_children else None
        if call is None or call.type != "call_expression":
            return None
        name = _text(call.child_by_field_name("function"))
        if not any(glob_match(name, pat) for pat in _ITERATOR_NAMES):
            return None
        if semi is not None and semi.type == ";" and not semi.is_missing:
            return None
        return call

    def iterator_loop(self, head: Node, call: Node, body: Node) -> None:
        # one abstract element: objects are abstracted by type, so the loop
        # over "every cache of this cgroup" visits the one cache once
        args = call.child_by_field_name("arguments")
        if args is not None:
            for a in args.named_children:
                self.value(a)
        self.single_pass(body)

    def single_pass(self, body: Node) -> None:
        """A loop body run once: `break` and `continue` both leave it."""
        breaks: list[int] = []
        conts: list[int] = []
        self.loops.append((breaks, conts))
        self.stmt(body)
        self.loops.pop()
        end = self.here()
        for j in breaks + conts:
            self.patch(j, end)

    def stmt(self, node: Node) -> None:
        t = node.type
        if t == "compound_statement":
            self.block(list(node.named_children))
        elif t == "expression_statement":
            if node.named_children:
                self.expr_stmt(node.named_children[0], node)
        elif t == "declaration":
            self.declaration(node)
        elif t == "if_statement":
            self.if_stmt(node)
        elif t in ("while_statement", "for_statement", "do_statement"):
            self.loop(node)
        elif t == "return_statement":
            val = self.value(node.named_children[0]) if node.named_children else None
            self.emit(Kind.RET, node, val)
        elif t == "goto_statement":
            label = _text(node.child_by_field_name("label"))
            if label in self.labels:
                # a backward goto is a retry loop: bounded by ending the path here
                self.notes.append(f"{self.name}: backward goto {label} ends the path")
                self.emit(Kind.RET, node)
            else:
                self.gotos.append((self.emit(Kind.JUMP, node), label))
        elif t == "labeled_statement":
            label = _text(node.child_by_field_name("label"))
            self.labels[label] = self.here()
            for c in node.named_children:
                if c.type != "statement_identifier":
                    self.stmt(c)
        elif t == "break_statement":
            if self.loops:
                self.loops[-1][0].append(self.emit(Kind.JUMP, node))
        elif t == "continue_statement":
            if self.loops:
                self.loops[-1][1].append(self.emit(Kind.JUMP, node))
        elif t == "switch_statement":
            self.switch(node)
        elif t in ("preproc_if", "preproc_ifdef"):
            # the configured branch: statements before any #else/#elif
            self.block(
                [
                    c
                    for c in node.named_children
                    if c.type not in ("preproc_else", "preproc_elif", "identifier")
                    and c != node.child_by_field_name("condition")
                ]
            )
        elif t == "function_definition":
            # `for_each_x(i) { ... }` parses as a nested definition: its body is the loop
            body = node.child_by_field_name("body")
            if body is not None:
                self.single_pass(body)
        elif t in (
            "comment",
            "preproc_call",
            "preproc_def",
            "preproc_function_def",
            "preproc_include",
            ";",
        ):
            return
        else:
            # anything else (ERROR nodes from macros): keep its calls and uses
            for c in node.named_children:
                if c.type.endswith("_statement") or c.type in ("compound_statement", "declaration"):
                    self.stmt(c)
                elif c.type.endswith("expression"):
                    self.expr_stmt(c, node)

    def expr_stmt(self, expr: Node, stmt: Node) -> None:
        call_fn = self._callee_name(expr)
        api = self.ex.effects.lookup(call_fn) if call_fn else None
        if api is not None and api.effect == "put":
            self.put(expr, api, stmt)
            return
        if api is not None and api.effect in ("lock", "unlock"):
            self.locking(expr, api, stmt)
            return
        if api is not None and api.effect in (
            "cancel_sync",
            "flush",
            "synchronize_rcu",
            "rcu_barrier",
        ):
            self.blocking(expr, api, stmt)
            return
        val = self.value(expr)
        if val != UNKNOWN or self.uses:
            self.emit(Kind.EVAL, stmt, val)

    def declaration(self, node: Node) -> None:
        tname = _type_name(node.child_by_field_name("type"))
        for d in node.children_by_field_name("declarator"):
            name, _ = _declarator_name(d)
            if name and tname:
                self.env[name] = tname
            if d.type == "init_declarator":
                init = d.child_by_field_name("value")
                if init is not None:
                    self.expr_stmt(init, node)

    def if_stmt(self, node: Node) -> None:
        cond = node.child_by_field_name("condition")
        val = self.value(cond) if cond is not None else UNKNOWN
        br = self.emit(Kind.BRANCH, cond or node, val)
        conseq = node.child_by_field_name("consequence")
        if conseq is not None:
            self.stmt(conseq)
        alt = node.child_by_field_name("alternative")
        if alt is None:
            self.patch(br, self.here())
            return
        jmp = self.emit(Kind.JUMP, node)
        self.patch(br, self.here())
        for c in alt.named_children if alt.type == "else_clause" else [alt]:
            self.stmt(c)
        self.patch(jmp, self.here())

    def loop(self, node: Node) -> None:
        unroll = self.ex.loop_unroll
        cond = node.child_by_field_name("condition")
        body = node.child_by_field_name("body")
        update = node.child_by_field_name("update")
        if node.type == "for_statement":
            init = node.child_by_field_name("initializer")
            if init is not None:
                if init.type == "declaration":
                    self.declaration(init)
                else:
                    self.expr_stmt(init, node)
        exits: list[int] = []
        if node.type == "do_statement" and cond is not None and _text(cond).strip("() ") == "0":
            unroll = 1  # do { } while (0): a block, not a loop
        for k in range(unroll):
            if node.type != "do_statement" and cond is not None:
                exits.append(self.emit(Kind.BRANCH, cond, self.value(cond)))
            breaks: list[int] = []
            conts: list[int] = []
            self.loops.append((breaks, conts))
            if body is not None:
                self.stmt(body)
            self.loops.pop()
            for j in conts:
                self.patch(j, self.here())
            if update is not None:
                self.expr_stmt(update, node)
            exits.extend(breaks)
            if node.type == "do_statement" and cond is not None and k + 1 < unroll:
                exits.append(self.emit(Kind.BRANCH, cond, self.value(cond)))
        # past the unroll bound the loop is assumed to end
        end = self.here()
        for j in exits:
            self.patch(j, end)

    def switch(self, node: Node) -> None:
        cond = node.child_by_field_name("condition")
        if cond is not None:
            val = self.value(cond)
            if val != UNKNOWN or self.uses:
                self.emit(Kind.EVAL, cond, val)
        body = node.child_by_field_name("body")
        cases = [
            c
            for c in (body.named_children if body is not None else [])
            if c.type == "case_statement"
        ]
        dispatch: list[int] = []
        has_default = False
        for case in cases:
            has_default = has_default or _text(case).lstrip().startswith("default")
            dispatch.append(self.emit(Kind.BRANCH, case, UNKNOWN))
        default_jump = self.emit(Kind.JUMP, node)
        breaks: list[int] = []
        self.loops.append((breaks, []))
        starts: list[int] = []
        for case in cases:
            starts.append(self.here())
            value = case.child_by_field_name("value")
            self.block([c for c in case.named_children if c != value])
        self.loops.pop()
        end = self.here()
        # each BRANCH falls through to the next test when "true"; jump to the case when "false"
        for idx, start in zip(dispatch, starts, strict=True):
            self.patch(idx, start)
        self.patch(default_jump, end)
        for j in breaks:
            self.patch(j, end)

    def put(self, expr: Node, api: ApiEffect, stmt: Node) -> None:
        args = self._args(expr)
        key = (
            self.counter_key(args[api.counter])
            if api.counter is not None and api.counter < len(args)
            else None
        )
        for a in args:
            self.value(a)
        if key is None:
            if self.uses:
                self.emit(Kind.EVAL, stmt, UNKNOWN)
            return
        release = ""
        if api.release is not None and api.release < len(args):
            release = _text(args[api.release]).lstrip("&").strip()
        self.emit(Kind.EVAL, stmt, ("put", key, release, api.refcount))

    def locking(self, expr: Node, api: ApiEffect, stmt: Node) -> None:
        args = self._args(expr)
        target = args[api.lock] if api.lock is not None and api.lock < len(args) else None
        key = self.lock_key(target) if target is not None else None
        if key is not None:
            if api.effect == "lock":
                self.emit(Kind.WAIT, stmt, ("lock", key))
            else:
                self.emit(Kind.EVAL, stmt, ("unlock", key))
        elif self.uses:
            self.emit(Kind.EVAL, stmt, UNKNOWN)

    def blocking(self, expr: Node, api: ApiEffect, stmt: Node) -> None:
        args = self._args(expr)
        if api.effect in ("synchronize_rcu", "rcu_barrier"):
            self.emit(Kind.WAIT, stmt, ("gp",) if api.effect == "synchronize_rcu" else ("barrier",))
            return
        work = (
            self.key_of(args[api.work]) if api.work is not None and api.work < len(args) else None
        )
        for a in args:
            self.value(a)
        if work is None:
            if self.uses:
                self.emit(Kind.EVAL, stmt, UNKNOWN)
            return
        if api.effect == "cancel_sync":
            self.emit(Kind.EVAL, stmt, ("cancel", work))
            self.emit(Kind.WAIT, stmt, ("idle", work))
        else:
            self.emit(Kind.WAIT, stmt, ("flushed", work))

    # -- expressions

    def _callee_name(self, node: Node) -> str | None:
        while node.type == "parenthesized_expression" and node.named_children:
            node = node.named_children[0]
        if node.type != "call_expression":
            return None
        fn = node.child_by_field_name("function")
        return _text(fn) if fn is not None and fn.type == "identifier" else None

    def _args(self, call: Node) -> list[Node]:
        while call.type == "parenthesized_expression" and call.named_children:
            call = call.named_children[0]
        args = call.child_by_field_name("arguments")
        return [a for a in (args.named_children if args is not None else []) if a.type != "comment"]

    def chain(self, node: Node) -> _Chain | None:
        """Resolve an lvalue-ish expression to (object type, field path),
        recording every dereference as a use of the dereferenced struct type."""
        t = node.type
        if t == "identifier":
            typ = self.env.get(_text(node))
            return _Chain(typ, [], typ) if typ else None
        if t in ("parenthesized_expression",) and node.named_children:
            return self.chain(node.named_children[0])
        if t == "cast_expression":
            val = node.child_by_field_name("value")
            return self.chain(val) if val is not None else None
        if t == "pointer_expression":
            arg = node.child_by_field_name("argument")
            inner = self.chain(arg) if arg is not None else None
            op = _text(node.child_by_field_name("operator"))
            if inner is not None and op == "*" and inner.owner:
                self.uses.add(inner.cur or inner.owner)
            return inner
        if t == "subscript_expression":
            arg = node.child_by_field_name("argument")
            idx = node.child_by_field_name("index")
            if idx is not None:
                self.value(idx)
            inner = self.chain(arg) if arg is not None else None
            if inner is None or inner.owner is None:
                return None
            return _Chain(inner.owner, [*inner.path, "[]"], None)
        if t == "field_expression":
            arg = node.child_by_field_name("argument")
            fname = _text(node.child_by_field_name("field"))
            op = _text(node.child_by_field_name("operator"))
            inner = self.chain(arg) if arg is not None else None
            if arg is not None and inner is None:
                self.value(arg)
            if inner is None or inner.owner is None:
                return None
            owner, path = inner.owner, list(inner.path)
            if op == "->":
                if path and inner.cur:
                    # a pointer to another struct: a new object
                    owner, path = self.ex.object_name(inner.cur, path[-1]), []
                self.uses.add(owner)
            fields = self.ex.struct_fields(inner.cur) if inner.cur else None
            cur = fields.get(fname) if fields else None
            return _Chain(owner, [*path, fname], cur)
        if t == "call_expression":
            self.value(node)
            return None
        return None

    def key_of(self, node: Node) -> Key | None:
        c = self.chain(node)
        if c is None or c.owner is None or not c.path:
            return None
        path = c.path
        if len(path) >= 2 and path[-1] in ("work", "timer"):
            path = path[:-1]  # &dwork->work and &dwork name one delayed work
        key = f"{c.owner}:{'.'.join(path)}"
        if c.cur:
            self.ex.learn_key_type(key, c.cur)
        return key

    def counter_key(self, node: Node) -> Key | None:
        """The key of a counter argument: `&x->ref` names a field; a plain
        pointer (`css_put(css)`) names the refcount of the object it points to."""
        inner = node
        while inner.type == "parenthesized_expression" and inner.named_children:
            inner = inner.named_children[0]
        is_address = (
            inner.type == "pointer_expression"
            and _text(inner.child_by_field_name("operator")) == "&"
        )
        if is_address:
            return self.key_of(inner)
        obj = self.object_of(inner)
        return f"{obj}:refcnt" if obj else None

    def lock_key(self, node: Node) -> Key | None:
        """A lock's key: a field of a struct (one per type), or a global by name."""
        key = self.key_of(node)
        if key is not None:
            return key
        inner = node
        while inner.type in ("pointer_expression", "parenthesized_expression"):
            nxt = inner.child_by_field_name("argument")
            if nxt is None:
                nxt = inner.named_children[0] if inner.named_children else None
            if nxt is None:
                break
            inner = nxt
        if inner.type == "identifier" and _text(inner) not in self.env:
            return f"global:{_text(inner)}"
        return None

    def object_of(self, node: Node) -> str | None:
        """The struct type a pointer expression points to (for free())."""
        c = self.chain(node)
        if c is None or c.owner is None:
            return None
        if not c.path:
            return c.owner
        if c.cur is None:
            return None
        # `kfree(pool->params)`: only when the member's type is known
        return self.ex.object_name(c.cur, c.path[-1])

    def value(self, node: Node | None) -> Val:
        if node is None:
            return UNKNOWN
        t = node.type
        if t in ("parenthesized_expression",) and node.named_children:
            return self.value(node.named_children[-1])
        if t == "number_literal":
            try:
                return ("k", int(_text(node).rstrip("uUlL"), 0))
            except ValueError:
                return UNKNOWN
        if t == "true":
            return ("k", 1)
        if t in ("false", "null"):
            return ("k", 0)
        if t == "cast_expression":
            return self.value(node.child_by_field_name("value"))
        if t == "unary_expression":
            op = _text(node.child_by_field_name("operator"))
            inner = self.value(node.child_by_field_name("argument"))
            return ("not", inner) if op == "!" else UNKNOWN
        if t == "binary_expression":
            op = _text(node.child_by_field_name("operator"))
            left = self.value(node.child_by_field_name("left"))
            right = self.value(node.child_by_field_name("right"))
            if op == "&&":
                return ("and", left, right)
            if op == "||":
                return ("or", left, right)
            if op in ("==", "!=", "<", ">", "<=", ">="):
                return ("cmp", op, left, right)
            return UNKNOWN
        if t == "assignment_expression":
            return self.assignment(node)
        if t == "update_expression":
            arg = node.child_by_field_name("argument")
            key = self.key_of(arg) if arg is not None else None
            if key is None:
                return UNKNOWN
            op = _text(node.child_by_field_name("operator"))
            return ("rmw", "add" if op == "++" else "sub", key, False)
        if t == "field_expression":
            key = self.key_of(node)
            return ("rd", key) if key else UNKNOWN
        if t == "call_expression":
            return self.call(node)
        if t == "comma_expression":
            parts = [self.value(c) for c in node.named_children]
            return ("seq", *parts) if parts else UNKNOWN
        # identifiers, conditionals, sizeof, subscripts...: unknown, but keep uses and calls
        for c in node.named_children:
            if c.type.endswith("expression") or c.type in ("identifier", "argument_list"):
                if c.type == "argument_list":
                    for a in c.named_children:
                        self.value(a)
                elif c.type != "identifier":
                    self.value(c)
        return UNKNOWN

    def assignment(self, node: Node) -> Val:
        left = node.child_by_field_name("left")
        right = node.child_by_field_name("right")
        op = _text(node.child_by_field_name("operator"))
        rval = self.value(right)
        # a local (`cachep = helper(p)`) keeps its declared type: objects are
        # types, so the assignment itself changes nothing modelled
        key = self.key_of(left) if left is not None and left.type != "identifier" else None
        if key is None:
            return rval
        if op == "=":
            # the stored value is evaluated first, with its effects (a counter
            # update, a call's return value)
            return ("wr", key, rval)
        if op in ("+=", "-="):
            return ("rmw", "add" if op == "+=" else "sub", key, False)
        return ("wr", key, UNKNOWN)

    def call(self, node: Node) -> Val:
        name = self._callee_name(node)
        args = self._args(node)
        api = self.ex.effects.lookup(name) if name else None
        if api is None:
            for a in args:
                self.value(a)
                # passing `o->css` of a generic type hands that object on: a use
                passed = self.object_of(a) if a.type == "field_expression" else None
                if passed is not None and "@" in passed:
                    self.uses.add(passed)
            if name is None:
                return UNKNOWN
            if self.ex.is_user_function(name):
                self.emit(Kind.CALL, node, None, callee=name)
                return ("rv",)
            return UNKNOWN
        return self.api_call(api, args, node)

    def api_call(self, api: ApiEffect, args: list[Node], node: Node) -> Val:
        eff = api.effect

        def arg(i: int | None) -> Node | None:
            return args[i] if i is not None and i < len(args) else None

        if eff in ("bind", "bind_release"):
            for a in args:
                self.value(a)
            return UNKNOWN
        if eff in (
            "inc",
            "dec",
            "add",
            "sub",
            "add_ret",
            "sub_ret",
            "sub_test",
            "get",
            "read",
            "set",
        ):
            target = arg(api.counter)
            others = [a for i, a in enumerate(args) if i != api.counter]
            for a in others:
                self.value(a)
            key = self.counter_key(target) if target is not None else None
            if key is None:
                return UNKNOWN
            if eff == "read":
                return ("rd", key)
            if eff == "set":
                return ("wr", key, ("k", api.value))
            op = {"inc": "add", "get": "add", "dec": "sub"}.get(eff, eff)
            return ("rmw", op, key, api.refcount)
        if eff.startswith("bit_"):
            return self.bit_op(eff, arg(api.bit), arg(api.counter))
        if eff in ("free", "free_rcu"):
            target = arg(api.obj)
            for i, a in enumerate(args):
                if i != api.obj:
                    self.value(a)
            obj = self.object_of(target) if target is not None else None
            if obj is None:
                return UNKNOWN
            return ("free", obj) if eff == "free" else ("freercu", obj)
        if eff in ("schedule", "cancel", "pending", "call_rcu"):
            target = arg(api.work)
            for i, a in enumerate(args):
                if i != api.work:
                    self.value(a)
            work = self.key_of(target) if target is not None else None
            if work is None:
                return UNKNOWN
            tag = {
                "schedule": "sched",
                "cancel": "cancel",
                "pending": "pend",
                "call_rcu": "callrcu",
            }[eff]
            return (tag, work)
        if eff in ("rcu_lock", "rcu_unlock"):
            return ("rcu", 1 if eff == "rcu_lock" else -1)
        if eff == "trylock":
            target = arg(api.lock)
            key = self.lock_key(target) if target is not None else None
            return ("trylock", key) if key else UNKNOWN
        if eff in ("lock", "unlock"):
            return UNKNOWN  # a lock taken inside an expression is not modelled
        if eff == "may_release":
            target = arg(api.obj)
            obj = self.object_of(target) if target is not None else None
            for i, a in enumerate(args):
                if i != api.obj:
                    self.value(a)
            return ("release", obj) if obj else UNKNOWN
        for a in args:
            self.value(a)
        return UNKNOWN

    def bit_op(self, eff: str, bit: Node | None, word: Node | None) -> Val:
        """A bit of a flags word as a flag of its own: `test_bit(F, &o->state)`
        reads `o:state.F`; test_and_{set,clear}_bit return the old value."""
        base = self.counter_key(word) if word is not None else None
        name = _text(bit).strip() if bit is not None else ""
        if base is None or not name.isidentifier():
            return UNKNOWN  # a computed bit number: which flag is unknown
        key = f"{base}.{name}"
        if eff == "bit_read":
            return ("rd", key)
        if eff in ("bit_set", "bit_clear"):
            return ("wr", key, ("k", int(eff == "bit_set")))
        if eff == "bit_test_clear":
            # old value, then clear: when it was clear nothing changes
            return ("and", ("rd", key), ("not", ("wr", key, ("k", 0))))
        # bit_test_set: when it was set nothing changes
        return ("or", ("rd", key), ("not", ("wr", key, ("k", 1))))


@dataclass
class _FileBindings:
    """The bindings found in one file text, and what finding them depended on
    outside that text: the effects table and `generic_types` (in the memo's
    key, the table by its content fingerprint), and the struct layouts looked
    up in the sources (`consulted`, in order). A reuse looks the same structs
    up in its own sources, in the same order, and stops at the first that
    differs: up to there it made the very lookups a new search would make.
    `key_types` are the field types the search learned, in order, replayed on
    a reuse. Kept in the process and in bot.cache (a pickle of plain data)."""

    bindings: list[Binding] = field(default_factory=list)
    consulted: list[tuple[str, dict[str, str] | None]] = field(default_factory=list)
    key_types: list[tuple[Key, str]] = field(default_factory=list)

    def valid_for(self, ex: Extractor) -> bool:
        return all(ex.sources.struct_fields(s) == fields for s, fields in self.consulted)


# file bindings kept across reviews, keyed by path, text, effects fingerprint
# and generic types; in bot.cache under this namespace
_BINDINGS_CACHE: dict[tuple[str, int, int, str, frozenset[str]], _FileBindings] = {}
_BINDINGS_CACHE_MAX = 1024
_BINDINGS_NAMESPACE = "sim-bindings"


def _bindings_disk_key(
    path: str, text: str, effects: Effects, generic: frozenset[str]
) -> str | None:
    text_key = _disk_key(path, text)
    if text_key is None:
        return None
    return cache.text_key(text_key, effects.fingerprint, "\0".join(sorted(generic)))


@dataclass
class _Translation:
    """One function translated, and what translating it asked outside its
    text: the effects table, loop_unroll and `generic_types` (in the memo's
    key), and, in order, the struct layouts and the definitions it looked up
    in the sources (`lookups`: ("struct", name, fields) and ("defined", name,
    found)). The translation is a function of its node and those answers, so
    a reuse that gets the same answers from its own sources, in the same
    order, is the very translation a new one would make. `key_types` are the
    field types it taught the extractor, replayed on a reuse."""

    function: Function
    lookups: list[tuple[str, str, object]] = field(default_factory=list)
    key_types: list[tuple[Key, str]] = field(default_factory=list)

    def valid_for(self, ex: Extractor) -> bool:
        for kind, name, answer in self.lookups:
            got = ex.sources.struct_fields(name) if kind == "struct" else ex.sources.defines(name)
            if got != answer:
                return False
        return True


# translations kept across reviews, keyed by path, text, function, effects
# fingerprint, loop_unroll and generic types; in bot.cache under this namespace
_TranslationKey = tuple[str, int, int, str, str, int, frozenset[str]]
_TRANSLATIONS: dict[_TranslationKey, _Translation] = {}
_TRANSLATIONS_MAX = 8192
_TRANSLATIONS_NAMESPACE = "sim-functions"


def clear_caches() -> None:
    """Forget every file fact kept across SourceSets and reviews in this
    process (parses, lexicons, indexes, bindings): the next lookups compute
    them afresh, or read them back from bot.cache when it is configured."""
    for memo in (
        _PARSE_CACHE,
        _LEX_CACHE,
        _INDEX_CACHE,
        _TYPE_HEADER_CACHE,
        _FACTS_CACHE,
        _SPANS,
        _SPAN_CACHE,
        _SOURCES,
        _BINDINGS_CACHE,
        _TRANSLATIONS,
        _DISK_KEYS,
    ):
        memo.clear()


class Extractor:
    """Translates functions on demand and remembers which ones were wanted."""

    def __init__(self, sources: SourceSet, effects: Effects, *, loop_unroll: int = 2) -> None:
        self.sources = sources
        self.effects = effects
        self.loop_unroll = loop_unroll
        self.functions: dict[str, Function] = {}
        self._expanded: dict[str, int] = {}  # function -> call depth it was followed from
        # field key -> struct type it holds or points to, when the layout is known
        self.key_types: dict[Key, str] = {}
        self.notes: list[str] = []
        # struct types shared by many owners (a css): an object of such a type
        # is named by the member it is reached through, so `wb->a_css` and
        # `wb->b_css` are two objects (scenario data `generic_types`)
        self.generic_types: frozenset[str] = frozenset()
        # while one file's bindings are found: what they consulted (see _FileBindings)
        self._recording: _FileBindings | None = None
        # while one function is translated: what it looked up (see _Translation)
        self._translating: _Translation | None = None

    def struct_fields(self, struct: str) -> dict[str, str] | None:
        """The sources' struct_fields, recorded while a file's bindings are
        found or a function is translated."""
        fields = self.sources.struct_fields(struct)
        if self._recording is not None:
            self._recording.consulted.append((struct, fields))
        if self._translating is not None:
            self._translating.lookups.append(("struct", struct, fields))
        return fields

    def learn_key_type(self, key: Key, struct: str) -> None:
        """Remember the struct type a field key holds (recorded likewise)."""
        self.key_types[key] = struct
        if self._recording is not None:
            self._recording.key_types.append((key, struct))
        if self._translating is not None:
            self._translating.key_types.append((key, struct))

    def is_user_function(self, name: str) -> bool:
        found = self.sources.defines(name)
        if self._translating is not None:
            self._translating.lookups.append(("defined", name, found))
        return found

    def compile(self, name: str) -> Function | None:
        """Translate `name` (once); None when no definition is found. A
        translation of the same definition (same file text) an earlier
        extractor or process made is reused where its lookups get the same
        answers here (see _Translation): then the file is not even parsed."""
        if name in self.functions:
            return self.functions[name]
        if not self.sources.defines(name) or not self.sources.budget.translate(name):
            return None
        path = self.sources.definition_path(name)
        text = self.sources.text(path) if path is not None else None
        if path is None or text is None:
            return None
        key = (
            *_text_key(path, text),
            name,
            self.effects.fingerprint,
            self.loop_unroll,
            self.generic_types,
        )
        memo = _TRANSLATIONS.get(key)
        disk: str | None = None
        if memo is None:
            disk = self._translation_disk_key(path, text, name)
            hit = cache.get(_TRANSLATIONS_NAMESPACE, disk) if disk is not None else None
            if hit is not None and isinstance(hit[0], _Translation):
                memo = hit[0]
        self.sources.tick()
        if memo is None or not memo.valid_for(self):
            found = self.sources.find_function(name)
            if found is None:
                return None
            info, node = found
            memo = _Translation(Function(name, path, 0))
            self._translating = memo
            try:
                memo.function = _FnCompiler(self, info, node, name).compile()
            finally:
                self._translating = None
            disk = disk or self._translation_disk_key(path, text, name)
            if disk is not None:
                cache.put(_TRANSLATIONS_NAMESPACE, disk, memo)
        else:
            for k, v in memo.key_types:
                self.key_types[k] = v
        _bounded_put(_TRANSLATIONS, key, memo, _TRANSLATIONS_MAX)
        self.functions[name] = memo.function
        return memo.function

    def _translation_disk_key(self, path: str, text: str, name: str) -> str | None:
        text_key = _disk_key(path, text)
        if text_key is None:
            return None
        generic = "\0".join(sorted(self.generic_types))
        parts = (text_key, name, self.effects.fingerprint, str(self.loop_unroll), generic)
        return cache.text_key(*parts)

    def compile_reachable(self, roots: Iterable[str], depth: int) -> None:
        """Translate `roots` and what they call, `depth` levels deep. A function
        first reached deep and later as a root (a callback) is followed again
        from the shallower depth."""
        todo: deque[tuple[str, int]] = deque((r, 0) for r in roots)
        cut: set[str] = set()
        while todo:
            name, d = todo.popleft()
            if self._expanded.get(name, depth + 1) <= d:
                continue
            fn = self.compile(name)
            if fn is None:
                continue
            self._expanded[name] = d
            for callee in _callees(fn):
                if d + 1 > depth:
                    if callee not in self.functions:
                        cut.add(callee)
                    continue
                todo.append((callee, d + 1))
        cut -= set(self.functions)
        if cut:
            shown = ", ".join(sorted(cut)[:4]) + (", ..." if len(cut) > 4 else "")
            note = f"call depth bound reached ({depth}): {shown} not followed"
            if note not in self.notes:
                self.notes.append(note)

    def object_name(self, struct: str, member: str) -> str:
        """The abstract object a pointer member of type `struct` points to."""
        return f"{struct}@{member}" if struct in self.generic_types else struct

    def bindings(self) -> list[Binding]:
        """INIT_WORK/timer/call_rcu/percpu_ref_init bindings in the candidate files
        (kept on the SourceSet: every side's extractor asks for the same ones)."""
        kept: dict[str, tuple[list[Binding], dict[Key, str]]] = self.sources.__dict__.setdefault(
            "_bindings_cache", {}
        )
        hit = kept.get(self.effects.fingerprint)
        if hit is not None:
            self.key_types.update(hit[1])
            return list(hit[0])
        before = dict(self.key_types)
        found = self._find_bindings()
        learned = {k: v for k, v in self.key_types.items() if before.get(k) != v}
        kept[self.effects.fingerprint] = (found, learned)
        return list(found)

    def _find_bindings(self) -> list[Binding]:
        names = [n for n, e in self.effects.items() if e.effect in _BINDING_EFFECTS]
        out: list[Binding] = []
        for path in self.sources.candidates():
            text = self.sources.text(path)
            if text is None:
                continue
            out.extend(self._file_bindings(path, text, names))
        return out

    def _file_bindings(self, path: str, text: str, names: list[str]) -> list[Binding]:
        """The bindings of one candidate file, memoised across SourceSets and
        reviews, in the process and in bot.cache (see _FileBindings): replayed
        when the struct layouts they consulted are the same in these sources,
        found again otherwise. A text that names no binding API has none and
        is neither parsed nor looked up."""
        key = (*_text_key(path, text), self.effects.fingerprint, self.generic_types)
        memo = _BINDINGS_CACHE.get(key)
        if memo is None and any(n in text for n in names):
            disk_key = _bindings_disk_key(path, text, self.effects, self.generic_types)
            hit = cache.get(_BINDINGS_NAMESPACE, disk_key) if disk_key is not None else None
            if hit is not None and isinstance(hit[0], _FileBindings):
                memo = hit[0]
        if memo is not None and memo.valid_for(self):
            for k, v in memo.key_types:
                self.key_types[k] = v
            self._remember(key, memo)
            return list(memo.bindings)
        memo = _FileBindings()
        if any(n in text for n in names):
            info = self.sources.parsed(path)
            if info is not None:
                needles = [n.encode("utf-8") for n in names]
                self._recording = memo
                try:
                    for fname, nodes in info.functions.items():
                        for node in nodes:
                            # the body's bytes (valid UTF-8) hold a name where its text does
                            body = info.source[node.start_byte : node.end_byte]
                            if any(n in body for n in needles):
                                memo.bindings += self._bindings_in(info, node, fname)
                finally:
                    self._recording = None
            disk_key = _bindings_disk_key(path, text, self.effects, self.generic_types)
            if disk_key is not None:
                cache.put(_BINDINGS_NAMESPACE, disk_key, memo)
        self._remember(key, memo)
        return list(memo.bindings)

    @staticmethod
    def _remember(key: tuple[str, int, int, str, frozenset[str]], memo: _FileBindings) -> None:
        _bounded_put(_BINDINGS_CACHE, key, memo, _BINDINGS_CACHE_MAX)

    def _bindings_in(self, info: FileInfo, node: Node, fname: str) -> list[Binding]:
        comp = _FnCompiler(self, info, node, fname)
        comp.learn_types()
        out: list[Binding] = []
        stack = [node]
        while stack:
            n = stack.pop()
            if n.type == "call_expression":
                callee = comp._callee_name(n)
                api = self.effects.lookup(callee) if callee else None
                if api is not None and api.effect in _BINDING_EFFECTS and api.callback is not None:
                    args = comp._args(n)
                    field_arg = api.work if api.work is not None else api.counter
                    if field_arg is not None and max(field_arg, api.callback) < len(args):
                        key = comp.key_of(args[field_arg])
                        cb = _text(args[api.callback]).lstrip("&").strip()
                        if key and re.fullmatch(r"\w+", cb):
                            kind = {"bind": "work", "call_rcu": "rcu", "bind_release": "release"}[
                                api.effect
                            ]
                            out.append(Binding(kind, key, cb, comp._loc(n)))
            stack.extend(n.children)
        return out

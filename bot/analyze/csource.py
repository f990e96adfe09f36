"""The C front end's source layer: one tree-sitter parser, checked reads, and what
is known of a file text by its content.

    parser() / parse(text)         this thread's tree-sitter-c parser; a raw parse
    parse_code(text)               a parse with #if/#else/#endif lines blanked
    code_tree(text)                parse_code, once per text in the process: the one
                                   parse every reader of a whole text shares
    parse_span(source, span)       the one definition at `span`, parsed alone
    Texts(files, tree_root)        patch images over the tree: every tree read goes
                                   through bot.safefs's checked reader, once per view
    lexicon(text)                  the lexical facts of a text (definition heads,
                                   struct bodies, #includes, calls, `.slot = fn`),
                                   scanned once per text, kept in bot.cache

The analysis (flow.py, flow_source.py, cfunc.py) and the simulator
(simulate/extract.py) both read C through this module; what a whole parse of a
file gives (definitions, struct layouts, callers) is in cfacts.py.

Every memo here is keyed by the text itself (`text_key`), never by a path
alone: a file edited between two reviews is a new key, so a warm worker never
serves a stale fact.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bot import cache
from bot.safefs import MAX_TREE_FILE, read_tree_text

if TYPE_CHECKING:
    # imported on the first parse: a review whose facts all come from bot.cache
    # does not load tree-sitter at all (~10 ms)
    import tree_sitter

__all__ = [
    "Code",
    "CodeText",
    "Lexicon",
    "Span",
    "TextKey",
    "Texts",
    "bounded_put",
    "calls_spelled",
    "code_text",
    "code_tree",
    "disk_key",
    "forget_trees",
    "lexicon",
    "parse",
    "parse_code",
    "parse_span",
    "parser",
    "parser_stamp",
    "same_subtree",
    "span_of",
    "text_key",
]

# --------------------------------------------------------------------------- parser

# tree_sitter.Parser is not safe to share between threads (Celery may run several).
_LOCAL = threading.local()


def parser() -> tree_sitter.Parser:
    """This thread's tree-sitter parser for C."""
    found: tree_sitter.Parser | None = getattr(_LOCAL, "parser", None)
    if found is None:
        import tree_sitter
        import tree_sitter_c

        found = tree_sitter.Parser(tree_sitter.Language(tree_sitter_c.language()))
        _LOCAL.parser = found
    return found


def parse(source: str | bytes) -> tree_sitter.Tree:
    """A raw parse of C text (str is encoded as UTF-8, bad characters replaced)."""
    data = source if isinstance(source, bytes) else source.encode("utf-8", "replace")
    return parser().parse(data)


_CONDITIONAL = re.compile(r"(?m)^[ \t]*#[ \t]*(?:if|ifdef|ifndef|else|elif|endif)\b[^\n]*$")


def parse_code(text: str) -> tree_sitter.Tree:
    """Parse C text with conditional-compilation lines blanked: both arms of an
    #ifdef are code some config builds, and a partial image often holds an #if
    without its #endif, which would swallow the rest. A blanked line keeps its
    length (spaces), so every node's offsets are offsets into `text` too."""
    return parse(code_text(text).data)


def _spaces(m: re.Match[str]) -> str:
    return " " * len(m.group().encode("utf-8", "replace"))


# A conditional directive, read on a line whose comments and literals are blanked.
_DIRECTIVE = re.compile(r"[ \t]*#[ \t]*(ifdef|ifndef|if|elif|else|endif)\b")
# Comments and literals (their braces are not the code's).
_NOISE = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|/\*.*?\*/|//[^\n]*', re.DOTALL)
_NOT_NL = re.compile(r"[^\n]")


@dataclass(frozen=True)
class CodeText:
    """What the parser reads of a text: the text with its conditional lines
    blanked, its UTF-8 bytes, and `arms`: the byte ranges of the #else/#elif
    arms kept as code (outermost first, sorted, disjoint), where the
    configured build runs the first arm instead (the simulator's reading)."""

    text: str
    data: bytes
    arms: tuple[tuple[int, int], ...]


def code_text(text: str) -> CodeText:
    """`text` with its #if/#elif/#else/#endif lines blanked, keeping both arms as
    code, except where the arms are alternatives of one opening: a complete
    group whose arms do not each balance their braces (`#ifdef A` / `if (x) {` /
    `#else` / `if (y) {` / `#endif`) keeps its first arm only, since the two
    arms one after the other are no C at all. Lengths in bytes are kept."""
    if "#el" not in text:  # no arm to choose between
        plain = _CONDITIONAL.sub(_spaces, text)
        return CodeText(plain, plain.encode("utf-8", "replace"), ())
    code = _NOISE.sub(lambda m: _NOT_NL.sub(" ", m.group()), text)
    lines = text.split("\n")
    blank = [False] * len(lines)
    arms: list[tuple[int, int]] = []  # later arms kept as code: (first line, end line)
    # open groups, innermost last: each a list of arms [first line, brace delta]
    groups: list[list[list[int]]] = []
    continued = False
    for i, line in enumerate(code.split("\n")):
        if continued:  # a directive's `\` continuation line
            continued = line.endswith("\\")
            continue
        m = _DIRECTIVE.match(line)
        if m is None:
            if line.lstrip().startswith("#"):
                continued = line.endswith("\\")
            elif groups:
                groups[-1][-1][1] += line.count("{") - line.count("}")
            continue
        continued = line.endswith("\\")
        blank[i] = True
        word = m.group(1)
        if word.startswith("if"):
            groups.append([[i + 1, 0]])
        elif not groups:
            continue  # an #else/#endif whose #if the text does not show
        elif word in ("elif", "else"):
            groups[-1].append([i + 1, 0])
        else:
            group = groups.pop()
            ends = [arm[0] - 1 for arm in group[1:]] + [i]
            later = list(zip((arm[0] for arm in group[1:]), ends[1:], strict=True))
            if any(arm[1] for arm in group):
                for first, end in later:
                    for j in range(first, end):
                        blank[j] = True
            else:
                arms += later
            if groups:
                groups[-1][-1][1] += group[0][1]
    out = "\n".join(
        " " * len(line.encode("utf-8", "replace")) if gone else line
        for line, gone in zip(lines, blank, strict=True)
    )
    data = out.encode("utf-8", "replace")
    if not arms:
        return CodeText(out, data, ())
    starts = [0]  # byte offset of each line
    for line in lines:
        starts.append(starts[-1] + len(line.encode("utf-8", "replace")) + 1)
    outer: list[tuple[int, int]] = []
    for first, end in sorted(arms, key=lambda a: (a[0], -a[1])):
        if outer and first < outer[-1][1]:
            continue  # inside a later arm already kept apart
        outer.append((first, end))
    return CodeText(out, data, tuple((starts[f], starts[e]) for f, e in outer if f < e))


@dataclass(frozen=True)
class Code:
    """One parse of a text (see code_tree): the bytes parsed, the tree, and the
    byte ranges of its later #else/#elif arms (CodeText.arms)."""

    data: bytes
    tree: tree_sitter.Tree
    arms: tuple[tuple[int, int], ...]


# text -> (the text, its Code). One parse per text, shared by every reader of
# whole texts (cfunc's definitions, the flow index, the simulator's facts):
# keyed by the text itself (length and hash, the text kept to compare),
# bounded by count and by the bytes the trees stand for.
_TREES: dict[tuple[int, int], tuple[str, Code]] = {}
_TREES_MAX = 128
_TREES_MAX_BYTES = 24 << 20
_TREES_BYTES = [0]  # the bytes of the texts _TREES holds


def code_tree(text: str) -> Code:
    """parse_code(text), the bytes it parsed and its arms, once per text in the process."""
    key = (len(text), hash(text))
    hit = _TREES.get(key)
    if hit is not None and hit[0] == text:
        _TREES[key] = _TREES.pop(key)  # most recently used last
        return hit[1]
    blanked = code_text(text)
    found = Code(blanked.data, parser().parse(blanked.data), blanked.arms)
    if hit is not None:  # another text of the same length and hash
        _TREES_BYTES[0] -= len(_TREES.pop(key)[1].data)
    _TREES[key] = (text, found)
    _TREES_BYTES[0] += len(found.data)
    while len(_TREES) > _TREES_MAX or (_TREES_BYTES[0] > _TREES_MAX_BYTES and len(_TREES) > 1):
        oldest = next(iter(_TREES))
        _TREES_BYTES[0] -= len(_TREES.pop(oldest)[1].data)
    return found


def forget_trees() -> None:
    """Drop the kept parses (tests; a worker between unrelated trees)."""
    _TREES.clear()
    _TREES_BYTES[0] = 0


# (start byte, end byte, start row, start column, end row, end column)
Span = tuple[int, int, int, int, int, int]


def span_of(node: tree_sitter.Node) -> Span:
    return (node.start_byte, node.end_byte, *node.start_point, *node.end_point)


def parse_span(source: bytes, span: Span) -> tree_sitter.Node | None:
    """The one top-level node a parse of `span` of `source` alone gives (the
    rest of the text is skipped: tree-sitter's included ranges), or None."""
    import tree_sitter

    start, end, srow, scol, erow, ecol = span
    alone = tree_sitter.Parser(
        parser().language,
        included_ranges=[tree_sitter.Range((srow, scol), (erow, ecol), start, end)],
    )
    children = alone.parse(source).root_node.children
    return children[0] if len(children) == 1 else None


def same_subtree(a: tree_sitter.Node, b: tree_sitter.Node) -> bool:
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


# --------------------------------------------------------------------------- keys and memos

K = TypeVar("K")
V = TypeVar("V")

TextKey = tuple[str, int, int]


def text_key(path: str, text: str) -> TextKey:
    """A file's key in the process's memos: its path and its text (length and
    hash), so an edit of the file is a new key."""
    return (path, len(text), hash(text))


def bounded_put(table: dict[K, V], key: K, value: V, limit: int) -> V:
    """table[key] = value, dropping the oldest entry first when a new key would
    take the table past `limit` (the memos live as long as a worker)."""
    if key not in table and len(table) >= limit:
        table.pop(next(iter(table)))
    table[key] = value
    return value


_MEMO_MAX = 8192
_DISK_KEYS: dict[TextKey, str] = {}


def disk_key(path: str, text: str) -> str | None:
    """bot.cache.text_key(path, text, parser_stamp()), hashed once per text;
    None when no disk cache is configured (nothing to look up, nothing to hash)."""
    if cache.active() is None:
        return None
    key = text_key(path, text)
    found = _DISK_KEYS.get(key)
    if found is None:
        found = bounded_put(_DISK_KEYS, key, cache.text_key(path, text, parser_stamp()), _MEMO_MAX)
    return found


# --------------------------------------------------------------------------- reads


class Texts:
    """The text of each file on one side of a review: `files` (patch images: a
    None is a file that does not exist on this side) win over the tree. Tree
    paths come from #include lines and call names of hostile patch text, so
    every tree read goes through bot.safefs (confined to the tree, no symlink,
    size-bounded, read again when the file changed); each path is read once
    per Texts, and `memo` may share those reads between the views of one review
    (one tree that does not change meanwhile)."""

    def __init__(
        self,
        files: Mapping[str, str | None],
        tree_root: str | Path | None,
        *,
        max_bytes: int = MAX_TREE_FILE,
        memo: dict[str, str | None] | None = None,
    ) -> None:
        self.files = files
        self.tree_root = str(tree_root) if tree_root else None
        self.max_bytes = max_bytes
        self._memo: dict[str, str | None] = {} if memo is None else memo

    def text(self, path: str) -> str | None:
        if path in self.files:
            return self.files[path]
        if self.tree_root is None:
            return None
        if path not in self._memo:
            self._memo[path] = read_tree_text(self.tree_root, path, self.max_bytes)
        return self._memo[path]

    def tree_text(self, path: str) -> str | None:
        """The tree's own copy of `path`, even where a patch image stands for it
        (a partial image shows only the hunks; the rest of the file is here)."""
        if self.tree_root is None:
            return None
        if path not in self.files:
            return self.text(path)
        key = "\0tree\0" + path
        if key not in self._memo:
            self._memo[key] = read_tree_text(self.tree_root, path, self.max_bytes)
        return self._memo[key]


# --------------------------------------------------------------------------- lexical facts

# The scans below are lexical (no parse): they say which files may define a name
# or a struct, so only those get parsed. A name listed is confirmed by a parse.
#
# Two definition scans stay apart on purpose: the analysis (flow_source) takes
# any `name(` at a line start (`heads`), the simulator only a head that reaches
# `{` before `;` and may break before `(` (`defines`). They differ on real
# files: include/linux/memcontrol.h of v3.15.5 has the prototype
# `extern ... *mem_cgroup_css(...);` at a line start and its !CONFIG_MEMCG stub
# with `*mem_cgroup_css(` on an indented line, so only `heads` lists it (and
# the simulator, looking first in included headers, would otherwise take the
# stub for the definition in mm/memcontrol.c).

# `name(` on a line that could start a definition. One line only ([ \t], never
# \s): a partial image is mostly blank lines, and a pattern free to span them
# backtracks for seconds. The name may start the line (kernel style puts the
# return type on the line above).
_HEAD_LINE = re.compile(r"(?m)^(?:[A-Za-z_][\w \t*]*?\b)?([A-Za-z_]\w*)[ \t]*\(")

# The scans below give exactly what these regexes give, faster: the regex
# engine tries a pattern that starts with `^`, `\b` or a class at every
# position of a 200 KB file, a literal first character it finds by a fast scan.
#   definitions  re.finditer(r"^(?:[A-Za-z_][^;{}()\n=]*?[\s*])?([A-Za-z_]\w*)\s*\(", text, re.M)
#   struct bodies re.findall(r"\bstruct\s+([A-Za-z_]\w*)\s*\{", text)
#   called names  set(re.findall(r"\b([A-Za-z_]\w*)\s*\(", text))
_DEF_START = re.compile(r"(?:[A-Za-z_][^;{}()\n=]*?[\s*])?([A-Za-z_]\w*)\s*\(")
_LINE_START = re.compile(r"\n[A-Za-z_]")
_STRUCT_BODY = re.compile(r"struct\s+([A-Za-z_]\w*)\s*\{")
_WORD_CHAR = re.compile(r"\w")
_OPEN_PAREN = re.compile(r"\s*\(")
_CALL_REVERSED = re.compile(r"\(\s*(\w+)")  # `name (` read backwards
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
# `^\s*#\s*include\s*([<"])([\w/.\-]+)[>"]` (re.M), matched from the `#` on (see directives)
_INCLUDE = re.compile(r'#\s*include\s*([<"])([\w/.\-]+)[>"]')
_HASH_INCLUDE = re.compile(r"#\s*include")
# `.slot = fn` (or `= &fn`) in an initialiser: ops tables
_INITIALISER = re.compile(r"\.\s*(\w+)\s*=\s*&?\s*(\w+)\s*[,}\n]")


def def_starts(text: str) -> Iterator[re.Match[str]]:
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


def struct_bodies(text: str) -> list[str]:
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


def calls_spelled(text: str, name: str, *, more_than: int = 0) -> bool:
    """Whether `text` spells `name(` (as `\\bname\\s*\\(` would find it) more
    than `more_than` times: str.find, no pattern compiled per name (a review
    asks this of many names, past the re module's cache)."""
    seen = 0
    width = len(name)
    at = text.find(name) if name else -1
    while at >= 0:
        nxt = at + width
        if (at == 0 or not _WORD_CHAR.match(text, at - 1)) and _OPEN_PAREN.match(text, nxt):
            seen += 1
            if seen > more_than:
                return True
        at = text.find(name, at + 1)
    return False


def called_names(text: str) -> frozenset[str]:
    """Every identifier followed by `(` (the regex above). Read backwards from
    each `(`: the whole word before it (maximal, so at a word boundary), when
    that word starts with a letter or `_`."""
    return frozenset(w[::-1] for w in _CALL_REVERSED.findall(text[::-1]) if w[-1] in _NAME_START)


def directives(text: str, tail: re.Pattern[str]) -> Iterator[re.Match[str]]:
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


@dataclass(frozen=True)
class Lexicon:
    """What one file text may define and what it refers to, found lexically in
    one pass per text and shared by every view and review (see `lexicon`)."""

    heads: frozenset[str]  # any `name(` at a line start (flow_source's filter)
    defines: frozenset[str]  # definition heads reaching `{` before `;` (the simulator's)
    structs: frozenset[str]  # `struct name {`
    includes: tuple[tuple[str, str], ...]  # ("<" or '"', included path) in order
    # every identifier followed by `(` (calls, macro uses, definitions,
    # prototypes): `name(` occurs in the text exactly when name is in it
    called: frozenset[str]
    initialisers: tuple[tuple[str, str, int], ...]  # (slot, function, line) in order

    def include_paths(self) -> tuple[str, ...]:
        return tuple(inc for _, inc in self.includes)


def _scan(text: str) -> Lexicon:
    defines: set[str] = set()
    for m in def_starts(text):
        # a definition reaches its body before any `;` (a prototype or a call does not)
        brace = text.find("{", m.end())
        semi = text.find(";", m.end())
        if brace != -1 and (semi == -1 or brace < semi):
            defines.add(m.group(1))
    inits: list[tuple[str, str, int]] = []
    line, pos = 1, 0
    for m in _INITIALISER.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        inits.append((m.group(1), m.group(2), line))
    return Lexicon(
        heads=frozenset(_HEAD_LINE.findall(text)),
        defines=frozenset(defines),
        structs=frozenset(struct_bodies(text)),
        includes=tuple((m.group(1), m.group(2)) for m in directives(text, _INCLUDE)),
        called=called_names(text),
        initialisers=tuple(inits),
    )


_LEXICONS: dict[tuple[int, int], Lexicon] = {}


def lexicon(text: str) -> Lexicon:
    """The Lexicon of `text`: from the process's memo, else bot.cache (as plain
    data under "lexical"), else a scan."""
    key = (len(text), hash(text))
    lex = _LEXICONS.get(key)
    if lex is None:
        lex = bounded_put(_LEXICONS, key, _lexicon_uncached(text), _MEMO_MAX)
    return lex


def _lexicon_uncached(text: str) -> Lexicon:
    key = cache.text_key(text) if cache.active() is not None else None
    hit = cache.get("lexical", key) if key is not None else None
    if hit is not None:
        value = hit[0]
        if isinstance(value, tuple) and len(value) == 6:
            heads, defines, structs, includes, called, inits = value
            return Lexicon(heads, defines, structs, includes, called, inits)
    lex = _scan(text)
    if key is not None:
        plain = (lex.heads, lex.defines, lex.structs, lex.includes, lex.called, lex.initialisers)
        cache.put("lexical", key, plain)
    return lex


def clear_memos() -> None:
    """Forget the lexicons and disk keys kept in this process."""
    _LEXICONS.clear()
    _DISK_KEYS.clear()

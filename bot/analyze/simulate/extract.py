"""Extraction: C source -> lifecycle program (see program.py).

`Extractor` translates the functions reachable from the actors' entry points,
a few call levels deep, into `Function`s of `Instr` (each lowered from the
function's flow graph by lower.py; no statement walk here): counter and refcount
updates, flag stores and loads, work scheduling, frees, RCU, and every
dereference of a struct pointer (a "use" of that struct type). Everything
else becomes an unknown value, so a branch on it goes both ways. Where the
definitions, struct layouts, callback bindings and ops tables come from is
the shared front end's (sources.py on csource.py and cfacts.py).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot import cache
from bot.analyze import cfacts, csource
from bot.analyze.cfacts import FileInfo, node_text
from bot.analyze.csource import bounded_put, disk_key, lexicon, text_key
from bot.analyze.flow_build import FunctionNode, build_flow
from bot.analyze.simulate.lower import lower_function
from bot.analyze.simulate.program import (
    Binding,
    Function,
    Key,
    Kind,
)
from bot.analyze.simulate.sources import SourceSet
from bot.analyze.simulate.values import ExprTranslator
from bot.analyze.simulate.vocab import Effects

if TYPE_CHECKING:
    from tree_sitter import Node

__all__ = ["Extractor", "SourceSet", "clear_caches"]

_BINDING_EFFECTS = ("bind", "call_rcu", "bind_release")


def _callees(fn: Function) -> list[str]:
    """Functions `fn` calls, release callbacks of its puts included."""
    out: list[str] = []
    for ins in fn.code:
        if ins.kind == Kind.CALL:
            out.append(ins.callee)
        elif ins.expr is not None and ins.expr[0] == "put" and ins.expr[2]:
            out.append(str(ins.expr[2]))
    return list(dict.fromkeys(out))


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
    text_disk = disk_key(path, text)
    if text_disk is None:
        return None
    return cache.text_key(text_disk, effects.fingerprint, "\0".join(sorted(generic)))


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
    process (parses, lexicons, bindings, translations): the next lookups
    compute them afresh, or read them back from bot.cache when it is configured."""
    csource.clear_memos()
    cfacts.clear_memos()
    _BINDINGS_CACHE.clear()
    _TRANSLATIONS.clear()


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
            *text_key(path, text),
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
                memo.function = lower_function(self, info, node, name)
            finally:
                self._translating = None
            disk = disk or self._translation_disk_key(path, text, name)
            if disk is not None:
                cache.put(_TRANSLATIONS_NAMESPACE, disk, memo)
        else:
            for k, v in memo.key_types:
                self.key_types[k] = v
        bounded_put(_TRANSLATIONS, key, memo, _TRANSLATIONS_MAX)
        self.functions[name] = memo.function
        return memo.function

    def _translation_disk_key(self, path: str, text: str, name: str) -> str | None:
        text_disk = disk_key(path, text)
        if text_disk is None:
            return None
        generic = "\0".join(sorted(self.generic_types))
        parts = (text_disk, name, self.effects.fingerprint, str(self.loop_unroll), generic)
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
        key = (*text_key(path, text), self.effects.fingerprint, self.generic_types)
        memo = _BINDINGS_CACHE.get(key)
        # a binding is a call: only the binding APIs the text spells as calls
        # (its lexicon, read once per text) can make one
        called = lexicon(text).called
        names = [n for n in names if n in called]
        if memo is None and names:
            bdisk = _bindings_disk_key(path, text, self.effects, self.generic_types)
            hit = cache.get(_BINDINGS_NAMESPACE, bdisk) if bdisk is not None else None
            if hit is not None and isinstance(hit[0], _FileBindings):
                memo = hit[0]
        if memo is not None and memo.valid_for(self):
            for k, v in memo.key_types:
                self.key_types[k] = v
            self._remember(key, memo)
            return list(memo.bindings)
        memo = _FileBindings()
        if names:
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
            bdisk = _bindings_disk_key(path, text, self.effects, self.generic_types)
            if bdisk is not None:
                cache.put(_BINDINGS_NAMESPACE, bdisk, memo)
        self._remember(key, memo)
        return list(memo.bindings)

    @staticmethod
    def _remember(key: tuple[str, int, int, str, frozenset[str]], memo: _FileBindings) -> None:
        bounded_put(_BINDINGS_CACHE, key, memo, _BINDINGS_CACHE_MAX)

    def _bindings_in(self, info: FileInfo, node: Node, fname: str) -> list[Binding]:
        """The bindings the calls of definition `node` make: the calls are the
        events of its flow graph (the one statement walk), each read by its
        syntax for the key of the field it binds (typed by the locals)."""
        comp = ExprTranslator(self, info, node, fname)
        comp.learn_types()
        body = node.child_by_field_name("body")
        decl = node.child_by_field_name("declarator")
        flow = build_flow(FunctionNode(fname, body or node, decl, 0), info.path, 1)
        out: list[Binding] = []
        for call in reversed(flow.calls):
            api = self.effects.lookup(call.name)
            if api is None or api.effect not in _BINDING_EFFECTS or api.callback is None:
                continue
            n = node.descendant_for_byte_range(*call.at)
            args = comp._args(n) if n is not None and n.type == "call_expression" else []
            field_arg = api.work if api.work is not None else api.counter
            if n is None or field_arg is None or max(field_arg, api.callback) >= len(args):
                continue
            key = comp.key_of(args[field_arg])
            cb = node_text(args[api.callback]).lstrip("&").strip()
            if key and re.fullmatch(r"\w+", cb):
                kind = {"bind": "work", "call_rcu": "rcu", "bind_release": "release"}[api.effect]
                out.append(Binding(kind, key, cb, comp._loc(n)))
        return out

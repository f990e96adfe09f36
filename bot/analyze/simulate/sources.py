"""The C text the simulator may read, and where it looks for a definition.

A `SourceSet` is the simulator's view of one side of a review: overlay files
(patch images) win over the tree; the tree is searched in the directories of
the overlay files and the headers they include, never wholesale. Reads,
lexical pre-filters and parses are the shared front end's (csource.py,
cfacts.py); this module only holds the simulator's search order and budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from bot.analyze import cfacts
from bot.analyze.cfacts import FileFacts, FileInfo, is_stub
from bot.analyze.csource import Lexicon, Texts, calls_spelled, lexicon
from bot.analyze.simulate.budget import Budget
from bot.safefs import tree_is_file, tree_listing

if TYPE_CHECKING:
    from tree_sitter import Node

# Files bigger than this are not parsed to follow calls (generated tables).
MAX_FILE_BYTES = 2_000_000
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


class SourceSet:
    """The C text the simulator may read (see the module docstring). `budget`
    counts what it reads and looks up (see budget.py); past its runaway
    deadline every lookup raises SimTimeout."""

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
        # `tree_texts` shares tree reads between the SourceSets of one review,
        # which read one tree that does not change meanwhile: each file is read
        # once, not once per side and patch.
        self._texts = Texts(self.files, tree_root, max_bytes=MAX_FILE_BYTES, memo=tree_texts)
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
        return self._texts.text(path)

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
                for delim, inc in lexicon(text).includes:
                    rel = f"include/{inc}" if delim == "<" else str(Path(path).parent / inc)
                    includes.append(rel)
            for rel in includes:
                if rel not in seen and ".." not in rel and tree_is_file(root, rel):
                    out.append(rel)
                    seen.add(rel)
                    out += [d for d in self._type_headers(root, rel) if d not in seen]
                    seen.update(out)
            for d in dirs:
                # listed through bot.safefs, as the rule engine's view lists them:
                # a directory reached through a symlink is not listed
                for rel in tree_listing(str(root), d, (".c", ".h")):
                    if rel not in seen:
                        out.append(rel)
                        seen.add(rel)
        self._candidates = self.budget.files(list(self.files), out)
        return self._candidates

    def _type_headers(self, root: Path, rel: str) -> list[str]:
        """The type-definition headers `rel` includes that exist under `root`
        (struct layouts one include away)."""
        text = self.text(rel)
        if text is None:
            return []
        found = cfacts.type_headers(lexicon(text))
        return [f for f in found if ".." not in f and tree_is_file(root, f)]

    def tick(self) -> None:
        """Raise SimTimeout once the runaway deadline has passed."""
        self.budget.check_deadline()

    def lexicon(self, path: str) -> Lexicon | None:
        if path not in self._lex:
            self.tick()
            text = self.text(path)
            self._lex[path] = None if text is None else lexicon(text)
        return self._lex[path]

    def parsed(self, path: str) -> FileInfo | None:
        """The parse of `path` (syntax trees: for translating and bindings)."""
        if path not in self._parsed:
            self.tick()
            text = self.text(path)
            if text is None:
                return None
            self._parsed[path] = cfacts.parsed(path, text)
        return self._parsed[path]

    def facts(self, path: str) -> FileFacts | None:
        """What `path` defines (see FileFacts), without a parse when known."""
        if path not in self._facts:
            self.tick()
            text = self.text(path)
            self._facts[path] = None if text is None else cfacts.facts(path, text)
        return self._facts[path]

    def _callers_index(self, path: str) -> dict[str, list[str]]:
        facts = self.facts(path)
        if facts is None:
            return {}
        if facts.callers is None:
            text = self.text(path)
            if text is not None:
                facts = cfacts.facts(path, text, callers=True)
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
            found = self._definition_in(path, name)
        if found is not None and is_stub(found[1]):
            # `static inline void foo(...) {}` under `#else` in a header, the real
            # body in a .c file: a config-off stub is not what the kernel runs
            # when the feature is built, so the next file defining it is read
            for other in self._listing("defines", lambda lex: lex.defines).get(name, ()):
                if other == path:
                    continue
                facts = self.facts(other)
                if facts is None or name not in facts.defined:
                    continue
                alt = self._definition_in(other, name)
                if alt is not None and not is_stub(alt[1]):
                    found = alt
                    break
        self._defs[name] = found
        return found

    def _definition_in(self, path: str, name: str) -> tuple[FileInfo, Node] | None:
        text = self.text(path)
        if text is None:
            return None
        self.tick()
        whole = path in self._parsed or cfacts.is_parsed(path, text)
        return cfacts.definition(path, text, name, whole=whole)

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
                for slot, fn, line in lexicon(text).initialisers
                if fn in names
            ]
        return out

    def callers(self, name: str) -> list[str]:
        """Functions in the candidate files whose bodies call `name` (only files
        whose lexicon lists `name(` are parsed)."""
        out: list[str] = []
        if not self.budget.lookup():
            return out
        # `\bname\s*\(` occurs in a text exactly when the lexicon lists an
        # identifier `name`; any other name is searched for in the text
        identifier = _IDENTIFIER.fullmatch(name) is not None
        for path in self.candidates():
            text = self.text(path)
            if text is None:
                continue
            if not (name in lexicon(text).called if identifier else calls_spelled(text, name)):
                continue
            out.extend(f for f in self._callers_index(path).get(name, ()) if f != name)
        return out

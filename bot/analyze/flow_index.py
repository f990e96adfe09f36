"""A file's function definitions by name, from the one parse of its text.

    file_index(text, path)      FileIndex: names -> body texts (bot.cache's
                                `definitions`), flows built only for the names
                                asked for (`flows-named`), callers found by
                                searching all bodies at once
    defines(text, name)         the lexical pre-filter before any parse
    definition_nodes(text)      the definitions tree-sitter finds in the parse

flow_source.SourceView reads every file it searches through these.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from bot import cache
from bot.analyze.csource import code_tree, lexicon
from bot.analyze.flow import Flow
from bot.analyze.flow_build import FunctionNode, build_flow, find_definitions

if TYPE_CHECKING:
    import tree_sitter as ts


@dataclass
class FileIndex:
    """A file's definitions by name; flows are built only for names asked for.

    What a file defines (names and body texts) and the flows built for it go
    through bot.cache, keyed by the file's text: a tree file seen by an earlier
    review is not parsed again unless a flow not built then is asked for."""

    path: str
    key: str  # bot.cache.text_key(path, text)
    text: str
    by_name: dict[str, tuple[bytes, ...]]  # name -> body texts, in file order
    flows: dict[str, tuple[Flow, ...]] = field(default_factory=dict)
    _mentioning: dict[frozenset[str], tuple[str, ...]] = field(default_factory=dict)
    _nodes: dict[str, list[FunctionNode]] | None = None
    _tree: ts.Tree | None = None  # keeps the nodes alive
    _blob: tuple[bytes, list[int], list[str]] | None = None  # see _bodies

    def names_mentioning(self, words: frozenset[str]) -> tuple[str, ...]:
        """Defined names (file order) whose body text contains one of `words`: a
        call can only be to a name its body spells out. Each word is searched
        for in all the bodies at once (`_bodies`), not body by body."""
        hit = self._mentioning.get(words)
        if hit is None:
            blob, starts, owners = self._bodies()
            found: set[int] = set()
            for word in words if starts else ():
                needle = word.encode()
                at = blob.find(needle)
                while at >= 0:
                    k = bisect.bisect_right(starts, at) - 1
                    found.add(k)
                    # on to the next body: one hit per body is enough
                    at = blob.find(needle, starts[k + 1]) if k + 1 < len(starts) else -1
            names = {owners[k] for k in found}
            hit = tuple(name for name in self.by_name if name in names)
            self._mentioning[words] = hit
        return hit

    def _bodies(self) -> tuple[bytes, list[int], list[str]]:
        """Every body text joined with NUL bytes (which no word holds, so no
        match spans two bodies), each body's start in it, and its name."""
        if self._blob is None:
            parts: list[bytes] = []
            starts: list[int] = []
            owners: list[str] = []
            at = 0
            for name, bodies in self.by_name.items():
                for body in bodies:
                    starts.append(at)
                    owners.append(name)
                    parts.append(body)
                    at += len(body) + 1
            self._blob = (b"\0".join(parts), starts, owners)
        return self._blob

    def flows_named(self, name: str) -> tuple[Flow, ...]:
        if name not in self.flows:
            if name not in self.by_name:
                self.flows[name] = ()
            else:
                self.flows[name] = cache.cached(
                    "flows-named", f"{self.key}\0{name}", lambda: self._build(name)
                )
        return self.flows[name]

    def _build(self, name: str) -> tuple[Flow, ...]:
        if self._nodes is None:
            self._tree, self._nodes = definition_nodes(self.text)
        flows: list[Flow] = []
        arms = code_tree(self.text).arms
        for fn in self._nodes.get(name, ()):
            try:
                flows.append(build_flow(fn, self.path, 1, arms=arms, origin=self.key))
            except RecursionError:
                continue  # too deeply nested to follow: treat as unknown
        return tuple(flows)


def definition_nodes(text: str) -> tuple[ts.Tree, dict[str, list[FunctionNode]]]:
    # tree-sitter alone (no lexical rescan): this runs on whole tree files, and a
    # definition tree-sitter cannot see is one we do not follow calls into.
    tree = code_tree(text).tree
    nodes: dict[str, list[FunctionNode]] = {}
    for fn in find_definitions(tree.root_node):
        nodes.setdefault(fn.name, []).append(fn)
    return tree, nodes


@lru_cache(maxsize=256)
def file_index(text: str, path: str) -> FileIndex:
    key = cache.text_key(path, text)
    hit = cache.get("definitions", key)
    if hit is not None and isinstance(hit[0], dict):
        return FileIndex(path, key, text, hit[0])
    tree, nodes = definition_nodes(text)
    bodies = {name: tuple(fn.body.text or b"" for fn in fns) for name, fns in nodes.items()}
    cache.put("definitions", key, bodies)
    return FileIndex(path, key, text, bodies, _nodes=nodes, _tree=tree)


def defines(text: str, name: str) -> bool:
    """Cheap test before parsing: `name(` on a line that could start a definition
    (a superset, read once per text, so asking for a name the file does not
    define costs a set lookup)."""
    return name in lexicon(text).heads


__all__ = ["FileIndex", "defines", "definition_nodes", "file_index"]

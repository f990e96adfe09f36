"""Plain-data encoding of the bot's cached values: JSON that can rebuild the
bot's own dataclasses and nothing else, and runs no code when read.

    dumps(value) -> bytes        raises Unencodable for what it cannot express
    loads(data) -> value         raises ValueError for anything not written by dumps

Pickle runs whatever callable a stream names; this format names only classes
defined in `bot.*` modules (an enum member by name, any other class by its
attributes) and rebuilds an object with `object.__new__` and its attribute
dictionary: no constructor, `__setstate__` or `__reduce__` of any class runs,
and an attribute name is never a dunder. Besides those, the scalars (None,
bool, int, float, str), bytes, paths and the containers (tuple, list, dict,
set, frozenset) are encoded. Shared and cyclic objects keep their identity
(a flow's nodes point at each other; its calls are the node events' objects).

The encoded value is a tree of JSON values where a list is a tagged node:
`["t", ...]` tuple, `["l", ...]` list, `["d", k, v, ...]` dict, `["s", ...]`
set, `["f", ...]` frozenset, `["b", hex]` bytes, `["p", str]` path,
`["e", class, name]` enum member, `["o", class, v, ...]` object (attribute
values in the order the class table lists them), `["r", n]` the n-th container
or object met before (in encoding order). `class` indexes a table of
`[module, qualname, [attribute names]]`.
"""

from __future__ import annotations

import enum
import importlib
import json
import re
import sys
import types
from pathlib import Path, PurePath
from typing import Any

__all__ = ["Unencodable", "dumps", "loads"]

FORMAT = 1
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODULE = re.compile(r"bot(\.[A-Za-z_][A-Za-z0-9_]*)*")


class Unencodable(ValueError):
    """A value the format cannot express (a foreign class, a cycle through a tuple)."""


_SCALARS = (str, int, float, bool, type(None))


class _Encoder:
    def __init__(self) -> None:
        self.memo: dict[int, int] = {}
        self.keep: list[object] = []  # keeps ids stable while encoding
        self.classes: dict[tuple[type, tuple[str, ...]], int] = {}
        self.table: list[list[object]] = []
        self.open: set[int] = set()  # tuples and frozensets being encoded

    def _class(self, cls: type, names: tuple[str, ...]) -> int:
        key = (cls, names)
        index = self.classes.get(key)
        if index is None:
            module, qual = cls.__module__, cls.__qualname__
            if not _MODULE.fullmatch(module) or not all(
                _NAME.fullmatch(q) for q in qual.split(".")
            ):
                raise Unencodable(f"{module}.{qual} is not a class of the bot")
            index = self.classes[key] = len(self.table)
            self.table.append([module, qual, list(names)])
        return index

    def _ref(self, value: object) -> int:
        n = self.memo[id(value)] = len(self.memo)
        self.keep.append(value)
        return n

    def enc(self, value: object) -> Any:
        if type(value) in _SCALARS:
            return value
        ref = self.memo.get(id(value))
        if ref is not None:
            if id(value) in self.open:
                raise Unencodable("a cycle through a tuple or frozenset")
            return ["r", ref]
        t = type(value)
        if t is tuple or t is frozenset:
            self._ref(value)
            self.open.add(id(value))
            items = [self.enc(v) for v in value]  # type: ignore[attr-defined]
            self.open.discard(id(value))
            return ["t" if t is tuple else "f", *items]
        if t is list or t is set:
            self._ref(value)
            return ["l" if t is list else "s", *(self.enc(v) for v in value)]  # type: ignore[attr-defined]
        if t is dict:
            self._ref(value)
            out: list[Any] = ["d"]
            for k, v in value.items():  # type: ignore[attr-defined]
                out.append(self.enc(k))
                out.append(self.enc(v))
            return out
        if t is bytes:
            return ["b", value.hex()]  # type: ignore[attr-defined]
        if isinstance(value, PurePath):
            return ["p", str(value)]
        if isinstance(value, enum.Enum):
            return ["e", self._class(t, ()), value.name]
        return self._object(value)

    def _object(self, value: object) -> Any:
        t = type(value)
        state: dict[str, object] = {}
        if hasattr(value, "__dict__"):
            state.update(vars(value))
        for klass in t.__mro__:
            for slot in klass.__dict__.get("__slots__", ()):
                if slot not in ("__dict__", "__weakref__") and hasattr(value, slot):
                    state[slot] = getattr(value, slot)
        if isinstance(value, (tuple, list, dict, set, frozenset, str, bytes, int, float)):
            raise Unencodable(f"a subclass of a builtin type: {t.__qualname__}")
        names = tuple(state)
        if not all(_NAME.fullmatch(n) and not n.startswith("__") for n in names):
            raise Unencodable(f"an attribute name of {t.__qualname__}")
        index = self._class(t, names)
        self._ref(value)
        return ["o", index, *(self.enc(v) for v in state.values())]


def dumps(value: object) -> bytes:
    """The plain-data encoding of `value` (see the module docstring)."""
    encoder = _Encoder()
    try:
        body = encoder.enc(value)
    except RecursionError:
        raise Unencodable("nested too deeply") from None
    doc = {"v": FORMAT, "c": encoder.table, "x": body}
    return json.dumps(doc, separators=(",", ":"), allow_nan=True).encode("ascii")


def _resolve(entry: object) -> tuple[type, tuple[str, ...], frozenset[str]]:
    """The class a table entry names: a class of an importable bot module."""
    if not (isinstance(entry, list) and len(entry) == 3):
        raise ValueError("bad class entry")
    module, qual, names = entry
    if not (isinstance(module, str) and _MODULE.fullmatch(module) and isinstance(qual, str)):
        raise ValueError("class outside the bot")
    if not isinstance(names, list) or not all(
        isinstance(n, str) and _NAME.fullmatch(n) and not n.startswith("__") for n in names
    ):
        raise ValueError("bad attribute names")
    mod = sys.modules.get(module) or importlib.import_module(module)
    obj: object = mod
    for part in qual.split("."):
        if not _NAME.fullmatch(part):
            raise ValueError("bad class name")
        obj = getattr(obj, part)
    if not isinstance(obj, type) or obj.__module__ != module:
        raise ValueError("not a class of the bot")
    if not issubclass(obj, enum.Enum):
        fields = getattr(obj, "__dataclass_fields__", None)
        if fields is not None and not set(fields) <= set(names):
            raise ValueError(f"{qual} without all its fields")
    slots = frozenset(
        n for n in names if isinstance(getattr(obj, n, None), types.MemberDescriptorType)
    )
    return obj, tuple(names), slots


class _Decoder:
    def __init__(self, table: list[tuple[type, tuple[str, ...], frozenset[str]]]) -> None:
        self.table = table
        self.memo: list[object] = []

    def dec(self, node: Any) -> Any:
        if type(node) is not list:
            if type(node) in _SCALARS:
                return node
            raise ValueError("bad node")
        return self._node(node)

    def _items(self, nodes: list[Any]) -> list[Any]:
        # scalars (most of a value) are taken as they are, without a call each
        node = self._node
        return [n if type(n) is not list else node(n) for n in nodes]

    def _node(self, node: list[Any]) -> Any:
        tag = node[0]
        if tag == "o":
            return self._object(node)
        if tag == "r":
            return self.memo[node[1]]
        if tag in ("t", "f"):
            at = len(self.memo)
            self.memo.append(None)
            items = self._items(node[1:])
            value: Any = tuple(items) if tag == "t" else frozenset(items)
            self.memo[at] = value
            return value
        if tag == "l":
            out: list[Any] = []
            self.memo.append(out)
            out.extend(self._items(node[1:]))
            return out
        if tag == "d":
            d: dict[Any, Any] = {}
            self.memo.append(d)
            items = self._items(node[1:])
            for i in range(0, len(items), 2):
                d[items[i]] = items[i + 1]
            return d
        if tag == "s":
            items_set: set[Any] = set()
            self.memo.append(items_set)
            items_set.update(self._items(node[1:]))
            return items_set
        if tag == "b":
            return bytes.fromhex(node[1])
        if tag == "p":
            return _path(node[1])
        if tag == "e":
            cls = self.table[node[1]][0]
            if not issubclass(cls, enum.Enum) or not isinstance(node[2], str):
                raise ValueError("not an enum")
            return cls.__members__[node[2]]
        raise ValueError("bad tag")

    def _object(self, node: list[Any]) -> object:
        cls, names, slots = self.table[node[1]]
        if len(node) != len(names) + 2 or issubclass(cls, enum.Enum):
            raise ValueError("bad object")
        obj = object.__new__(cls)
        self.memo.append(obj)
        values = self._items(node[2:])
        attrs = getattr(obj, "__dict__", None)
        if attrs is not None and not slots:
            attrs.update(zip(names, values, strict=True))
            return obj
        for name, v in zip(names, values, strict=True):
            if name in slots:
                object.__setattr__(obj, name, v)  # a slot (a plain member, no code)
            elif attrs is not None:
                attrs[name] = v
            else:
                raise ValueError(f"{cls.__qualname__} has no attribute {name}")
        return obj


def _path(text: object) -> PurePath:
    if not isinstance(text, str):
        raise ValueError("bad path")
    return Path(text)


def loads(data: bytes) -> object:
    """The value `dumps` encoded in `data`; ValueError for anything else."""
    try:
        doc = json.loads(data)
        if not (isinstance(doc, dict) and doc.get("v") == FORMAT):
            raise ValueError("not a plain-data entry")
        table = [_resolve(entry) for entry in doc["c"]]
        return _Decoder(table).dec(doc["x"])
    except ValueError:
        raise
    except Exception as exc:  # a malformed entry: any failure is a refusal
        raise ValueError(f"bad entry: {type(exc).__name__}") from None

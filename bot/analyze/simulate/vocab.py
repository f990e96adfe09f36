"""API effects for the simulator: which argument a call acts on and how.

The effect table is data (rules/scenarios/api-effects.yaml). When the shared
vocabulary (bot.analyze.api, rules/api/*.yaml) knows a name the table does not,
its family/role is mapped onto an effect here, so adding an API to the
vocabulary is enough for the common roles.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import InputError
from bot.yamlio import load_yaml

# PyYAML is imported only when the table is read (bot.yamlio): a review whose
# simulator data comes from bot.cache (run.load_data) reads no YAML at all.

_EFFECTS = {
    "inc", "dec", "add", "sub", "add_ret", "sub_ret", "sub_test", "read", "set", "get", "put",
    "free", "free_rcu", "schedule", "cancel", "cancel_sync", "flush", "pending", "bind",
    "bind_release", "call_rcu", "rcu_lock", "rcu_unlock", "synchronize_rcu", "rcu_barrier",
    "may_release", "lock", "unlock", "trylock", "bit_read", "bit_set", "bit_clear",
    "bit_test_set", "bit_test_clear",
}  # fmt: skip


@dataclass(frozen=True)
class ApiEffect:
    """What one API call does to modelled state (see api-effects.yaml)."""

    name: str
    effect: str
    counter: int | None = None
    obj: int | None = None
    work: int | None = None
    callback: int | None = None
    release: int | None = None
    lock: int | None = None
    value: int = 1
    refcount: bool = False
    bit: int | None = None  # bit_*: the argument naming the bit (a flag of its own)


class Effects(Mapping[str, ApiEffect]):
    """Name -> ApiEffect, from the scenario data, then the shared vocabulary."""

    def __init__(self, table: dict[str, ApiEffect], vocabulary: Any = None) -> None:
        self._table = table
        self._vocab = vocabulary
        self._cache: dict[str, ApiEffect | None] = {}
        self._fingerprint: str | None = None

    @property
    def vocabulary(self) -> Any:
        """The shared vocabulary consulted for names the table lacks (or None)."""
        return self._vocab

    @property
    def fingerprint(self) -> str:
        """A hash of everything `lookup` can answer: the table's entries and, for
        every name the vocabulary knows, its role. Two tables with the same
        fingerprint give every name the same effect, in any process, so facts
        derived with one (extract's bindings memo) hold for the other. A
        vocabulary that does not list its names gets a fingerprint of its own
        that nothing else shares."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name in sorted(self._table):
                h.update(f"{self._table[name]!r}\n".encode())
            h.update(b"\0vocabulary\0")
            vocab = self._vocab
            names = getattr(vocab, "names", None) if vocab is not None else frozenset()
            if isinstance(names, (set, frozenset)) and callable(getattr(vocab, "role_of", None)):
                for name in sorted(names):
                    h.update(f"{name}\0{vocab.role_of(name)!r}\n".encode())
            else:
                h.update(b"unknown " + os.urandom(16))
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __getitem__(self, name: str) -> ApiEffect:
        found = self.lookup(name)
        if found is None:
            raise KeyError(name)
        return found

    def lookup(self, name: str) -> ApiEffect | None:
        """The effect of `name`: the table first, then the shared vocabulary."""
        if name in self._table:
            return self._table[name]
        if name not in self._cache:
            self._cache[name] = _from_vocabulary(self._vocab, name)
        return self._cache[name]

    def get(self, name: str, default: Any = None) -> Any:
        found = self.lookup(name)
        return default if found is None else found

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


def _from_vocabulary(vocab: Any, name: str) -> ApiEffect | None:
    """Map a vocabulary role (family, kind, role, object_arg, callback_arg) onto
    an effect; None when the vocabulary does not know the name or the role has
    no simulator meaning."""
    if vocab is None:
        return None
    try:
        role = vocab.role_of(name)
    except Exception:
        return None
    if role is None:
        return None
    words = {str(getattr(role, a, "") or "").lower() for a in ("kind", "role")}
    arg = getattr(role, "object_arg", None)
    arg = arg if isinstance(arg, int) else 0
    work = getattr(role, "work_arg", None)
    work = work if isinstance(work, int) else arg
    cb = getattr(role, "callback_arg", None)
    cb = cb if isinstance(cb, int) else None
    effects = {str(e) for e in (getattr(role, "effects", ()) or ())}
    if any(e.startswith("may_release") for e in effects):
        return ApiEffect(name, "may_release", obj=arg)
    if words & {"put", "iter_break"}:
        return ApiEffect(name, "put", counter=arg, release=cb, refcount=True)
    if words & {"get", "tryget"}:
        return ApiEffect(name, "get", counter=arg, refcount=True)
    if words & {"dec_and_test"}:
        return ApiEffect(name, "sub_test", counter=arg, refcount=True)
    if words & {"free", "destroy"}:
        return ApiEffect(name, "free", obj=arg)
    if words & {"rcu_free"}:
        if cb is not None:
            return ApiEffect(name, "call_rcu", work=arg, callback=cb)
        return ApiEffect(name, "free_rcu", obj=arg)
    if words & {"grace_period"}:
        return ApiEffect(name, "synchronize_rcu")
    if words & {"barrier"}:
        return ApiEffect(name, "rcu_barrier")
    if words & {"rcu_read_lock"}:
        return ApiEffect(name, "rcu_lock")
    if words & {"rcu_read_unlock"}:
        return ApiEffect(name, "rcu_unlock")
    if "deferred" in words:
        if words & {"schedule"}:
            return ApiEffect(name, "schedule", work=work)
        if words & {"cancel"}:
            return ApiEffect(name, "cancel_sync" if name.endswith("_sync") else "cancel", work=work)
        if words & {"flush"}:
            return ApiEffect(name, "flush", work=work)
        if words & {"init"} and cb is not None:
            return ApiEffect(name, "bind", work=work, callback=cb)
    return None


def load_effects(scenario_dir: Path, rules_dir: Path | None = None) -> Effects:
    """Read api-effects.yaml from `scenario_dir`; add the shared vocabulary from
    `rules_dir` when bot.analyze.api is available. Raises InputError for a
    malformed table."""
    import yaml

    path = scenario_dir / "api-effects.yaml"
    try:
        doc = load_yaml(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read simulator API effects: {exc}", source=str(path)) from exc
    table: dict[str, ApiEffect] = {}
    for name, spec in (doc.get("effects") or {}).items():
        if not isinstance(spec, dict) or spec.get("effect") not in _EFFECTS:
            raise InputError(f"{name}: unknown or missing effect", source=str(path))
        table[str(name)] = ApiEffect(
            name=str(name),
            effect=str(spec["effect"]),
            counter=spec.get("counter"),
            obj=spec.get("object"),
            work=spec.get("work"),
            callback=spec.get("callback"),
            release=spec.get("release"),
            lock=spec.get("lock"),
            value=int(spec.get("value", 1)),
            refcount=bool(spec.get("refcount", False)),
            bit=spec.get("bit"),
        )
    vocab = None
    if rules_dir is not None:
        try:
            from bot.analyze import api

            vocab = api.load_vocabulary(rules_dir)
        except Exception:
            vocab = None
    return Effects(table, vocab)

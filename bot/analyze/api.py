"""The lifecycle API vocabulary: which kernel calls get, put, free, schedule or look up.

The vocabulary is data (`rules/api/*.yaml`, checked against `rules/api/schema.json`);
this module loads it and answers "what role does this call play?". Rules and the
simulator speak in roles and families (`put` of family `css`), never in function
names, so adding a subsystem is adding a YAML entry.

    vocab = load_vocabulary(settings.rules_dir)
    vocab.role_of("css_put")          -> ApiRole(family="css", kind="refcount", role="put", ...)
    vocab.names_with_role("schedule") -> frozenset({"schedule_work", "queue_work", ...})
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from bot import cache
from bot.errors import InputError
from bot.yamlio import load_yaml

ROLES = (
    "get",
    "tryget",
    "put",
    "destroy",
    "free",
    "create",
    "init",
    "schedule",
    "cancel",
    "flush",
    "rcu_read_lock",
    "rcu_read_unlock",
    "rcu_free",
    "grace_period",
    "barrier",
    "lookup",
    "iter",
    "iter_break",
    "dec_and_test",
    "lock",
    "unlock",
    "publish",
    "unpublish",
    "unlink",
    "write_barrier",
    "read_barrier",
    "publish_entry",
    "liveness_test",
    "wake",
    "count_read",
)

# libyaml's safe loader when present (the pure-Python one is ~10x slower).

# Roles whose calls take no object (a grace period is global); every other role
# defaults to "argument 0 is the object" when the family does not say otherwise.
_OBJECTLESS_ROLES = frozenset(
    {"rcu_read_lock", "rcu_read_unlock", "grace_period", "barrier", "write_barrier", "read_barrier"}
)

# Roles that drop a reference (possibly the last one).
PUT_ROLES = frozenset({"put", "dec_and_test", "iter_break"})
# Roles that end an object's life now.
RELEASE_ROLES = frozenset({"free", "destroy", "rcu_free"})
# Roles that take a reference.
GET_ROLES = frozenset({"get", "tryget"})


@dataclass(frozen=True)
class ApiRole:
    """The role one API name plays in one family, and where its object is."""

    family: str
    kind: str  # refcount|counter|free|deferred|rcu|lookup|iter|lock|publish|order|state
    role: str
    object_arg: int | None  # 0-based argument holding the object; None: no argument
    callback_arg: int | None  # argument holding the callback (INIT_WORK, call_rcu, kref_put)
    work_arg: int | None = None  # argument holding the work item / timer (deferred kind)
    returns_object: bool = False  # the object is the return value (lookups, iterators)
    effects: tuple[str, ...] = ()  # e.g. ("may_release_pages",)
    balance: bool = True  # False: never checked for get/put balance (plain counters)


@dataclass(frozen=True)
class ApiFamily:
    """One family of calls on one kind of object, as written in rules/api/."""

    name: str
    kind: str
    object: str | None
    roles: Mapping[str, tuple[str, ...]]
    source: str  # the YAML file it came from
    balance: bool = True


@dataclass(frozen=True)
class Vocabulary:
    """Every API family, indexed by call name."""

    families: tuple[ApiFamily, ...]
    _by_name: Mapping[str, tuple[ApiRole, ...]] = field(repr=False)
    _effects: Mapping[str, tuple[str, ...]] = field(repr=False)
    # role -> names, built on first use (the matchers ask per function)
    _by_role: dict[str, frozenset[str]] = field(
        default_factory=dict, repr=False, compare=False, hash=False
    )

    def role_of(self, name: str) -> ApiRole | None:
        """The primary role of `name` (first family that lists it), or None."""
        roles = self._by_name.get(name)
        return roles[0] if roles else None

    def roles_of(self, name: str) -> tuple[ApiRole, ...]:
        """Every role `name` plays (a call can belong to more than one family)."""
        return self._by_name.get(name, ())

    def names_with_role(self, role: str) -> frozenset[str]:
        """All call names that play `role` in some family."""
        got = self._by_role.get(role)
        if got is None:
            got = frozenset(n for n, rs in self._by_name.items() if any(r.role == role for r in rs))
            self._by_role[role] = got
        return got

    def callback_takers(self) -> frozenset[str]:
        """All call names with a role that is given a callback (`callback_arg`)."""
        key = "\0callback"
        got = self._by_role.get(key)
        if got is None:
            got = frozenset(
                n for n, rs in self._by_name.items() if any(r.callback_arg is not None for r in rs)
            )
            self._by_role[key] = got
        return got

    def effects_of(self, name: str) -> tuple[str, ...]:
        """Side effects the data records for `name` (may_release_pages, ...)."""
        return self._effects.get(name, ())

    def family(self, name: str) -> ApiFamily | None:
        """The family called `name`."""
        return next((f for f in self.families if f.name == name), None)

    def has_role(self, name: str, *roles: str) -> bool:
        """True when `name` plays any of `roles`."""
        return any(r.role in roles for r in self.roles_of(name))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)


def load_schema(path: Path, what: str) -> dict[str, Any]:
    """The JSON schema at `path`; InputError naming the `what` schema when it
    cannot be read or is not JSON."""
    try:
        schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the {what} schema: {exc}", source=str(path)) from exc
    return schema


def _schema(api_dir: Path) -> dict[str, Any]:
    return load_schema(api_dir / "schema.json", "vocabulary")


def validate_api_dir(api_dir: Path) -> list[str]:
    """Check every rules/api/*.yaml against the schema; one line per problem."""
    return _checked_documents(api_dir)[0]


def _checked_documents(api_dir: Path) -> tuple[list[str], list[tuple[str, Any]]]:
    """(problems, (file name, parsed YAML) of every file): each file is read and
    parsed once, for the check and for building the vocabulary."""
    problems: list[str] = []
    docs: list[tuple[str, Any]] = []
    try:
        schema = _schema(api_dir)
    except InputError as exc:
        return [exc.one_line()], docs
    import yaml

    from bot.schema_check import conforms

    validator: Any = None
    seen: dict[str, str] = {}
    files = sorted(api_dir.glob("*.yaml"))
    if not files:
        problems.append(f"{api_dir}: no vocabulary files (*.yaml)")
    for path in files:
        try:
            doc = load_yaml(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            problems.append(f"{path}: cannot parse: {' '.join(str(exc).split())}")
            continue
        docs.append((path.name, doc))
        if conforms(schema, doc):
            errors: list[Any] = []
        else:
            # jsonschema words the errors (~0.06 s to import: only when needed)
            import jsonschema

            validator = validator or jsonschema.Draft202012Validator(schema)
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        for err in errors:
            where = "/".join(str(p) for p in err.absolute_path) or "(top)"
            problems.append(f"{path.name}: {where}: {err.message}")
        if not isinstance(doc, dict):
            continue
        for fam in doc.get("families") or []:
            if not isinstance(fam, dict):
                continue
            name = str(fam.get("name"))
            if name in seen:
                problems.append(f"{path.name}: family {name!r} already defined in {seen[name]}")
            seen[name] = path.name
            listed = {n for names in (fam.get("roles") or {}).values() for n in names or []}
            for key in ("args", "effects"):
                for api in fam.get(key) or {}:
                    if key == "args" and api not in listed:
                        problems.append(
                            f"{path.name}: family {name!r}: {key} names {api!r}, "
                            "which none of its roles lists"
                        )
    return problems, docs


def _roles_for_family(fam: ApiFamily, args: Mapping[str, Any]) -> Iterable[tuple[str, ApiRole]]:
    for role, names in fam.roles.items():
        for api in names:
            spec = args.get(api) or {}
            obj = spec.get("object", None if role in _OBJECTLESS_ROLES else 0)
            work = spec.get("work")
            if fam.kind == "deferred" and work is None and role not in _OBJECTLESS_ROLES:
                work = 0
            if fam.kind == "deferred" and "object" not in spec:
                obj = work
            yield (
                api,
                ApiRole(
                    family=fam.name,
                    kind=fam.kind,
                    role=role,
                    object_arg=None if obj == "result" else obj,
                    callback_arg=spec.get("callback"),
                    work_arg=work,
                    returns_object=obj == "result",
                    balance=fam.balance,
                ),
            )


def build_vocabulary(docs: Iterable[tuple[str, Mapping[str, Any]]]) -> Vocabulary:
    """Index already-validated vocabulary documents (source name, parsed YAML)."""
    families: list[ApiFamily] = []
    by_name: dict[str, list[ApiRole]] = {}
    effects: dict[str, list[str]] = {}
    for source, doc in docs:
        for raw in doc.get("families") or []:
            fam = ApiFamily(
                name=raw["name"],
                kind=raw["kind"],
                object=raw.get("object"),
                roles={r: tuple(ns) for r, ns in raw["roles"].items()},
                source=source,
                balance=bool(raw.get("balance", True)),
            )
            families.append(fam)
            fam_effects = raw.get("effects") or {}
            for api, role in _roles_for_family(fam, raw.get("args") or {}):
                eff = tuple(fam_effects.get(api, ()))
                by_name.setdefault(api, []).append(ApiRole(**{**role.__dict__, "effects": eff}))
            for api, eff_list in fam_effects.items():
                known = effects.setdefault(api, [])
                known.extend(e for e in eff_list if e not in known)
    return Vocabulary(
        families=tuple(families),
        _by_name={k: tuple(v) for k, v in by_name.items()},
        _effects={k: tuple(v) for k, v in effects.items()},
    )


@lru_cache(maxsize=8)
def _load_cached(api_dir: Path, stamp: str) -> Vocabulary:
    # the stamp is the key: an edited file reloads, here and in bot.cache
    return cache.cached("vocabulary", stamp, lambda: _read_vocabulary(api_dir))


def _read_vocabulary(api_dir: Path) -> Vocabulary:
    problems, docs = _checked_documents(api_dir)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"invalid lifecycle vocabulary: {problems[0]}{more}", source=str(api_dir))
    return build_vocabulary(docs)


def load_vocabulary(rules_dir: Path) -> Vocabulary:
    """Load and validate `rules_dir/api/*.yaml` (cached until a file changes).

    Raises InputError with one line when a file is missing, unparsable or does
    not match the schema.
    """
    api_dir = Path(rules_dir).resolve() / "api"
    if not api_dir.is_dir():
        raise InputError("no api/ folder with the lifecycle vocabulary", source=str(rules_dir))
    files = [p for p in api_dir.glob("*") if p.is_file()]
    return _load_cached(api_dir, cache.stamp_files(files))


__all__ = [
    "GET_ROLES",
    "PUT_ROLES",
    "RELEASE_ROLES",
    "ROLES",
    "ApiFamily",
    "ApiRole",
    "Vocabulary",
    "build_vocabulary",
    "load_vocabulary",
    "validate_api_dir",
]

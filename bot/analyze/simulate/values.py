"""What one statement or expression of a C function becomes in the lifecycle
program (see program.py): the expression half of the translation.

`ExprTranslator` evaluates a statement's expression into a value (counter and
refcount updates, flag stores and loads, work scheduling, frees, RCU, locks),
emits the instructions it implies (a call to a translated function is a CALL
in the middle of the statement) and records every dereference of a struct
pointer as a use of that struct type. The control flow is the flow graph's
(bot/analyze/flow_build.py), lowered in lower.py, which evaluates each node's
syntax here; the binding search uses this half alone (extract.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.analyze.cfacts import FileInfo, declarator_name, node_text, type_name
from bot.analyze.simulate.program import UNKNOWN, Key, Kind, Loc, Val
from bot.analyze.simulate.vocab import ApiEffect

if TYPE_CHECKING:
    from tree_sitter import Node

    from bot.analyze.simulate.extract import Extractor

__all__ = ["ExprTranslator"]


@dataclass
class _Chain:
    owner: str | None  # struct type of the object the path starts at
    path: list[str]
    cur: str | None  # struct type of the expression so far, when known


class ExprTranslator:
    """Translates the statements and expressions of one function definition
    (one at a time, appending to `code`; `env` is the type of each local)."""

    def __init__(self, ex: Extractor, info: FileInfo, node: Node, name: str) -> None:
        self.ex = ex
        self.info = info
        self.node = node
        self.name = name
        self.code: list[list[Any]] = []  # [kind, loc, expr, target, callee, uses]
        self.env: dict[str, str] = {}
        self.uses: set[str] = set()

    # -- emission

    def _loc(self, node: Node) -> Loc:
        text = " ".join(node_text(node).split())
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
                tname = type_name(n.child_by_field_name("type"))
                for d in n.children_by_field_name("declarator"):
                    name, _ = declarator_name(d)
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
                tname = type_name(p.child_by_field_name("type"))
                pname, _ = declarator_name(p.child_by_field_name("declarator"))
                if pname and tname:
                    self.env[pname] = tname
                    params.append(tname)
        return params

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
        tname = type_name(node.child_by_field_name("type"))
        for d in node.children_by_field_name("declarator"):
            name, _ = declarator_name(d)
            if name and tname:
                self.env[name] = tname
            if d.type == "init_declarator":
                init = d.child_by_field_name("value")
                if init is not None:
                    self.expr_stmt(init, node)

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
            release = node_text(args[api.release]).lstrip("&").strip()
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
        return node_text(fn) if fn is not None and fn.type == "identifier" else None

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
            typ = self.env.get(node_text(node))
            return _Chain(typ, [], typ) if typ else None
        if t in ("parenthesized_expression",) and node.named_children:
            return self.chain(node.named_children[0])
        if t == "cast_expression":
            val = node.child_by_field_name("value")
            return self.chain(val) if val is not None else None
        if t == "pointer_expression":
            arg = node.child_by_field_name("argument")
            inner = self.chain(arg) if arg is not None else None
            op = node_text(node.child_by_field_name("operator"))
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
            fname = node_text(node.child_by_field_name("field"))
            op = node_text(node.child_by_field_name("operator"))
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
            and node_text(inner.child_by_field_name("operator")) == "&"
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
        if inner.type == "identifier" and node_text(inner) not in self.env:
            return f"global:{node_text(inner)}"
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
                return ("k", int(node_text(node).rstrip("uUlL"), 0))
            except ValueError:
                return UNKNOWN
        if t == "true":
            return ("k", 1)
        if t in ("false", "null"):
            return ("k", 0)
        if t == "cast_expression":
            return self.value(node.child_by_field_name("value"))
        if t == "unary_expression":
            op = node_text(node.child_by_field_name("operator"))
            inner = self.value(node.child_by_field_name("argument"))
            return ("not", inner) if op == "!" else UNKNOWN
        if t == "binary_expression":
            op = node_text(node.child_by_field_name("operator"))
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
            op = node_text(node.child_by_field_name("operator"))
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
        op = node_text(node.child_by_field_name("operator"))
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
        name = node_text(bit).strip() if bit is not None else ""
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

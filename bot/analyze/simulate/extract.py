"""Extraction: C source -> lifecycle program (see program.py).

`Extractor` translates the functions reachable from the actors' entry points,
a few call levels deep, into `Function`s of `Instr`: counter and refcount
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
from typing import TYPE_CHECKING, Any

from bot import cache
from bot.analyze import cfacts, csource
from bot.analyze.cfacts import FileInfo, declarator_name, node_text, type_name
from bot.analyze.csource import bounded_put, disk_key, text_key
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
from bot.analyze.simulate.sources import SourceSet
from bot.analyze.simulate.vocab import ApiEffect, Effects

if TYPE_CHECKING:
    from tree_sitter import Node

__all__ = ["Extractor", "SourceSet", "clear_caches"]

# Iterator macros (list_for_each_entry, for_each_*, css_for_each_*, hlist_...):
# a call statement without `;` followed by a body.
_ITERATOR_NAMES = ("*for_each*",)
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
        name = node_text(call.child_by_field_name("function"))
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
            label = node_text(node.child_by_field_name("label"))
            if label in self.labels:
                # a backward goto is a retry loop: bounded by ending the path here
                self.notes.append(f"{self.name}: backward goto {label} ends the path")
                self.emit(Kind.RET, node)
            else:
                self.gotos.append((self.emit(Kind.JUMP, node), label))
        elif t == "labeled_statement":
            label = node_text(node.child_by_field_name("label"))
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
        tname = type_name(node.child_by_field_name("type"))
        for d in node.children_by_field_name("declarator"):
            name, _ = declarator_name(d)
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
        if node.type == "do_statement" and cond is not None and node_text(cond).strip("() ") == "0":
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
            has_default = has_default or node_text(case).lstrip().startswith("default")
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
                memo.function = _FnCompiler(self, info, node, name).compile()
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
        if memo is None and any(n in text for n in names):
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
            bdisk = _bindings_disk_key(path, text, self.effects, self.generic_types)
            if bdisk is not None:
                cache.put(_BINDINGS_NAMESPACE, bdisk, memo)
        self._remember(key, memo)
        return list(memo.bindings)

    @staticmethod
    def _remember(key: tuple[str, int, int, str, frozenset[str]], memo: _FileBindings) -> None:
        bounded_put(_BINDINGS_CACHE, key, memo, _BINDINGS_CACHE_MAX)

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
                        cb = node_text(args[api.callback]).lstrip("&").strip()
                        if key and re.fullmatch(r"\w+", cb):
                            kind = {"bind": "work", "call_rcu": "rcu", "bind_release": "release"}[
                                api.effect
                            ]
                            out.append(Binding(kind, key, cb, comp._loc(n)))
            stack.extend(n.children)
        return out

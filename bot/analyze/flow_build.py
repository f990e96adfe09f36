"""Building control-flow graphs from tree-sitter-c syntax (see flow.py for the graph).

    find_definitions(root)            top-level definitions of a parse (SYSCALL_DEFINEn too)
    build_flow(fn, file, line0[, syntax])  the Flow of one definition (and the
                                      syntax node of each graph node, for a lowering)
    flows_in_text(text, file)         every definition of a text, as flows
    flow_of_definition(text, ...)     the flow of one definition's text (through bot.cache)

Kernel loop macros (`list_for_each_entry(...) { }`, `for_each_node(nid) { }`) are
loops whose header assigns the cursor; both arms of an `#if` are code (the rules'
text is parsed with conditional lines blanked: csource.parse_code; on a raw parse
the arms after the first start at an "arm" node). This is the one statement walk
of the bot: the rules and the summaries read the graph, the simulator lowers its
program from it (simulate/lower.py).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from bot import cache
from bot.analyze.csource import code_text, code_tree, parse
from bot.analyze.flow import (
    NO_SPAN,
    Assign,
    Assume,
    Call,
    Event,
    Flow,
    Node,
    Return,
    Span,
    _balanced,
)

if TYPE_CHECKING:
    import tree_sitter as ts

LOOP_MACRO = re.compile(r"(^|_)for_each|_foreach|^for_|_for$")

__all__ = [
    "LOOP_MACRO",
    "FunctionNode",
    "Syntax",
    "build_flow",
    "find_definitions",
    "flow_of_definition",
    "flows_in_text",
]


def _text(node: ts.Node | None) -> str:
    if node is None or node.text is None:
        return ""
    return " ".join(node.text.decode("utf-8", "replace").split())


def _at(node: ts.Node | None) -> Span:
    """The syntax reference of an event: its node's byte range in the parsed text."""
    return (node.start_byte, node.end_byte) if node is not None else NO_SPAN


def _loop_macro_call(stmt: ts.Node) -> ts.Node | None:
    """The call of `stmt` when it is a loop macro by name (`list_for_each_entry`)."""
    call = stmt.named_children[0] if stmt.named_children else None
    if call is None or call.type != "call_expression":
        return None
    name = _text(call.child_by_field_name("function"))
    return call if LOOP_MACRO.search(name) else None


def _macro_then_body(stmt: ts.Node) -> tuple[ts.Node, ts.Node] | None:
    """`macro(...) lhs op= rhs;` (a loop macro glued to its one-line body): the
    macro call and the rest."""
    expr = stmt.named_children[0] if stmt.named_children else None
    if expr is None or expr.type != "assignment_expression":
        return None
    left = expr.child_by_field_name("left")
    if left is None or left.type != "call_expression":
        return None
    if not LOOP_MACRO.search(_text(left.child_by_field_name("function"))):
        return None
    right = expr.child_by_field_name("right")
    return (left, right) if right is not None else None


def _is_missing_semicolon(stmt: ts.Node) -> bool:
    last = stmt.children[-1] if stmt.children else None
    return last is not None and last.type == ";" and last.start_byte == last.end_byte


@dataclass(frozen=True)
class Syntax:
    """The syntax a node of a flow was built from, for a reader that evaluates
    more than events (the simulator's values): `what` the node stands for (a
    statement, a condition, a loop or switch statement, a loop macro's call),
    `where` the statement it is part of (what a trace shows), `whole` for a
    statement the grammar did not make out (a macro's ERROR), whose
    expressions are read one by one. Kept in the process only (build_flow's
    `syntax`), never in a Flow."""

    what: ts.Node
    where: ts.Node
    whole: bool = False


def _is_statement(n: ts.Node) -> bool:
    return n.type.endswith("_statement") or n.type in ("compound_statement", "declaration")


class _Builder:
    def __init__(
        self,
        file: str,
        line0: int,
        syntax: dict[int, Syntax] | None = None,
        arms: tuple[tuple[int, int], ...] = (),
    ) -> None:
        self.file = file
        self.arms = arms
        self.arm_starts = [a for a, _ in arms]
        self.line0 = line0  # absolute line of tree row 0
        self.nodes: dict[int, Node] = {}
        self.labels: dict[str, int] = {}
        self.calls: list[Call] = []
        self.syntax = syntax
        self.exit = self.new().id

    def new(
        self,
        kind: str = "",
        what: ts.Node | None = None,
        ctx: _Ctx | None = None,
        *,
        where: ts.Node | None = None,
        whole: bool = False,
    ) -> Node:
        n = Node(id=len(self.nodes), kind=kind, loops=ctx.loops if ctx is not None else ())
        self.nodes[n.id] = n
        self.keep(n, what, where, whole)
        return n

    def keep(
        self, n: Node, what: ts.Node | None, where: ts.Node | None = None, whole: bool = False
    ) -> None:
        """Record the syntax node `n` stands for."""
        if what is None:
            return
        n.at = _at(what)
        if self.syntax is not None:
            self.syntax[n.id] = Syntax(what, where or what, whole)

    def line(self, node: ts.Node) -> int:
        return self.line0 + node.start_point[0]

    # ------------------------------------------------------------------ events

    def events(
        self, expr: ts.Node | None, guards: tuple[str, ...], cond: bool = False
    ) -> list[Event]:
        out: list[Event] = []
        if expr is not None:
            self._walk_expr(expr, out, guards, cond)
        return out

    def _walk_expr(self, n: ts.Node, out: list[Event], guards: tuple[str, ...], cond: bool) -> None:
        t = n.type
        if t == "call_expression":
            fn = n.child_by_field_name("function")
            args_node = n.child_by_field_name("arguments")
            args: list[str] = []
            if args_node is not None:
                for a in args_node.named_children:
                    if a.type == "comment":
                        continue
                    self._walk_expr(a, out, guards, cond)
                    args.append(_text(a))
            if fn is not None and fn.type != "identifier":
                self._walk_expr(fn, out, guards, cond)
            name = _text(fn) if fn is not None and fn.type == "identifier" else ""
            if name:
                call = Call(name, tuple(args), self.line(n), _text(n), guards, cond, _at(n))
                out.append(call)
                self.calls.append(call)
            return
        if t == "assignment_expression":
            right = n.child_by_field_name("right")
            left = n.child_by_field_name("left")
            if right is not None:
                self._walk_expr(right, out, guards, cond)
            if left is not None and left.type != "identifier":
                self._walk_expr(left, out, guards, cond)
            out.append(Assign(_text(left), _text(right), self.line(n), _at(n)))
            return
        if t == "update_expression":
            arg = n.child_by_field_name("argument")
            if arg is not None and arg.type != "identifier":
                self._walk_expr(arg, out, guards, cond)
            out.append(Assign(_text(arg), _text(n), self.line(n), _at(n)))
            return
        if t == "init_declarator":
            value = n.child_by_field_name("value")
            decl = n.child_by_field_name("declarator")
            if value is not None:
                self._walk_expr(value, out, guards, cond)
                out.append(Assign(_declarator_name(decl), _text(value), self.line(n), _at(n)))
            return
        if t in ("compound_statement", "function_definition"):
            return  # statement expressions / nested definitions: not evaluated here
        for c in n.named_children:
            self._walk_expr(c, out, guards, cond)

    # ------------------------------------------------------------------ statements

    def simple(  # noqa: PLR0917
        self,
        events: list[Event],
        nxt: int,
        ctx: _Ctx,
        what: ts.Node | None = None,
        where: ts.Node | None = None,
        whole: bool = False,
    ) -> int:
        """A node for a statement (or part of one): also one without events,
        for its syntax (a lowering evaluates more than calls and assignments)."""
        if not events and what is None:
            return nxt
        n = self.new("", what, ctx, where=where, whole=whole)
        n.events = events
        n.succ.append((nxt, None))
        return n.id

    def branch(self, cond: ts.Node | None, then_id: int, else_id: int, ctx: _Ctx) -> int:
        n = self.new("if", cond, ctx)
        n.events = self.events(cond, ctx.guards, cond=True)
        text = _strip_parens(_text(cond))
        line = self.line(cond) if cond is not None else 0
        at = _at(cond)
        n.succ.append((then_id, Assume(text, True, line, at)))
        n.succ.append((else_id, Assume(text, False, line, at)))
        return n.id

    def stmt(self, s: ts.Node, nxt: int, ctx: _Ctx) -> int:
        t = s.type
        if t == "compound_statement":
            return self.seq(list(s.named_children), nxt, ctx)
        if t == "expression_statement" and (split := _macro_then_body(s)) is not None:
            # `for_each_x(pos, head)\n\tval += f(pos);` parses as one statement
            # `macro(...) val += ...`: a loop over the statement after the macro
            macro_call, rest = split
            head_events = self.events(macro_call, ctx.guards)
            head = self.new("macro", macro_call, ctx, where=s)
            inner = ctx.enter(head.id, brk=nxt)
            head.loops = inner.loops
            body_id = self.simple(self.events(rest, ctx.guards), head.id, inner, rest, s)
            return self._macro_head(head, self._with_cursors(head_events), body_id, nxt)
        if t in ("expression_statement", "declaration"):
            return self.simple(self.events(s, ctx.guards), nxt, ctx, s)
        if t == "return_statement":
            expr = s.named_children[0] if s.named_children else None
            n = self.new("return", s, ctx)
            n.events = [
                *self.events(expr, ctx.guards),
                Return(_text(expr) or None, self.line(s), _at(s)),
            ]
            n.succ.append((self.exit, None))
            return n.id
        if t == "if_statement":
            cond = s.child_by_field_name("condition")
            ctext = _strip_parens(_text(cond))
            cons = s.child_by_field_name("consequence")
            alt = s.child_by_field_name("alternative")
            then_id = self.stmt(cons, nxt, ctx.guarded(ctext)) if cons is not None else nxt
            else_id = nxt
            if alt is not None:
                body = alt.named_children[-1] if alt.type == "else_clause" else alt
                else_id = self.stmt(body, nxt, ctx.guarded("!(" + ctext + ")"))
            return self.branch(cond, then_id, else_id, ctx)
        if t in ("while_statement", "for_statement", "do_statement"):
            return self.loop(s, nxt, ctx)
        if t == "switch_statement":
            return self.switch(s, nxt, ctx)
        if t == "goto_statement":
            label = _text(s.child_by_field_name("label"))
            jump = self.new("goto", s, ctx)
            jump.succ.append((self.labels.get(label, self.exit), None))
            return jump.id
        if t == "break_statement":
            return ctx.brk if ctx.brk is not None else nxt
        if t == "continue_statement":
            return ctx.cont if ctx.cont is not None else nxt
        if t == "labeled_statement":
            label = _text(s.child_by_field_name("label"))
            labelled = s.named_children[-1] if len(s.named_children) > 1 else None
            target = self.stmt(labelled, nxt, ctx) if labelled is not None else nxt
            placeholder = self.labels.get(label)
            if placeholder is None:
                return target
            place = self.nodes[placeholder]
            place.succ = [(target, None)]
            place.loops = ctx.loops
            self.keep(place, s)
            return placeholder
        if t == "function_definition":
            # `for_each_node(nid) { ... }` parses as a nested definition
            loop_body = s.child_by_field_name("body")
            macro = _text(s.child_by_field_name("type"))
            cursor = _declarator_name(s.child_by_field_name("declarator"))
            header = Call(macro, (cursor,), self.line(s), f"{macro}({cursor})", at=_at(s))
            self.calls.append(header)
            # cursor first, then the step that yields it: a matcher sees the old
            # value go before the macro hands out the next one
            cursor_first: list[Event] = [
                Assign(cursor, header.text, header.line, header.at),
                header,
            ]
            return self.macro_loop(cursor_first, s, loop_body, nxt, ctx)
        if t in ("comment", "preproc_call", "preproc_def", "preproc_function_def"):
            return nxt
        if t.startswith("preproc_if") or t in {"preproc_else", "preproc_elif"}:
            # Both arms of #if/#else are code a config may build: walk them in
            # turn (the arms after the first start at an "arm" node).
            skip = {s.child_by_field_name("condition"), s.child_by_field_name("name")}
            kids = [c for c in s.named_children if c not in skip]
            entry = self.seq(kids, nxt, ctx)
            if t in {"preproc_else", "preproc_elif"}:
                arm = self.new("arm", None, ctx)
                arm.succ = [(entry, None)]
                arm.exit = nxt
                return arm.id
            return entry
        if any(_is_statement(c) for c in s.named_children):
            # a statement the grammar did not make out (a macro's ERROR) with
            # statements in it: those, and its other parts as expressions
            cur = nxt
            for c in reversed(s.named_children):
                if _is_statement(c):
                    cur = self.stmt(c, cur, ctx)
                else:
                    expr = c if c.type.endswith("expression") else None
                    cur = self.simple(self.events(c, ctx.guards), cur, ctx, expr, s)
            return cur
        return self.simple(self.events(s, ctx.guards), nxt, ctx, s, whole=True)

    def seq(self, stmts: list[ts.Node], nxt: int, ctx: _Ctx) -> int:
        # Pair `macro(args)` with a missing `;` and the block after it: a loop macro.
        items: list[tuple[ts.Node, ts.Node | None]] = []
        i = 0
        while i < len(stmts):
            s = stmts[i]
            follow = stmts[i + 1] if i + 1 < len(stmts) else None
            if (
                s.type == "expression_statement"
                and follow is not None
                and _is_missing_semicolon(s)
                and (follow.type == "compound_statement" or _loop_macro_call(s) is not None)
            ):
                items.append((s, follow))
                i += 2
                continue
            items.append((s, None))
            i += 1
        cur = nxt
        end = len(items)
        while end > 0:
            arm = self._arm_of(items[end - 1][0])
            start = end - 1
            while arm is not None and start > 0 and self._arm_of(items[start - 1][0]) == arm:
                start -= 1
            after = cur
            for s, body in reversed(items[start:end]):
                cur = self._item(s, body, cur, ctx)
            if arm is not None:
                # an #else/#elif arm kept as code (csource.CodeText.arms): the
                # rules walk it in turn, the simulator's configured build skips it
                node = self.new("arm", None, ctx)
                node.succ = [(cur, None)]
                node.exit = after
                cur = node.id
            end = start
        return cur

    def _item(self, s: ts.Node, body: ts.Node | None, nxt: int, ctx: _Ctx) -> int:
        if body is None:
            return self.stmt(s, nxt, ctx)
        head = self._with_cursors(self.events(s, ctx.guards))
        call = s.named_children[0] if s.named_children else s
        return self.macro_loop(head, call, body, nxt, ctx, s)

    def _arm_of(self, s: ts.Node) -> int | None:
        """The index of the later #if arm `s` starts in, if any."""
        if not self.arms:
            return None
        k = bisect.bisect_right(self.arm_starts, s.start_byte) - 1
        return k if k >= 0 and s.start_byte < self.arms[k][1] else None

    def _with_cursors(self, head: list[Event]) -> list[Event]:
        call = next((e for e in reversed(head) if isinstance(e, Call)), None)
        if call is None:
            return head
        # Every plain name the macro is given may be a cursor it assigns
        # (`list_for_each_entry(pos, ...)`, `xas_for_each(&xas, entry, max)`);
        # the first one is the cursor that is NULL once the loop ends.
        names = [a for a in call.args if re.fullmatch(r"[a-z_]\w*", a)]
        at = head.index(call)
        out = list(head)
        for name in reversed(names):
            out.insert(at, Assign(name, call.text, call.line, call.at))
        return out

    def macro_loop(  # noqa: PLR0917
        self,
        head: list[Event],
        what: ts.Node,
        body: ts.Node | None,
        nxt: int,
        ctx: _Ctx,
        where: ts.Node | None = None,
    ) -> int:
        h = self.new("macro", what, ctx, where=where)
        inner = ctx.enter(h.id, brk=nxt)
        h.loops = inner.loops
        body_id = self.stmt(body, h.id, inner) if body is not None else h.id
        return self._macro_head(h, head, body_id, nxt)

    def _macro_head(self, h: Node, head: list[Event], body_id: int, nxt: int) -> int:
        h.events = head
        h.exit = nxt
        # The cursor is non-NULL inside the body and NULL once the macro runs out.
        cursor = next((e.lhs for e in head if isinstance(e, Assign)), "")
        line = head[-1].line if head else 0
        at = head[-1].at if head else NO_SPAN
        if cursor:
            h.succ = [
                (body_id, Assume(cursor, True, line, at)),
                (nxt, Assume(cursor, False, line, at)),
            ]
        else:
            h.succ = [(body_id, None), (nxt, None)]
        return h.id

    def loop(self, s: ts.Node, nxt: int, ctx: _Ctx) -> int:
        cond = s.child_by_field_name("condition")
        body = s.child_by_field_name("body")
        ctext = _strip_parens(_text(cond))
        if s.type == "do_statement":
            # do { body } while (cond);
            head = self.new("do", s, ctx)
            test = self.new("do-test", cond, ctx)
            inner = ctx.enter(head.id, brk=nxt, cont=test.id)
            head.loops = test.loops = inner.loops
            head.exit = nxt
            body_id = self.stmt(body, test.id, inner) if body is not None else test.id
            head.succ = [(body_id, None)]
            test.events = self.events(cond, ctx.guards, cond=True)
            line, at = (self.line(cond) if cond is not None else 0), _at(cond)
            test.succ = [
                (head.id, Assume(ctext, True, line, at)),
                (nxt, Assume(ctext, False, line, at)),
            ]
            return head.id
        head = self.new("loop", cond, ctx)
        head.exit = nxt
        if s.type == "for_statement":
            init = s.child_by_field_name("initializer")
            update = s.child_by_field_name("update")
            inner = ctx.enter(head.id, brk=nxt)
            head.loops = inner.loops
            upd_id = self.simple(self.events(update, ctx.guards), head.id, inner, update, s)
            inner = inner.loop(brk=nxt, cont=upd_id)
            if cond is not None:
                inner = inner.guarded(ctext)
            body_id = self.stmt(body, upd_id, inner) if body is not None else upd_id
            if cond is not None:
                head.events = self.events(cond, ctx.guards, cond=True)
                line, at = self.line(cond), _at(cond)
                head.succ = [
                    (body_id, Assume(ctext, True, line, at)),
                    (nxt, Assume(ctext, False, line, at)),
                ]
            else:
                head.succ = [(body_id, None)]
            return self.simple(self.events(init, ctx.guards), head.id, ctx, init, s)
        # while (cond) body
        inner = ctx.enter(head.id, brk=nxt, cont=head.id)
        head.loops = inner.loops
        body_id = self.stmt(body, head.id, inner.guarded(ctext)) if body is not None else head.id
        head.events = self.events(cond, ctx.guards, cond=True)
        line, at = (self.line(cond) if cond is not None else 0), _at(cond)
        head.succ = [
            (body_id, Assume(ctext, True, line, at)),
            (nxt, Assume(ctext, False, line, at)),
        ]
        return head.id

    def switch(self, s: ts.Node, nxt: int, ctx: _Ctx) -> int:
        cond = s.child_by_field_name("condition")
        body = s.child_by_field_name("body")
        head = self.new("switch", s, ctx)
        head.exit = nxt
        head.events = self.events(cond, ctx.guards, cond=True)
        cases = [
            c
            for c in (body.named_children if body is not None else [])
            if c.type == "case_statement"
        ]
        inner = ctx.loop(brk=nxt, cont=ctx.cont if ctx.cont is not None else nxt)
        cur = nxt
        entries: list[int] = []
        has_default = False
        for case in reversed(cases):
            value = case.child_by_field_name("value")
            has_default = has_default or value is None
            stmts = [c for c in case.named_children if c is not value]
            cur = self.seq(stmts, cur, inner)
            entries.append(cur)
        head.succ = [(e, None) for e in reversed(entries)]
        if not has_default:
            head.succ.append((nxt, None))
        return head.id


@dataclass(frozen=True)
class _Ctx:
    brk: int | None = None
    cont: int | None = None
    guards: tuple[str, ...] = ()
    loops: tuple[int, ...] = ()  # heads of the enclosing loops, innermost last

    def loop(self, brk: int, cont: int) -> _Ctx:
        return _Ctx(brk, cont, self.guards, self.loops)

    def enter(self, head: int, brk: int, cont: int | None = None) -> _Ctx:
        """The context inside the loop headed by `head` (`continue`: to `cont`,
        else the head)."""
        return _Ctx(brk, head if cont is None else cont, self.guards, (*self.loops, head))

    def guarded(self, cond: str) -> _Ctx:
        return _Ctx(self.brk, self.cont, (*self.guards, cond), self.loops)


def _strip_parens(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _declarator_name(decl: ts.Node | None) -> str:
    while decl is not None and decl.type not in ("identifier", "field_identifier"):
        inner = decl.child_by_field_name("declarator")
        if inner is None:
            ids = [c for c in decl.named_children if c.type == "identifier"]
            return _text(ids[0]) if ids else _text(decl)
        decl = inner
    return _text(decl)


def _params(decl: ts.Node | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    while decl is not None and decl.type != "function_declarator":
        decl = decl.child_by_field_name("declarator")
    if decl is None:
        return (), ()
    plist = decl.child_by_field_name("parameters")
    names: list[str] = []
    types: list[str] = []
    for p in plist.named_children if plist is not None else []:
        if p.type != "parameter_declaration":
            continue
        d = p.child_by_field_name("declarator")
        names.append(_declarator_name(d) if d is not None else "")
        types.append(_text(p.child_by_field_name("type")))
    return tuple(names), tuple(types)


@dataclass(frozen=True)
class FunctionNode:
    """A function definition found in a parse tree."""

    name: str
    body: ts.Node
    declarator: ts.Node | None
    start_line: int  # 0-based row of the definition's first line


_NESTING = frozenset({"preproc_else", "preproc_elif", "linkage_specification", "declaration_list"})


def find_definitions(root: ts.Node) -> Iterator[FunctionNode]:
    """Top-level function definitions, including `SYSCALL_DEFINEn(name, ...) { }`."""
    kids = root.named_children
    for i, n in enumerate(kids):
        if n.type == "function_definition":
            body = n.child_by_field_name("body")
            decl = n.child_by_field_name("declarator")
            name = _declarator_name(decl)
            if body is not None and name:
                yield FunctionNode(name, body, decl, n.start_point[0])
        elif (
            n.type == "expression_statement"
            and i + 1 < len(kids)
            and kids[i + 1].type == "compound_statement"
            and n.named_children
            and n.named_children[0].type == "call_expression"
        ):
            call = n.named_children[0]
            macro = _text(call.child_by_field_name("function"))
            args = call.child_by_field_name("arguments")
            first = args.named_children[0] if args is not None and args.named_children else None
            if "DEFINE" in macro and first is not None:
                yield FunctionNode(_text(first), kids[i + 1], None, n.start_point[0])
        elif n.type.startswith("preproc_if") or n.type in _NESTING:
            yield from find_definitions(n)


def build_flow(
    fn: FunctionNode,
    file: str,
    line0: int,
    syntax: dict[int, Syntax] | None = None,
    arms: tuple[tuple[int, int], ...] = (),
    *,
    origin: str = "",
) -> Flow:
    """The control-flow graph of `fn`; `line0` is the absolute line of tree row 0.
    `syntax`, when given, is filled with the syntax of each node (see Syntax);
    `arms`, the later #else/#elif arms of the parsed text (csource.Code.arms),
    whose statements start at an "arm" node; `origin`, the content key of the
    text parsed (Flow.origin gets it with the definition's place in it)."""
    b = _Builder(file, line0, syntax, arms)
    if _MAY_LABEL.search(fn.body.text or b""):  # a walk of every node only then
        for lab in _labels(fn.body):
            b.labels[lab] = b.new("label").id
    entry = b.stmt(fn.body, b.exit, _Ctx())
    for nid in b.labels.values():
        if not b.nodes[nid].succ:
            b.nodes[nid].succ = [(b.exit, None)]  # a label whose statement we never saw
    params, types = _params(fn.declarator)
    calls = tuple(sorted(b.calls, key=lambda c: c.line))
    return Flow(
        name=fn.name,
        file=file,
        start_line=line0 + fn.start_line,
        params=params,
        param_types=types,
        nodes=b.nodes,
        entry=entry,
        exit=b.exit,
        calls=calls,
        origin=f"{origin}\0{fn.name}\0{fn.body.start_byte}\0{line0}" if origin else "",
    )


# `name :` anywhere (a superset of the labels: `case X:`, `a ? b : c` too)
_MAY_LABEL = re.compile(rb"[A-Za-z_]\w*\s*:(?!:)")


def _labels(n: ts.Node) -> Iterator[str]:
    if n.type == "labeled_statement":
        yield _text(n.child_by_field_name("label"))
    for c in n.named_children:
        yield from _labels(c)


@lru_cache(maxsize=256)
def flows_in_text(text: str, file: str) -> tuple[Flow, ...]:
    """Every function definition in a file's text, as flows (parsed once per text)."""
    code = code_tree(text)
    origin = cache.text_key(file, text)
    return tuple(
        build_flow(fn, file, 1, arms=code.arms, origin=origin)
        for fn in find_definitions(code.tree.root_node)
    )


@lru_cache(maxsize=1024)
def flow_of_definition(text: str, file: str, start_line: int) -> Flow | None:
    """The flow of the single function definition `text` starting at `start_line`.
    Kept in the process only: parsing one function and building its graph costs
    about what encoding that graph for bot.cache does (0.19 s against 0.17 s for
    the 883 functions of the throughput bench, and 0.06 s to decode them), so a
    disk entry pays only where most functions come back, which new patches'
    do not. What does pay, the parse of a whole file, is kept (`cfunc`,
    `flows-named`)."""
    return _flow_of_definition(text, file, start_line)


def _flow_of_definition(text: str, file: str, start_line: int) -> Flow | None:
    code = code_text(text)
    tree = parse(code.data)
    fns = list(find_definitions(tree.root_node))
    if not fns:
        return None
    return build_flow(fns[0], file, start_line, arms=code.arms, origin=cache.text_key(file, text))

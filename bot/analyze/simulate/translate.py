"""The statement half of the translation: one C function definition's control
flow, from its syntax tree, as a flat list of `Instr` with jumps (program.py).

Loops are unrolled `loop_unroll` times (past that they are assumed to end),
an iterator macro's body (`list_for_each_entry(...) { }`) runs once (objects
are abstracted by type: one element stands for every element), a backward
goto ends the path, `#if` takes its first arm (the configured one). What each
statement evaluates to is `values.ExprTranslator`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.analyze.cfacts import node_text
from bot.analyze.simulate.names import glob_match
from bot.analyze.simulate.program import UNKNOWN, Function, Instr, Kind
from bot.analyze.simulate.values import ExprTranslator

if TYPE_CHECKING:
    from tree_sitter import Node

    from bot.analyze.cfacts import FileInfo
    from bot.analyze.simulate.extract import Extractor

__all__ = ["FunctionTranslator"]

# Iterator macros (list_for_each_entry, for_each_*, css_for_each_*, hlist_...):
# a call statement without `;` followed by a body.
_ITERATOR_NAMES = ("*for_each*",)


class FunctionTranslator(ExprTranslator):
    """Translates one function definition into a Function."""

    def __init__(self, ex: Extractor, info: FileInfo, node: Node, name: str) -> None:
        super().__init__(ex, info, node, name)
        self.labels: dict[str, int] = {}
        self.gotos: list[tuple[int, str]] = []
        self.loops: list[tuple[list[int], list[int]]] = []  # (break jumps, continue jumps)
        self.notes: list[str] = []

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

"""The simulator's program of a function, lowered from its flow graph.

The statement walk is the rule engine's (flow_build.py): the one graph of a
function, whose nodes carry their statement's syntax (`build_flow(...,
syntax=...)`). This module lowers that graph to the flat program the explorer
runs (program.py), with the simulator's policies for what the graph keeps
general:

* loops: a loop head is entered at most `loop_unroll` times per entry of the
  loop (a loop macro and `do { } while (0)` once); past the bound a back edge
  goes to the loop's exit (the loop is assumed to end). A loop macro's body
  always runs, once (one abstract element), and its cursor is not tested;
* `#if`: the first arm (the configured one); the others are skipped;
* a backward `goto` ends the path (a retry loop, bounded so); a `goto` to a
  label the function does not have returns;
* `switch`: a nondeterministic choice of each case, and a path past them all.

What each node evaluates to is values.ExprTranslator's (the expression half).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.analyze.cfacts import declarator_name, node_text, type_name
from bot.analyze.flow_build import FunctionNode, Syntax, build_flow
from bot.analyze.simulate.program import UNKNOWN, Function, Instr, Kind
from bot.analyze.simulate.values import ExprTranslator

if TYPE_CHECKING:
    from tree_sitter import Node

    from bot.analyze.cfacts import FileInfo
    from bot.analyze.flow import Flow
    from bot.analyze.simulate.extract import Extractor

__all__ = ["lower_function"]

# A place in the unrolled program: a graph node and, per loop around it
# (innermost last), how many times its head was entered in this entry of the loop.
_Key = tuple[int, tuple[int, ...]]

_LOOP_HEADS = frozenset({"loop", "do", "macro"})


@dataclass
class _Block:
    """The code of one key, at [start, end) of the code emitted so far; the
    BRANCHes in it and the key each goes to when its condition fails; the key
    it falls through to (None: it ends in a RET)."""

    start: int
    end: int = -1
    fall: _Key | None = None
    targets: list[tuple[int, _Key]] = field(default_factory=list)


def lower_function(ex: Extractor, info: FileInfo, node: Node, name: str) -> Function:
    """The program of the definition `node` (a function_definition of `info`)."""
    return _Lowering(ex, info, node, name).compile()


class _Lowering(ExprTranslator):
    def __init__(self, ex: Extractor, info: FileInfo, node: Node, name: str) -> None:
        super().__init__(ex, info, node, name)
        self.syntax: dict[int, Syntax] = {}
        body = node.child_by_field_name("body")
        fn = FunctionNode(name, body or node, node.child_by_field_name("declarator"), 0)
        self.flow: Flow = build_flow(fn, info.path, 1, syntax=self.syntax, arms=info.arms)
        self.notes: list[str] = []
        self.blocks: dict[_Key, _Block] = {}
        self.current = _Block(0)  # the block being emitted
        self.todo: deque[_Key] = deque()

    def compile(self) -> Function:
        params = self._params()
        self._declare_all()
        entry = self._enter(self.flow.entry, {})
        self.todo.append(entry)
        while self.todo:
            key = self.todo.popleft()
            if key not in self.blocks:
                self._emit_from(key)
        self.code = self._layout(entry)
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

    def _declare_all(self) -> None:
        """The type of every local, in source order, before any statement is
        lowered: a `goto out` may reach a use before the graph's order reaches
        the declaration."""
        decls = [s.what for s in self.syntax.values() if s.what.type == "declaration"]
        for d in sorted(decls, key=lambda n: n.start_byte):
            tname = type_name(d.child_by_field_name("type"))
            for decl in d.children_by_field_name("declarator"):
                name, _ = declarator_name(decl)
                if name and tname:
                    self.env[name] = tname

    # -- keys: a graph node with its loop counts

    def _unroll(self, head: int) -> int:
        node = self.flow.nodes[head]
        if node.kind == "macro":
            return 1
        if node.kind == "do":
            loop = self.syntax[head].what
            cond = loop.child_by_field_name("condition")
            if cond is not None and node_text(cond).strip("() ") == "0":
                return 1  # do { } while (0): a block, not a loop
        return self.ex.loop_unroll

    def _enter(self, nid: int, counts: dict[int, int]) -> _Key:
        """The key of node `nid` reached with the loop counts `counts`."""
        node = self.flow.nodes[nid]
        if node.kind in _LOOP_HEADS and nid not in counts:
            counts = {**counts, nid: 0}
        return nid, tuple(counts.get(h, 0) for h in node.loops)

    def _edge(self, key: _Key, dst: int) -> _Key:
        """The key an edge from `key` to node `dst` leads to."""
        nid, counts = key
        return self._step(dict(zip(self.flow.nodes[nid].loops, counts, strict=True)), dst)

    def _step(self, counts: dict[int, int], dst: int) -> _Key:
        """The key of node `dst` reached with the loop counts `counts`: a back
        edge counts one more entry of its loop head; past the bound the loop
        is assumed to end (its exit, which may be the head of an outer loop)."""
        target = self.flow.nodes[dst]
        if target.kind in _LOOP_HEADS and dst in counts:
            entered = counts[dst] + 1
            if entered >= self._unroll(dst):
                rest = {h: c for h, c in counts.items() if h != dst}
                return self._step(rest, target.exit)
            counts = {**counts, dst: entered}
        return self._enter(dst, counts)

    def _jump_to(self, idx: int, key: _Key) -> None:
        """Instruction `idx` (a BRANCH) goes to `key` when its condition fails."""
        self.current.targets.append((idx, key))
        if key not in self.blocks:
            self.todo.append(key)

    # -- emission: blocks first (in the order the graph is walked, so that
    # the uses a loop macro's arguments leave go with its body's first step),
    # then laid out in reverse postorder, so that every jump goes forward (the
    # explorer's tables of what is still to come rely on it)

    def _emit_from(self, key: _Key | None) -> None:
        """The blocks of the straight-line code from `key` on."""
        while key is not None and key not in self.blocks:
            self.current = block = _Block(self.here())
            self.blocks[key] = block
            key = self._node(key)
            block.end = self.here()
            block.fall = key
        # uses left over for a block already emitted would go with a jump,
        # which is no step: dropped, as they always were
        self.uses = set()

    def _layout(self, entry: _Key) -> list[list[Any]]:
        """The blocks in reverse postorder (a block's fall-through successor
        right after it where it can be), joined by jumps."""
        order: list[_Key] = []
        seen: set[_Key] = set()
        stack: list[tuple[_Key, list[_Key]]] = [(entry, self._successors(entry))]
        seen.add(entry)
        while stack:
            key, rest = stack[-1]
            if rest:
                nxt = rest.pop()
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, self._successors(nxt)))
                continue
            stack.pop()
            order.append(key)
        order.reverse()
        code: list[list[Any]] = []
        where: dict[_Key, int] = {}
        patches: list[tuple[int, _Key]] = []
        for i, key in enumerate(order):
            block = self.blocks[key]
            where[key] = len(code)
            shift = len(code) - block.start
            code.extend(list(ins) for ins in self.code[block.start : block.end])
            patches.extend((idx + shift, dst) for idx, dst in block.targets)
            follows = order[i + 1] if i + 1 < len(order) else None
            if block.fall is not None and block.fall != follows:
                patches.append((len(code), block.fall))
                last = code[-1][1] if code else self._loc(self.node)
                code.append([Kind.JUMP, last, None, -1, "", frozenset()])
        for idx, dst in patches:
            code[idx][3] = where[dst]
        return code

    def _successors(self, key: _Key) -> list[_Key]:
        """What a block leads to, its fall-through last (visited first, so
        that the reverse postorder puts it right after the block)."""
        block = self.blocks[key]
        out = [dst for _, dst in block.targets]
        return [*out, block.fall] if block.fall is not None else out

    def _node(self, key: _Key) -> _Key | None:
        """Emit node `key`'s code; the key it falls through to (None: none)."""
        nid, counts = key
        flow = self.flow
        node = flow.nodes[nid]
        if nid == flow.exit:
            self.emit(Kind.RET, self.node.child_by_field_name("body") or self.node)
            return None
        syn = self.syntax.get(nid)
        kind = node.kind
        succ = [d for d, _ in node.succ]
        if kind == "arm":
            # an #else/#elif arm: the configured build has the first arm
            return self._edge(key, node.exit)
        if kind in ("do", "label"):
            return self._edge(key, succ[0])
        if kind == "return":
            assert syn is not None
            expr = syn.what.named_children[0] if syn.what.named_children else None
            self.emit(Kind.RET, syn.what, self.value(expr) if expr is not None else None)
            return None
        if kind == "goto":
            assert syn is not None
            label = node_text(syn.what.child_by_field_name("label"))
            target = self.syntax.get(succ[0]) if succ else None
            if target is None:
                self.emit(Kind.RET, syn.what)  # no such label
                return None
            if target.what.start_byte < syn.what.start_byte:
                # a backward goto is a retry loop: bounded by ending the path here
                self.notes.append(f"{self.name}: backward goto {label} ends the path")
                self.emit(Kind.RET, syn.what)
                return None
            return self._edge(key, succ[0])
        if kind in ("if", "loop", "do-test"):
            if kind == "do-test" and counts[-1] + 1 >= self._unroll(node.loops[-1]):
                return self._edge(key, succ[1])  # the last pass: assumed to end
            if syn is None:
                return self._edge(key, succ[0])  # for (;;)
            br = self.emit(Kind.BRANCH, syn.what, self.value(syn.what))
            self._jump_to(br, self._edge(key, succ[1]))
            return self._edge(key, succ[0])
        if kind == "macro":
            # one abstract element: the body runs once; the macro's arguments
            # are evaluated (their uses go with the body's first step)
            if syn is not None and syn.what.type == "call_expression":
                args = syn.what.child_by_field_name("arguments")
                for a in args.named_children if args is not None else []:
                    self.value(a)
            return self._edge(key, succ[0])
        if kind == "switch":
            assert syn is not None
            self._switch(key, syn, succ)
            return self._edge(key, node.exit)
        if syn is not None:
            self._statement(syn)
        return self._edge(key, succ[0]) if succ else None

    def _statement(self, syn: Syntax) -> None:
        what, where = syn.what, syn.where
        if what.type == "declaration":
            self.declaration(what)
        elif what.type == "expression_statement":
            if what.named_children:
                self.expr_stmt(what.named_children[0], what)
        elif syn.whole:
            # a statement the grammar did not make out (a macro's ERROR):
            # the expressions in it
            for c in what.named_children:
                if c.type.endswith("expression"):
                    self.expr_stmt(c, what)
        else:
            self.expr_stmt(what, where)

    def _switch(self, key: _Key, syn: Syntax, succ: list[int]) -> None:
        cond = syn.what.child_by_field_name("condition")
        if cond is not None:
            val = self.value(cond)
            if val != UNKNOWN or self.uses:
                self.emit(Kind.EVAL, cond, val)
        body = syn.what.child_by_field_name("body")
        cases = [
            c
            for c in (body.named_children if body is not None else [])
            if c.type == "case_statement"
        ]
        # each BRANCH falls through to the next test when "true", jumps to its case when "false"
        for case, dst in zip(cases, succ, strict=False):
            self._jump_to(self.emit(Kind.BRANCH, case, UNKNOWN), self._edge(key, dst))

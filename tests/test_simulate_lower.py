"""The simulator's program is lowered from the flow graph the rules read
(simulate/lower.py): one statement walk, the simulator's policies (unrolled
loops, the first #if arm, gotos, switch) applied to the graph."""

from __future__ import annotations

from pathlib import Path

from bot.analyze.flow import Assign
from bot.analyze.flow_build import flows_in_text
from bot.analyze.simulate.extract import Extractor, SourceSet
from bot.analyze.simulate.program import Function, Kind
from bot.analyze.simulate.run import load_data
from bot.config import Settings

from .conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "simulate"

HEAD = """
struct obj {
	struct list_head list;
	int ready;
	int count;
};
"""


def compile_fn(body: str, name: str = "f", unroll: int = 2) -> Function:
    effects, _ = load_data(Settings())
    ex = Extractor(SourceSet({"mm/t.c": HEAD + body}), effects, loop_unroll=unroll)
    fn = ex.compile(name)
    assert fn is not None
    return fn


def reachable(fn: Function) -> list[int]:
    seen: set[int] = set()
    todo = [0]
    while todo:
        pc = todo.pop()
        if pc in seen or not 0 <= pc < len(fn.code):
            continue
        seen.add(pc)
        ins = fn.code[pc]
        if ins.kind == Kind.RET:
            continue
        if ins.kind == Kind.JUMP:
            todo.append(ins.target)
            continue
        todo.append(pc + 1)
        if ins.kind == Kind.BRANCH:
            todo.append(ins.target)
    return sorted(seen)


def texts(fn: Function, kind: Kind | None = None) -> list[str]:
    return [
        fn.code[pc].loc.text for pc in reachable(fn) if kind is None or fn.code[pc].kind == kind
    ]


def forward_only(fn: Function) -> bool:
    return all(
        pc < ins.target <= len(fn.code)
        for pc, ins in enumerate(fn.code)
        if ins.kind in (Kind.JUMP, Kind.BRANCH)
    )


def test_a_forward_goto_inside_a_loop_jumps_on_every_unrolled_pass() -> None:
    fn = compile_fn(
        """
void f(struct obj *o, int n)
{
	int i;
	for (i = 0; i < n; i++) {
		if (skip(i))
			goto next;
		o->ready = 1;
next:
		o->count = i;
	}
}
"""
    )
    # the label comes after the goto in the text: never a path's end
    assert not any(t.startswith("goto") for t in texts(fn, Kind.RET))
    assert texts(fn).count("o->count = i;") == 2  # one per unrolled pass
    assert texts(fn, Kind.BRANCH).count("i < n") == 2
    assert forward_only(fn)


def test_a_backward_goto_ends_the_path_and_is_noted() -> None:
    fn = compile_fn(
        """
void f(struct obj *o)
{
again:
	o->ready = 1;
	if (busy(o))
		goto again;
	o->count = 0;
}
"""
    )
    assert any(t.startswith("goto again") for t in texts(fn, Kind.RET))
    assert any("backward goto again" in n for n in fn.notes)


def test_continue_in_nested_loop_macros_leaves_both_once() -> None:
    fn = compile_fn(
        """
int f(struct obj *o)
{
	struct obj *p, *q;
	for_each_obj(p, o) {
		list_for_each_entry(q, &p->list, list) {
			if (q->ready)
				continue;
			return take(q);
		}
	}
	return -EBUSY;
}
"""
    )
    shown = texts(fn)
    assert "return -EBUSY;" in shown  # past both loops, each run once
    assert shown.count("return take(q);") == 1
    assert forward_only(fn)


def test_the_program_has_the_first_ifdef_arm_and_the_graph_every_arm() -> None:
    src = """
void f(struct obj *o)
{
#ifdef CONFIG_OBJ
	kfree(o);
#else
	o->ready = 1;
#endif
	o->count = 0;
}
"""
    fn = compile_fn(src)
    shown = texts(fn)
    assert "kfree(o);" in shown and "o->ready = 1;" not in shown
    assert "o->count = 0;" in shown
    # the rules' graph (both arms are code) has the kfree and the store
    (flow,) = flows_in_text(HEAD + src, "mm/t.c")
    assert {c.name for c in flow.calls} == {"kfree"}
    stores = [e for n in flow.nodes.values() for e in n.events if isinstance(e, Assign)]
    assert sorted(e.lhs for e in stores) == ["o->count", "o->ready"]


def test_do_while_zero_is_a_block_and_do_while_a_loop() -> None:
    once = compile_fn(
        """
void f(struct obj *o)
{
	do {
		o->count++;
	} while (0);
}
"""
    )
    assert texts(once).count("o->count++;") == 1 and not texts(once, Kind.BRANCH)
    loop = compile_fn(
        """
void f(struct obj *o)
{
	do {
		o->count++;
	} while (o->ready);
}
""",
        unroll=3,
    )
    # three passes, the condition tested between them (not after the last)
    assert texts(loop).count("o->count++;") == 3
    assert len(texts(loop, Kind.BRANCH)) == 2


def test_a_switch_chooses_each_case_or_none() -> None:
    fn = compile_fn(
        """
void f(struct obj *o, int how)
{
	switch (how) {
	case 1:
		o->ready = 1;
		break;
	case 2:
		o->count = 2;
		/* fall through */
	default:
		o->count = 3;
	}
	o->ready = 0;
}
"""
    )
    assert len(texts(fn, Kind.BRANCH)) == 3  # one choice per case
    shown = texts(fn)
    assert {"o->ready = 1;", "o->count = 2;", "o->count = 3;", "o->ready = 0;"} <= set(shown)
    assert forward_only(fn)


def test_every_program_of_the_fixtures_is_lowered_from_its_graph_and_jumps_forward() -> None:
    effects, _ = load_data(Settings())
    checked = 0
    for path in sorted(FIXTURES.rglob("*.c")):
        rel = str(Path(path).relative_to(FIXTURES))
        text = path.read_text(encoding="utf-8")
        sources = SourceSet({rel: text})
        info = sources.parsed(rel)
        assert info is not None
        ex = Extractor(sources, effects)
        for name in info.functions:
            fn = ex.compile(name)
            if fn is None:
                continue
            assert forward_only(fn), (rel, name)
            assert fn.code and fn.code[-1].kind in (Kind.RET, Kind.JUMP), (rel, name)
            checked += 1
    assert checked > 30

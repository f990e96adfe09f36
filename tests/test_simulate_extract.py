"""Translation of kernel C control flow into the simulator's program, seen
through what the simulator then finds: each case is a small function whose only
bug sits behind one construct (goto, switch fall-through, do-while(0), an
iterator macro without braces, #ifdef), so the construct must be followed."""

from __future__ import annotations

from bot.analyze.simulate import SimResult, simulate_source
from bot.analyze.simulate.extract import Extractor, SourceSet
from bot.analyze.simulate.program import Kind
from bot.analyze.simulate.run import load_data
from bot.config import Settings

HEAD = """
struct obj {
	struct list_head list;
	int ready;
};
"""


def run(body: str, entry: str = "f") -> SimResult:
    return simulate_source({"mm/t.c": HEAD + body}, [entry], Settings())


def kinds(r: SimResult) -> set[str]:
    return {v.kind for v in r.violations}


def test_a_forward_goto_reaches_the_error_label() -> None:
    r = run(
        """
void f(struct obj *o)
{
	if (setup_failed())
		goto out_free;
	o->ready = 1;
	return;
out_free:
	kfree(o);
	o->ready = 0;
}
"""
    )
    # the success path keeps the object (a leak, for a lone entry); the error
    # path frees it and then writes to it
    uaf = next(v for v in r.violations if v.kind == "UAF")
    texts = [s.text for s in uaf.trace.steps]
    assert texts[0].startswith("kfree(o);") and texts[-1].startswith("o->ready = 0;")


def test_the_success_path_of_a_goto_function_is_clean() -> None:
    r = run(
        """
void f(struct obj *o)
{
	if (setup_failed())
		goto out_free;
	o->ready = 1;
	return;
out_free:
	kfree(o);
}
"""
    )
    assert "UAF" not in kinds(r) and "DOUBLE-FREE" not in kinds(r)


def test_switch_fall_through_frees_twice() -> None:
    r = run(
        """
void f(struct obj *o, int mode)
{
	switch (mode) {
	case 0:
		kfree(o);
		break;
	case 1:
		kfree(o);
		fallthrough;
	default:
		kfree(o);
	}
}
"""
    )
    assert kinds(r) == {"DOUBLE-FREE"}
    lines = [s.line for s in r.violations[0].trace.steps]
    assert len(lines) == 2 and lines[0] < lines[1]


def test_do_while_zero_runs_its_block_once() -> None:
    r = run(
        """
void f(struct obj *o)
{
	do {
		kfree(o);
	} while (0);
	o->ready = 0;
}
"""
    )
    assert kinds(r) == {"UAF"}


def test_an_iterator_macro_without_braces_has_a_body() -> None:
    r = run(
        """
void f(struct obj *o)
{
	struct obj *pos;

	list_for_each_entry(pos, &o->list, list)
		kfree(o);
	o->ready = 0;
}
"""
    )
    assert kinds(r) == {"UAF"}


def test_the_configured_branch_of_an_ifdef_is_followed() -> None:
    r = run(
        """
void f(struct obj *o)
{
#ifdef CONFIG_OBJ_DEBUG
	kfree(o);
#else
	o->ready = 2;
#endif
	o->ready = 0;
}
"""
    )
    assert kinds(r) == {"UAF"}


def test_loops_are_unrolled_a_bounded_number_of_times() -> None:
    effects, data = load_data(Settings())
    sources = SourceSet(
        {"mm/t.c": HEAD + "void f(struct obj *o)\n{\n\twhile (more())\n\t\tkfree(o);\n}\n"}
    )
    fn = Extractor(sources, effects, loop_unroll=data.loop_unroll).compile("f")
    assert fn is not None
    frees = [i for i in fn.code if i.expr is not None and i.expr[0] == "free"]
    assert len(frees) == data.loop_unroll
    assert fn.code[-1].kind == Kind.RET
    # and the second unrolled iteration is a double free
    assert kinds(run("void f(struct obj *o)\n{\n\twhile (more())\n\t\tkfree(o);\n}\n")) == {
        "DOUBLE-FREE"
    }

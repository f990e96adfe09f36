"""Every event and branch condition of a flow points back at its syntax: the
byte range of the expression in the text the flow was parsed from, so a reader
that needs more than the event's text (the simulator's expression values) can
re-parse exactly that."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.analyze.flow import NO_SPAN, Assume, Call, Return
from bot.analyze.flow_build import flows_in_text

from .conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "simulate"

IFDEF = """\
static void obj_put(struct obj *o)
{
#ifdef CONFIG_OBJ_DEBUG /* é */
	obj_check(o);
#else
	obj_quiet(o);
#endif
	if (refcount_dec_and_test(&o->ref))
		kfree(o);
	list_for_each_entry(p, &o->list, node)
		p->owner = NULL;
	return;
}
"""


def _collapsed(data: bytes, at: tuple[int, int]) -> str:
    return " ".join(data[at[0] : at[1]].decode("utf-8", "replace").split())


def _check(text: str, path: str) -> int:
    data = text.encode("utf-8", "replace")
    checked = 0
    for flow in flows_in_text(text, path):
        for node in flow.nodes.values():
            edges = [a for _, a in node.succ if a is not None]
            for ev in [*node.events, *edges]:
                assert ev.at != NO_SPAN, (path, ev)
                shown = _collapsed(data, ev.at)
                if isinstance(ev, Call):
                    # a loop macro's header is the macro and its cursor: the whole loop
                    exact = ev.text.startswith(ev.name + "(") and ev.text in shown
                    assert exact or shown.startswith(ev.name), (path, ev, shown)
                elif isinstance(ev, Return):
                    assert shown.startswith("return"), (path, ev, shown)
                elif isinstance(ev, Assume):
                    # an if/while condition (in its parentheses), or a loop macro's cursor
                    assert shown.strip("() ") == ev.cond or ev.cond in shown, (path, ev, shown)
                else:
                    assert ev.lhs in shown or ev.rhs in shown, (path, ev, shown)
                checked += 1
    return checked


def test_the_span_of_each_call_is_its_text_across_an_ifdef_and_a_multibyte_comment() -> None:
    flows = flows_in_text(IFDEF, "mm/obj.c")
    data = IFDEF.encode("utf-8")
    calls = {c.name: c for f in flows for c in f.calls}
    # the #if lines are blanked in place: offsets after them are offsets into the text
    assert _collapsed(data, calls["obj_quiet"].at) == "obj_quiet(o)"
    assert _collapsed(data, calls["kfree"].at) == "kfree(o)"
    conds = [a for f in flows for n in f.nodes.values() for _, a in n.succ if a is not None]
    dec = next(a for a in conds if a.cond.startswith("refcount_dec_and_test"))
    assert _collapsed(data, dec.at) == "(refcount_dec_and_test(&o->ref))"
    assert _check(IFDEF, "mm/obj.c") > 5


def test_a_span_is_not_part_of_an_events_identity() -> None:
    assert Call("f", (), 3, "f()", at=(0, 3)) == Call("f", (), 3, "f()", at=(10, 13))
    assert hash(Assume("x", True, 1, (0, 1))) == hash(Assume("x", True, 1, (5, 6)))


def test_every_event_of_the_simulator_fixtures_points_at_its_syntax() -> None:
    total = 0
    for path in sorted(FIXTURES.rglob("*.[ch]")):
        text = path.read_text(encoding="utf-8")
        total += _check(text, str(Path(path).relative_to(FIXTURES)))
    assert total > 100


def test_the_builder_is_still_importable_from_flow() -> None:
    from bot.analyze import flow, flow_build
    from bot.analyze.flow import flows_in_text as old_name

    assert old_name is flow_build.flows_in_text
    assert flow.build_flow is flow_build.build_flow  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        _ = flow.no_such_name  # type: ignore[attr-defined]

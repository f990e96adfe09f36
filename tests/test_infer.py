"""Lifecycle knowledge inferred from code (bot/analyze/infer.py), on small
kernel-style files written for these tests: summaries of what a body does to its
parameters and returns, families by naming convention, and the ownership
matchers that use them (an object a subsystem's own constructor made, leaked on
a new error path)."""

from __future__ import annotations

from bot.analyze.api import load_vocabulary
from bot.analyze.flow_build import flows_in_text
from bot.analyze.flow_source import SourceView
from bot.analyze.infer import extend_vocabulary
from bot.analyze.naming import split_verb
from bot.analyze.refs import double_put, path_reference_leak, use_after_release
from bot.analyze.rules_match import Env, Side
from bot.config import Settings

VOCAB = load_vocabulary(Settings().rules_dir)

HELPERS = """
struct widget *widget_new(int id)
{
	struct widget *w = kzalloc(sizeof(*w), GFP_KERNEL);

	if (!w)
		return NULL;
	w->id = id;
	return w;
}

void widget_free(struct widget *w)
{
	kfree(w->name);
	kfree(w);
}

static void widget_drop(struct widget *w)
{
	if (w->busy)
		return;
	widget_free(w);
}

static int widget_publish(struct widget_table *t, struct widget *w)
{
	t->slot = w;
	return 0;
}

static struct widget *widget_cached(struct widget_table *t)
{
	struct widget *w = kzalloc(sizeof(*w), GFP_KERNEL);

	list_add(&w->node, &t->list);
	return w;
}

/* calls every helper, so the series "calls" them and they get roles */
static void touch_all(struct widget_table *t, struct widget *w)
{
	widget_new(1);
	widget_free(w);
	widget_drop(w);
	widget_publish(t, w);
	widget_cached(t);
}
"""


def _env(extra: str = "") -> tuple[Env, SourceView]:
    view = SourceView({"mm/widget.c": HELPERS + extra}, None)
    flows = list(flows_in_text(HELPERS + extra, "mm/widget.c"))
    vocab, inf = extend_vocabulary(VOCAB, [view], flows, depth=2)
    return Env(vocab, depth=2, infer=inf), view


def test_a_body_that_returns_what_it_allocated_is_a_constructor() -> None:
    env, _ = _env()
    assert env.infer is not None
    s = env.infer.summary("widget_new", "mm/widget.c")
    assert (s.known, s.returns, s.returns_family) == (True, "new", "kmalloc")
    role = env.vocab.role_of("widget_new")
    assert role is not None and role.role == "create" and role.returns_object


def test_a_body_that_frees_its_argument_on_every_path_is_a_free() -> None:
    env, _ = _env()
    assert env.infer is not None
    s = env.infer.summary("widget_free", "mm/widget.c")
    assert s.releases_always == frozenset({0})
    role = env.vocab.role_of("widget_free")
    assert role is not None and role.role == "free" and role.object_arg == 0


def test_a_body_that_frees_on_some_paths_only_is_not_a_free() -> None:
    env, _ = _env()
    assert env.infer is not None
    s = env.infer.summary("widget_drop", "mm/widget.c")
    assert s.releases_always == frozenset() and s.releases_maybe == frozenset({0})
    assert env.vocab.role_of("widget_drop") is None


def test_storing_a_parameter_is_a_hand_off_and_a_published_object_is_not_returned_new() -> None:
    env, _ = _env()
    assert env.infer is not None
    assert 1 in env.infer.summary("widget_publish", "mm/widget.c").hands_off
    assert env.infer.summary("widget_cached", "mm/widget.c").returns == ""


def test_names_pair_only_with_a_visible_counterpart() -> None:
    assert split_verb("gadget_get") == ("get", "gadget")
    assert split_verb("alloc_gadget") == ("alloc", "gadget")
    assert split_verb("gadget_lookup") is None
    view = SourceView({"mm/g.c": "void f(void) { gadget_put(g); }\n"}, None)
    flows = list(flows_in_text("void f(void) { g = gadget_get(x); gizmo_get(y); }\n", "mm/g.c"))
    vocab, _ = extend_vocabulary(VOCAB, [view], flows, depth=1)
    got = vocab.role_of("gadget_get")
    assert got is not None and got.role == "get" and got.returns_object
    assert vocab.role_of("gizmo_get") is None  # no gizmo_put anywhere: a getter


def _leaks(code: str) -> list[tuple[str, ...]]:
    env, view = _env(code)
    flow = next(f for f in flows_in_text(HELPERS + code, "mm/widget.c") if f.name == "user")
    side = Side(flow, view, "mm/widget.c")
    return [h.key for h in path_reference_leak(env, side, Side(None, view, "mm/widget.c"))]


def test_an_object_from_a_subsystem_constructor_leaks_on_an_early_return() -> None:
    code = """
int user(struct widget_table *t, int id)
{
	struct widget *w = widget_new(id);

	if (!w)
		return -ENOMEM;
	if (id > 4)
		return -EINVAL;
	widget_free(w);
	return 0;
}
"""
    assert _leaks(code) == [("leak-new", "inferred:kmalloc", "w")]


def test_an_object_freed_stored_or_handed_to_an_unknown_callee_does_not_leak() -> None:
    code = """
int user(struct widget_table *t, int id)
{
	struct widget *w = widget_new(id);

	if (!w)
		return -ENOMEM;
	if (id > 4) {
		widget_free(w);
		return -EINVAL;
	}
	if (id > 2)
		return widget_publish(t, w);
	if (id > 1) {
		somebody_else_takes(w);
		return 0;
	}
	t->other = w;
	return 0;
}
"""
    assert _leaks(code) == []


def test_a_conditional_free_in_a_callee_is_not_a_use_after_free_but_a_free_is() -> None:
    code = """
int user(struct widget *w)
{
	widget_drop(w);
	pr_info("%d\\n", w->id);
	widget_free(w);
	return w->id;
}
"""
    env, view = _env(code)
    flow = next(f for f in flows_in_text(HELPERS + code, "mm/widget.c") if f.name == "user")
    side = Side(flow, view, "mm/widget.c")
    hits = use_after_release(env, side, Side(None, view, "mm/widget.c"))
    assert [h.fields["release"] for h in hits] == ["widget_free(w)"]


def test_a_second_free_on_one_path_is_a_double_free() -> None:
    code = """
void user(struct widget *w, int bad)
{
	if (bad)
		widget_free(w);
	widget_free(w);
}
"""
    env, view = _env(code)
    flow = next(f for f in flows_in_text(HELPERS + code, "mm/widget.c") if f.name == "user")
    hits = double_put(env, Side(flow, view, "mm/widget.c"), Side(None, view, "mm/widget.c"))
    assert [h.key[0] for h in hits] == ["double-free"]


def test_a_global_assigned_an_allocation_is_not_owned_by_the_function() -> None:
    code = """
static struct widget **table;

int user(int n)
{
	table = kmalloc_array(n, sizeof(*table), GFP_KERNEL);
	if (!table)
		return -ENOMEM;
	return 0;
}
"""
    assert _leaks(code) == []
    assert _leaks(
        code.replace("static struct widget **table;\n", "").replace(
            "int user(int n)\n{\n", "int user(int n)\n{\n\tstruct widget **table;\n\n"
        )
    ) == [("leak-new", "kmalloc", "table")]


def test_a_getter_beside_a_free_is_not_a_get() -> None:
    view = SourceView({"mm/z.c": "void f(void) { free_zpage(z); }\n"}, None)
    flows = list(flows_in_text("void g(void) { z = get_zpage(p); }\n", "mm/z.c"))
    vocab, _ = extend_vocabulary(VOCAB, [view], flows, depth=1)
    assert vocab.role_of("get_zpage") is None


def test_a_helper_that_takes_a_reference_on_some_paths_only_is_not_a_get() -> None:
    code = """
static int maybe_hold(struct page *page, bool *held)
{
	if (!page_live(page))
		return 0;
	get_page(page);
	*held = true;
	return 1;
}

static void always_hold(struct page *page)
{
	get_page(page);
}

void user(struct page *page, bool *held)
{
	maybe_hold(page, held);
	always_hold(page);
}
"""
    env, _ = _env(code)
    assert env.infer is not None
    assert env.infer.summary("maybe_hold", "mm/widget.c").gets == frozenset()
    assert env.infer.summary("always_hold", "mm/widget.c").gets == frozenset({0})
    role = env.vocab.role_of("always_hold")
    assert role is not None and role.role == "get"


def test_a_helper_that_takes_a_reference_and_batches_what_it_made_passes_it_on() -> None:
    # get_page() then pagevec_add(pvec, tag_page(page)): the reference goes with
    # the batch, so a caller of batch_hold() holds nothing
    code = """
static void batch_hold(struct page *page)
{
	struct pagevec *pvec = this_cpu_ptr(&hold_pvec);

	get_page(page);
	if (!pagevec_add(pvec, tag_page(page)))
		hold_drain(pvec);
}

void batch_user(struct page *page)
{
	batch_hold(page);
}
"""
    env, _ = _env(code)
    assert env.infer is not None
    s = env.infer.summary("batch_hold", "mm/widget.c")
    assert s.gets == frozenset({0}) and 0 in s.hands_off
    assert env.vocab.role_of("batch_hold") is None


def test_a_predicate_name_is_no_lifecycle_step() -> None:
    assert split_verb("want_init_on_alloc") is None
    assert split_verb("is_free_buddy_page") is None
    assert split_verb("can_put_page") is None
    assert split_verb("page_alloc") == ("alloc", "page")


def test_a_reference_a_helper_takes_is_taken_by_its_callers_too() -> None:
    # gadget_isolate() takes a page reference only when the page was on a
    # list; gadget_grab() gets it on every path; their wrappers say the same
    extra = """
static int gadget_isolate(struct page *page)
{
	if (!TestClearPageLRU(page))
		return -EBUSY;
	get_page(page);
	return 0;
}

static void gadget_grab(struct page *page)
{
	get_page(page);
}

int gadget_isolate_wrapped(struct page *page)
{
	return gadget_isolate((struct page *)page);
}

void gadget_grab_wrapped(struct page *page)
{
	gadget_grab(page);
}
"""
    env, _ = _env(extra)
    assert env.infer is not None
    isolate = env.infer.summary("gadget_isolate_wrapped", "mm/widget.c")
    assert isolate.gets == frozenset() and isolate.gets_maybe == frozenset({0})
    grab = env.infer.summary("gadget_grab_wrapped", "mm/widget.c")
    assert grab.gets == frozenset({0}) and grab.gets_maybe == frozenset({0})

"""Path-sensitive matching inside one function: error paths, goto unwinding, loop
breaks, tryget branches, RCU sections. Each case is a small kernel-style function
run through the real tree-sitter flow and the real vocabulary."""

from __future__ import annotations

from bot.analyze.api import load_vocabulary
from bot.analyze.deferred_rcu import rcu_lookup_unprotected
from bot.analyze.flow_build import flows_in_text
from bot.analyze.flow_source import SourceView
from bot.analyze.refs import double_put, path_reference_leak, use_after_release
from bot.analyze.rules_match import Env, Hit, Side
from bot.config import Settings

ENV = Env(load_vocabulary(Settings().rules_dir), depth=2)
VIEW = SourceView({}, None)


def _run(matcher: object, code: str) -> list[Hit]:
    (flow,) = flows_in_text(code, "mm/t.c")
    side = Side(flow, VIEW, "mm/t.c")
    return matcher(ENV, side, Side(None, VIEW, "mm/t.c"))  # type: ignore[operator, no-any-return]


def test_goto_error_path_that_skips_the_put_leaks() -> None:
    hits = _run(
        path_reference_leak,
        """
int f(struct mm_struct *mm)
{
	struct mem_cgroup *memcg = get_mem_cgroup_from_mm(mm);

	if (prepare(memcg))
		goto out;
	mem_cgroup_put(memcg);
	return 0;
out:
	return -EINVAL;
}
""",
    )
    assert [h.key for h in hits] == [("leak", "memcg", "memcg", "-EINVAL")]


def test_goto_unwinding_through_the_put_is_balanced() -> None:
    hits = _run(
        path_reference_leak,
        """
int f(struct mm_struct *mm)
{
	struct mem_cgroup *memcg = get_mem_cgroup_from_mm(mm);
	int ret = 0;

	if (prepare(memcg)) {
		ret = -EINVAL;
		goto put;
	}
	use(memcg);
put:
	mem_cgroup_put(memcg);
	return ret;
}
""",
    )
    assert hits == []


def test_failed_tryget_branch_holds_nothing_but_the_success_branch_must_put() -> None:
    code = """
int f(struct cgroup_subsys_state *parent)
{
	struct cgroup_subsys_state *css = pick(parent);

	if (!css_tryget(css))
		return -EBUSY;
	if (busy(css))
		return -EAGAIN;
	css_put(css);
	return 0;
}
"""
    assert [h.key[-1] for h in _run(path_reference_leak, code)] == ["-EAGAIN"]


def test_breaking_out_of_a_for_each_iterator_without_iter_break_leaks() -> None:
    code = """
struct mem_cgroup *f(struct mem_cgroup *root)
{
	struct mem_cgroup *iter;
	int n = 0;

	for_each_mem_cgroup_tree(iter, root) {
		if (too_many(iter))
			break;
		n++;
	}
	return NULL;
}
"""
    assert [h.key[:3] for h in _run(path_reference_leak, code)] == [("leak", "memcg_iter", "iter")]
    fixed = code.replace("\t\t\tbreak;", "\t\t\t{ mem_cgroup_iter_break(root, iter); break; }")
    assert _run(path_reference_leak, fixed) == []


def test_reference_stored_in_a_structure_or_returned_does_not_leak() -> None:
    code = """
struct mem_cgroup *f(struct task_struct *t, struct mm_struct *mm)
{
	struct mem_cgroup *memcg = get_mem_cgroup_from_mm(mm);

	if (t->in_oom) {
		t->memcg_in_oom = memcg;
		return NULL;
	}
	return memcg;
}
"""
    assert _run(path_reference_leak, code) == []


def test_use_after_put_on_one_path_only() -> None:
    code = """
void f(struct demo *d, bool last)
{
	css_put(d->css);
	if (last)
		unpin(d->css);
}
"""
    hits = _run(use_after_release, code)
    assert [h.key for h in hits] == [("use-after-release", "css_put", "d->css")]
    assert "unpin(d->css)" in hits[0].evidence[1]


def test_pointer_reassigned_after_free_is_not_a_use() -> None:
    code = """
void f(struct demo *d)
{
	kfree(d->buf);
	d->buf = NULL;
	report(d->buf);
}
"""
    assert _run(use_after_release, code) == []


def test_counter_decrement_is_not_a_put_of_its_struct() -> None:
    code = """
void f(struct wb *wb)
{
	atomic_dec(&wb->writeback_inodes);
	spin_lock(&wb->work_lock);
	spin_unlock(&wb->work_lock);
}
"""
    assert _run(use_after_release, code) == []


def test_rcu_lookup_needs_a_read_section_or_a_lock() -> None:
    outside = """
bool f(struct list_lru *lru, void *item)
{
	return add(lru, mem_cgroup_from_slab_obj(item));
}
"""
    inside = """
bool f(struct list_lru *lru, void *item)
{
	bool ret;

	rcu_read_lock();
	ret = add(lru, mem_cgroup_from_slab_obj(item));
	rcu_read_unlock();
	return ret;
}
"""
    locked = inside.replace("rcu_read_lock()", "spin_lock(&lru->lock)").replace(
        "rcu_read_unlock()", "spin_unlock(&lru->lock)"
    )
    assert [h.key for h in _run(rcu_lookup_unprotected, outside)] == [
        ("lookup-outside-rcu", "mem_cgroup_from_slab_obj")
    ]
    assert _run(rcu_lookup_unprotected, inside) == []
    assert _run(rcu_lookup_unprotected, locked) == []


def test_rcu_result_used_after_unlock_without_tryget() -> None:
    code = """
int f(unsigned short id)
{
	struct mem_cgroup *memcg;

	rcu_read_lock();
	memcg = mem_cgroup_from_id(id);
	rcu_read_unlock();
	return charge(memcg);
}
"""
    hits = _run(rcu_lookup_unprotected, code)
    assert [h.key for h in hits] == [("rcu-use-after-unlock", "mem_cgroup_from_id", "memcg")]
    safe = code.replace(
        "\trcu_read_unlock();",
        "\tif (!css_tryget(&memcg->css))\n\t\tmemcg = NULL;\n\trcu_read_unlock();",
    )
    assert _run(rcu_lookup_unprotected, safe) == []


def test_returning_a_field_of_a_freed_object_is_a_use() -> None:
    code = """
int f(struct demo_req *req)
{
	kfree(req);
	return req->status;
}
"""
    hits = _run(use_after_release, code)
    assert [h.fields["use"] for h in hits] == ["return req->status"]


def test_release_paths_are_recognised_by_name_role_or_registration() -> None:
    from bot.analyze.rules_match import is_release_path

    code = """
static void demo_free_rcu(struct rcu_head *head)
{
	kfree(container_of(head, struct demo, rcu));
}

void demo_drop_user(struct demo *d)
{
	if (refcount_dec_and_test(&d->users))
		call_rcu(&d->rcu, demo_free_rcu);
}

static void demo_tail(struct work_struct *w)
{
	finish(w);
}

void demo_setup(struct demo *d)
{
	INIT_WORK(&d->tail_work, demo_tail);
}

void output_page(struct demo *d)
{
	write(d);
}
"""
    view = SourceView({"mm/t.c": code}, None)
    flows = {f.name: f for f in flows_in_text(code, "mm/t.c")}

    def why(name: str) -> str:
        return is_release_path(flows[name], Side(flows[name], view, "mm/t.c"), ENV)

    assert why("demo_drop_user") == "its name says so"
    assert why("demo_tail") == "it is registered as a release callback"
    assert why("output_page") == ""
    assert why("demo_setup") == ""


def test_error_path_jumping_past_the_get_to_the_put_is_a_put_without_get() -> None:
    from bot.analyze.refs import put_without_get

    code = """
int f(struct mm_struct *mm, bool fast)
{
	struct mem_cgroup *memcg;
	int ret = -EINVAL;

	if (!fast)
		goto out;
	memcg = get_mem_cgroup_from_mm(mm);
	ret = charge(memcg);
out:
	mem_cgroup_put(memcg);
	return ret;
}
"""
    assert [h.key for h in _run(put_without_get, code)] == [("put-without-get", "memcg", "memcg")]
    null_first = code.replace("struct mem_cgroup *memcg;", "struct mem_cgroup *memcg = NULL;")
    assert _run(put_without_get, null_first) == []


def test_loop_macros_without_braces_are_loops_that_end_with_a_null_cursor() -> None:
    code = """
unsigned long f(struct mem_cgroup *root, struct list_head *head)
{
	struct mem_cgroup *mi;
	struct demo *pos;
	unsigned long val = 0;

	for_each_mem_cgroup_tree(mi, root)
		val += demo_stat(mi);
	list_for_each_entry(pos, head, list)
		kfree(pos);
	return val;
}
"""
    (flow,) = flows_in_text(code, "mm/t.c")
    assert tuple(c.name for c in flow.calls if c.name in ("demo_stat", "kfree")) == (
        "demo_stat",
        "kfree",
    )
    assert _run(path_reference_leak, code) == []
    assert _run(use_after_release, code) == []


def test_a_lookup_wrapper_leaves_the_read_section_to_its_caller() -> None:
    code = """
struct mem_cgroup *demo_memcg_from_id(unsigned short id)
{
	return (struct mem_cgroup *)mem_cgroup_from_id(id);
}
"""
    assert _run(rcu_lookup_unprotected, code) == []


def test_printing_a_freed_pointer_is_not_a_use_but_dereferencing_it_is() -> None:
    code = """
void f(struct demo *p)
{
	kfree(p);
	pr_err("freed %p\\n", p);
	pr_err("value %d\\n", p->val);
}
"""
    hits = _run(use_after_release, code)
    assert [h.fields["use"] for h in hits] == ['pr_err("value %d\\n", p->val)']


def test_a_helper_that_returns_a_reference_counts_as_a_get() -> None:
    code = """
struct obj *demo_lookup_get(struct table *t, int id)
{
	struct obj *o = table_find(t, id);

	if (o)
		kref_get(&o->ref);
	return o;
}

int demo_use(struct table *t, int id)
{
	struct obj *o = demo_lookup_get(t, id);
	int ret;

	if (!o)
		return -ENOENT;
	ret = obj_do(o);
	if (ret == -EAGAIN)
		return ret;
	kref_put(&o->ref, obj_release);
	return ret;
}
"""
    view = SourceView({"mm/t.c": code}, None)
    flow = next(f for f in flows_in_text(code, "mm/t.c") if f.name == "demo_use")
    hits = path_reference_leak(ENV, Side(flow, view, "mm/t.c"), Side(None, view, "mm/t.c"))
    assert [(h.key, h.fields["get"]) for h in hits] == [
        (("leak", "kref", "o", "ret"), "demo_lookup_get")
    ]


def test_a_tryget_compared_with_zero_fails_on_the_true_branch() -> None:
    hits = _run(
        path_reference_leak,
        """
int f(struct obj *o, struct list_head *head)
{
	struct obj *pos = first_entry(head);

	if (kref_get_unless_zero(&pos->ref) == 0)
		return -EAGAIN;
	if (busy(pos))
		return -EBUSY;
	kref_put(&pos->ref, obj_release);
	return 0;
}
""",
    )
    assert [h.key for h in hits] == [("leak", "kref", "pos", "-EBUSY")]


def test_puts_of_other_elements_each_time_round_a_loop_are_not_a_double_put() -> None:
    from bot.analyze.refs import double_put

    hits = _run(
        double_put,
        """
void f(struct ctx *ctx, struct pid **ids, int nr)
{
	struct target *t, *next;
	int i;

	for (i = 0; i < nr; i++)
		put_pid(ids[i]);
	list_for_each_entry_safe(t, next, &ctx->targets, list) {
		put_pid((struct pid *)t->id);
		kfree(t);
	}
}
""",
    )
    assert hits == []


def test_a_put_repeated_in_a_loop_is_not_a_use_of_its_own_arguments() -> None:
    hits = _run(
        use_after_release,
        """
void f(struct dev_pagemap *pgmap)
{
	int i;

	for (i = 0; i < pgmap->nr_range; i++)
		percpu_ref_put_many(&pgmap->ref, range_len(pgmap, i));
}
""",
    )
    assert hits == []


def test_a_use_on_the_next_line_of_a_loop_after_its_put_is_still_reported() -> None:
    hits = _run(
        use_after_release,
        """
void f(struct dev_pagemap *pgmap)
{
	int i;

	for (i = 0; i < 4; i++) {
		percpu_ref_put(&pgmap->ref);
		pgmap->count--;
	}
}
""",
    )
    assert [h.fields["object"] for h in hits] == ["pgmap"]


def test_a_put_of_each_subpage_in_a_loop_is_not_a_double_put() -> None:
    hits = _run(
        double_put,
        """
void f(struct page *page, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		set_page_refcounted(page + i);
		put_page(page + i);
	}
}
""",
    )
    assert hits == []


def test_the_same_page_put_twice_in_a_loop_is_still_a_double_put() -> None:
    hits = _run(
        double_put,
        """
void f(struct page *page, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		put_page(page);
		put_page(page);
	}
}
""",
    )
    assert [h.key[0] for h in hits] == ["double-put"]


def test_a_reference_held_when_the_loop_moves_on_leaks() -> None:
    code = """
void f(struct list_head *list)
{
	struct folio *folio;

	list_for_each_entry(folio, list, lru) {
		folio_get(folio);
		if (folio_test_dirty(folio))
			continue;
		process(folio);
		folio_put(folio);
	}
}
"""
    hits = _run(path_reference_leak, code)
    assert [h.key for h in hits] == [("leak-overwritten", "folio", "folio")]
    balanced = code.replace(
        "\t\tif (folio_test_dirty(folio))\n\t\t\tcontinue;\n",
        "\t\tif (folio_test_dirty(folio)) {\n\t\t\tfolio_put(folio);\n\t\t\tcontinue;\n\t\t}\n",
    )
    assert _run(path_reference_leak, balanced) == []


def test_a_reference_handed_over_before_the_local_is_reused_does_not_leak() -> None:
    hits = _run(
        path_reference_leak,
        """
void f(struct list_head *list, struct list_head *keep)
{
	struct folio *folio;

	list_for_each_entry(folio, list, lru) {
		folio_get(folio);
		list_add(&folio->lru, keep);
	}
}
""",
    )
    assert hits == []

"""Ownership across a patch: refcount initialisation removed, a tryget pin removed
with its put, a get removed with its put, a function moved between files, a
caller's lock contract, and hunks that close a block opened above them. Small
kernel-style code written for these tests, through the real flow and engine."""

from __future__ import annotations

from pathlib import Path

from bot.analyze.api import load_vocabulary
from bot.analyze.contract import held_on_entry
from bot.analyze.flow_build import flows_in_text
from bot.analyze.flow_source import SourceView
from bot.analyze.ownership import init_removed, local_release_lost
from bot.analyze.release_paths import release_path_loses_put
from bot.analyze.rules_match import Env, Side
from bot.config import Settings
from bot.model import Status
from bot.pipeline import review_inputs

VOCAB = load_vocabulary(Settings().rules_dir)
ENV = Env(VOCAB, depth=2)
VIEW = SourceView({}, None)
FIXTURES = Path(__file__).parent / "fixtures" / "ownership"


def _sides(pre: str, post: str) -> tuple[Side, Side]:
    (a,) = flows_in_text(pre, "mm/t.c")
    (b,) = flows_in_text(post, "mm/t.c")
    return Side(a, VIEW, "mm/t.c"), Side(b, VIEW, "mm/t.c")


def test_a_refcount_init_removed_from_the_constructor_is_reported() -> None:
    pre, post = _sides(
        """
struct obj *obj_make(void)
{
	struct obj *o = kzalloc(sizeof(*o), GFP_KERNEL);

	if (!o)
		return NULL;
	refcount_set(&o->users, 1);
	kref_init(&o->kref);
	return o;
}
""",
        """
struct obj *obj_make(void)
{
	struct obj *o = kzalloc(sizeof(*o), GFP_KERNEL);

	if (!o)
		return NULL;
	kref_init(&o->kref);
	return o;
}
""",
    )
    hits = init_removed(ENV, pre, post)
    assert [h.key for h in hits] == [("init-removed", "refcount_t", "users")]
    assert init_removed(ENV, post, pre) == []


def test_removing_a_tryget_pin_around_a_use_is_reported_and_a_plain_get_pair_is_not() -> None:
    pre, post = _sides(
        """
int wp(struct ctx *ctx)
{
	int ret = -ESRCH;

	if (mmget_not_zero(ctx->mm)) {
		ret = protect(ctx->mm);
		mmput(ctx->mm);
	}
	return ret;
}
""",
        """
int wp(struct ctx *ctx)
{
	return protect(ctx->mm);
}
""",
    )
    hits = release_path_loses_put(ENV, pre, post)
    assert [h.variant for h in hits] == ["pin-removed"]
    pre, post = _sides(
        """
void split(struct folio *folio)
{
	folio_get(folio);
	folio_lock(folio);
	folio_unlock(folio);
	folio_put(folio);
}
""",
        """
void split(struct folio *folio)
{
	touch(folio);
}
""",
    )
    assert release_path_loses_put(ENV, pre, post) == []


def test_callers_contract_counts_as_held() -> None:
    text = """
/*
 * Caller must hold the table lock.
 */
static void drop_entry(struct table *t, struct entry *e)
{
	list_del(&e->node);
}

static void asserts(struct table *t)
{
	lockdep_assert_held(&t->lock);
}

static void helper(struct table *t)
{
	touch(t);
}

static void caller(struct table *t)
{
	spin_lock(&t->lock);
	helper(t);
	spin_unlock(&t->lock);
}

static void bare(struct table *t)
{
	touch(t);
}
"""
    view = SourceView({"mm/t.c": text}, None)
    flows = {f.name: f for f in flows_in_text(text, "mm/t.c")}
    assert held_on_entry(flows["drop_entry"], view, "mm/t.c", VOCAB)
    assert held_on_entry(flows["asserts"], view, "mm/t.c", VOCAB)
    assert held_on_entry(flows["helper"], view, "mm/t.c", VOCAB)
    assert not held_on_entry(flows["bare"], view, "mm/t.c", VOCAB)


MOVE = """\
From: Dev <dev@example.org>
Subject: [PATCH] mm: move widget_grab() to its own file

---
diff --git a/mm/a.c b/mm/a.c
--- a/mm/a.c
+++ b/mm/a.c
@@ -1,13 +1,2 @@
 #include "w.h"
-
-int widget_grab(struct widget *w)
-{
-	struct page *page = get_widget_page(w);
-
-	get_page(page);
-	if (w->bad)
-		return -EINVAL;
-	put_page(page);
-	return 0;
-}
 int other(void) { return 0; }
diff --git a/mm/b.c b/mm/b.c
new file mode 100644
--- /dev/null
+++ b/mm/b.c
@@ -0,0 +1,11 @@
+#include "w.h"
+int widget_grab(struct widget *w)
+{
+	struct page *page = get_widget_page(w);
+
+	get_page(page);
+	if (w->bad)
+		return -EINVAL;
+	put_page(page);
+	return 0;
+}
"""


def test_a_function_moved_between_files_is_not_new_code(tmp_path: Path) -> None:
    patch = tmp_path / "move.patch"
    patch.write_text(MOVE)
    review = review_inputs([str(patch)], Settings(simulate=False))
    intro = [f for f in review.findings if f.status is Status.INTRODUCED]
    assert intro == []
    # the same body added without the removal is new code, and its leak is new
    added_only = MOVE.split("diff --git a/mm/b.c", maxsplit=1)[0].split("---\n", 1)[0]
    added_only += "---\ndiff --git a/mm/b.c" + MOVE.split("diff --git a/mm/b.c")[1]
    patch.write_text(added_only)
    review = review_inputs([str(patch)], Settings(simulate=False))
    assert [f.rule_id for f in review.findings if f.status is Status.INTRODUCED] == ["MMLC002"]


def test_a_hunk_that_closes_a_block_keeps_the_code_after_it() -> None:
    patch = FIXTURES / "split-partial-hunk.patch"
    review = review_inputs([str(patch)], Settings(simulate=False))
    assert [f.rule_id for f in review.findings if f.status is Status.INTRODUCED] == ["MMLC003"]


def test_freeing_an_entry_no_longer_taken_off_its_list_is_reported() -> None:
    patch = FIXTURES / "reap-list-del.patch"
    review = review_inputs([str(patch)], Settings(simulate=False))
    intro = [f for f in review.findings if f.status is Status.INTRODUCED]
    assert [(f.rule_id, f.function) for f in intro] == [("MMLC003", "reap_all")]
    assert "list_del(&v->node)" in intro[0].message


def test_an_error_path_that_no_longer_sets_its_error_code_is_reported() -> None:
    patch = FIXTURES / "setup-errcode.patch"
    review = review_inputs([str(patch)], Settings(simulate=False))
    intro = [f for f in review.findings if f.status is Status.INTRODUCED]
    assert [f.rule_id for f in intro] == ["MMLC007"]


def test_a_release_moved_before_the_unlink_is_reported() -> None:
    from bot.analyze.ownership import release_before_unlink

    pre, post = _sides(
        """
void entry_remove(struct table *t, struct entry *e)
{
	spin_lock(&t->lock);
	list_del_rcu(&e->node);
	spin_unlock(&t->lock);
	kfree_rcu(e, rcu);
}
""",
        """
void entry_remove(struct table *t, struct entry *e)
{
	kfree(e);
	spin_lock(&t->lock);
	list_del_rcu(&e->node);
	spin_unlock(&t->lock);
}
""",
    )
    hits = release_before_unlink(ENV, pre, post)
    assert [h.key[:2] for h in hits] == [("release-before-unlink", "e")]
    assert release_before_unlink(ENV, post, pre) == []


def test_a_put_reaches_what_its_release_callback_frees() -> None:
    text = """
static void name_free(struct kref *kref)
{
	struct anon_name *name = container_of(kref, struct anon_name, kref);

	kfree(name);
}

void name_put(struct vm_area_struct *vma)
{
	kref_put(&vma->name->kref, name_free);
}
"""
    from bot.analyze.flow_source import reach

    view = SourceView({"mm/n.c": text}, None)
    flow = next(f for f in flows_in_text(text, "mm/n.c") if f.name == "name_put")
    reached = {(r.terminal.name, r.role.role) for r in reach(flow, view, VOCAB, 2)}
    assert ("kfree", "free") in reached


def test_an_error_branch_that_no_longer_runs_its_undo_is_reported() -> None:
    from bot.analyze.errpaths import undo_dropped

    pre, post = _sides(
        """
int copy_one(struct pool *p, struct item *it)
{
	int ret = fill(it);

	if (ret) {
		restore_reservation_on_error(p, it);
		item_put(it);
		return ret;
	}
	return 0;
}
""",
        """
int copy_one(struct pool *p, struct item *it)
{
	int ret = fill(it);

	if (ret) {
		item_put(it);
		return ret;
	}
	return 0;
}
""",
    )
    assert [h.key for h in undo_dropped(ENV, pre, post)] == [
        ("undo-dropped", "restore_reservation_on_error")
    ]
    assert undo_dropped(ENV, post, pre) == []


def test_a_lock_removed_with_its_work_or_replaced_by_a_wrapper_is_no_lost_protection() -> None:
    from bot.analyze.locking import protection_removed

    pre_text = """
void oom_pf(void)
{
	if (!mutex_trylock(&oom_lock))
		return;
	out_of_memory(&oc);
	mutex_unlock(&oom_lock);
	note_fault();
}
"""
    pre, post = _sides(pre_text, "\nvoid oom_pf(void)\n{\n\tnote_fault();\n}\n")
    assert protection_removed(ENV, pre, post) == []  # the guarded work went too
    pre, post = _sides(
        pre_text, "\nvoid oom_pf(void)\n{\n\tout_of_memory(&oc);\n\tnote_fault();\n}\n"
    )
    assert [h.key for h in protection_removed(ENV, pre, post)] == [
        ("protection-removed", "oom_lock")
    ]
    pre, post = _sides(
        pre_text,
        "\nvoid oom_pf(void)\n{\n\toom_write_lock(&oc);\n\tout_of_memory(&oc);\n"
        "\toom_write_unlock(&oc);\n\tnote_fault();\n}\n",
    )
    assert protection_removed(ENV, pre, post) == []  # a new scheme, through a wrapper


def test_a_field_set_after_the_object_is_published_is_reported() -> None:
    from bot.analyze.locking import init_after_publish

    pre, post = _sides(
        """
int block_new(struct xarray *xa, unsigned long idx, struct block *b)
{
	b->cpu = this_cpu();
	return xa_insert(xa, idx, b, GFP_KERNEL);
}
""",
        """
int block_new(struct xarray *xa, unsigned long idx, struct block *b)
{
	int err = xa_insert(xa, idx, b, GFP_KERNEL);

	b->cpu = this_cpu();
	return err;
}
""",
    )
    assert [h.key for h in init_after_publish(ENV, pre, post)] == [
        ("init-after-publish", "b", "b->cpu")
    ]
    assert init_after_publish(ENV, post, pre) == []


def test_a_check_moved_before_the_lock_is_reported() -> None:
    from bot.analyze.lock_sections import access_moved_out_of_lock

    pre, post = _sides(
        """
int try_destroy(struct ns *ns, struct seg *s)
{
	seg_lock(s);
	if (seg_may_destroy(s))
		seg_destroy(ns, s);
	else
		seg_unlock(s);
	return 0;
}
""",
        """
int try_destroy(struct ns *ns, struct seg *s)
{
	if (seg_may_destroy(s)) {
		seg_lock(s);
		seg_destroy(ns, s);
	}
	return 0;
}
""",
    )
    hits = access_moved_out_of_lock(ENV, pre, post)
    assert [h.key for h in hits] == [("access-moved-out-of-lock", "s", "seg_may_destroy(s)")]
    assert access_moved_out_of_lock(ENV, post, pre) == []


def test_restoring_irq_state_or_undoing_a_removed_setup_is_not_a_dropped_undo() -> None:
    from bot.analyze.errpaths import undo_dropped

    pre, post = _sides(
        """
int charge(struct memcg *memcg, unsigned int nr, unsigned long flags)
{
	if (!try_charge(&memcg->kmem, nr)) {
		cancel_charge(memcg, nr);
		local_irq_restore(flags);
		return -ENOMEM;
	}
	return 0;
}
""",
        """
int charge(struct memcg *memcg, unsigned int nr, unsigned long flags)
{
	return 0;
}
""",
    )
    assert undo_dropped(ENV, pre, post) == []


def test_filling_a_local_before_the_lock_is_not_an_access_moved_out_of_it() -> None:
    from bot.analyze.lock_sections import access_moved_out_of_lock

    pre, post = _sides(
        """
ssize_t demote(struct hstate *h, int nid)
{
	nodemask_t allowed;

	mutex_lock(&h->resize_lock);
	init_mask(&allowed, nid);
	demote_pages(h, &allowed);
	mutex_unlock(&h->resize_lock);
	return 0;
}
""",
        """
ssize_t demote(struct hstate *h, int nid)
{
	nodemask_t allowed;

	init_mask(&allowed, nid);
	mutex_lock(&h->resize_lock);
	demote_pages(h, &allowed);
	mutex_unlock(&h->resize_lock);
	return 0;
}
""",
    )
    assert access_moved_out_of_lock(ENV, pre, post) == []


def test_a_use_moved_after_the_unlock_is_reported_and_calls_without_arguments_are_fine() -> None:
    from bot.analyze.lock_sections import access_moved_out_of_lock

    pre, post = _sides(
        """
void mark_dirty(struct inode *inode)
{
	struct wb *wb;

	spin_lock(&inode->i_lock);
	wb = inode_to_wb(inode);
	move_to_list(inode, wb);
	if (first_dirty(wb))
		wb_wakeup(wb);
	spin_unlock(&inode->i_lock);
	cond_resched();
}
""",
        """
void mark_dirty(struct inode *inode)
{
	struct wb *wb;

	spin_lock(&inode->i_lock);
	wb = inode_to_wb(inode);
	move_to_list(inode, wb);
	spin_unlock(&inode->i_lock);
	cond_resched();
	if (first_dirty(wb))
		wb_wakeup(wb);
}
""",
    )
    keys = [h.key for h in access_moved_out_of_lock(ENV, pre, post)]
    assert keys == [("access-moved-out-of-lock", "inode->i_lock", "first_dirty(wb)")]


def test_checking_what_the_function_took_off_a_free_list_after_the_unlock_is_fine() -> None:
    from bot.analyze.lock_sections import access_moved_out_of_lock

    pre_text = """
struct blk *pool_take(struct pool *pool, int order)
{
	struct blk *blk;

	spin_lock(&pool->lock);
	do {
		blk = NULL;
		if (order == 0)
			blk = __pool_rmqueue_small(pool, order);
		if (!blk)
			blk = __pool_alloc_blk(pool, order);
	} while (blk && check_new_blk(blk->state, order));
	spin_unlock(&pool->lock);
	return blk;
}
"""
    post_text = """
struct blk *pool_take(struct pool *pool, int order)
{
	struct blk *blk;

	do {
		blk = NULL;
		spin_lock(&pool->lock);
		if (order == 0)
			blk = __pool_rmqueue_small(pool, order);
		if (!blk)
			blk = __pool_alloc_blk(pool, order);
		spin_unlock(&pool->lock);
	} while (blk && check_new_blk(blk->state, order));
	return blk;
}
"""
    pre, post = _sides(pre_text, post_text)
    assert access_moved_out_of_lock(ENV, pre, post) == []
    # found under the lock by a lookup that leaves it in place: still reported
    looked_up = [
        t.replace("__pool_rmqueue_small", "pool_first").replace("__pool_alloc_blk", "pool_next")
        for t in (pre_text, post_text)
    ]
    pre, post = _sides(*looked_up)
    assert [h.key[0] for h in access_moved_out_of_lock(ENV, pre, post)] == [
        "access-moved-out-of-lock"
    ]


def test_a_callers_list_head_no_longer_reinitialised_after_freeing_its_entries() -> None:
    from bot.analyze.ownership import list_reinit_removed

    pre, post = _sides(
        """
void put_items(struct list_head *items)
{
	free_item_list(items);
	INIT_LIST_HEAD(items);
}
""",
        """
void put_items(struct list_head *items)
{
	free_item_list(items);
}
""",
    )
    assert [h.key for h in list_reinit_removed(ENV, pre, post)] == [
        ("list-reinit-removed", "items")
    ]
    assert list_reinit_removed(ENV, post, pre) == []


def test_no_longer_calling_a_helper_that_gets_and_puts_its_own_reference_loses_nothing() -> None:
    text_pre = """
static struct page *online_page(unsigned long pfn)
{
	struct pagemap *pgmap = get_pagemap(pfn);

	if (pgmap)
		put_pagemap(pgmap);
	return pfn_page(pfn);
}

static void put_pagemap(struct pagemap *pgmap)
{
	percpu_ref_put(&pgmap->ref);
}

int isolate_range(unsigned long pfn)
{
	struct page *page = online_page(pfn);

	return isolate(page);
}
"""
    text_post = text_pre.replace(
        "struct page *page = online_page(pfn);", "struct page *page = pfn_page(pfn);"
    )
    view_pre = SourceView({"mm/t.c": text_pre}, None)
    view_post = SourceView({"mm/t.c": text_post}, None)
    from bot.analyze.infer import extend_vocabulary

    pre_flow = next(f for f in flows_in_text(text_pre, "mm/t.c") if f.name == "isolate_range")
    post_flow = next(f for f in flows_in_text(text_post, "mm/t.c") if f.name == "isolate_range")
    vocab, inf = extend_vocabulary(VOCAB, [view_post, view_pre], [pre_flow, post_flow], 2)
    env = Env(vocab, depth=2, infer=inf)
    pre = Side(pre_flow, view_pre, "mm/t.c")
    post = Side(post_flow, view_post, "mm/t.c")
    assert release_path_loses_put(env, pre, post) == []


def test_a_lock_replaced_by_an_rcu_read_section_is_a_new_scheme() -> None:
    from bot.analyze.locking import protection_removed

    pre, post = _sides(
        """
void vm_info(struct info *vi)
{
	spin_lock(&area_lock);
	walk_areas(vi);
	spin_unlock(&area_lock);
}
""",
        """
void vm_info(struct info *vi)
{
	rcu_read_lock();
	walk_areas(vi);
	rcu_read_unlock();
}
""",
    )
    assert protection_removed(ENV, pre, post) == []


GRAB = """
static int pool_grab_range(struct pool_map *map, unsigned long start, int nr)
{
	struct folio *folio;

	do {
		folio = pool_folio_lookup(map, start);
		folio_get(folio);
		if (!folio)
			return 0;
		if (!pool_grab_one(map, folio)) {
			pool_undo(map);
			folio_put(folio);
			return 0;
		}
		start++;
	} while (--nr);
	return 1;
}
"""


def test_a_put_removed_with_the_exit_it_preceded_is_unknown_in_a_partial_image() -> None:
    post_text = GRAB.replace("\t\t\tfolio_put(folio);\n\t\t\treturn 0;\n", "\t\t\tbreak;\n")
    (a,) = flows_in_text(GRAB, "mm/t.c")
    (b,) = flows_in_text(post_text, "mm/t.c")
    put_line = GRAB.splitlines().index("\t\t\tfolio_put(folio);") + 1
    removed = frozenset({put_line, put_line + 1})
    env = Env(VOCAB, depth=2)
    full = release_path_loses_put(
        env,
        Side(a, SourceView({"mm/t.c": GRAB}, None), "mm/t.c", removed),
        Side(b, SourceView({"mm/t.c": post_text}, None), "mm/t.c", frozenset({put_line})),
    )
    assert [h.variant for h in full] == ["lost-put"]
    # diff-only: the `break` goes on into code the diff does not show
    shown = frozenset(range(1, len(GRAB.splitlines()) - 3))
    partial = release_path_loses_put(
        env,
        Side(a, SourceView({"mm/t.c": GRAB}, None), "mm/t.c", removed, shown_lines=shown),
        Side(
            b,
            SourceView({"mm/t.c": post_text}, None),
            "mm/t.c",
            frozenset({put_line}),
            shown_lines=shown,
        ),
    )
    assert partial == []


LOCAL_FREE = """
void test_swap(struct args *args)
{
	struct page *page;

	page = alloc_test_page(GFP_KERNEL);
	if (!page)
		return;
	lock_page(page);
	check(page);
	unlock_page(page);
	__free_page(page);
}
"""


def test_a_free_that_went_with_the_allocation_it_paired_is_not_lost() -> None:
    post_text = LOCAL_FREE.replace("alloc_test_page(GFP_KERNEL)", "pfn_to_page(args->pfn)").replace(
        "\t__free_page(page);\n", ""
    )
    pre, post = _sides(LOCAL_FREE, post_text)
    assert local_release_lost(ENV, pre, post) == []


def test_a_free_removed_while_the_page_is_still_allocated_here_is_lost() -> None:
    pre, post = _sides(LOCAL_FREE, LOCAL_FREE.replace("\t__free_page(page);\n", ""))
    assert [h.variant for h in local_release_lost(ENV, pre, post)] == ["lost-free"]


def test_an_undo_whose_setup_the_series_removes_from_a_callee_is_not_dropped() -> None:
    from bot.analyze.errpaths import undo_dropped
    from bot.analyze.flow import Call

    code = """
int add_node(int nid)
{
	int ret = online_node(nid);

	if (ret)
		goto error;
	return 0;
error:
	if (new_node)
		rollback_node_add(nid);
	return ret;
}
"""
    pre, post = _sides(code, code.replace("\tif (new_node)\n\t\trollback_node_add(nid);\n", ""))
    assert [h.variant for h in undo_dropped(ENV, pre, post)] == ["undo-dropped"]
    setup = Call("node_alloc_pgdat", ("nid",), 3, "node_alloc_pgdat(nid)")
    env = Env(VOCAB, depth=2, removed=[("online_node", setup)])
    assert undo_dropped(env, pre, post) == []


def test_finding_a_new_lock_before_taking_it_is_no_access_moved_out() -> None:
    from bot.analyze.lock_sections import access_moved_out_of_lock

    pre, post = _sides(
        """
int migrate(struct address_space *mapping, struct page *page)
{
	struct pool *pool;
	struct zspage *zspage = get_zspage(page);

	migrate_write_lock(zspage);
	pool = mapping->private_data;
	move(pool, page);
	migrate_write_unlock(zspage);
	return 0;
}
""",
        """
int migrate(struct address_space *mapping, struct page *page)
{
	struct pool *pool;
	struct zspage *zspage;

	pool = mapping->private_data;
	write_lock(&pool->migrate_lock);
	zspage = get_zspage(page);
	migrate_write_lock(zspage);
	move(pool, page);
	migrate_write_unlock(zspage);
	write_unlock(&pool->migrate_lock);
	return 0;
}
""",
    )
    assert access_moved_out_of_lock(ENV, pre, post) == []


def test_the_same_undo_dropped_in_two_functions_is_reported_in_both() -> None:
    from bot.analyze.errpaths import undo_dropped
    from bot.analyze.flow import Call

    code = """
int copy_one(struct pool *p, struct item *it)
{
	int ret = fill(it);

	if (ret) {
		restore_reservation_on_error(p, it);
		item_put(it);
		return ret;
	}
	return 0;
}
"""
    pre, post = _sides(code, code.replace("\t\trestore_reservation_on_error(p, it);\n", ""))
    other = Call(
        "restore_reservation_on_error", ("p", "it"), 9, "restore_reservation_on_error(p, it)"
    )
    env = Env(VOCAB, depth=2, removed=[("copy_two", other)])
    assert [h.variant for h in undo_dropped(env, pre, post)] == ["undo-dropped"]


def test_checking_what_was_taken_off_the_free_list_after_the_unlock_is_no_race() -> None:
    from bot.analyze.lock_sections import access_moved_out_of_lock

    pre, post = _sides(
        """
struct page *take(struct zone *zone, int order)
{
	struct page *page;
	unsigned long flags;

	spin_lock_irqsave(&zone->lock, flags);
	do {
		page = free_list_take(zone, order);
	} while (page && check_new_pages(page, order));
	spin_unlock_irqrestore(&zone->lock, flags);
	return page;
}
""",
        """
struct page *take(struct zone *zone, int order)
{
	struct page *page;
	unsigned long flags;

	do {
		spin_lock_irqsave(&zone->lock, flags);
		page = free_list_take(zone, order);
		spin_unlock_irqrestore(&zone->lock, flags);
	} while (page && check_new_pages(page, order));
	return page;
}
""",
    )
    assert access_moved_out_of_lock(ENV, pre, post) == []


def test_a_parameter_no_longer_reassigned_under_the_lock_is_the_callers_after_it() -> None:
    from bot.analyze.lock_sections import access_moved_out_of_lock

    pre, post = _sides(
        """
int migrate(struct pool *pool, struct page *newpage, struct page *page)
{
	spin_lock(&pool->lock);
	copy(newpage, page);
	page = newpage;
	if (page_zone(page) != pool->zone)
		pool->moved++;
	spin_unlock(&pool->lock);
	return 0;
}
""",
        """
int migrate(struct pool *pool, struct page *newpage, struct page *page)
{
	spin_lock(&pool->lock);
	copy(newpage, page);
	spin_unlock(&pool->lock);
	if (page_zone(page) != pool->zone)
		pool->moved++;
	return 0;
}
""",
    )
    assert access_moved_out_of_lock(ENV, pre, post) == []


_POOL_C = """struct pool {
	struct pool_driver *driver;
	struct list_head list;
};

static LIST_HEAD(drivers_head);
static LIST_HEAD(pools_head);
static DEFINE_SPINLOCK(pools_lock);

void pool_register_driver(struct pool_driver *driver)
{
	list_add(&driver->list, &drivers_head);
}

struct pool *pool_create(struct pool_driver *driver)
{
	struct pool *pool = kmalloc(sizeof(*pool), GFP_KERNEL);

	if (!pool)
		return NULL;
	pool->driver = driver;
	spin_lock(&pools_lock);
	list_add(&pool->list, &pools_head);
	spin_unlock(&pools_lock);
	return pool;
}

void pool_destroy(struct pool *pool)
{
	spin_lock(&pools_lock);
	list_del(&pool->list);
	spin_unlock(&pools_lock);
	kfree(pool);
}
"""


def _pool_patch(tmp_path: Path, *, drop_link: bool) -> Path:
    """A patch on our small tree: the unlink in pool_destroy() goes, and with
    `drop_link` the list itself (member, list_add) goes too."""
    import subprocess

    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "pool.c").write_text(_POOL_C)
    after = _POOL_C.replace(
        "\tspin_lock(&pools_lock);\n\tlist_del(&pool->list);\n\tspin_unlock(&pools_lock);\n", ""
    )
    if drop_link:
        after = after.replace("\tstruct list_head list;\n", "").replace(
            "\tspin_lock(&pools_lock);\n\tlist_add(&pool->list, &pools_head);\n"
            "\tspin_unlock(&pools_lock);\n",
            "",
        )
    new = tmp_path / "pool.c"
    new.write_text(after)
    diff = subprocess.run(
        ["diff", "-u", "--label", "a/mm/pool.c", "--label", "b/mm/pool.c",
         str(tree / "mm" / "pool.c"), str(new)],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    patch = tmp_path / "p.patch"
    patch.write_text(
        "From: A U Thor <a@example.org>\nSubject: [PATCH] mm/pool: drop the pools list\n\n"
        "Nothing walks it.\n---\n" + diff
    )
    return patch


def test_an_unlink_removed_with_the_link_of_the_same_member_is_quiet(tmp_path: Path) -> None:
    # another object (the driver) is still linked by a member of the same name
    patch = _pool_patch(tmp_path, drop_link=True)
    review = review_inputs([str(patch)], Settings(simulate=False), tree=str(tmp_path / "tree"))
    assert [f.rule_id for f in review.findings if f.status is Status.INTRODUCED] == []


def test_an_unlink_removed_while_the_object_is_still_linked_is_reported(tmp_path: Path) -> None:
    patch = _pool_patch(tmp_path, drop_link=False)
    review = review_inputs([str(patch)], Settings(simulate=False), tree=str(tmp_path / "tree"))
    intro = [(f.rule_id, f.function) for f in review.findings if f.status is Status.INTRODUCED]
    assert ("MMLC003", "pool_destroy") in intro


def test_the_local_an_access_assigns_is_not_an_object_it_found_under_the_lock() -> None:
    # `slab = to_slab(meta->addr)` moved after the unlock: `meta` is the
    # caller's; that `slab` was assigned under the lock before is no use of it
    from bot.analyze.lock_sections import access_moved_out_of_lock

    body = """
void *guarded_alloc(struct meta *meta, struct cache *cache)
{
	struct slab *slab;

	spin_lock(&meta->lock);
	meta->cache = cache;
	slab = to_slab(meta->addr);
	spin_unlock(&meta->lock);
	slab->cache = cache;
	return slab;
}
"""
    moved = body.replace(
        "\tslab = to_slab(meta->addr);\n\tspin_unlock(&meta->lock);\n",
        "\tspin_unlock(&meta->lock);\n\tslab = to_slab(meta->addr);\n",
    )
    pre, post = _sides(body, moved)
    assert access_moved_out_of_lock(ENV, pre, post) == []
    # an object the function does find under the lock still counts
    found = body.replace("\tmeta->cache = cache;\n", "\tmeta = cache->cur;\n")
    pre, post = _sides(found, found.replace(
        "\tslab = to_slab(meta->addr);\n\tspin_unlock(&meta->lock);\n",
        "\tspin_unlock(&meta->lock);\n\tslab = to_slab(meta->addr);\n",
    ))  # fmt: skip
    assert [h.key[2] for h in access_moved_out_of_lock(ENV, pre, post)] == [
        "slab=to_slab(meta->addr)"
    ]

"""Locks held when a function starts (it releases them before taking them),
parameters named by a hunk header, and what a diff-only review reads from them:
a free or an access moved past the unlock of a lock taken in lines the diff
does not show, and `__free_foo()` read as the free it is named for."""

from __future__ import annotations

from pathlib import Path

from bot.analyze.diff import parse_diff
from bot.analyze.entry_locks import entry_held, section_params
from bot.analyze.flow_build import flows_in_text
from bot.analyze.naming import split_verb
from bot.config import Settings
from bot.model import Status
from bot.pipeline import review_inputs

SETTINGS = Settings(simulate=False)


def _introduced(tmp_path: Path, diff: str, name: str = "x.patch") -> set[tuple[str, str]]:
    path = tmp_path / name
    path.write_text(diff)
    review = review_inputs([str(path)], SETTINGS)
    return {(f.rule_id, f.function or "") for f in review.findings if f.status is Status.INTRODUCED}


def _diff(text: str) -> str:
    """A diff written with `\\t` for tabs and `~` for a blank context line."""
    return "\n".join(" " if line == "~" else line for line in text.split("\n")).replace("\\t", "\t")


def _reverse(diff: str) -> str:
    """The same diff undone: `-` and `+` lines and the header's ranges swapped."""
    out = []
    for line in diff.splitlines(keepends=True):
        if line.startswith(("--- ", "+++ ")):
            out.append(line)
        elif line.startswith("@@"):
            head, _, rest = line[3:].partition(" @@")
            old, new = head.split(" ")
            out.append(f"@@ -{new[1:]} +{old[1:]} @@{rest}")
        elif line.startswith("-"):
            out.append("+" + line[1:])
        elif line.startswith("+"):
            out.append("-" + line[1:])
        else:
            out.append(line)
    return "".join(out)


def test_a_lock_released_before_it_is_taken_was_held_on_entry() -> None:
    (flow,) = flows_in_text(
        """
static void drop_and_retake(struct pool *p)
{
	shrink(p);
	spin_unlock(&p->lock);
	wait_idle(p);
	spin_lock(&p->lock);
	spin_unlock(&p->lock);
	mutex_lock(&p->mutex);
	mutex_unlock(&p->mutex);
}
""",
        "mm/t.c",
    )

    def locks(c: object) -> bool:
        return getattr(c, "name", "").endswith("_lock")

    def unlocks(c: object) -> bool:
        return getattr(c, "name", "").endswith("_unlock")

    held = entry_held(flow, locks, unlocks)
    assert list(held) == ["p->lock"]  # the mutex is taken before it is released
    assert held["p->lock"] == flow.start_line + 3


def test_a_hunk_header_names_the_parameters_of_its_function() -> None:
    (d,) = parse_diff(
        """\
--- a/mm/x.c
+++ b/mm/x.c
@@ -10,3 +10,3 @@ void mark(struct node *node, int flags, unsigned long v[4])
 \ta();
-\tb();
+\tc();
""",
        "t",
    )
    assert section_params(d, "mark") == frozenset({"node", "flags", "v"})
    assert section_params(d, "other") is None


def test_an_inner_variant_name_is_read_as_its_step() -> None:
    assert split_verb("__free_table_slots") == ("free", "table_slots")
    assert split_verb("__is_free_page") is None


FREE_PAST_HIDDEN_LOCK = """\
diff --git a/mm/table.c b/mm/table.c
--- a/mm/table.c
+++ b/mm/table.c
@@ -30,7 +30,7 @@ static int table_grow(struct table *t, int n)
 \\tif (setup_slots(t, n))
 \\t\\tgoto fail;
 \\treturn 0;
 fail:
-\\tkfree(t->slots);
 \\tspin_unlock(&t->lock);
+\\tkfree(t->slots);
 \\treturn -ENOMEM;
"""


def test_diff_only_a_free_moved_past_the_unlock_of_a_hidden_lock(tmp_path: Path) -> None:
    diff = _diff(FREE_PAST_HIDDEN_LOCK)
    assert ("MMLC006", "table_grow") in _introduced(tmp_path, diff)
    assert _introduced(tmp_path, _reverse(diff), "r.patch") == set()


INNER_FREE_BY_NAME = """\
diff --git a/mm/table.c b/mm/table.c
--- a/mm/table.c
+++ b/mm/table.c
@@ -10,6 +10,6 @@ static void __free_table_slots(struct table *t)
 {
-\tint i;
+\tunsigned int i;
~
 \tfor (i = 0; i < t->nr; i++) {
 \t\tstruct slot *s = t->slots[i];
~
@@ -30,7 +30,7 @@ static int table_grow(struct table *t, int n)
 \tif (alloc_table_slots(t, n))
 \t\tgoto fail;
 \treturn 0;
 fail:
-\t__free_table_slots(t);
 \tspin_unlock(&table_lock);
+\t__free_table_slots(t);
 \treturn -ENOMEM;
"""


def test_diff_only_an_inner_free_shown_in_part_is_still_a_free(tmp_path: Path) -> None:
    diff = _diff(INNER_FREE_BY_NAME)
    assert ("MMLC006", "table_grow") in _introduced(tmp_path, diff)
    assert _introduced(tmp_path, _reverse(diff), "r.patch") == set()


USE_PAST_HIDDEN_LOCK = """\
diff --git a/fs/queue.c b/fs/queue.c
--- a/fs/queue.c
+++ b/fs/queue.c
@@ -50,9 +50,9 @@ void mark_dirty(struct item *item, int flags)
 \t\t\tmoved = move_to_queue_locked(item, q);
~
+\t\t\tspin_unlock(&q->lock);
 \t\t\tif (moved)
 \t\t\t\tkick_queue(OBJ);
-\t\t\tspin_unlock(&q->lock);
 \t\t\treturn;
 \t\t}
 \t}
"""


def test_diff_only_a_pointer_found_under_a_hidden_lock_used_after_it(tmp_path: Path) -> None:
    diff = _diff(USE_PAST_HIDDEN_LOCK)
    found = diff.replace("OBJ", "q")
    assert ("MMLC008", "mark_dirty") in _introduced(tmp_path, found)
    assert _introduced(tmp_path, _reverse(found), "r.patch") == set()
    # the caller's object (a parameter) is the caller's to keep alive
    assert _introduced(tmp_path, diff.replace("OBJ", "item"), "p.patch") == set()


GAP_PRE = """
static struct page *slot_alloc(struct slot_cache *cache)
{
	slot = cache->cur;
	page = slot_page(slot->addr);


	spin_unlock_irqrestore(&slot->lock, flags);
	return page;
}
"""
GAP_POST = """
static struct page *slot_alloc(struct slot_cache *cache)
{
	slot = cache->cur;
	spin_unlock_irqrestore(&slot->lock, flags);
	page = slot_page(slot->addr);

	return page;
}
"""


def test_diff_only_a_hidden_lock_covers_only_the_shown_lines_before_its_unlock() -> None:
    from bot.analyze.api import load_vocabulary
    from bot.analyze.flow_source import SourceView
    from bot.analyze.lock_sections import access_moved_out_of_lock
    from bot.analyze.rules_match import Env, Side

    env = Env(load_vocabulary(Settings().rules_dir), depth=2)
    view = SourceView({}, None)
    (a,) = flows_in_text(GAP_PRE, "mm/t.c")
    (b,) = flows_in_text(GAP_POST, "mm/t.c")
    pre_lines = frozenset(range(1, 11)) - {6, 7}  # 6 and 7: hidden between two hunks
    post_lines = frozenset(range(1, 10)) - {7}

    def sides(shown_pre: frozenset[int] | None, shown_post: frozenset[int] | None) -> list[str]:
        pre = Side(a, view, "mm/t.c", removed_lines=frozenset({8}), shown_lines=shown_pre)
        post = Side(b, view, "mm/t.c", removed_lines=frozenset({5}), shown_lines=shown_post)
        return [h.key[2] for h in access_moved_out_of_lock(env, pre, post)]

    # the whole body known: the function was entered with slot->lock held, and
    # found `slot` under it
    assert sides(None, None) == ["page=slot_page(slot->addr)"]
    # diff-only: the lines hidden between the access and the unlock may take
    # the lock, so the section starts at the shown run that ends in the unlock
    assert sides(pre_lines, post_lines) == []


def test_lock_sites_held_on_entry_stop_at_a_blank_line_of_a_partial_image() -> None:
    from bot.analyze.api import load_vocabulary
    from bot.analyze.flow_source import lock_sites

    vocab = load_vocabulary(Settings().rules_dir)
    text = GAP_PRE.replace("page = slot_page", "kfree(slot->old);\n\tpage = slot_page")
    (flow,) = flows_in_text(text, "mm/t.c")
    names = [c.name for c in flow.calls]
    held = {names[i] for i in lock_sites(flow, vocab)}
    assert {"kfree", "slot_page"} <= held  # a whole body: held from the start
    partial = {names[i] for i in lock_sites(flow, vocab, tuple(text.split("\n")))}
    assert "kfree" not in partial and "slot_page" not in partial


HELPER_RENAMED_INTO_RELEASE = """\
diff --git a/mm/bar.c b/mm/bar.c
--- a/mm/bar.c
+++ b/mm/bar.c
@@ -20,12 +20,10 @@ static int bar_unit_alloc(struct bar_info *info)
 \treturn 0;
 }
~
-static void __free_bar_info(struct bar_owner *owner)
+void free_bar_info(struct bar_owner *owner)
 {
 \tstruct bar_info *info;
 \tint nid;
~
-\tlockdep_assert_held(&bar_mutex);
-
 \tfor_each_node(nid) {
 \t\tinfo = owner->info[nid];
@@ -35,13 +33,6 @@ static void __free_bar_info(struct bar_owner *owner)
 \t}
 }
~
-void free_bar_info(struct bar_owner *owner)
-{
-\tmutex_lock(&bar_mutex);
-\t__free_bar_info(owner);
-\tmutex_unlock(&bar_mutex);
-}
-
 int alloc_bar_info(struct bar_owner *owner)
 {
 \tint nid, ret = 0;
"""


def test_diff_only_a_helper_renamed_into_its_wrapper_loses_no_free(tmp_path: Path) -> None:
    # `__free_bar_info()` becomes `free_bar_info()` (the locked wrapper goes):
    # its free is in the lines the hunks hide, not lost
    diff = _diff(HELPER_RENAMED_INTO_RELEASE)
    assert ("MMLC001", "free_bar_info") not in _introduced(tmp_path, diff)


def test_diff_only_nothing_runs_before_taking_a_lock_held_from_hidden_lines() -> None:
    from bot.analyze.api import load_vocabulary
    from bot.analyze.flow_source import SourceView
    from bot.analyze.lock_sections import access_moved_out_of_lock
    from bot.analyze.rules_match import Env, Side

    env = Env(load_vocabulary(Settings().rules_dir), depth=2)
    view = SourceView({}, None)
    body = "\tslot->cache = cache;\n{a}\n\n{b}\n\tspin_unlock_irqrestore(&slot->lock, flags);\n"
    access = "\tpage = slot_page(slot->addr);"
    head = "\nstatic struct page *slot_alloc(struct slot_cache *cache)\n{\n"
    tail = "\treturn page;\n}\n"
    (a,) = flows_in_text(head + body.format(a="", b=access) + tail, "mm/t.c")
    (b,) = flows_in_text(head + body.format(a=access, b="") + tail, "mm/t.c")
    # the access moves up across lines the diff does not show; the lock is
    # taken somewhere above the unlock's run, not where that run starts
    pre = Side(
        a,
        view,
        "mm/t.c",
        removed_lines=frozenset({7}),
        shown_lines=frozenset({2, 3, 4, 7, 8, 9, 10}),
    )
    post = Side(
        b,
        view,
        "mm/t.c",
        removed_lines=frozenset({5}),
        shown_lines=frozenset({2, 3, 4, 5, 8, 9, 10}),
    )
    assert access_moved_out_of_lock(env, pre, post) == []


def test_a_blank_line_the_diff_shows_does_not_hide_a_lock() -> None:
    from bot.analyze.api import load_vocabulary
    from bot.analyze.flow_source import lock_sites

    vocab = load_vocabulary(Settings().rules_dir)
    text = GAP_PRE.replace("page = slot_page", "kfree(slot->old);\n\tpage = slot_page")
    (flow,) = flows_in_text(text, "mm/t.c")
    names = [c.name for c in flow.calls]
    lines = tuple(text.split("\n"))
    every = frozenset(range(1, len(lines) + 1))
    # the blank lines are the code's own (an added empty line, say): the shown
    # run ending in the unlock goes on above them
    shown = {names[i] for i in lock_sites(flow, vocab, lines, every)}
    assert {"kfree", "slot_page"} <= shown
    # the same lines hidden between two hunks could hold the lock call
    hidden = every - {i + 1 for i, line in enumerate(lines) if not line.strip()}
    assert "kfree" not in {names[i] for i in lock_sites(flow, vocab, lines, hidden)}

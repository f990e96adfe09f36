"""The rules engine over whole series: statuses, rule selection, crash isolation,
and the seed case the project started from."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.analyze import rules_match
from bot.analyze.engine import load_checks, post_line_of_removed
from bot.config import Settings
from bot.errors import UsageError
from bot.model import FileDiff, Finding, Hunk, HunkLine, LineKind, Status
from bot.pipeline import review_inputs

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rules"
SETTINGS = Settings(simulate=False)


def _mmlc002(findings: tuple[Finding, ...]) -> list[Finding]:
    return [f for f in findings if f.rule_id == "MMLC002"]


def test_leak_introduced_then_fixed_by_a_later_patch_is_fixed_in_series() -> None:
    review = review_inputs([str(FIXTURES / "fixed-in-series")], SETTINGS)
    found = _mmlc002(review.findings)
    assert [(f.status, f.patch_number, f.fixed_by) for f in found] == [
        (Status.FIXED_IN_SERIES, 1, 2)
    ]
    assert review.reportable == ()


def test_a_patch_removing_a_leak_reports_it_as_fixed() -> None:
    review = review_inputs([str(FIXTURES / "fix-only")], SETTINGS)
    found = _mmlc002(review.findings)
    assert [(f.status, f.function) for f in found] == [(Status.FIXED, "demo_scan_hierarchy")]
    assert review.reportable == ()


def test_a_leak_the_patch_does_not_change_is_pre_existing() -> None:
    review = review_inputs([str(FIXTURES / "pre-existing")], SETTINGS)
    found = _mmlc002(review.findings)
    assert [f.status for f in found] == [Status.PRE_EXISTING]
    assert "mem_cgroup_iter" in " ".join(found[0].evidence)


def test_introduced_finding_fills_every_field_from_the_rule() -> None:
    rules = SETTINGS.rules_dir
    review = review_inputs([str(rules / "MMLC002" / "bad.patch")], SETTINGS)
    (f,) = _mmlc002(review.reportable)
    assert (f.symbol, f.severity.value, f.confidence.value) == (
        "reference-imbalance",
        "warning",
        "medium",
    )
    assert (f.file, f.function, f.patch_number) == ("mm/demo_scan.c", "demo_scan_hierarchy", 1)
    assert f.line == 16  # the `return ret;` that leaves the loop
    assert "{" not in f.message + f.question + f.suggestion  # every template field filled
    assert f.question.endswith("?") or "?" in f.question
    assert any("mem_cgroup_iter()" in e for e in f.evidence)


def test_rule_selection_honours_enabled_and_disabled_rules() -> None:
    all_ids = [c.name for c in load_checks(SETTINGS)]
    assert all_ids == sorted(all_ids) and "MMLC001" in all_ids
    only = load_checks(SETTINGS.with_(enabled_rules=("MMLC003", "rcu-lifetime")))
    assert [c.name for c in only] == ["MMLC003", "MMLC005"]
    without = load_checks(SETTINGS.with_(disabled_rules=("MMLC001",)))
    assert "MMLC001" not in [c.name for c in without]
    with pytest.raises(UsageError, match="MMLC999"):
        load_checks(SETTINGS.with_(enabled_rules=("MMLC999",)))


def test_one_crashing_rule_fails_alone_and_the_others_still_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: object) -> list[rules_match.Hit]:
        raise RuntimeError("matcher exploded")

    m = rules_match.MATCHERS["use-after-release"]
    monkeypatch.setitem(
        rules_match.MATCHERS, m.name, rules_match.Matcher(m.name, m.kind, broken, m.doc)
    )
    review = review_inputs([str(SETTINGS.rules_dir / "MMLC002" / "bad.patch")], SETTINGS)
    checks = {c.check: c for c in review.checks}
    assert not checks["MMLC003"].ok and "matcher exploded" in checks["MMLC003"].error
    assert all(c.ok for name, c in checks.items() if name != "MMLC003")
    assert _mmlc002(review.reportable)


def test_removed_line_maps_to_the_next_surviving_post_image_line() -> None:
    lines = (
        HunkLine(LineKind.CONTEXT, "{", 10, 10),
        HunkLine(LineKind.REMOVED, "\tdestroy(x);", 11, None),
        HunkLine(LineKind.ADDED, "\tkeep(x);", None, 11),
        HunkLine(LineKind.CONTEXT, "}", 12, 12),
    )
    diff = FileDiff("a.c", "a.c", (Hunk(10, 3, 10, 3, "", lines),))
    assert post_line_of_removed(diff, 11) == 11
    assert post_line_of_removed(diff, 30) == 30  # outside every hunk: no shift


@pytest.mark.corpus
def test_seed_v3_1_names_the_removed_call_and_the_destroy_it_reached(corpus: Path) -> None:
    review = review_inputs(
        [str(corpus / "seed" / "v3-0001-patch-1of3.eml")],
        SETTINGS.with_(enabled_rules=("MMLC001",)),
        tree=str(corpus / "kernel" / "v3.15.5"),
    )
    (f,) = [x for x in review.findings if x.status is Status.INTRODUCED]
    assert (f.file, f.function, f.line) == ("mm/slab.h", "memcg_release_pages", 131)
    assert f.evidence[0] == "removed: mem_cgroup_destroy_cache(s) at mm/slab.h:135"
    assert "schedule_work(&cachep->memcg_params->destroy)" in f.evidence[1]
    assert any("callback kmem_cache_destroy_work_func()" in e for e in f.evidence)
    assert "leak" in f.question and "offline" in f.question
    assert "reference" in f.suggestion


@pytest.mark.corpus
def test_seed_v3_series_reports_only_the_release_path_of_patch_1(corpus: Path) -> None:
    names = [
        f"v3-000{i}-{k}.eml"
        for i, k in ((0, "cover-0of3"), (1, "patch-1of3"), (2, "patch-2of3"), (3, "patch-3of3"))
    ]
    review = review_inputs(
        [str(corpus / "seed" / n) for n in names],
        SETTINGS,
        tree=str(corpus / "kernel" / "v3.15.5"),
    )
    assert [(f.rule_id, f.patch_number, f.function) for f in review.reportable] == [
        ("MMLC001", 1, "memcg_release_pages")
    ]


def test_function_nested_beyond_the_stack_is_skipped_with_a_note(tmp_path: Path) -> None:
    lines = [
        "int deep(void)",
        "{",
        "\tint x = " + "(" * 3000 + "1" + ")" * 3000 + ";",
        "\treturn x;",
        "}",
    ]
    patch = "\n".join(
        [
            "--- /dev/null",
            "+++ b/mm/deep.c",
            f"@@ -0,0 +1,{len(lines)} @@",
            *("+" + ln for ln in lines),
            "",
        ]
    )
    path = tmp_path / "deep.patch"
    path.write_text(patch)
    review = review_inputs([str(path)], SETTINGS)
    rule_checks = [c for c in review.checks if c.check.startswith("MMLC")]
    assert rule_checks and all(c.ok for c in rule_checks)
    assert any("deep() could not be analysed" in n for c in rule_checks for n in c.notes)


def test_a_call_graph_too_large_to_follow_is_cut_and_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.analyze import flow_source

    monkeypatch.setattr(flow_source, "MAX_REACH_WORK", 0)
    review = review_inputs([str(SETTINGS.rules_dir / "MMLC001" / "bad.patch")], SETTINGS)
    check = next(c for c in review.checks if c.check == "MMLC001")
    assert check.ok
    assert any("call graph too large" in n for n in check.notes)
    # the helper that scheduled the destroy is no longer followed: no finding
    assert [f for f in review.reportable if f.rule_id == "MMLC001"] == []


NEW_EXIT = """\
diff --git a/mm/demo_e.c b/mm/demo_e.c
--- a/mm/demo_e.c
+++ b/mm/demo_e.c
@@ -60,11 +60,13 @@ int demo_lookup_use(struct demo_table *t, int id)
 \tstruct demo_obj *obj;
 \tint ret;
\x20
 \tobj = demo_obj_get(t, id);
 \tif (!obj)
 \t\treturn -ENOENT;
 \tret = demo_use(obj);
+\tif (ret == -EAGAIN)
+\t\treturn ret;
 \tdemo_obj_put(obj);
 \treturn ret;
 }
\x20
"""


def test_two_matchers_of_a_rule_on_one_line_give_one_finding(tmp_path: Path) -> None:
    patch = tmp_path / "new-exit.patch"
    patch.write_text(NEW_EXIT)
    review = review_inputs([str(patch)], SETTINGS)
    found = [(f.rule_id, f.line) for f in review.findings if f.status is Status.INTRODUCED]
    assert found == [("MMLC002", 68)]  # path walk and path comparison both see it

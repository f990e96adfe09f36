"""The simulator's cold start: what a fresh process reads back from bot.cache
instead of parsing (file facts, lexical scans, bindings, the effects table and
scenario data), and that every result read back equals the one computed."""

from __future__ import annotations

import fnmatch
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import assemble, cache, ingest
from bot.analyze import cfacts
from bot.analyze.cfacts import FileFacts, _checked_spans, _verified_span, parse_file
from bot.analyze.csource import lexicon, parse_span, same_subtree, span_of
from bot.analyze.simulate import SimulatorCheck, run
from bot.analyze.simulate.extract import Extractor, SourceSet, _FileBindings, clear_caches
from bot.analyze.simulate.names import glob_match
from bot.analyze.simulate.program import Binding, Loc
from bot.analyze.simulate.scenario import ScenarioData
from bot.analyze.simulate.vocab import ApiEffect, Effects
from bot.apply import apply_series
from bot.config import Settings

from .conftest import ROOT
from .test_simulate_index import _outcome, _seed_analysis

LAYOUT = """
struct outer {
	struct inner *in;
};

struct inner {
	struct delayed_work gc_work;
};
"""
USER = """
static void setup(struct outer *o)
{
	INIT_WORK(&o->in->gc_work, cb);
}

static void later(struct outer *o)
{
	helper(o);
}
"""


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    """A private bot.cache for the test; the process's memos start empty."""
    before = cache.active()
    directory = tmp_path / "cache"
    cache.configure(directory)
    clear_caches()
    yield directory
    cache.flush()
    cache.configure(before)
    clear_caches()


def _new_process() -> None:
    """Write what was computed and forget the process's memos, as the next
    `bot review` would start."""
    cache.flush()
    directory = cache.active()
    cache.configure(None)
    cache.configure(directory)
    clear_caches()


def _parsed_paths() -> set[str]:
    """Files parsed whole in this process."""
    return {key[0] for key in cfacts._PARSE_CACHE}


def _read_paths() -> set[str]:
    """Files parsed at all in this process, whole or one definition's span."""
    return _parsed_paths() | {key[0][0] for key in cfacts._SPAN_CACHE}


def _effects() -> Effects:
    effects, _ = run.load_data(Settings())
    return effects


def _keys(
    files: dict[str, str], effects: Effects | None = None
) -> tuple[list[tuple[str | None, str]], dict[str, str]]:
    ex = Extractor(SourceSet(files), effects or _effects())
    found = ex.bindings()
    return [(b.key, b.callback) for b in found], dict(ex.key_types)


# -------------------------------------------------------------------- bindings


def test_a_disk_hit_of_bindings_is_reused_where_the_layouts_match(cache_dir: Path) -> None:
    files = {"mm/a.c": USER, "mm/outer.h": LAYOUT}
    cold = _keys(files)
    assert cold == ([("inner:gc_work", "cb")], {"inner:gc_work": "delayed_work"})
    _new_process()
    assert _keys(files) == cold
    # neither the file nor the header defining the layouts was parsed: the
    # bindings, and the layouts their check consulted, came from the disk
    assert _parsed_paths() == set()


def test_a_disk_hit_of_bindings_is_not_reused_where_the_layouts_differ(cache_dir: Path) -> None:
    with_layout = {"mm/a.c": USER, "mm/outer.h": LAYOUT}
    without = {"mm/a.c": USER}
    _keys(with_layout)
    _new_process()
    found = _keys(without)
    # without the layout `o->in` is a member path of outer, as a fresh search says
    assert found == ([("outer:in.gc_work", "cb")], {})
    assert "mm/a.c" in _parsed_paths()
    cache.configure(None)
    clear_caches()
    assert _keys(without) == found


def test_a_stale_disk_memo_is_searched_again_and_replaced(cache_dir: Path) -> None:
    files = {"mm/a.c": USER, "mm/outer.h": LAYOUT}
    _keys({"mm/a.c": USER})  # stored with no layout consulted as found
    _new_process()
    assert _keys(files) == ([("inner:gc_work", "cb")], {"inner:gc_work": "delayed_work"})
    _new_process()
    assert _keys(files) == ([("inner:gc_work", "cb")], {"inner:gc_work": "delayed_work"})
    assert _parsed_paths() == set()  # the replacement is what the disk holds now


def test_an_edited_effects_table_is_a_new_key(cache_dir: Path) -> None:
    base = _effects()
    files = {"mm/a.c": USER, "mm/outer.h": LAYOUT}

    def kinds(effects: Effects) -> list[tuple[str, str | None, str]]:
        return [
            (b.kind, b.key, b.callback) for b in Extractor(SourceSet(files), effects).bindings()
        ]

    assert kinds(base) == [("work", "inner:gc_work", "cb")]
    _new_process()
    table = {n: base[n] for n in base}
    work = base["INIT_WORK"]
    table["INIT_WORK"] = ApiEffect("INIT_WORK", "call_rcu", work=work.work, callback=work.callback)
    edited = Effects(table, base.vocabulary)
    assert edited.fingerprint != base.fingerprint
    # not the memo the first table left: searched again, with the new effect
    assert kinds(edited) == [("rcu", "inner:gc_work", "cb")]
    assert "mm/a.c" in _parsed_paths()
    _new_process()
    assert kinds(base) == [("work", "inner:gc_work", "cb")]
    assert kinds(edited) == [("rcu", "inner:gc_work", "cb")]
    assert _parsed_paths() == set()  # both memos kept, side by side


def test_the_effects_fingerprint_is_its_content_not_its_identity() -> None:
    base = _effects()
    table = {n: base[n] for n in base}
    assert Effects(dict(table), base.vocabulary).fingerprint == base.fingerprint
    # a vocabulary that cannot be listed shares its fingerprint with nothing
    opaque = object()
    assert Effects(dict(table), opaque).fingerprint != Effects(dict(table), opaque).fingerprint
    assert Effects(dict(table), None).fingerprint != base.fingerprint
    table["kfree"] = ApiEffect("kfree", "free", obj=1)
    assert Effects(table, base.vocabulary).fingerprint != base.fingerprint


def test_a_file_memo_is_plain_data_that_round_trips(cache_dir: Path) -> None:
    memo = _FileBindings(
        [Binding("work", "obj:work", "cb", Loc("f", "mm/a.c", 3, "INIT_WORK()"))],
        [("outer", {"in": "inner"}), ("gone", None)],
        [("obj:work", "work_struct")],
    )
    cache.put("test", "k", memo)
    _new_process()
    hit = cache.get("test", "k")
    assert hit is not None and hit[0] == memo


# ------------------------------------------------------------------ file facts


def test_file_facts_from_the_disk_equal_the_parse(cache_dir: Path) -> None:
    text = LAYOUT + USER
    sources = SourceSet({"mm/a.c": text})
    assert sources.callers("helper") == ["later"]
    assert sources.struct_fields("outer") == {"in": "inner"}
    info = parse_file("mm/a.c", text.encode())
    expected = FileFacts(tuple(info.functions), frozenset(info.functions), info.structs)
    expected.callers = info.callers()
    _new_process()
    again = SourceSet({"mm/a.c": text})
    assert again.facts("mm/a.c") == expected
    assert again.callers("helper") == ["later"]
    assert again.struct_fields("outer") == {"in": "inner"}
    assert again.defines("setup") and not again.defines("helper")
    assert _parsed_paths() == set()
    # a definition to translate needs the syntax tree: parsed then, and only then
    found = again.find_function("setup")
    assert found is not None and found[0].path == "mm/a.c"
    assert _parsed_paths() == {"mm/a.c"}


def test_an_edited_text_gets_new_facts_and_scans(cache_dir: Path) -> None:
    before = SourceSet({"mm/a.c": "void g(void)\n{\n\thelper(1);\n}\n"})
    assert before.callers("helper") == ["g"]
    _new_process()
    after = SourceSet({"mm/a.c": "void h(void)\n{\n\thelper(1);\n}\n"})
    assert after.callers("helper") == ["h"]
    assert after.defines("h") and not after.defines("g")
    assert "helper" in lexicon("void h(void)\n{\n\thelper(1);\n}\n").called


# ---------------------------------------------------------- definitions by span


def _compiled(
    files: dict[str, str], name: str, effects: Effects | None = None, unroll: int = 2
) -> tuple[object, ...]:
    ex = Extractor(SourceSet(files), effects or _effects(), loop_unroll=unroll)
    fn = ex.compile(name)
    assert fn is not None
    return (fn.name, fn.file, fn.line, fn.params, fn.notes, fn.code, ex.key_types)


def _fresh(files: dict[str, str], name: str, effects: Effects | None = None) -> tuple[object, ...]:
    """The translation with no cache at all, on disk or in the process."""
    directory = cache.active()
    cache.configure(None)
    clear_caches()
    try:
        return _compiled(files, name, effects)
    finally:
        cache.configure(directory)
        clear_caches()


def test_a_definition_comes_from_its_span_once_checked(cache_dir: Path) -> None:
    files = {"mm/a.c": LAYOUT + USER}
    whole = SourceSet(files).find_function("setup")
    assert whole is not None and _parsed_paths() == {"mm/a.c"}
    _new_process()
    alone = SourceSet(files).find_function("setup")
    assert _parsed_paths() == set()  # the span alone was parsed
    assert alone is not None and same_subtree(alone[1], whole[1])
    assert alone[1].text == whole[1].text and alone[1].start_point == whole[1].start_point
    # a function no earlier process looked up has no checked span yet
    SourceSet(files).find_function("later")
    assert _parsed_paths() == {"mm/a.c"}


# ----------------------------------------------------------------- translations

CALLER = """
static void run(struct outer *o)
{
	helper(o);
	if (o->in->gc_work.pending)
		o->in = NULL;
}
"""
HELPER = "void helper(struct outer *o)\n{\n}\n"


def test_a_translation_comes_back_without_a_parse(cache_dir: Path) -> None:
    files = {"mm/a.c": CALLER, "mm/b.c": HELPER, "mm/outer.h": LAYOUT}
    first = _compiled(files, "run")
    assert first == _fresh(files, "run")
    _new_process()
    assert _compiled(files, "run") == first  # key types replayed too
    assert _read_paths() == set()


def test_a_translation_is_made_again_where_a_lookup_differs(cache_dir: Path) -> None:
    files = {"mm/a.c": CALLER, "mm/b.c": HELPER, "mm/outer.h": LAYOUT}
    stored = _compiled(files, "run")
    for other in (
        {"mm/a.c": CALLER, "mm/outer.h": LAYOUT},  # helper() defined nowhere: no call
        {"mm/a.c": CALLER, "mm/b.c": HELPER},  # no layout: `o->in` is part of outer
        {"mm/a.c": CALLER, "mm/b.c": HELPER, "mm/outer.h": LAYOUT.replace("*in", "*out")},
    ):
        _new_process()
        again = _compiled(other, "run")
        assert "mm/a.c" in _read_paths()  # translated again, not replayed
        assert again == _fresh(other, "run") != stored
    _new_process()
    assert _compiled(files, "run") == stored


def test_a_translation_is_per_effects_table_and_loop_bound(cache_dir: Path) -> None:
    files = {"mm/a.c": CALLER, "mm/b.c": HELPER, "mm/outer.h": LAYOUT}
    base = _effects()
    stored = _compiled(files, "run")
    _new_process()
    table = {n: base[n] for n in base}
    table["helper"] = ApiEffect("helper", "free", obj=0)
    edited = Effects(table, base.vocabulary)
    freed = _compiled(files, "run", edited)
    assert freed == _fresh(files, "run", edited) != stored
    loop = "static void spin(struct outer *o)\n{\n\twhile (o->in)\n\t\thelper(o);\n}\n"
    files["mm/c.c"] = loop
    assert _compiled(files, "spin", unroll=1) != _compiled(files, "spin", unroll=3)


def test_a_span_that_was_not_checked_equal_is_never_used(cache_dir: Path) -> None:
    text = LAYOUT + USER
    _compiled({"mm/a.c": text}, "setup")
    _new_process()
    spans = _checked_spans("mm/a.c", text)
    assert spans["setup"] is not None
    spans["setup"] = None  # as if the span's parse had differed
    SourceSet({"mm/a.c": text}).find_function("setup")
    assert _parsed_paths() == {"mm/a.c"}


def test_a_span_check_compares_every_node() -> None:
    one = b"void f(void)\n{\n\tg(1);\n}\n"
    other = b"void f(void)\n{\n\tg=1;;\n}\n"  # same length, other syntax
    tree_one = parse_file("a.c", one).functions["f"][0]
    tree_other = parse_file("a.c", other).functions["f"][0]
    assert same_subtree(tree_one, parse_file("a.c", one).functions["f"][0])
    assert not same_subtree(tree_one, tree_other)
    assert _verified_span(one, tree_one) == span_of(tree_one)
    assert _verified_span(other, tree_one) is None


def _images(patches: list[Path], tree: Path | None) -> list[tuple[str, str]]:
    settings = Settings()
    series, _, _ = assemble.select(
        assemble.assemble(ingest.load([str(p) for p in patches], settings), settings)
    )
    applied = apply_series(series, str(tree) if tree else None, settings)
    return [
        (img.path, text)
        for images in applied.images
        for img in images.images
        for text in (img.pre, img.post)
        if text is not None and img.path.endswith((".c", ".h"))
    ]


def _check_spans(images: list[tuple[str, str]]) -> int:
    checked = 0
    for path, text in dict.fromkeys(images):  # a fix's post-image is its bug's pre-image
        info = parse_file(path, text)
        for name, nodes in info.functions.items():
            node = max(nodes, key=lambda n: n.end_byte - n.start_byte)
            alone = parse_span(info.source, span_of(node))
            assert alone is not None and same_subtree(alone, node), (path, name)
            checked += 1
    return checked


def test_span_parses_equal_the_whole_parse_on_the_seed_images(corpus: Path) -> None:
    seed = corpus / "seed"
    images = _images([seed / f"v3-000{i}-patch-{i}of3.eml" for i in (1, 2, 3)], None)
    images += _images(
        [seed / f"v3-000{i}-patch-{i}of3.eml" for i in (1, 2, 3)], corpus / "kernel" / "v3.15.5"
    )
    for case in sorted((corpus / "eval-dev").glob("*/meta.json")):
        for name in ("bug.patch", "fix.patch"):
            images += _images([case.parent / name], None)
    assert _check_spans(images) > 100


EVAL_TREES = Path(os.environ.get("BOT_EVAL_TREES", "/work/eval-trees"))


def test_span_parses_equal_the_whole_parse_on_the_eval_images(corpus: Path) -> None:
    cases = sorted((corpus / "eval-dev").glob("*/meta.json"))
    if not all((EVAL_TREES / c.parent.name).is_dir() for c in cases):
        pytest.skip(f"eval trees not prepared in {EVAL_TREES} (scripts/prepare-eval-trees.sh)")
    images: list[tuple[str, str]] = []
    for case in cases:
        # each direction's patch turns one tree into the other: the touched
        # files of both trees are the pre- and post-images of both patches
        for rel in json.loads(case.read_text(encoding="utf-8"))["files"]:
            for tree in (case.parent.name, f"{case.parent.name}.pre-fix"):
                path = EVAL_TREES / tree / rel
                images.append((rel, path.read_text(encoding="utf-8", errors="replace")))
    assert _check_spans(images) > 1000


def test_the_seed_review_read_back_from_the_disk_equals_one_without_cache(
    corpus: Path, cache_dir: Path
) -> None:
    ctx, settings = _seed_analysis(corpus)
    filled = _outcome(SimulatorCheck(), ctx, settings)
    _new_process()
    read_back = _outcome(SimulatorCheck(), ctx, settings)
    # no file was parsed: callers, layouts, bindings and translations came
    # from the disk
    assert _read_paths() == set()
    cache.configure(None)
    clear_caches()
    uncached = _outcome(SimulatorCheck(), ctx, settings)
    assert read_back == filled
    assert uncached == filled
    assert filled[0]  # the seed does find


# ------------------------------------------------------------ effects and data


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", dest)
    return dest


def _same_data(a: tuple[Effects, ScenarioData], b: tuple[Effects, ScenarioData]) -> None:
    assert dict(a[0].items()) == dict(b[0].items())
    assert a[0].vocabulary == b[0].vocabulary
    assert a[0].fingerprint == b[0].fingerprint
    assert a[1] == b[1]


def test_cached_load_data_equals_fresh(cache_dir: Path, rules_copy: Path) -> None:
    fresh = run._read_data(rules_copy)
    run._load.cache_clear()
    first = run._load(rules_copy)
    _new_process()
    run._load.cache_clear()
    again = run._load(rules_copy)
    run._load.cache_clear()
    key = f"{rules_copy}\0{cache.stamp_files(run.data_files(rules_copy))}"
    assert cache.get("simulator-data", key) is not None
    assert again is not first
    _same_data(first, fresh)
    _same_data(again, fresh)


def test_an_edited_scenario_file_is_read_again(cache_dir: Path, rules_copy: Path) -> None:
    run._load.cache_clear()
    _, before = run._load(rules_copy)
    _new_process()
    run._load.cache_clear()
    default = rules_copy / "scenarios" / "default.yaml"
    default.write_text(
        default.read_text(encoding="utf-8") + "\nbounds:\n  loop_unroll: 5\n", encoding="utf-8"
    )
    effects, after = run._load(rules_copy)
    run._load.cache_clear()
    assert after.loop_unroll == 5 != before.loop_unroll
    _same_data((effects, after), run._read_data(rules_copy))


def test_a_warm_cached_review_imports_no_yaml(corpus: Path, tmp_path: Path) -> None:
    seed = corpus / "seed"
    cmd = [sys.executable, "-X", "importtime", "-m", "bot", "review", "-q", "--format", "json"]
    cmd += [str(seed / f"v3-000{i}-patch-{i}of3.eml") for i in (1, 2, 3)]
    cmd += ["--tree", str(corpus / "kernel" / "v3.15.5")]
    env = {**os.environ, "BOT_CACHE_DIR": str(tmp_path / "c"), "PYTHONHASHSEED": "0"}
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == second.returncode == 1, second.stderr[-2000:]
    assert second.stdout == first.stdout

    def imported(stderr: str) -> set[str]:
        return {
            line.rsplit("|", 1)[1].strip()
            for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line
        }

    assert "yaml" in imported(first.stderr)  # the first run read the data
    assert "yaml" not in imported(second.stderr)


def test_glob_match_is_fnmatchcase() -> None:
    rng = random.Random(11)
    atoms = ["*", "*", "a", "b", "ab", "_", "?", "[ab]", "[!a]", "\\", ".", "A"]
    names = ["", "a", "b", "ab", "ba", "aab", "abab", "_a_b_", "A", "a.b", "\\a", "abba_put"]
    names += [
        "".join(rng.choice("abAB_.\\*") for _ in range(rng.randint(0, 8))) for _ in range(300)
    ]
    patterns = ["*release*", "*free*", "*put*", "*uncharge*", "*shrink*", "*for_each*", "*", "**"]
    patterns += ["".join(rng.choice(atoms) for _ in range(rng.randint(0, 6))) for _ in range(400)]
    for pattern in patterns:
        for name in names:
            assert glob_match(name, pattern) == fnmatch.fnmatchcase(name, pattern), (name, pattern)

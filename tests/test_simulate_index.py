"""The simulator's per-text indexes and memos (csource.lexicon, the bindings
memo, the parse and lexicon caches), kept across SourceSets and reviews in one
process: a changed text gets new facts, a memo whose struct layouts differ in
other sources is not reused, and every result with warm caches equals the
result with the caches cleared."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bot import assemble, ingest
from bot.analyze.cfacts import type_headers
from bot.analyze.context import SeriesAnalysis
from bot.analyze.csource import (
    _INCLUDE,
    called_names,
    def_starts,
    directives,
    lexicon,
    struct_bodies,
)
from bot.analyze.simulate import SimulatorCheck
from bot.analyze.simulate.extract import Extractor, SourceSet, clear_caches
from bot.analyze.simulate.program import Binding
from bot.analyze.simulate.run import load_data
from bot.apply import apply_series
from bot.config import Settings
from bot.model import Finding
from bot.pipeline import build_analysis

SEED_V3 = ("v3-0001-patch-1of3.eml", "v3-0002-patch-2of3.eml", "v3-0003-patch-3of3.eml")

OPS = """
static void a_offline(struct obj *o)
{
	helper(o);
}

static const struct ops a_ops = {
	.offline = a_offline,
	.free    = &a_free,
};
"""

SETUP = """
struct obj {
	struct work_struct work;
};

static void setup(struct obj *o)
{
	INIT_WORK(&o->work, {cb});
}

static void queue(struct obj *o)
{
	helper(o);
}
"""


def _bindings(sources: SourceSet) -> list[Binding]:
    effects, _ = load_data(Settings())
    return Extractor(sources, effects).bindings()


def test_the_index_lists_a_name_exactly_where_a_call_pattern_matches() -> None:
    text = (
        "int f(void)\n{\n\tfoo (1);\n\tbar\n\t(2);\n\txfoo(3);\n\t1baz(4);\n"
        "\tqux /* c */ (5);\n\tfoo_bar(6);\n\tsizeof(int);\n\tñame(7);\n\tcall_é(8);\n}\n"
    )
    called = lexicon(text).called
    for name in set(re.findall(r"\w+", text)):
        if re.fullmatch(r"[A-Za-z_]\w*", name):
            expect = re.search(rf"\b{re.escape(name)}\s*\(", text) is not None
            assert (name in called) is expect, name


def test_the_index_is_per_text_so_an_edited_file_gets_new_callers() -> None:
    before = SourceSet({"mm/a.c": "void g(void)\n{\n\thelper(1);\n}\n"})
    assert before.callers("helper") == ["g"]
    # same path, new text: the facts of the old text are not reused
    after = SourceSet({"mm/a.c": "void h(void)\n{\n\thelper(1);\n}\n"})
    assert after.callers("helper") == ["h"]
    gone = SourceSet({"mm/a.c": "void h(void)\n{\n\tother(1);\n}\n"})
    assert gone.callers("helper") == []


def test_ops_initialisers_come_from_the_index_with_their_lines() -> None:
    sources = SourceSet({"mm/a.c": OPS})
    assert sources.ops_bindings({"a_offline", "a_free", "nothing"}) == [
        ("offline", "a_offline", "mm/a.c", 8),
        ("free", "a_free", "mm/a.c", 9),
    ]
    edited = SourceSet({"mm/a.c": "\n" + OPS.replace("a_free", "b_free")})
    assert edited.ops_bindings({"a_offline", "a_free"}) == [("offline", "a_offline", "mm/a.c", 9)]


def test_an_edited_file_gets_new_bindings() -> None:
    first = _bindings(SourceSet({"mm/a.c": SETUP.replace("{cb}", "one_fn")}))
    second = _bindings(SourceSet({"mm/a.c": SETUP.replace("{cb}", "two_fn")}))
    assert [(b.key, b.callback) for b in first] == [("obj:work", "one_fn")]
    assert [(b.key, b.callback) for b in second] == [("obj:work", "two_fn")]


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
"""


def _keys(files: dict[str, str]) -> tuple[list[tuple[str | None, str]], dict[str, str]]:
    effects, _ = load_data(Settings())
    ex = Extractor(SourceSet(files), effects)
    found = ex.bindings()
    return [(b.key, b.callback) for b in found], dict(ex.key_types)


def test_a_file_memo_is_not_reused_where_the_struct_layouts_differ() -> None:
    # one text of mm/a.c, two sets of sources: with the layout of struct outer
    # `o->in` is an object of its own, without it a member path of outer
    with_layout = {"mm/a.c": USER, "mm/outer.h": LAYOUT}
    without = {"mm/a.c": USER}
    clear_caches()
    cold = [_keys(with_layout), _keys(without)]
    clear_caches()
    cold_reversed = [_keys(without), _keys(with_layout)]
    warm = [_keys(with_layout), _keys(without), _keys(with_layout)]
    assert cold[0][0] == [("inner:gc_work", "cb")]
    assert cold[1][0] == [("outer:in.gc_work", "cb")]
    assert cold[0][1] == {"inner:gc_work": "delayed_work"}
    assert cold[1][1] == {}
    assert cold_reversed == cold[::-1]
    assert warm == [cold[0], cold[1], cold[0]]


def test_replayed_bindings_teach_the_same_field_types() -> None:
    files = {"mm/a.c": USER, "mm/outer.h": LAYOUT}
    clear_caches()
    cold = _keys(files)
    warm = _keys(files)
    assert warm == cold and cold[1]


def _seed_analysis(corpus: Path) -> tuple[SeriesAnalysis, Settings]:
    settings = Settings()
    messages = ingest.load([str(corpus / "seed" / n) for n in SEED_V3], settings)
    series, _, _ = assemble.select(assemble.assemble(messages, settings))
    applied = apply_series(series, str(corpus / "kernel" / "v3.15.5"), settings)
    return build_analysis(applied, settings), settings


Outcome = tuple[list[Finding], tuple[str, ...], dict[int, list[tuple[object, ...]]]]


def _outcome(check: SimulatorCheck, ctx: SeriesAnalysis, settings: Settings) -> Outcome:
    findings = list(check.run(ctx, settings))
    results: dict[int, list[tuple[object, ...]]] = {
        n: [
            (r.violations, r.notes, r.actors, r.tracked, r.states, r.transitions, r.complete)
            for r in pair
        ]
        for n, pair in check.last_results.items()
    }
    return findings, check.last_notes, results


def test_the_seed_review_with_shared_caches_equals_one_with_caches_cleared(
    corpus: Path,
) -> None:
    ctx, settings = _seed_analysis(corpus)
    clear_caches()
    cold = _outcome(SimulatorCheck(), ctx, settings)
    warm = _outcome(SimulatorCheck(), ctx, settings)
    again = _outcome(SimulatorCheck(), ctx, settings)
    assert warm == cold
    assert again == cold
    findings, _, results = cold
    assert findings and results  # the seed does simulate and find


def test_an_unknown_name_is_still_looked_up_in_the_text() -> None:
    # not an identifier: the index does not list it, the text search does
    sources = SourceSet({"mm/a.c": "void g(void)\n{\n\tfoo(1);\n}\n"})
    assert sources.callers("fo-o") == []
    assert sources.callers("foo") == ["g"]


# The regexes the lexical scans replace: the scans must give exactly their matches.
REGEX_DEF = re.compile(r"^(?:[A-Za-z_][^;{}()\n=]*?[\s*])?([A-Za-z_]\w*)\s*\(", re.M)
REGEX_STRUCT = re.compile(r"\bstruct\s+([A-Za-z_]\w*)\s*\{")
REGEX_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
REGEX_INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([\w/.\-]+)[>"]', re.M)
REGEX_TYPE_HEADER = re.compile(r"^\s*#\s*include\s*<([\w/.\-]+(?:-defs|_types)\.h)>", re.M)

TRICKY = [
    "",
    "#include <a.h>",
    '  #include <a.h>\n#include "b.h"',
    "x #include <a.h>",
    "\n\n  \n\t# include <x-defs.h>\n",
    "#include <a.h> #include <b.h>\n#include <c_types.h>",
    "#\ninclude <a.h>",
    "\f#include <a.h>\n\u2028#include <b.h>\r#include <c.h>",
    "/* #include <a.h> */\n#include <a.h\n#include <b.h>",
    '##include <a.h>\n#include#include <a.h>\n#include <a.h"',
    "  \n#include\n<a-defs.h>",
    "static int\nfoo(void)\n{\n}\nstatic struct x *\nbar (int a,\n\tint b);\n1f(x)\n_f(y)\n",
    "mystruct a { struct b{ struct\nc\n{ xstruct d {} struct_e f { struct 1g {",
    "f(g(h (i\n(j /* */ (1k( é(xé( _(",
]
ATOMS = ["struct", " ", "\n", "\t", "(", ")", "{", "}", ";", "=", "*", "foo", "_bar", "1x", "é"]
ATOMS += ["x1", "mystruct", "\u2028", "\r", "#", "include", "<a.h>", "<b-defs.h>", '"', ",", "."]


def _texts(corpus: Path) -> list[str]:
    rng = random.Random(7)
    fuzz = ["".join(rng.choice(ATOMS) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    tree = [
        p.read_text(encoding="utf-8", errors="replace")
        for p in sorted((corpus / "kernel").rglob("*"))
        if p.suffix in (".c", ".h") and p.is_file()
    ]
    return TRICKY + fuzz + tree


def _found(matches: Iterable[re.Match[str]]) -> list[tuple[tuple[int, int], tuple[str | Any, ...]]]:
    return [(m.span(), m.groups()) for m in matches]


def test_the_lexical_scans_give_exactly_what_the_regexes_give(corpus: Path) -> None:
    for text in _texts(corpus):
        assert _found(def_starts(text)) == _found(REGEX_DEF.finditer(text)), text
        assert struct_bodies(text) == REGEX_STRUCT.findall(text), text
        assert called_names(text) == set(REGEX_CALL.findall(text)), text
        # an include's match starts at the `#`, the regex's at the line start: same end
        inc = [(m.end(), m.groups()) for m in directives(text, _INCLUDE)]
        assert inc == [(m.end(), m.groups()) for m in REGEX_INCLUDE.finditer(text)], text
        th = type_headers(lexicon(text))
        assert th == tuple(f"include/{m[1]}" for m in REGEX_TYPE_HEADER.finditer(text)), text


def test_a_tree_file_edited_on_disk_gets_new_facts_in_the_next_review(tmp_path: Path) -> None:
    (tmp_path / "mm").mkdir()
    helper = tmp_path / "mm" / "helper.c"
    helper.write_text("void g(void)\n{\n\thelper(1);\n}\n")
    overlay = {"mm/a.c": "void helper(int x)\n{\n}\n"}
    assert SourceSet(overlay, tmp_path).callers("helper") == ["g"]
    helper.write_text("void h(void)\n{\n\thelper(1);\n}\n")
    assert SourceSet(overlay, tmp_path).callers("helper") == ["h"]


def test_the_sources_of_one_review_share_the_tree_files_they_read(tmp_path: Path) -> None:
    (tmp_path / "mm").mkdir()
    helper = tmp_path / "mm" / "helper.c"
    helper.write_text("void g(void)\n{\n\thelper(1);\n}\n")
    shared: dict[str, str | None] = {}
    pre = SourceSet({"mm/a.c": "int a;\n"}, tmp_path, tree_texts=shared)
    assert pre.callers("helper") == ["g"]
    assert shared["mm/helper.c"] == helper.read_text()
    # the other side reads the same tree: the text is not read again (the tree
    # does not change during a review; here it does, to show it)
    helper.write_text("void h(void)\n{\n\thelper(1);\n}\n")
    post = SourceSet({"mm/a.c": "int b;\n"}, tmp_path, tree_texts=shared)
    assert post.callers("helper") == ["g"]
    assert SourceSet({"mm/a.c": "int b;\n"}, tmp_path).callers("helper") == ["h"]

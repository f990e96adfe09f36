"""The bench scripts run and print their figures; eval scoring and the tree
preparation wrapper do what bench/README.md says.

The benches themselves are measurements, not tests: these only check that each
script runs on a tiny input and prints a figure, skipping when the corpus,
checkpatch or the prepared eval trees are absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PREPARE = ROOT / "scripts" / "prepare-eval-trees.sh"
EVAL_TREES = Path(os.environ.get("BOT_EVAL_TREES", "/work/eval-trees"))
SMALL_CASE = "cgwb-release-uaf"  # the smallest positive: one file, one hunk


def run_bench(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def load_eval(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import bench/eval.py the way it runs: with bench/ on sys.path."""
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_eval", BENCH / "eval.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve string annotations through sys.modules
    monkeypatch.setitem(sys.modules, "bench_eval", module)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- smoke


def test_review_bench_prints_medians_and_ratio(corpus: Path) -> None:
    out = run_bench("bench_review.py", "--runs", "1")
    labels = (
        "no cache",
        "cache after v2",
        "same series again",
        r"--daemon \(warm\)",
        r"\(in-process\)",
    )
    for label in labels:
        assert re.search(rf"bot review.{{0,3}}{label}\s+median\s+\d+\.\d+ s", out), out
    if "baseline skipped" not in out:
        assert re.search(r"checkpatch.pl --no-tree\s+median\s+\d+\.\d+ s", out), out
        assert re.search(r"ratio bot review, no cache:\s+\d+\.\d\d wall", out), out
    assert re.search(r"daemon: served \d+ of the 1 timed --daemon run", out), out


def test_review_bench_without_checkpatch_says_so_and_still_times_the_bot(
    corpus: Path, tmp_path: Path
) -> None:
    out = run_bench(
        "bench_review.py", "--runs", "1", env={"BOT_CHECKPATCH": str(tmp_path / "none.pl")}
    )
    assert "baseline skipped: checkpatch.pl not found at" in out
    assert "BOT_CHECKPATCH" in out
    assert "ratio" not in out
    assert re.search(r"in-process\)\s+median\s+\d+\.\d+ s", out), out


def test_throughput_bench_reports_rate_and_peak_rss_per_mode(corpus: Path) -> None:
    out = run_bench("bench_throughput.py", "--limit", "2", "--json")
    doc = json.loads(out)
    modes = {r["mode"]: r for r in doc["results"]}
    assert set(modes) == {"individual", "batch"}
    for r in modes.values():
        assert r["files"] == 2
        assert r["patches_reviewed"] == 2, r["errors"]
        assert r["patches_per_second"] > 0
        assert r["peak_rss_mb"] >= r["rss_after_imports_mb"] > 0


def test_throughput_bench_finds_all_96_corpus_patches(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_throughput", BENCH / "bench_throughput.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files = module.corpus_patches(corpus)
    assert len(files) == 96
    assert sum("sjp38-mmotm" in str(f) for f in files) == 39


def test_eval_on_one_case_prints_table_and_recall(corpus: Path) -> None:
    if not (EVAL_TREES / f"{SMALL_CASE}.bug.patch").is_file():
        pytest.skip(f"eval trees not prepared in {EVAL_TREES} (scripts/prepare-eval-trees.sh)")
    out = run_bench(
        "eval.py", "--trees", str(EVAL_TREES), "--case", SMALL_CASE, "--variant", "diff-only"
    )
    assert re.search(rf"^{SMALL_CASE}\s+positive\s+uaf\s+bug\s", out, re.M), out
    assert re.search(rf"^{SMALL_CASE}\s+positive\s+uaf\s+fix\s", out, re.M), out
    assert re.search(r"^recall: \d/1 positives flagged", out, re.M), out
    assert re.search(r"^false positives: \d/1 fix-direction reviews flagged", out, re.M), out


def test_eval_names_the_missing_trees_and_the_script_that_builds_them(
    corpus: Path, tmp_path: Path
) -> None:
    out = run_bench("eval.py", "--trees", str(tmp_path / "nowhere"))
    assert "skipped: eval trees not found" in out
    assert "prepare-eval-trees.sh" in out


# --------------------------------------------------------------------------- eval scoring


def _doc(*findings: dict[str, Any]) -> dict[str, Any]:
    return {
        "findings": list(findings),
        "patches": [{"applied": {"ok": True, "method": "git-am-3way"}}],
        "checks": [
            {"check": "MMLC001", "ok": True, "notes": []},
            {"check": "simulator", "ok": False, "error": "ValueError: boom", "notes": []},
        ],
    }


def _finding(rule_id: str, status: str, function: str) -> dict[str, Any]:
    return {"rule_id": rule_id, "status": status, "function": function, "file": "mm/x.c"}


def _scored(ev: ModuleType, direction: str, kind: str, doc: dict[str, Any]) -> Any:
    case = ev.Case(
        id=f"{kind}-{direction}", kind=kind, bug_class="uaf", tree="6.1", functions=("release_fn",)
    )
    run = ev.Run(case.id, kind, "uaf", direction, "tree", command=["bot"])
    ev.score_document(run, doc, case)
    return case, run


def test_eval_scores_hits_misses_and_false_positives(monkeypatch: pytest.MonkeyPatch) -> None:
    ev = load_eval(monkeypatch)
    runs, cases = [], []
    for direction, kind, doc in [
        ("bug", "positive", _doc(_finding("MMLC003", "introduced", "release_fn"))),
        ("bug", "positive", _doc(_finding("MMLC003", "pre-existing", "release_fn"))),
        ("fix", "positive", _doc(_finding("SIM-UAF", "fixed", "release_fn"))),
        ("fix", "negative", _doc(_finding("MMLC003", "introduced", "other_fn"))),
    ]:
        case, run = _scored(ev, direction, kind, doc)
        cases.append(case)
        runs.append(run)
    assert [r.verdict for r in runs] == ["hit", "MISS", "quiet", "FP"]
    assert runs[0].localized and not runs[3].localized
    assert runs[0].applied == "git-am-3way ok"
    assert runs[0].failed_checks == ["simulator: ValueError: boom"]

    s = ev.summarise(runs, cases)
    assert (s["hits"], s["positives"], s["recall"]) == (1, 2, 0.5)
    assert (s["false_positives"], s["fix_runs"]) == (1, 2)
    assert (s["negatives_flagged"], s["positive_fixes_flagged"]) == (1, 0)
    assert s["rules"]["MMLC003"]["hits"] == ["positive-bug"]
    assert s["rules"]["MMLC003"]["false_positives"] == ["negative-fix"]
    assert s["rules"]["MMLC003"]["precision"] == 0.5
    assert "SIM-UAF" not in s["rules"]  # only introduced findings count
    assert s["checks_failed"] == {"simulator": 4}


def test_eval_marks_simulator_findings_apart_from_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    ev = load_eval(monkeypatch)
    case, run = _scored(ev, "bug", "positive", _doc(_finding("SIM-LEAK", "introduced", "f")))
    s = ev.summarise([run], [case])
    assert s["rules"]["SIM-LEAK"]["simulator"] is True


def test_eval_reports_a_crashing_review_as_an_error_not_a_clean_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ev = load_eval(monkeypatch)
    case = ev.Case(id="c", kind="negative", bug_class="none", tree="6.1", functions=())
    script = tmp_path / "fake-bot"
    script.write_text("#!/bin/sh\necho 'bot: internal error: KeyError: x' >&2\nexit 3\n")
    script.chmod(0o755)
    run = ev.execute(
        ev.Run("c", "negative", "none", "fix", "tree", command=[str(script)]), case, 60
    )
    assert run.verdict == "ERROR"
    assert run.error == "exit 3: bot: internal error: KeyError: x"
    assert ev.summarise([run], [case])["false_positives"] == 0


def test_eval_flags_an_exit_code_that_disagrees_with_the_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ev = load_eval(monkeypatch)
    case = ev.Case(id="c", kind="positive", bug_class="uaf", tree="6.1", functions=())
    script = tmp_path / "fake-bot"
    doc = json.dumps(_doc(_finding("MMLC001", "introduced", "f")))
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{doc}\nEOF\nexit 0\n")
    script.chmod(0o755)
    run = ev.execute(ev.Run("c", "positive", "uaf", "bug", "tree", command=[str(script)]), case, 60)
    assert run.verdict == "ERROR"
    assert "exit 0 but 1 introduced finding(s)" in run.error


# --------------------------------------------------------------------------- prepare-eval-trees.sh


FAKE_PREPARE = """#!/usr/bin/env bash
# stands in for eval-dev/prepare.sh: records the call, writes the four outputs
echo "$*" >> "$(dirname "$0")/calls.log"
[ "$1" = --base-only ] && exit 0
id=$(basename "$1"); out=$2
[ -e "$out/$id" ] && { echo "exists" >&2; exit 1; }
mkdir -p "$out/$id/.git" "$out/$id.pre-fix"
echo "gitdir: x" > "$out/$id.pre-fix/.git"
echo diff > "$out/$id.bug.patch"; echo diff > "$out/$id.fix.patch"
"""


def _fake_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    for case_id, tree in (("case-a", "6.1"), ("case-b", "6.12")):
        d = corpus / "eval-dev" / case_id
        d.mkdir(parents=True)
        (d / "meta.json").write_text(json.dumps({"id": case_id, "tree": tree}))
    prepare = corpus / "eval-dev" / "prepare.sh"
    prepare.write_text(FAKE_PREPARE)
    prepare.chmod(0o755)
    return corpus


def _prepare(corpus: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PREPARE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "BOT_CORPUS_DIR": str(corpus)},
    )


def test_prepare_eval_trees_builds_bases_then_each_case_once(tmp_path: Path) -> None:
    corpus = _fake_corpus(tmp_path)
    out = tmp_path / "trees"
    first = _prepare(corpus, str(out))
    assert first.returncode == 0, first.stderr
    assert "2 prepared, 0 already present, 0 failed" in first.stderr
    calls = (corpus / "eval-dev" / "calls.log").read_text().splitlines()
    assert calls[:2] == ["--base-only 6.1", "--base-only 6.12"]
    assert len(calls) == 4

    # an interrupted run left case-b half built: it is removed and rebuilt
    (out / "case-b.fix.patch").unlink()
    second = _prepare(corpus, str(out))
    assert second.returncode == 0, second.stderr
    assert "1 prepared, 1 already present, 0 failed" in second.stderr
    assert (out / "case-b.fix.patch").is_file()


def test_prepare_eval_trees_refuses_an_unknown_case_before_building(tmp_path: Path) -> None:
    corpus = _fake_corpus(tmp_path)
    proc = _prepare(corpus, str(tmp_path / "trees"), "case-a", "no-such-case")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "prepare-eval-trees: no such case: no-such-case"
    assert not (corpus / "eval-dev" / "calls.log").exists()
    assert not (tmp_path / "trees").exists()


def test_prepare_eval_trees_refuses_an_out_dir_inside_the_checkout(tmp_path: Path) -> None:
    corpus = _fake_corpus(tmp_path)
    proc = _prepare(corpus, str(ROOT / "eval-trees"))
    assert proc.returncode == 1
    assert "inside the project checkout" in proc.stderr
    assert not (ROOT / "eval-trees").exists()


def test_eval_parse_only_maps_the_fix_hunk_to_its_function(corpus: Path) -> None:
    if not (EVAL_TREES / f"{SMALL_CASE}.bug.patch").is_file():
        pytest.skip(f"eval trees not prepared in {EVAL_TREES} (scripts/prepare-eval-trees.sh)")
    out = run_bench("eval.py", "--trees", str(EVAL_TREES), "--case", SMALL_CASE, "--parse-only")
    lines = [line for line in out.splitlines() if line.startswith(SMALL_CASE)]
    assert len(lines) == 3, out  # bug.patch, fix.patch, the corpus' own fix.patch
    for line in lines:
        assert "1 file(s) 1 hunk(s); diff_only: 1/1 expected" in line, line
    assert "full: 1/1 expected" in lines[0]


def test_eval_reports_json_that_breaks_the_review_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    ev = load_eval(monkeypatch)
    if not ev.SCHEMA.is_file():
        pytest.skip("docs/review.schema.json not written yet")
    problem = ev.schema_problem(_doc(_finding("MMLC001", "introduced", "f")))
    # the hand-made document lacks schema_version, tool, series, ...
    assert problem.startswith("(root): '"), problem
    assert "is a required property" in problem, problem


def test_eval_counts_check_notes_by_kind_not_by_function(monkeypatch: pytest.MonkeyPatch) -> None:
    ev = load_eval(monkeypatch)
    a = ev.note_kind("simulator: patch 1: wb_queue_work(): no actor role found")
    b = ev.note_kind("simulator: patch 2: list_lru_add_obj(): no actor role found")
    assert a == b == "simulator: patch N: <fn>(): no actor role found"
    assert ev.note_kind("MMLC001: 3 touched function(s) checked") == (
        "MMLC001: N touched function(s) checked"
    )


# --------------------------------------------------------------------------- noise.py

NOISE_DIR = Path("patches") / "mmotm-noise"


def load_noise(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import bench/noise.py the way it runs: with bench/ on sys.path."""
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_noise", BENCH / "noise.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_noise", module)
    spec.loader.exec_module(module)
    return module


def test_noise_on_two_patches_prints_the_summary_lines(corpus: Path) -> None:
    if not (corpus / NOISE_DIR / "index.csv").is_file():
        pytest.skip(f"{corpus / NOISE_DIR} not in the corpus")
    out = run_bench("noise.py", "--limit", "2")
    assert re.search(
        r"^noise: 2 patch\(es\) of primary and 2 reversed fix\(es\) .*diff-only", out, re.M
    )
    assert "machine: " in out
    assert re.search(r"^patches reviewed: \d of 2$", out, re.M), out
    assert re.search(r"^errors: \d+ ", out, re.M), out
    assert re.search(r"^introduced findings per 100 patches: (\d+\.\d|n/a) ", out, re.M), out
    assert re.search(r"^verdicts: true \d+, plausible \d+, false \d+, UNJUDGED \d+$", out, re.M)
    assert re.search(r"^reversed fixes flagged: \d/2 ", out, re.M), out
    assert re.search(r"^time: \d+\.\d s wall", out, re.M), out
    assert re.search(r"^  P32[12] L1 ", out, re.M), out  # the reversed-fix table


def test_noise_skips_without_the_corpus(tmp_path: Path) -> None:
    out = run_bench("noise.py", "--corpus", str(tmp_path / "nowhere"))
    assert out.startswith("noise: skipped: corpus not found at"), out


# The messages of findings-judged-2026-12.csv rows: the variant is read back from them.
P031_PUBLISH = (
    "sys_memfd_secret() takes refcount_inc(&secretmem_users) only after fd_install(fd, file) "
    "has made the object visible, so a concurrent user can find it and drop the count before "
    "it is taken."
)
P031_LEAK = (
    "sys_memfd_secret() takes a reference on secretmem_users with refcount_inc() at line 221 "
    "that the path ending in `return fd` never drops, stores or hands back."
)
P062_LOST = (
    "debug_vm_pgtable() no longer drops the mm_struct reference it used to drop: mmdrop(mm) "
    "reached mmdrop(mm), and the series adds no other mm_struct put, so the reference is leaked."
)
P175_RELEASE = (
    "free_vma_anon_name() is a release path (its name says so). Before this patch it freed the "
    "vm_area_struct through kfree(vma->anon_name), which reached kfree(vma->anon_name); after "
    "it, nothing on this path does, and the series adds neither a reference that keeps the "
    "vm_area_struct alive until a guaranteed destroy nor another path that destroys it, so the "
    "vm_area_struct can leak."
)


def test_noise_reads_the_variant_back_from_the_rule_wording(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    noise = load_noise(monkeypatch)
    v = noise.Variants()
    assert v.of({"rule_id": "MMLC002", "message": P031_PUBLISH}) == "get-after-publish"
    assert v.of({"rule_id": "MMLC002", "message": P031_LEAK}) == "path-reference-leak"
    assert v.of({"rule_id": "MMLC002", "message": P062_LOST}) == "lost-put"
    # MMLC001's own message took its first matcher's name when the rule got
    # variants; judged rows written before under its symbol are still found
    assert v.of({"rule_id": "MMLC001", "message": P175_RELEASE}) == "release-path-loses-destroy"
    assert v.symbol_of_default[("MMLC001", "release-path-loses-destroy")] == (
        "release-path-stops-destroy"
    )
    sim = {"rule_id": "SIM-LEAK", "symbol": "object-never-freed", "message": "x"}
    assert v.of(sim) == "object-never-freed"
    assert v.of({"rule_id": "MMLC002", "message": "something else", "variant": "double-put"}) == (
        "double-put"
    )
    assert v.of({"rule_id": "MMLC002", "message": "something else"}) == "?"


def test_noise_looks_verdicts_up_by_patch_rule_variant_and_function(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    noise = load_noise(monkeypatch)
    finding = _finding("MMLC002", "introduced", "sys_memfd_secret")
    doc = _doc(
        {**finding, "message": P031_PUBLISH},
        {**finding, "message": P031_LEAK},
        {**finding, "function": "other_fn", "message": P031_LEAK},
        {**finding, "status": "fixed", "message": P031_PUBLISH},
    )
    script = tmp_path / "fake-bot"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(doc)}\nEOF\nexit 1\n")
    script.chmod(0o755)
    judged = {
        ("P031", "MMLC002", "get-after-publish", "sys_memfd_secret"): noise.Judged(
            "plausible", "pre-existing race", "diff tree"
        ),
        ("P031", "MMLC002", "path-reference-leak", "sys_memfd_secret"): noise.Judged(
            "false", "dropped in ->release", "diff tree"
        ),
    }
    patch = noise.Patch("P031", tmp_path / "P031__x.patch", "mm/secretmem: ...", "no", ())
    review = noise.Review(
        patch, noise.Run("P031", "noise", "no", "patch", "diff-only", [str(script)])
    )
    doc_read = noise.execute(review, 60, os.environ)
    assert review.run.error == "" and doc_read is not None
    noise.judge(review, doc_read, noise.Variants(), judged)
    assert [(f.variant, f.function, f.verdict) for f in review.findings] == [
        ("get-after-publish", "sys_memfd_secret", "plausible"),
        ("path-reference-leak", "sys_memfd_secret", "false"),
        ("path-reference-leak", "other_fn", noise.UNJUDGED),
    ]
    s = noise.summarise([review], [], 1.0, 1.0)
    assert (s["reviewed"], s["introduced"], s["per_100"]) == (1, 3, 300.0)
    assert s["verdicts"] == {"true": 0, "plausible": 1, "false": 1, noise.UNJUDGED: 1}
    assert s["rules"]["MMLC002"]["variants"] == {"get-after-publish": 1, "path-reference-leak": 2}
    assert s["new_since_before"] == 3

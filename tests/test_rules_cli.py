"""`bot rules list|explain|validate|test` through the real CLI parser."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.cli import build_parser, main
from bot.config import Settings
from bot.errors import UsageError
from bot.rules_cli import run_rules


def _run(argv: list[str], settings: Settings) -> int:
    return run_rules(build_parser().parse_args(argv), settings)


def test_list_prints_one_line_per_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == [f"MMLC00{i}" for i in range(1, 10)]
    assert "release-path-stops-destroy" in lines[0]


def test_explain_accepts_an_id_or_a_symbol(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "explain", "use-after-put"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("MMLC003 use-after-put")
    assert "use-after-release (state)" in out and "bad.patch" in out


def test_explain_unknown_rule_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "explain", "MMLC999"]) == 2
    assert "unknown rule 'MMLC999'" in capsys.readouterr().err


def test_validate_passes_on_the_shipped_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "validate"]) == 0
    assert capsys.readouterr().out.startswith("ok: 9 rules")


def test_validate_reports_every_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = Settings().rules_dir
    rules = tmp_path / "rules"
    shutil.copytree(src, rules, ignore=shutil.ignore_patterns("tree", "scenarios"))
    doc = (rules / "MMLC003" / "rule.yaml").read_text()
    (rules / "MMLC003" / "rule.yaml").write_text(doc.replace("severity: error", "severity: fatal"))
    (rules / "MMLC004" / "good.patch").unlink()
    code = _run(["rules", "validate"], Settings(rules_dir=rules))
    out = capsys.readouterr().out
    assert code == 1
    assert "MMLC003/rule.yaml: severity: 'fatal' is not one of" in out
    assert "MMLC004: no good.patch example" in out


def test_broken_rule_file_makes_review_fail_with_one_line(tmp_path: Path) -> None:
    src = Settings().rules_dir
    rules = tmp_path / "rules"
    shutil.copytree(src, rules, ignore=shutil.ignore_patterns("tree", "scenarios"))
    (rules / "MMLC001" / "rule.yaml").write_text("id: [unclosed\n")
    from bot.analyze.engine import load_checks
    from bot.errors import InputError

    with pytest.raises(InputError) as err:
        load_checks(Settings(rules_dir=rules))
    assert "MMLC001/rule.yaml: cannot parse" in err.value.one_line()


def test_test_runs_every_example_and_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["rules", "test", "MMLC002", "MMLC005"], Settings()) == 0
    out = capsys.readouterr().out
    assert "MMLC002  bad.patch" in out and "flagged" in out
    assert "MMLC005  good.patch" in out and "quiet" in out
    rules = Settings().rules_dir
    n = sum(len(list((rules / r).glob("*.patch"))) for r in ("MMLC002", "MMLC005"))
    assert out.rstrip().endswith(f"{n}/{n} examples behave as labelled")


def test_test_marks_a_good_example_that_gets_flagged_as_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = Settings().rules_dir
    rules = tmp_path / "rules"
    shutil.copytree(src, rules, ignore=shutil.ignore_patterns("scenarios"))
    # label the bad example "good": the run must say so and exit 1
    shutil.copy(rules / "MMLC003" / "bad.patch", rules / "MMLC003" / "good.patch")
    (rules / "MMLC003" / "todo-reorder.patch").write_text(
        (rules / "MMLC003" / "bad.patch").read_text()
    )
    assert _run(["rules", "test", "MMLC003"], Settings(rules_dir=rules, simulate=False)) == 1
    out = capsys.readouterr().out
    assert "good.patch                   good  FAIL  flagged by MMLC003" in out
    assert "todo-reorder.patch" in out and "now caught" in out


def test_unknown_rule_for_test_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        _run(["rules", "test", "no-such-rule"], Settings())

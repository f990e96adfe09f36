"""`bot simulate`: the command line around simulate_source."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bot.config import Settings
from bot.errors import EXIT_FINDINGS, EXIT_OK, InputError, UsageError
from bot.simulate_cli import add_simulate_parser, run_simulate

FIX = Path(__file__).resolve().parent / "fixtures" / "simulate"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def run(
    argv: list[str], capsys: pytest.CaptureFixture[str], settings: Settings | None = None
) -> tuple[int, str]:
    parser = _Parser(prog="bot")
    add_simulate_parser(parser.add_subparsers(dest="command", parser_class=_Parser))
    code = run_simulate(parser.parse_args(["simulate", *argv]), settings or Settings())
    return code, capsys.readouterr().out


def test_a_violation_prints_its_trace_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(
        [
            str(FIX / "pool_leak.c"),
            "--entry",
            "pool_release_pages",
            "--teardown",
            "pool_css_offline",
        ],
        capsys,
    )
    assert code == EXIT_FINDINGS
    assert "SIM-LEAK" in out
    assert "CPU0" in out and "worker" in out
    assert "pool_leak.c:25" in out


def test_a_safe_program_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(
        [
            str(FIX / "pool_counted.c"),
            "--entry",
            "pool_release_pages",
            "--teardown",
            "pool_css_offline",
        ],
        capsys,
    )
    assert code == EXIT_OK
    assert "no violation found" in out


def test_json_output_carries_the_steps(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(
        [str(FIX / "kref_double_put.c"), "--entry", "session_close", "--format", "json"], capsys
    )
    doc = json.loads(out)
    assert code == EXIT_FINDINGS
    assert [v["rule_id"] for v in doc["violations"]] == ["SIM-UNDERFLOW"]
    assert doc["violations"][0]["steps"][-1]["line"] == 21


def test_no_reduction_and_a_state_bound_are_honoured(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(
        [str(FIX / "pool_counted.c"), "--entry", "pool_release_pages",
         "--teardown", "pool_css_offline", "--no-reduction", "--max-states", "3"],
        capsys,
    )  # fmt: skip
    assert code == EXIT_OK
    assert "state bound reached (3 states)" in out
    assert "incomplete" in out


def test_a_missing_file_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InputError, match="cannot read"):
        run([str(tmp_path / "absent.c"), "--entry", "f"], capsys)


def test_a_non_positive_bound_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match="--max-states"):
        run(
            [str(FIX / "pool_leak.c"), "--entry", "pool_release_pages", "--max-states", "0"], capsys
        )


def test_hostile_c_text_is_parsed_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # unbalanced braces, a macro soup and a goto loop: still one line of result, no traceback
    src = tmp_path / "odd.c"
    src.write_text(
        "void f(struct obj *o) { again: if (o->x) goto again; kfree(o); o->y = 1; \n"
        "#define X(a) a(\n list_for_each_entry(p, &o->l, n) { kfree(o); }\n",
        encoding="utf-8",
    )
    code, out = run([str(src), "--entry", "f"], capsys)
    assert code == EXIT_FINDINGS
    assert out.startswith("actors: entry f()")
    assert "SIM-UAF" in out and "o->y = 1;" in out


def test_tree_supplies_the_helper_and_the_callback_binding(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tree = FIX / "tree"
    code, out = run(
        [str(tree / "mm" / "bufring_free.c"), "--entry", "bufring_free", "--tree", str(tree)],
        capsys,
    )
    assert code == EXIT_FINDINGS
    assert "worker bufring_drain_workfn()" in out
    assert "SIM-WORK-AFTER-FREE" in out
    assert "include/linux/bufring.h:14" in out  # the header helper's schedule_work()


def test_without_the_tree_the_helper_is_unknown_and_nothing_is_found(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run(
        [str(FIX / "tree" / "mm" / "bufring_free.c"), "--entry", "bufring_free"], capsys
    )
    assert code == EXIT_OK
    assert "no violation found" in out


def test_without_entries_the_actors_are_found_by_role(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run([str(FIX / "pool_leak.c")], capsys)
    assert code == EXIT_FINDINGS
    first = out.splitlines()[0]
    assert "release pool_release_pages()" in first  # by its name
    assert "teardown pool_css_offline()" in first  # by its .css_offline slot
    assert "worker pool_destroy_workfn()" in first  # by its INIT_WORK binding
    assert "SIM-LEAK" in out


def test_without_entries_and_no_role_it_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "plain.c"
    src.write_text("int add(int a, int b)\n{\n\treturn a + b;\n}\n", encoding="utf-8")
    with pytest.raises(UsageError, match="none found by role"):
        run([str(src)], capsys)

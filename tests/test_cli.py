"""`bot` end to end: exit codes, one-line errors, formats, and the bundled example."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.analyze.context import SeriesAnalysis
from bot.cli import main
from bot.config import Settings
from bot.model import Confidence, Finding, Severity, Status
from bot.pipeline import review_inputs, run_checks

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "objpool"


def run_cli(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("bot: error: ")
    assert "Traceback" not in err


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for code in ("0", "1", "2", "3"):
        assert f"  {code}  " in out


def test_unknown_option_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["review", "--no-such-option", "x"], capsys)
    assert code == 2
    assert_one_line_error(err)


def test_missing_file_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["review", str(tmp_path / "nope.mbox")], capsys)
    assert code == 2
    assert out == ""
    assert_one_line_error(err)
    assert "nope.mbox" in err


def test_binary_junk_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.mbox"
    junk.write_bytes(bytes(range(256)) * 40)
    code, _, err = run_cli(["review", str(junk)], capsys)
    assert code == 2
    assert_one_line_error(err)


@pytest.mark.parametrize("msgid", ["<a;rm -rf ~@x>", "<a/../b@x>", "<a?b=1@x>", "<$(id)@x>"])
def test_message_id_with_metacharacters_is_refused(
    msgid: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["review", "--lore-base", "http://127.0.0.1:9", msgid], capsys)
    assert code == 2
    assert_one_line_error(err)


def test_input_over_size_limit_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    series = EXAMPLE / "series.mbox"
    code, _, err = run_cli(["review", "--max-input-size", "1000", str(series)], capsys)
    assert code == 2
    assert_one_line_error(err)


def test_bad_version_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["review", "--version", "7", str(EXAMPLE / "series.mbox")], capsys)
    assert code == 2
    assert_one_line_error(err)


def test_example_series_is_flagged_with_the_release_path_rule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(
        [
            "review",
            str(EXAMPLE / "series.mbox"),
            "--tree",
            str(EXAMPLE / "tree"),
            "--format",
            "json",
        ],
        capsys,
    )
    assert code == 1, err
    doc = json.loads(out)
    introduced = [f for f in doc["findings"] if f["status"] == "introduced"]
    rules = {f["rule_id"] for f in introduced}
    assert "MMLC001" in rules
    mmlc001 = next(f for f in introduced if f["rule_id"] == "MMLC001")
    assert mmlc001["function"] == "objpool_release_pages"
    assert mmlc001["file"] == "include/linux/objpool.h"
    assert all(p["applied"]["ok"] for p in doc["patches"])


def test_example_patch_two_alone_has_no_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The documentation-only patch, reviewed on the tree after patch 1: nothing to say.
    review = review_inputs([str(EXAMPLE / "series.mbox")], Settings())
    assert review.series.total == 2
    second = [f for f in review.findings if f.patch_number == 2 and f.status is Status.INTRODUCED]
    assert second == []


@pytest.mark.parametrize("fmt", ["text", "email", "json", "sarif", "b4"])
def test_every_format_renders_the_example(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        ["review", str(EXAMPLE / "series.mbox"), "--tree", str(EXAMPLE / "tree"), "--format", fmt],
        capsys,
    )
    assert code == 1
    assert out.strip()
    if fmt in ("json", "sarif", "b4"):
        json.loads(out)


def test_stdin_dash_reads_the_series(tmp_path: Path) -> None:
    data = (EXAMPLE / "series.mbox").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "review", "-", "--format", "json", "--no-simulate"],
        input=data,
        capture_output=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["series"]["total"] == 2


def test_console_script_runs_without_a_terminal(tmp_path: Path) -> None:
    # Not a terminal: no progress display, clean stdout.
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "review", str(EXAMPLE / "series.mbox")],
        capture_output=True,
        cwd=tmp_path,
        check=False,
        text=True,
    )
    assert proc.returncode == 1, proc.stderr
    assert "\x1b[" not in proc.stdout
    assert proc.stderr == ""


class _Boom:
    name = "boom"

    def run(self, ctx: SeriesAnalysis, settings: Settings) -> list[Finding]:
        raise RuntimeError("matcher exploded\non two lines")


class _Quiet:
    name = "quiet"

    def run(self, ctx: SeriesAnalysis, settings: Settings) -> list[Finding]:
        return [
            Finding(
                rule_id="T001",
                symbol="test",
                severity=Severity.INFO,
                confidence=Confidence.LOW,
                status=Status.PRE_EXISTING,
                message="m",
                file="f.c",
                line=1,
                function="f",
            )
        ]


def test_a_crashing_check_fails_alone_and_the_others_still_run() -> None:
    review = review_inputs([str(EXAMPLE / "series.mbox")], Settings(simulate=False))
    from bot.pipeline import build_analysis

    analysis = build_analysis(review.applied, Settings())
    findings, results = run_checks(analysis, Settings(), [_Boom(), _Quiet()])
    assert [r.check for r in results] == ["boom", "quiet"]
    assert not results[0].ok
    assert results[0].error == "RuntimeError: matcher exploded on two lines"
    assert results[1].ok
    assert [f.rule_id for f in findings] == ["T001"]


@pytest.mark.corpus
def test_every_corpus_mail_is_reviewed_or_refused_in_one_line(
    corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(p for p in (corpus / "mbox").rglob("*") if p.is_file())
    assert len(files) > 100
    refused = 0
    for path in files:
        code, _, err = run_cli(["review", "--no-simulate", "--format", "json", str(path)], capsys)
        assert code in (0, 1, 2), (path, err)
        assert "Traceback" not in err, path
        if code == 2:
            refused += 1
            assert_one_line_error(err)
            assert path.name in err, (path, err)
    # most fixtures are real mail with patches; refusals are the exception
    assert refused < len(files) // 2


def test_review_parses_without_building_the_other_subcommands() -> None:
    """`bot review` builds only its own parser (the others import their modules),
    with the same options and errors as the full command line."""
    from bot.cli import build_parser

    full = build_parser()
    alone = build_parser("review")
    argv = ["review", "a.mbox", "--tree", "t", "--format", "json", "--rule", "MMLC001", "-q"]
    assert vars(alone.parse_args(argv)) == vars(full.parse_args(argv))
    sub = next(a for a in alone._actions if a.dest == "command")
    assert set(sub.choices) == {"review"}  # type: ignore[arg-type]


def test_a_review_ends_with_everything_written_and_a_closed_pipe_is_no_error(
    tmp_path: Path,
) -> None:
    # `bot review` ends without tearing the interpreter down (bot.cli.run): the
    # whole review still reaches stdout, the cache's exit handler still runs
    cache_dir = tmp_path / "cache"
    env = {"PATH": "/usr/bin:/bin", "BOT_CACHE_DIR": str(cache_dir), "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "bot", "review", str(EXAMPLE / "series.mbox")]
    cmd += ["--tree", str(EXAMPLE / "tree"), "--format", "json"]
    whole = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert whole.returncode == 1, whole.stderr
    assert json.loads(whole.stdout)["findings"]
    assert (cache_dir / "cache.sqlite3").stat().st_size > 0
    # the database was closed: its write-ahead log is in the file, none is left over
    assert not (cache_dir / "cache.sqlite3-wal").exists()
    # a reader that stops after a few bytes: no traceback, the review's own exit code
    shell = f"{' '.join(cmd)} | head -c 16"
    cut = subprocess.run(["sh", "-c", shell], env=env, capture_output=True, text=True, check=False)
    assert cut.returncode == 0 and len(cut.stdout) == 16
    assert "Traceback" not in cut.stderr and "Exception ignored" not in cut.stderr

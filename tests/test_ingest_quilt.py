"""A quilt `series` file names patches inside its directory, nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import InputError
from bot.ingest import load

ROOT = Path(__file__).resolve().parent.parent


def _stack(tmp_path: Path, fixtures: Path, series: str) -> Path:
    patches = tmp_path / "patches"
    shutil.copytree(fixtures / "ingest" / "quilt", patches)
    (patches / "series").write_text(series)
    return patches


@pytest.mark.parametrize(
    "entry", ["../../etc/passwd", "/etc/passwd", "sub/../../x.patch", "..", "../x.patch -p1"]
)
def test_series_entry_outside_the_directory_is_refused(
    tmp_path: Path, fixtures: Path, entry: str
) -> None:
    patches = _stack(tmp_path, fixtures, f"# stack\n{entry}\n")
    with pytest.raises(InputError) as err:
        load([str(patches)], load_settings())
    line = err.value.one_line()
    assert "\n" not in line
    assert "outside the patches directory" in line
    assert str(patches / "series") in line


def test_series_entry_in_a_subdirectory_is_fine(tmp_path: Path, fixtures: Path) -> None:
    first, second = (
        "mm-workingset-add-shadow-counter.patch",
        "mm-workingset-free-shadow-counter.patch",
    )
    patches = _stack(tmp_path, fixtures, f"sub/{first}\n{second}\n")
    (patches / "sub").mkdir()
    (patches / first).rename(patches / "sub" / first)
    messages = load([str(patches)], load_settings())
    assert messages[0].source.endswith(f"sub/{first}")


def test_cli_refuses_it_with_one_line_and_exit_2(tmp_path: Path, fixtures: Path) -> None:
    patches = _stack(tmp_path, fixtures, "../../secret.patch\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "review", str(patches)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "refused" in proc.stderr

"""A wheel of the project (a plain, non-editable install) ships the results page's
templates and stylesheet as package data of bot.web."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "bot", "workers", "rules")


def test_the_wheel_ships_the_templates_and_the_stylesheet(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "--no-cache-dir", "-q", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0 and "No matching distribution found for setuptools" in proc.stderr:
        pytest.skip("pip cannot get the build backend (setuptools) here")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.name for p in (ROOT / "bot" / "web" / "templates").glob("*.html")}
    assert templates >= {"base.html", "index.html", "series.html", "login.html"}
    for name in templates:
        assert f"bot/web/templates/{name}" in names
    assert "bot/web/static/style.css" in names

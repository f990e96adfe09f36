"""Shared fixtures. The corpus is read in place from BOT_CORPUS_DIR (default
../shared/corpus); tests that need it skip cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def corpus_path() -> Path:
    return load_settings().corpus_dir


@pytest.fixture
def corpus() -> Path:
    """The shared corpus directory; skips the test when it is not there."""
    path = corpus_path()
    if not (path / "README.md").is_file():
        pytest.skip(f"corpus not found at {path} (set BOT_CORPUS_DIR)")
    return path


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES

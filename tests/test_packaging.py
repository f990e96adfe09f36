"""A plain (non-editable) install is a working bot: the rules ship inside the
package, found from any directory, and so do the results page's templates and
stylesheet.

The wheel is built once from a copy of the source (so nothing can come from the
checkout), as `pip install .` builds it, and installed `--no-deps` into a fresh
venv; the dependencies come from this test run's own site-packages (a .pth
line), to stay fast and offline. Skipped only when pip cannot get the build
backend at all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "objpool"
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "bot", "workers", "rules")


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BOT_RULES_DIR")}
    env["BOT_CACHE_DIR"] = str(tmp / "cache")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built by pip from a copy of the source."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.is_file():
            shutil.copy2(path, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "--no-cache-dir", "--quiet", "-w", str(tmp / "dist"), str(src)],
        capture_output=True, text=True, check=False, cwd=tmp, env=_env(tmp), timeout=600,
    )  # fmt: skip
    if proc.returncode != 0 and "No matching distribution found for setuptools" in proc.stderr:
        pytest.skip("pip cannot get the build backend (setuptools) here")
    assert proc.returncode == 0, proc.stderr
    (built,) = (tmp / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (`pip install --no-deps`); its bin/."""
    tmp = tmp_path_factory.mktemp("venv")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the dependencies: this interpreter's site-packages, after the venv's own
    deps = sysconfig.get_paths()["purelib"]
    Path(purelib, "zz-deps.pth").write_text(deps + "\n", encoding="utf-8")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    proc = subprocess.run(
        [*pip, "--no-cache-dir", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp,
        env=_env(tmp),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return venv / "bin"


def test_the_wheel_ships_the_templates_and_the_stylesheet(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.name for p in (ROOT / "bot" / "web" / "templates").glob("*.html")}
    assert templates >= {"base.html", "index.html", "series.html", "login.html"}
    for name in templates:
        assert f"bot/web/templates/{name}" in names
    assert "bot/web/static/style.css" in names


def _run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=_env(cwd),
        timeout=300,
    )


def test_the_installed_package_is_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    proc = _run(
        installed,
        "python",
        "-c",
        "import bot; from bot.config import Settings; print(bot.__file__); "
        "print(Settings().rules_dir)",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    module, rules = proc.stdout.split()
    venv = installed.parent.resolve()
    assert Path(module).resolve().is_relative_to(venv)
    assert Path(rules).resolve().is_relative_to(venv)
    assert (Path(rules) / "scenarios" / "api-effects.yaml").is_file()


def test_a_plain_install_lists_the_rules_from_another_directory(
    installed: Path, tmp_path: Path
) -> None:
    proc = _run(installed, "bot", "rules", "list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "MMLC001" in proc.stdout


def test_a_plain_install_reviews_the_bundled_example_from_another_directory(
    installed: Path, tmp_path: Path
) -> None:
    proc = _run(
        installed,
        "bot",
        "review",
        str(EXAMPLE / "series.mbox"),
        "--tree",
        str(EXAMPLE / "tree"),
        "-q",
        "--no-cache",
        "--format",
        "json",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    found = {(f["rule_id"], f["status"]) for f in json.loads(proc.stdout)["findings"]}
    assert {("MMLC001", "introduced"), ("SIM-LEAK", "introduced")} <= found


def test_the_compose_file_mounts_a_config_the_repository_has_an_example_of() -> None:
    from workers.config import load_service_config

    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert "./service.yaml:/etc/bot/service.yaml:ro" in compose
    assert "examples/service.yaml" in compose and "Compose v2" in compose
    config = load_service_config(str(ROOT / "examples" / "service.yaml"))
    assert config.dry_run
    assert [(lst.name, lst.email) for lst in config.lists] == [("linux-mm", False)]
    assert config.maildir == "/var/lib/bot/outbox"

"""Packaging glue pyproject.toml cannot express: rules/ (the rule folders, the
API vocabulary and the simulator's scenario data, kept at the top of the
repository) ships inside the package as bot/rules, so a plain `pip install .`
finds it (bot.config.default_rules_dir). An editable install reads the
checkout's rules/ directly and copies nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RULES = Path(__file__).resolve().parent / "rules"


class BuildWithRules(build_py):
    """build_py that also copies rules/ to <build>/bot/rules."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "bot" / "rules"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(RULES, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            target = Path(self.build_lib) / "bot" / "rules"
            outputs += [str(target / p.relative_to(RULES)) for p in RULES.rglob("*") if p.is_file()]
        return outputs


setup(cmdclass={"build_py": BuildWithRules})

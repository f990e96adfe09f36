"""Function definitions found by parse_functions versus universal-ctags, on the
corpus kernel sources. Every name ctags finds must be found by us.

Documented exceptions: none are needed on these files. `SYSCALL_DEFINEn(name, ...)`
would be one (ctags names it SYSCALL_DEFINEn, we name it sys_<name>), so the
comparison maps it before checking.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from bot.analyze.cfunc import parse_functions

FILES = [
    "mm/memcontrol.c",
    "mm/slab.c",
    "mm/slub.c",
    "mm/slab_common.c",
    "mm/slab.h",
    "include/linux/memcontrol.h",
    "include/linux/slab.h",
]


def _ctags_functions(path: Path) -> Counter[str]:
    out = subprocess.run(
        ["ctags", "-x", "--c-kinds=f", "--language-force=C", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names: Counter[str] = Counter()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[1] == "function":
            name = fields[0]
            m = re.match(r"(COMPAT_)?SYSCALL_DEFINE\d$", name)
            if m:
                arg = re.search(r"\(\s*(\w+)", line)
                name = ("compat_sys_" if m.group(1) else "sys_") + (arg.group(1) if arg else "")
            names[name] += 1
    return names


@pytest.mark.skipif(shutil.which("ctags") is None, reason="universal-ctags not installed")
@pytest.mark.parametrize("version", ["v3.15.5", "v3.16"])
@pytest.mark.parametrize("rel", FILES)
def test_every_ctags_function_is_found(corpus: Path, version: str, rel: str) -> None:
    path = corpus / "kernel" / version / rel
    ours = Counter(f.name for f in parse_functions(path.read_text(encoding="utf-8"), rel))
    theirs = _ctags_functions(path)
    print(f"{version}/{rel}: tree-sitter {sum(ours.values())}, ctags {sum(theirs.values())}")
    missing = theirs - ours
    assert not missing, f"ctags finds functions we miss: {sorted(missing)}"
    # Nor do we invent functions ctags does not know (loop macros read as definitions).
    extra = ours - theirs
    assert not extra, f"we find functions ctags does not: {sorted(extra)}"

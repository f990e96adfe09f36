"""bench/preimage.py: a patch reversed on a hard-linked copy of a tree, with the
base tree never written and the copy put back after each patch (real `cp` and
GNU patch on a small tree of our own)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

pytestmark = pytest.mark.skipif(
    shutil.which("patch") is None or shutil.which("cp") is None, reason="needs GNU patch and cp"
)

OLD = "static void pool_release(struct pool *p)\n{\n\tkfree(p->slots);\n\tkfree(p);\n}\n"
NEW = "static void pool_release(struct pool *p)\n{\n\tkfree(p);\n}\n"
# the patch that went from OLD to NEW (quilt style, as the -mm patches are)
PATCH = """--- a/mm/pool.c~pool-release
+++ a/mm/pool.c
@@ -1,5 +1,4 @@
 static void pool_release(struct pool *p)
 {
-\tkfree(p->slots);
 \tkfree(p);
 }
"""


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("preimage", BENCH / "preimage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["preimage"] = module
    spec.loader.exec_module(module)
    return module


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    base = tmp_path / "base"
    (base / "mm").mkdir(parents=True)
    (base / "mm" / "pool.c").write_text(NEW)
    (base / "mm" / "other.c").write_text("int x;\n")
    (base / ".git").mkdir()
    (base / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    patch = tmp_path / "p.patch"
    patch.write_text(PATCH)
    return base, patch


def test_a_patch_is_reversed_on_a_copy_and_the_base_is_never_written(tmp_path: Path) -> None:
    pre = _module()
    base, patch = _tree(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    assert pre.reverse_applies(base, patch)
    with pre.PreImages(base, 1, work) as images:
        with images.reversed(patch) as slot:
            assert slot is not None
            assert (slot / "mm" / "pool.c").read_text() == OLD
            assert not (slot / ".git").exists()  # reviewed as files, not at a HEAD
            assert (slot / "mm" / "other.c").stat().st_ino == (base / "mm/other.c").stat().st_ino
        assert (base / "mm" / "pool.c").read_text() == NEW
        # the copy is put back: the same patch reverses again
        with images.reversed(patch) as slot:
            assert slot is not None and (slot / "mm" / "pool.c").read_text() == OLD
        assert (slot / "mm" / "pool.c").read_text() == NEW
    assert not any(work.iterdir())
    assert (base / ".git" / "HEAD").is_file()


def test_a_patch_that_does_not_reverse_apply_gives_no_tree(tmp_path: Path) -> None:
    pre = _module()
    base, patch = _tree(tmp_path)
    (base / "mm" / "pool.c").write_text("int unrelated(void);\n")
    work = tmp_path / "work"
    work.mkdir()
    assert not pre.reverse_applies(base, patch)
    with pre.PreImages(base, 1, work) as images, images.reversed(patch) as slot:
        assert slot is None
    assert (base / "mm" / "pool.c").read_text() == "int unrelated(void);\n"

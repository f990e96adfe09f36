"""A diff git would apply must be a diff the review analyses (issue 12): a second
diff after the `-- ` signature was applied by `git am` and never analysed."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from bot.config import Settings, load_settings
from bot.model import ApplyMethod
from bot.pipeline import review_inputs
from tests.test_security_git import commit_all, git_run

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "objpool"

HIDDEN = """
diff --git a/mm/hidden.c b/mm/hidden.c
new file mode 100644
index 0000000..1b2c3d4
--- /dev/null
+++ b/mm/hidden.c
@@ -0,0 +1,3 @@
+void hidden_change(void)
+{
+}
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return replace(load_settings(), cache_dir=None, scratch_dir=tmp_path / "scratch")


def _with_hidden_diff(tmp_path: Path) -> Path:
    """The example series with a diff after patch 2's signature (`-- \\n2.39.5`)."""
    text = (EXAMPLE / "series.mbox").read_text()
    at = text.rindex("-- \n2.39.5\n") + len("-- \n2.39.5\n")
    out = tmp_path / "hidden.mbox"
    out.write_text(text[:at] + HIDDEN + text[at:])
    return out


@pytest.mark.parametrize("git_tree", [False, True])
def test_diff_after_signature_is_applied_and_analysed(
    tmp_path: Path, settings: Settings, git_tree: bool
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(EXAMPLE / "tree", tree)
    if git_tree:
        git_run(tree, "init", "-q")
        commit_all(tree)
    review = review_inputs([str(_with_hidden_diff(tmp_path))], settings, tree=str(tree))
    patch = review.series.patches[1]
    assert "+void hidden_change(void)" in patch.diff
    app = review.applied.applications[1]
    assert app.ok and app.method is ApplyMethod.GIT_AM
    image = review.applied.images[1].image("mm/hidden.c")
    assert image is not None and image.post is not None
    assert "hidden_change" in image.post
    # every file the scratch commit changed is a file the review has images of
    touched = {i.path for i in review.applied.images[1].images}
    assert touched == {f.path for f in review.applied.images[1].files}
    assert touched == {"mm/objpool.c", "mm/hidden.c"}

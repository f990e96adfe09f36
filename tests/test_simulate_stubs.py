"""A header's config-off stub (`static inline void foo(...) {}` under `#else`)
is not the function the kernel runs when the feature is built: the simulator
reads the next file that defines it with a body."""

from __future__ import annotations

import pytest

from bot.analyze.cfacts import is_stub, parsed
from bot.analyze.simulate.extract import SourceSet

HEADER = """#ifndef CONFIG_FOO
static inline void foo_drop_name(struct foo *f) {}
static inline int foo_count(struct foo *f) { return 0; }
#endif
"""

SOURCE = """#include "foo.h"

void foo_drop_name(struct foo *f)
{
\tkfree(f->name);
}

int foo_count(struct foo *f)
{
\treturn f->count;
}
"""


@pytest.mark.parametrize(
    ("body", "stub"),
    [
        ("{}", True),
        ("{ /* nothing */ }", True),
        ("{ return 0; }", True),
        ("{ return NULL; }", True),
        ("{ return -ENOSYS; }", True),
        ("{ return; }", True),
        ("{ return f->count; }", False),
        ("{ return foo_get(f); }", False),
        ("{ kfree(f); }", False),
        ("{ f->x = 0; return 0; }", False),
    ],
)
def test_stub_shapes(body: str, stub: bool) -> None:
    info = parsed("mm/t.c", f"int t(struct foo *f)\n{body}\n")
    assert is_stub(info.functions["t"][0]) is stub


def test_the_body_in_a_c_file_wins_over_a_header_stub_listed_first() -> None:
    sources = SourceSet({"mm/foo.h": HEADER, "mm/foo.c": SOURCE})
    found = sources.find_function("foo_drop_name")
    assert found is not None
    info, node = found
    assert info.path == "mm/foo.c"
    assert b"kfree" in (node.text or b"")
    count = sources.find_function("foo_count")
    assert count is not None and count[0].path == "mm/foo.c"


def test_a_stub_with_no_other_definition_is_still_the_definition() -> None:
    sources = SourceSet({"mm/foo.h": HEADER})
    found = sources.find_function("foo_drop_name")
    assert found is not None and found[0].path == "mm/foo.h"

"""The lifecycle vocabulary in rules/api/: loading, roles, effects, schema errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.analyze.api import load_vocabulary, validate_api_dir
from bot.config import Settings
from bot.errors import InputError

RULES = Settings().rules_dir


def test_role_of_gives_family_kind_role_and_object_argument() -> None:
    vocab = load_vocabulary(RULES)
    put = vocab.role_of("css_put")
    assert put is not None
    assert (put.family, put.kind, put.role, put.object_arg) == ("css", "refcount", "put", 0)
    queue = vocab.role_of("queue_delayed_work")
    assert queue is not None
    assert (queue.kind, queue.role, queue.work_arg) == ("deferred", "schedule", 1)
    init = vocab.role_of("INIT_WORK")
    assert init is not None and init.callback_arg == 1
    assert vocab.role_of("not_a_lifecycle_call") is None


def test_lookups_and_iterators_return_their_object() -> None:
    vocab = load_vocabulary(RULES)
    it = vocab.role_of("mem_cgroup_iter")
    assert it is not None and it.returns_object and it.role == "iter"
    brk = vocab.role_of("mem_cgroup_iter_break")
    assert brk is not None and (brk.role, brk.object_arg) == ("iter_break", 1)
    assert "requires_rcu_read_lock" in vocab.effects_of("mem_cgroup_from_id")


def test_dec_and_test_roles_cover_the_last_put_forms() -> None:
    names = load_vocabulary(RULES).names_with_role("dec_and_test")
    for name in (
        "atomic_dec_and_test",
        "atomic_sub_and_test",
        "refcount_dec_and_test",
        "kref_put",
        "percpu_ref_put",
    ):
        assert name in names


def test_kmem_cache_shrink_may_release_pages() -> None:
    assert "may_release_pages" in load_vocabulary(RULES).effects_of("kmem_cache_shrink")


def test_shipped_vocabulary_matches_its_schema() -> None:
    assert validate_api_dir(RULES / "api") == []


def _copy_rules(tmp_path: Path) -> Path:
    dst = tmp_path / "rules"
    shutil.copytree(RULES / "api", dst / "api")
    return dst


def test_a_family_with_an_unknown_role_is_a_one_line_input_error(tmp_path: Path) -> None:
    rules = _copy_rules(tmp_path)
    (rules / "api" / "extra.yaml").write_text(
        "families:\n  - name: widget\n    kind: refcount\n    roles:\n      grab: [widget_grab]\n"
    )
    problems = validate_api_dir(rules / "api")
    assert any("extra.yaml" in p and "grab" in p for p in problems)
    with pytest.raises(InputError) as err:
        load_vocabulary(rules)
    assert "\n" not in err.value.one_line()
    assert "extra.yaml" in err.value.one_line()


def test_adding_a_subsystem_is_adding_data(tmp_path: Path) -> None:
    rules = _copy_rules(tmp_path)
    assert load_vocabulary(rules).role_of("widget_put") is None
    (rules / "api" / "widget.yaml").write_text(
        "families:\n"
        "  - name: widget\n"
        "    kind: refcount\n"
        "    object: widget\n"
        "    roles:\n"
        "      get: [widget_get]\n"
        "      put: [widget_put]\n"
    )
    role = load_vocabulary(rules).role_of("widget_put")
    assert role is not None and (role.family, role.role) == ("widget", "put")


def test_duplicate_family_names_are_reported(tmp_path: Path) -> None:
    rules = _copy_rules(tmp_path)
    (rules / "api" / "dup.yaml").write_text(
        "families:\n  - name: css\n    kind: refcount\n    roles:\n      get: [css_get_again]\n"
    )
    assert any("already defined" in p for p in validate_api_dir(rules / "api"))

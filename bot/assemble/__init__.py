"""Assemble: group RawMessages into Series (threads, versions, cover letters, missing slots).

parse_subject(subject) -> SubjectInfo
split_patch_body(body) -> (commit_message, diff_text, base_commit)
assemble(messages, settings) -> SeriesSet
select(series_set, version=None, key=None) -> (series, versions, others)
"""

from __future__ import annotations

from bot.assemble.body import in_body_author, split_patch_body
from bot.assemble.series import assemble, select
from bot.assemble.subject import normalise_title, parse_subject

__all__ = [
    "assemble",
    "in_body_author",
    "normalise_title",
    "parse_subject",
    "select",
    "split_patch_body",
]

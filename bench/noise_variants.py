"""Which kind of hit ("variant") a noise finding is: bench/noise.py's key into
findings-judged-2026-12.csv, read back from the finding's message."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import ROOT


class Variants:
    """Which kind of hit ("variant") a finding is, for the judged-findings key.

    `bot review --format json` carries no variant field (yet: one in the JSON
    wins), so it is read back from the message: each rules/<ID>/rule.yaml message
    template (its `variants:` first, then the rule's own message) becomes a regex.
    The names are the ones findings-judged-2026-12.csv uses: a `variants:` key, else
    for the rule's own message the rule's symbol when it has no variants and its
    first matcher when it has (MMLC002's own message is `path-reference-leak`). A
    simulator finding's variant is its symbol (object-never-freed, ...)."""

    def __init__(self, rules_dir: Path = ROOT / "rules") -> None:
        from bot.yamlio import load_yaml

        self._by_rule: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
        # the rule's own message: its current name -> the rule's symbol, the name
        # the judged file gave it while the rule had no variants (MMLC001)
        self.symbol_of_default: dict[tuple[str, str], str] = {}
        for path in sorted(rules_dir.glob("*/rule.yaml")):
            doc = load_yaml(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or "id" not in doc:
                continue
            variants = doc.get("variants") or {}
            patterns = [
                (str(name), _template_regex(str(spec["message"])))
                for name, spec in variants.items()
                if isinstance(spec, dict) and spec.get("message")
            ]
            matchers = [str(m.get("matcher")) for m in doc.get("match") or [] if m]
            default = matchers[0] if variants and matchers else str(doc.get("symbol") or "")
            patterns.append((default, _template_regex(str(doc.get("message") or ""))))
            self.symbol_of_default[(str(doc["id"]), default)] = str(doc.get("symbol") or "")
            self._by_rule[str(doc["id"])] = patterns

    def of(self, finding: Mapping[str, Any]) -> str:
        if finding.get("variant"):
            return str(finding["variant"])
        rule_id = str(finding.get("rule_id") or "")
        if rule_id.upper().startswith("SIM"):
            return str(finding.get("symbol") or "?")
        message = " ".join(str(finding.get("message") or "").split())
        for name, pattern in self._by_rule.get(rule_id, []):
            if pattern.fullmatch(message):
                return name
        return "?"


def _template_regex(template: str) -> re.Pattern[str]:
    """A rule.yaml message template as a regex over the rendered, one-line message
    (bot.analyze.engine renders with str.format and joins whitespace)."""
    parts = re.split(r"\{\w+\}", " ".join(template.split()))
    return re.compile("(.+?)".join(re.escape(p) for p in parts), re.S)

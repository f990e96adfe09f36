"""The review as SARIF 2.1.0, for code-scanning dashboards.

Mapping (see docs/output-formats.md):
  introduced   -> kind "fail", level from severity, baselineState "new"
  pre-existing -> kind "fail", level from severity, baselineState "unchanged"
  fixed        -> kind "pass", level "none", baselineState "absent"
  fixed-in-series -> kind "pass", level "none", no baselineState (never in a baseline)
SARIF says a result whose kind is not "fail" has level "none" (3.27.10).
Simulator traces become codeFlows with one threadFlow per actor; executionOrder
keeps the interleaving. Failed checks are toolExecutionNotifications.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from urllib.parse import quote

from bot.model import Finding, Review, Severity, Status, Trace
from bot.report.common import (
    SEVERITY_RANK,
    TOOL_NAME,
    TOOL_VERSION,
    Dismissed,
    dismissal_of,
    location,
    one_line,
)
from bot.report.fingerprint import fingerprint

SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
# GitHub code scanning reads properties.precision; our confidence maps onto it.
_PRECISION = {"high": "high", "medium": "medium", "low": "low"}
_BASELINE = {Status.INTRODUCED: "new", Status.PRE_EXISTING: "unchanged", Status.FIXED: "absent"}


def information_uri() -> str | None:
    """The project's homepage from the installed package metadata, if it names one."""
    try:
        urls = metadata.metadata("mmlc-bot").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in urls:
        label, _, url = str(entry).partition(",")
        if label.strip().lower() in ("homepage", "home", "documentation", "source"):
            url = url.strip()
            if url.startswith(("https://", "http://")):
                return url
    return None


# The simulator's checks (docs/simulator.md, "Checks"): their own text, as a
# rule.yaml gives the rules theirs.
SIMULATOR_RULES = {
    "SIM-UAF": ("Use after free", "a use, read, write or counter update of a freed object"),
    "SIM-DOUBLE-FREE": ("Double free", "a free of an object that was already freed"),
    "SIM-UNDERFLOW": (
        "Refcount underflow",
        "a refcount below zero, or a put on an object its last put already freed",
    ),
    "SIM-WORK-AFTER-FREE": (
        "Work outlives its object",
        "an object freed while its work is queued, work queued on a freed object, or a "
        "queued work starting after its object was freed",
    ),
    "SIM-LEAK": (
        "Object never freed",
        "when every actor has finished and queued work has drained, an explicitly freed "
        "tracked object is still allocated",
    ),
}
_SIM_PREFIX = (
    "The lifecycle simulator explores the interleavings of the paths a patch touches "
    "(release paths, teardown callbacks, work and RCU callbacks) and reports, only when "
    "the patch changes it: "
)


def rule_texts(rules_dir: Path | None = None) -> dict[str, tuple[str, str]]:
    """Rule ID -> (name, description) from each rules/<ID>/rule.yaml (its `name`
    and `rationale`) and the simulator's checks; {} when the rules cannot be read
    (each rule then falls back to its symbol)."""
    from bot.errors import BotError

    texts = {k: (name, _SIM_PREFIX + what + ".") for k, (name, what) in SIMULATOR_RULES.items()}
    try:
        from bot.analyze.engine import load_rules
        from bot.config import load_settings

        for rule in load_rules(rules_dir or load_settings().rules_dir):
            texts[rule.id] = (one_line(rule.name), one_line(rule.rationale))
    except (BotError, OSError):
        pass
    return texts


def sarif_document(
    review: Review, dismissed: Dismissed | None = None, *, rules_dir: Path | None = None
) -> dict[str, object]:
    """The review as a SARIF log with one run. Dismissed findings carry an
    external suppression (their dismissal's reason)."""
    rules, index = _rules(review.findings, rule_texts(rules_dir))
    driver: dict[str, object] = {
        "name": TOOL_NAME,
        "version": TOOL_VERSION,
        "semanticVersion": TOOL_VERSION,
        "rules": rules,
    }
    uri = information_uri()
    if uri:
        driver["informationUri"] = uri
    failed = [c for c in review.checks if not c.ok]
    invocation: dict[str, object] = {"executionSuccessful": not failed}
    if failed:
        invocation["toolExecutionNotifications"] = [
            {
                "level": "error",
                "message": {"text": f"check {one_line(c.check)} failed: {one_line(c.error)}"},
                "descriptor": {"id": one_line(c.check) or "check"},
            }
            for c in failed
        ]
    s = review.series
    tree = review.applied.tree
    root = (
        {SRCROOT: {"uri": Path(tree).resolve().as_uri().rstrip("/") + "/"}}
        if tree
        else {SRCROOT: {"description": {"text": "the kernel tree the series applies to"}}}
    )
    run: dict[str, object] = {
        "tool": {"driver": driver},
        "invocations": [invocation],
        "automationDetails": {"id": f"{TOOL_NAME}/{one_line(s.key)}/v{s.revision}"},
        "columnKind": "unicodeCodePoints",
        "originalUriBaseIds": root,
        "results": [_result(f, index, dismissed) for f in review.findings],
        "properties": {
            "series": {
                "key": s.key,
                "name": s.name,
                "version": s.version,
                "revision": s.revision,
                "total": s.total,
                "missing": list(s.missing),
            },
            "tree": review.applied.tree,
            "notes": list(review.notes),
        },
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def render_sarif(review: Review, dismissed: Dismissed | None = None) -> str:
    return json.dumps(sarif_document(review, dismissed), indent=2, ensure_ascii=False) + "\n"


def _rules(
    findings: tuple[Finding, ...], texts: dict[str, tuple[str, str]]
) -> tuple[list[dict[str, object]], dict[str, int]]:
    """One reportingDescriptor per rule ID seen, worded from the rule's own text
    (never from one finding's)."""
    rules: list[dict[str, object]] = []
    index: dict[str, int] = {}
    for f in findings:
        if f.rule_id in index:
            existing = rules[index[f.rule_id]]
            cfg = existing["defaultConfiguration"]
            assert isinstance(cfg, dict)
            if SEVERITY_RANK[f.severity] > SEVERITY_RANK[_severity_of(cfg["level"])]:
                cfg["level"] = _LEVEL[f.severity]
            continue
        index[f.rule_id] = len(rules)
        words = one_line(f.symbol.replace("-", " ")) or f.rule_id
        name, full = texts.get(f.rule_id, (words[:1].upper() + words[1:], ""))
        rules.append(
            {
                "id": f.rule_id,
                "name": f.symbol,
                "shortDescription": {"text": name},
                "fullDescription": {"text": full or name},
                "defaultConfiguration": {"level": _LEVEL[f.severity]},
                "properties": {
                    "tags": ["lifecycle", "mm"]
                    + (["simulator"] if f.rule_id.startswith("SIM") else []),
                    "precision": _PRECISION[f.confidence.value],
                    "problem.severity": _LEVEL[f.severity]
                    if f.severity is not Severity.INFO
                    else "recommendation",
                },
            }
        )
    return rules, index


def _severity_of(level: object) -> Severity:
    return next((s for s, lv in _LEVEL.items() if lv == level), Severity.INFO)


SRCROOT = "SRCROOT"


def _location(file: str, line: int | None, function: str | None) -> dict[str, object]:
    loc: dict[str, object] = {}
    if file:
        # Paths are relative to the kernel tree; SRCROOT resolves them (see run).
        artifact = {"uri": quote(file, safe="/-_.~"), "uriBaseId": SRCROOT}
        physical: dict[str, object] = {"artifactLocation": artifact}
        if line is not None and line >= 1:
            physical["region"] = {"startLine": line}
        loc["physicalLocation"] = physical
    if function:
        loc["logicalLocations"] = [{"name": function, "kind": "function"}]
    return loc


def _result(f: Finding, index: dict[str, int], dismissed: Dismissed | None) -> dict[str, object]:
    passed = f.status in (Status.FIXED, Status.FIXED_IN_SERIES)
    text = one_line(f.message) or one_line(f.question) or f"{f.rule_id} {f.symbol}"
    result: dict[str, object] = {
        "ruleId": f.rule_id,
        "ruleIndex": index[f.rule_id],
        "kind": "pass" if passed else "fail",
        "level": "none" if passed else _LEVEL[f.severity],
        "message": {"text": text},
        "locations": [_location(f.file, f.line, f.function)] if f.file or f.function else [],
        "partialFingerprints": {
            # Stable across line moves: rule, file, function, symbol.
            "mmLifecycle/v1": hashlib.sha256(
                f"{f.rule_id}\0{f.file}\0{f.function or ''}\0{f.symbol}".encode()
            ).hexdigest()[:32],
            # rule, symbol, object, function, evidence shape (bot/report/fingerprint.py)
            "mmLifecycleFinding/v1": fingerprint(f),
        },
        "properties": {
            "status": f.status.value,
            "confidence": f.confidence.value,
            "severity": f.severity.value,
            "patch": f.patch_number,
            "symbol": f.symbol,
            "location": location(f),
            "question": f.question,
            "evidence": list(f.evidence),
            "suggestion": f.suggestion,
            "fixed_by": f.fixed_by,
        },
    }
    if f.status in _BASELINE:
        result["baselineState"] = _BASELINE[f.status]
    d = dismissal_of(f, dismissed)
    if d is not None:
        result["suppressions"] = [
            {
                "kind": "external",
                "status": "accepted",
                "justification": one_line(d.reason) or "dismissed as not a bug",
                "properties": {"id": d.id, "by": d.by, "at": d.at, "everywhere": d.everywhere},
            }
        ]
    if f.trace is not None and f.trace.steps:
        result["codeFlows"] = [_code_flow(f.trace)]
    return result


def _code_flow(trace: Trace) -> dict[str, object]:
    """One threadFlow per actor; executionOrder numbers the steps across actors."""
    actors = list(trace.actors) + [s.actor for s in trace.steps if s.actor not in trace.actors]
    flows = []
    for actor in dict.fromkeys(actors):
        locations = []
        for order, step in enumerate(trace.steps, start=1):
            if step.actor != actor:
                continue
            loc = _location(step.file, step.line, step.function or None)
            loc["message"] = {"text": one_line(step.text) or one_line(step.function) or "step"}
            locations.append({"location": loc, "executionOrder": order})
        if not locations:
            continue
        flow: dict[str, object] = {"id": actor, "locations": locations}
        role = trace.actor_roles.get(actor)
        if role:
            flow["message"] = {"text": f"{actor}: {one_line(role)}"}
        flows.append(flow)
    code_flow: dict[str, object] = {"threadFlows": flows}
    if trace.summary:
        code_flow["message"] = {"text": one_line(trace.summary)}
    return code_flow

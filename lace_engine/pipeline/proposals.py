"""What the LLM may propose, parsed into plain data (the schemas are per call: proposal_schema.py).

The model never invents ids: proposals carry titles, budgets and content only;
Deterministic Apply assigns every id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from lace_engine.domain import BlockContent, BlockKind


@dataclass(frozen=True, slots=True)
class ChildPlan:
    title: str
    intent: str
    target_words: int


@dataclass(frozen=True, slots=True)
class SplitProposal:
    children: tuple[ChildPlan, ...]


@dataclass(frozen=True, slots=True)
class ContentProposal:
    blocks: tuple[BlockContent, ...]
    summary: str
    # Per block, the numbers of the prompt's passages it cites; empty when none were offered.
    cites: tuple[tuple[int, ...], ...] = ()


class ProposalFormatError(Exception):
    """The model's output does not have the proposal's shape; `errors` says what, for a re-ask."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def parse_split(data: Any) -> SplitProposal:
    """Reads a split proposal from decoded JSON, or raises ProposalFormatError."""
    if not isinstance(data, dict) or not isinstance(data.get("children"), list):
        raise ProposalFormatError(["expected an object with a 'children' array"])
    children: list[ChildPlan] = []
    errors: list[str] = []
    for i, child in enumerate(data["children"]):
        if not isinstance(child, dict):
            errors.append(f"children[{i}] is not an object")
            continue
        title, intent, target = child.get("title"), child.get("intent", ""), child.get("target_words")
        if not isinstance(title, str) or not isinstance(intent, str):
            errors.append(f"children[{i}]: title and intent must be strings")
            continue
        if isinstance(target, bool) or not isinstance(target, int | float):
            errors.append(f"children[{i}]: target_words must be an integer")
            continue
        # Whitespace is left for Apply to trim, so the repair is recorded (apply.repair_split).
        children.append(ChildPlan(title=title, intent=intent, target_words=int(target)))
    if errors:
        raise ProposalFormatError(errors)
    return SplitProposal(children=tuple(children))


def parse_content(data: Any) -> ContentProposal:
    """Reads a content proposal from decoded JSON, or raises ProposalFormatError."""
    if not isinstance(data, dict) or not isinstance(data.get("blocks"), list):
        raise ProposalFormatError(["expected an object with a 'blocks' array and a 'summary' string"])
    blocks: list[BlockContent] = []
    cites: list[tuple[int, ...]] = []
    errors: list[str] = []
    for i, raw in enumerate(data["blocks"]):
        if not isinstance(raw, dict):
            errors.append(f"blocks[{i}] is not an object")
            continue
        try:
            kind = BlockKind(str(raw.get("kind")))
        except ValueError:
            errors.append(f"blocks[{i}]: kind {raw.get('kind')!r} is not one of {[k.value for k in BlockKind]}")
            continue
        try:
            blocks.append(
                BlockContent(
                    kind=kind,
                    text=_str(raw.get("text", "")),
                    heading_level=int(raw.get("heading_level") or 0),
                    items=tuple(_str(x) for x in raw.get("items") or ()),
                    language=_str(raw.get("language", "")),
                    table_header=tuple(_str(x) for x in raw.get("table_header") or ()),
                    table_rows=tuple(tuple(_str(c) for c in row) for row in raw.get("table_rows") or ()),
                )
            )
        except (TypeError, ValueError) as exc:
            errors.append(f"blocks[{i}]: {exc}")
            continue
        numbers = raw.get("cites") or []
        if not isinstance(numbers, list) or any(isinstance(n, bool) or not isinstance(n, int) for n in numbers):
            errors.append(f"blocks[{i}]: cites must be an array of passage numbers")
            continue
        cites.append(tuple(numbers))
    summary = data.get("summary", "")
    if not isinstance(summary, str):
        errors.append("summary must be a string")
    if errors:
        raise ProposalFormatError(errors)
    return ContentProposal(blocks=tuple(blocks), summary=str(summary).strip(),
                           cites=tuple(cites) if any(cites) else ())


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


# The last part of every user prompt restates the task as one line of JSON, so that any
# model, and the offline provider and test servers, read the same facts unambiguously.
_TASK_RE = re.compile(r"^TASK: (\{.*\})\s*$", re.MULTILINE)


def render_task_spec(spec: dict[str, Any]) -> str:
    """Renders the machine-readable task line that ends every user prompt."""
    return "TASK: " + json.dumps(spec, sort_keys=True, ensure_ascii=False)


def parse_task_spec(prompt: str) -> dict[str, Any]:
    """Finds the task line in a prompt; raises ValueError when there is none."""
    matches = _TASK_RE.findall(prompt)
    if not matches:
        raise ValueError("prompt has no TASK line")
    spec = json.loads(matches[-1])
    if not isinstance(spec, dict):
        raise ValueError("TASK line is not an object")
    return spec

"""Builds the prompt for one node under a hard token budget, never from the whole document.

The prompt is assembled from small pieces whose token estimates are summed; because the
estimate is subadditive, the sum bounds the estimate of the joined text, so the budget
check is made once per piece instead of re-estimating the whole prompt after each drop.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from lace_engine.domain import Artifact, Node, NodeState, Passage, StepKind
from lace_engine.pipeline.proposals import render_task_spec
from lace_engine.pipeline.steps import STEPS, Step
from lace_engine.pipeline.tree import Tree
from lace_engine.tokens import estimate_tokens

# Chat formats wrap each message in role markers; a few tokens each, as OpenAI documents.
MESSAGE_OVERHEAD_TOKENS = 4

# Beyond a few dozen, more headings from far away add noise, not guidance, and walking
# the whole tree for them would cost more than the engine's per-node time budget.
MAX_COVERED_HEADINGS = 48
# One bloated field must not crowd everything else out of the budget.
MAX_SUMMARY_WORDS = 80
MAX_INTENT_WORDS = 60
MAX_OUTLINE_INTENT_WORDS = 30
# Passages are at most source_text.PASSAGE_MAX_WORDS long; the clip only guards the layout.
MAX_PASSAGE_WORDS = 200

_TRUNCATION_MARK = " [...]"
# How the covered-headings walk reached a node: going up the path, or down into a subtree.
_UP, _SIBLING, _OTHER = 0, 1, 2
_DocKey = tuple[tuple[int, int], ...]
_WORD_RE = re.compile(r"\S+")

_H_BRIEF = "\n# Brief\n"
_H_STYLE = "\n# Style\n"
_H_PATH = "\n# Where this section sits (outermost first)\n"
_H_NODE = "\n# This section\n"
_H_OUTLINE = "\n# Sibling sections, in document order\n"
_H_SUMMARIES = "\n# What the earlier sibling sections say\n"
_H_COVERED = "\n# Headings already covered elsewhere in the document (do not repeat them)\n"
# Said here, not in the system prompt, so that prompts without sources stay as they were.
_H_SOURCES = ("\n# Source passages: base the section on them. Give every block a \"cites\" array with the "
              "numbers of the passages it draws on ([] for none); cite only these numbers, and never for "
              "something the passage does not say\n")
_H_INSTRUCTION = "\n# Instruction for this attempt\n"
_H_FEEDBACK = "\n# Your previous answer was rejected; fix every point below\n"

_HEADER_COST = {h: estimate_tokens(h) for h in (
    _H_BRIEF, _H_STYLE, _H_PATH, _H_NODE, _H_OUTLINE, _H_SUMMARIES, _H_COVERED, _H_SOURCES, _H_INSTRUCTION,
    _H_FEEDBACK)}


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One piece of content that went into a prompt; content_hash covers exactly its text (for a
    passage, the passage's own text, so it equals Passage.content_hash)."""

    kind: str
    node_id: UUID | None
    content_hash: str
    passage_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class PromptContext:
    """The messages for one LLM call, the task they restate, and what went into them."""

    system: str
    user: str
    task: dict[str, Any]
    manifest: tuple[ManifestEntry, ...]
    estimated_tokens: int
    # The passages the prompt numbered, in number order: passage n is citable[n - 1].
    citable: tuple[UUID, ...] = ()


class ContextBudgetError(ValueError):
    """The parts that are never dropped (node, path, feedback, task) do not fit the budget."""


def content_hash(text: str) -> str:
    """The manifest's hash of a piece of prompt text: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def summary_line(node: Node) -> str:
    """What a written node contributes to a later sibling's prompt as its summary (manifest kind "summary")."""
    return f"- {_title(node)}: {_clip(node.summary, MAX_SUMMARY_WORDS)}"


def covered_line(node: Node) -> str:
    """What a node contributes to the headings covered elsewhere (manifest kind "covered_heading")."""
    return f"- {_title(node)}"


def contribution_hash(kind: str, node: Node) -> str | None:
    """The manifest hash of what `node` contributes now to a prompt as `kind`, for the kinds whose
    text depends on the node alone ("summary", "covered_heading"); None for the others."""
    if kind == "summary":
        return content_hash(summary_line(node))
    if kind == "covered_heading":
        return content_hash(covered_line(node))
    return None


@dataclass(frozen=True, slots=True)
class _Piece:
    # `text` is what the prompt holds (ending in a newline); the manifest hashes it without
    # that newline, i.e. exactly the content line(s).
    text: str
    kind: str | None = None
    node_id: UUID | None = None
    passage: Passage | None = None

    @property
    def cost(self) -> int:
        return estimate_tokens(self.text)


def build_split_context(
    artifact: Artifact,
    tree: Tree,
    node_id: UUID,
    *,
    child_count: int,
    instruction: str = "",
    feedback: Sequence[str] = (),
    budget_tokens: int = 6000,
) -> PromptContext:
    """The prompt asking for an outline of `child_count` children of the node."""
    if child_count < 1:
        raise ValueError(f"child_count must be at least 1, got {child_count}")
    return build_context(artifact, tree, node_id, STEPS[StepKind.SPLIT], child_count=child_count,
                         instruction=instruction, feedback=feedback, budget_tokens=budget_tokens)


def build_write_context(
    artifact: Artifact,
    tree: Tree,
    node_id: UUID,
    *,
    instruction: str = "",
    feedback: Sequence[str] = (),
    budget_tokens: int = 6000,
) -> PromptContext:
    """The prompt asking for the content blocks and summary of the node."""
    return build_context(artifact, tree, node_id, STEPS[StepKind.WRITE], instruction=instruction,
                         feedback=feedback, budget_tokens=budget_tokens)


def build_context(
    artifact: Artifact,
    tree: Tree,
    node_id: UUID,
    step: Step,
    *,
    child_count: int = 0,
    instruction: str = "",
    feedback: Sequence[str] = (),
    budget_tokens: int = 6000,
    passages: Sequence[Passage] = (),
) -> PromptContext:
    """The prompt for one step on the node, within `budget_tokens`; ContextBudgetError if it cannot fit.

    `passages` (best first) are numbered from 1 in that order, as many as fit after the outline."""
    node = tree.get(node_id)
    instruction = instruction.strip()
    task: dict[str, Any] = {
        "step": step.kind.value,
        "title": node.title,
        "intent": node.intent,
        "target_words": node.target_words,
        "depth": node.depth,
        "instruction": instruction,
        **step.task(node, child_count),
    }
    if passages:
        # As many digits as the final count can have, so the task's cost is not underestimated.
        task["citable"] = len(passages)

    ancestors = tree.ancestors(node_id)
    siblings = tree.siblings(node_id)
    # The parts never dropped, as (header, pieces): the path, the node, the instruction, the feedback.
    path = (_H_PATH, [_ancestor_piece(a) for a in ancestors])
    this = (_H_NODE, [_node_piece(node, step.node_lines(node, child_count))])
    asked = (_H_INSTRUCTION, [_Piece(instruction + "\n", "instruction")] if instruction else [])
    fix = (_H_FEEDBACK, [_Piece(f"- {_one_line(f)}\n", "feedback") for f in feedback if f.strip()])
    directive = _Piece("\n" + step.directive(_title(node), node, child_count) + "\n")
    task_piece = _Piece(render_task_spec(task))

    system_tokens = _system_tokens(step)
    mandatory_cost = directive.cost + task_piece.cost + sum(_section_cost(h, p) for h, p in (path, this, asked, fix))
    remaining = budget_tokens - system_tokens - 2 * MESSAGE_OVERHEAD_TOKENS - mandatory_cost
    if remaining < 0:
        raise ContextBudgetError(
            f"the prompt for node {node_id} needs at least {budget_tokens - remaining} tokens "
            f"(node, path, instruction, feedback and task), more than the budget of {budget_tokens}"
        )

    # Brief and style: kept whole whenever possible; shortened only when nothing optional is left.
    brief_text, style_text = artifact.brief.strip(), artifact.style.strip()
    brief_piece = _Piece(brief_text + "\n", "brief") if brief_text else None
    style_piece = _Piece(style_text + "\n", "style") if style_text else None
    brief_cost = _HEADER_COST[_H_BRIEF] + brief_piece.cost if brief_piece else 0
    style_cost = _HEADER_COST[_H_STYLE] + style_piece.cost if style_piece else 0
    optional: list[tuple[str, list[_Piece]]] = []
    if brief_cost + style_cost <= remaining:
        remaining -= brief_cost + style_cost
        index = next(i for i, s in enumerate(siblings) if s.id == node_id)
        optional = _fill(remaining, [
            (_H_OUTLINE, _outline_candidates(siblings, index)),
            (_H_SOURCES, _passage_candidates(passages)),
            (_H_SUMMARIES, _summary_candidates(siblings, index)),
            (_H_COVERED, _covered_candidates(tree, node, ancestors)),
        ])
    elif style_cost <= remaining:
        brief_piece = _truncated(brief_text, "brief", remaining - style_cost - _HEADER_COST[_H_BRIEF])
    else:
        brief_piece = None
        style_piece = _truncated(style_text, "style", remaining - _HEADER_COST[_H_STYLE])

    citable = tuple(p.passage.id for header, items in optional if header == _H_SOURCES
                    for p in items if p.passage is not None)
    if passages:
        task["citable"] = len(citable)
        task_piece = _Piece(render_task_spec(task))
    sections = [(_H_BRIEF, [brief_piece] if brief_piece else []), (_H_STYLE, [style_piece] if style_piece else []),
                path, this, *optional, asked, fix]
    pieces = [piece for header, items in sections if items for piece in (_Piece(header), *items)]
    pieces += [directive, task_piece]

    # Every header starts with a blank-line separator; the first one needs none.
    user = "".join(p.text for p in pieces)[1:]
    manifest = tuple(_manifest_entry(p) for p in pieces if p.kind is not None)
    estimated = system_tokens + estimate_tokens(user) + 2 * MESSAGE_OVERHEAD_TOKENS
    return PromptContext(system=step.system_prompt, user=user, task=task, manifest=manifest,
                         estimated_tokens=estimated, citable=citable)


def _manifest_entry(piece: _Piece) -> ManifestEntry:
    assert piece.kind is not None
    if piece.passage is not None:
        return ManifestEntry(piece.kind, None, piece.passage.content_hash, piece.passage.id)
    return ManifestEntry(piece.kind, piece.node_id, content_hash(piece.text.removesuffix("\n")))


def _section_cost(header: str, pieces: Sequence[_Piece]) -> int:
    return _HEADER_COST[header] + sum(p.cost for p in pieces) if pieces else 0


_Candidates = Iterator[tuple[_DocKey, _Piece]]


def _fill(remaining: int, sections: Sequence[tuple[str, _Candidates]]) -> list[tuple[str, list[_Piece]]]:
    """The optional sections' pieces that fit `remaining`, each section's in document order.

    Candidates come nearest (or best) first, and the first one that does not fit ends all inclusion:
    that equals dropping covered headings first, then summaries, then source passages (worst
    first), then outline entries (farthest first).
    """
    chosen: list[tuple[str, list[_Piece]]] = []
    for header, candidates in sections:
        picked: list[tuple[_DocKey, _Piece]] = []
        full = False
        for key, piece in candidates:
            cost = piece.cost + (0 if picked else _HEADER_COST[header])
            if cost > remaining:
                full = True
                break
            remaining -= cost
            picked.append((key, piece))
        if picked:
            chosen.append((header, [piece for _, piece in sorted(picked, key=lambda kp: kp[0])]))
        if full:
            break
    return chosen


def _outline_candidates(siblings: Sequence[Node], index: int) -> _Candidates:
    if len(siblings) <= 1:
        return
    for i in sorted(range(len(siblings)), key=lambda i: (abs(i - index), i)):
        yield ((i, 0),), _outline_piece(siblings[i], i, i == index)


def _summary_candidates(siblings: Sequence[Node], index: int) -> _Candidates:
    for i in range(index - 1, -1, -1):
        sibling = siblings[i]
        if sibling.state is NodeState.WRITTEN and sibling.summary.strip():
            yield ((i, 0),), _Piece(summary_line(sibling) + "\n", "summary", sibling.id)


def _passage_candidates(passages: Sequence[Passage]) -> _Candidates:
    # Numbered in rank order, and _fill takes a prefix: the numbers run 1..k without gaps.
    for i, passage in enumerate(passages):
        source = _one_line(passage.source_title) or "untitled source"
        yield ((i, 0),), _Piece(f"[{i + 1}] ({source}) {_clip(passage.text, MAX_PASSAGE_WORDS)}\n", "passage",
                                passage=passage)


def _covered_candidates(tree: Tree, node: Node, ancestors: Sequence[Node]) -> _Candidates:
    for other, key in _covered_nearest_first(tree, node, ancestors):
        yield key, _Piece(covered_line(other) + "\n", "covered_heading", other.id)


@functools.cache
def _system_tokens(step: Step) -> int:
    return estimate_tokens(step.system_prompt)


def _one_line(text: str) -> str:
    # Titles and list entries must stay on one line or they would break the prompt's layout.
    return " ".join(text.split())


def _title(node: Node) -> str:
    return _one_line(node.title) or "(untitled)"


def _clip(text: str, max_words: int) -> str:
    words = text.split()
    if len(words) <= max_words:
        return " ".join(words)
    return " ".join(words[:max_words]) + _TRUNCATION_MARK


def _ancestor_piece(node: Node) -> _Piece:
    line = f"{'  ' * node.depth}- {_title(node)} ({node.target_words} words)"
    intent = _clip(node.intent, MAX_INTENT_WORDS)
    if intent:
        line += f": {intent}"
    return _Piece(line + "\n", "ancestor", node.id)


def _node_piece(node: Node, step_lines: Sequence[str]) -> _Piece:
    lines = [
        f"Title: {_title(node)}",
        f"Intent: {_one_line(node.intent) or '(none given)'}",
        f"Target: {node.target_words} words",
        f"Depth: {node.depth} (the whole document is depth 0)",
        *step_lines,
    ]
    return _Piece("\n".join(lines) + "\n", "node", node.id)


def _outline_piece(node: Node, index: int, is_self: bool) -> _Piece:
    title = _title(node)
    line = f"{index + 1}. {title} [{node.state.value}, {node.target_words} words]"
    if is_self:
        line += " <- this section"
    intent = _clip(node.intent, MAX_OUTLINE_INTENT_WORDS)
    if intent:
        line += f": {intent}"
    return _Piece(line + "\n", "sibling", node.id)


def _truncated(text: str, kind: str, budget: int) -> _Piece | None:
    """The longest word prefix of `text` (marked as cut) whose piece fits `budget`, or None."""
    if not text or budget <= 0:
        return None
    ends = [m.end() for m in _WORD_RE.finditer(text)]
    lo, hi = 0, len(ends)  # invariant: a prefix of `lo` words fits (0 words: nothing to emit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate_tokens(text[: ends[mid - 1]] + _TRUNCATION_MARK + "\n") <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        return None
    return _Piece(text[: ends[lo - 1]] + _TRUNCATION_MARK + "\n", kind)


def _covered_nearest_first(tree: Tree, node: Node, ancestors: Sequence[Node]) -> Iterator[tuple[Node, _DocKey]]:
    """Written or split nodes off the node's path and sibling list, nearest first, at most a cap.

    A breadth-first walk from the node over parent and child links visits nodes in order of
    tree distance and touches only as much of the tree as it yields, however large the tree.
    The node's own subtree is never entered, so what is being regenerated is not "covered";
    ancestors are on the path and siblings are in the outline, so neither is repeated here.
    Each node comes with its document-order key: the (ordinal, id) pairs of its path, which
    sort exactly like Tree's preorder because a parent's key is a prefix of its children's.
    """
    if not ancestors:
        return
    parent = ancestors[-1]
    parent_key: _DocKey = tuple((a.ordinal, a.id.int) for a in ancestors)
    # Entries are (node, its key, the neighbour it was reached from, how it was reached); in
    # a tree, skipping the neighbour one came from is all a breadth-first walk needs.
    queue: deque[tuple[Node, _DocKey, Node, int]] = deque([(parent, parent_key, node, _UP)])
    yielded = 0
    while queue:
        current, key, came_from, how = queue.popleft()
        if how == _OTHER and current.state in _COVERED_STATES:
            yield current, key
            yielded += 1
            if yielded >= MAX_COVERED_HEADINGS:
                return
        if how == _UP:
            child_how = _SIBLING if current is parent else _OTHER
            for child in tree.children(current.id):
                if child is not came_from:
                    queue.append((child, (*key, (child.ordinal, child.id.int)), current, child_how))
            if len(key) > 1:
                up = tree.parent(current.id)
                if up is not None:
                    queue.append((up, key[:-1], current, _UP))
        else:
            for child in tree.children(current.id):
                queue.append((child, (*key, (child.ordinal, child.id.int)), current, _OTHER))


_COVERED_STATES = (NodeState.WRITTEN, NodeState.SPLIT)

"""Builds the prompt for one node under a hard token budget, never from the whole document.

The prompt is assembled from small pieces whose token estimates are summed; because the
estimate is subadditive, the sum bounds the estimate of the joined text, so the budget
check is made once per piece instead of re-estimating the whole prompt after each drop.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from lace_engine.model import Artifact, Node, NodeState, StepKind
from lace_engine.proposals import render_task_spec
from lace_engine.tokens import estimate_tokens
from lace_engine.tree import Tree

# Chat formats wrap each message in role markers; a few tokens each, as OpenAI documents.
MESSAGE_OVERHEAD_TOKENS = 4

# Beyond a few dozen, more headings from far away add noise, not guidance, and walking
# the whole tree for them would cost more than the engine's per-node time budget.
MAX_COVERED_HEADINGS = 48
# One bloated field must not crowd everything else out of the budget.
MAX_SUMMARY_WORDS = 80
MAX_INTENT_WORDS = 60
MAX_OUTLINE_INTENT_WORDS = 30

_TRUNCATION_MARK = " [...]"
# How the covered-headings walk reached a node: going up the path, or down into a subtree.
_UP, _SIBLING, _OTHER = 0, 1, 2
_DocKey = tuple[tuple[int, int], ...]
_WORD_RE = re.compile(r"\S+")

_SPLIT_SYSTEM = """\
You are a careful planner of long-form documents. A document grows as a tree of sections; \
you plan one section at a time by dividing it into subsections that writers fill in later.

Answer ONLY with one JSON object matching the given schema and nothing else: a "children" array \
whose entries each have a "title" (a short heading naming what that subsection is about), an \
"intent" and "target_words".

Rules:
- Propose exactly child_count children (child_count is in the TASK line at the end of the message).
- Their target_words must add up to the section's target_words; a total more than 10% off is rejected.
- Every title must be non-empty, distinct from the other titles you propose, and must not \
repeat a heading already covered elsewhere in the document.
- Each intent says in one or two sentences what that subsection must cover, so that together \
the subsections cover this section's intent without overlapping each other or other sections.
- Never invent ids or cross-references; answer with titles, intents and word budgets only.
- Follow the brief, the style and the instruction, if any. When feedback on a rejected \
previous answer is given, fix every point it raises.
- The TASK line at the end restates the task as JSON; it is authoritative."""

_WRITE_SYSTEM = """\
You are a careful writer of long-form documents. A document grows as a tree of sections; \
you write the content of one section, knowing where it sits and what the sections around it cover.

Answer ONLY with one JSON object matching the given schema and nothing else: a "blocks" array \
and a "summary".

Rules:
- Write about target_words words (target_words is in the TASK line at the end of the message); \
words inside code blocks do not count.
- Allowed block kinds: paragraph, heading, bullet_list, ordered_list, code, quote, table. \
Give every field; leave unused ones empty ("", [] or 0).
- paragraph, heading and quote use text; bullet_list and ordered_list use items, one string \
per item; code uses text and language; table uses table_header and table_rows, every row \
with as many cells as the header.
- heading_level is 1 or 2, relative to this section: 1 is a subheading directly under the \
section's own title. Use headings sparingly.
- Do not repeat the section's title as a heading; it is rendered for you. Do not repeat \
headings already covered elsewhere in the document.
- Stay within this section's intent: do not cover what the other sections cover, and do not \
introduce or conclude the whole document unless the intent asks for it.
- summary: one or two sentences on what this section says, for the writers of later sections.
- Never invent ids or cross-references to sections that are not listed.
- Follow the brief, the style and the instruction, if any. When feedback on a rejected \
previous answer is given, fix every point it raises.
- The TASK line at the end restates the task as JSON; it is authoritative."""

_SYSTEM_TOKENS = {
    StepKind.SPLIT: estimate_tokens(_SPLIT_SYSTEM),
    StepKind.WRITE: estimate_tokens(_WRITE_SYSTEM),
}

_H_BRIEF = "\n# Brief\n"
_H_STYLE = "\n# Style\n"
_H_PATH = "\n# Where this section sits (outermost first)\n"
_H_NODE = "\n# This section\n"
_H_OUTLINE = "\n# Sibling sections, in document order\n"
_H_SUMMARIES = "\n# What the earlier sibling sections say\n"
_H_COVERED = "\n# Headings already covered elsewhere in the document (do not repeat them)\n"
_H_INSTRUCTION = "\n# Instruction for this attempt\n"
_H_FEEDBACK = "\n# Your previous answer was rejected; fix every point below\n"

_H_BRIEF_COST = estimate_tokens(_H_BRIEF)
_H_STYLE_COST = estimate_tokens(_H_STYLE)
_H_PATH_COST = estimate_tokens(_H_PATH)
_H_NODE_COST = estimate_tokens(_H_NODE)
_H_OUTLINE_COST = estimate_tokens(_H_OUTLINE)
_H_SUMMARIES_COST = estimate_tokens(_H_SUMMARIES)
_H_COVERED_COST = estimate_tokens(_H_COVERED)
_H_INSTRUCTION_COST = estimate_tokens(_H_INSTRUCTION)
_H_FEEDBACK_COST = estimate_tokens(_H_FEEDBACK)


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One piece of content that went into a prompt; content_hash covers exactly its text."""

    kind: str
    node_id: UUID | None
    content_hash: str


@dataclass(frozen=True, slots=True)
class PromptContext:
    """The messages for one LLM call, the task they restate, and what went into them."""

    system: str
    user: str
    task: dict[str, Any]
    manifest: tuple[ManifestEntry, ...]
    estimated_tokens: int


class ContextBudgetError(ValueError):
    """The parts that are never dropped (node, path, feedback, task) do not fit the budget."""


def content_hash(text: str) -> str:
    """The manifest's hash of a piece of prompt text: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class _Piece:
    # `text` is what the prompt holds (ending in a newline); the manifest hashes it without
    # that newline, i.e. exactly the content line(s).
    text: str
    kind: str | None = None
    node_id: UUID | None = None

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
    return _build(artifact, tree, node_id, StepKind.SPLIT, child_count, instruction, feedback, budget_tokens)


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
    return _build(artifact, tree, node_id, StepKind.WRITE, 0, instruction, feedback, budget_tokens)


def _build(
    artifact: Artifact,
    tree: Tree,
    node_id: UUID,
    step: StepKind,
    child_count: int,
    instruction: str,
    feedback: Sequence[str],
    budget_tokens: int,
) -> PromptContext:
    node = tree.get(node_id)
    instruction = instruction.strip()
    system = _SPLIT_SYSTEM if step is StepKind.SPLIT else _WRITE_SYSTEM

    task: dict[str, Any] = {
        "step": step.value,
        "title": node.title,
        "intent": node.intent,
        "target_words": node.target_words,
        "depth": node.depth,
        "instruction": instruction,
    }
    if step is StepKind.SPLIT:
        task["child_count"] = child_count

    ancestors = tree.ancestors(node_id)
    siblings = tree.siblings(node_id)
    ancestor_pieces = [_ancestor_piece(a) for a in ancestors]
    node_piece = _node_piece(node, step, child_count)
    instruction_piece = _Piece(instruction + "\n", "instruction") if instruction else None
    feedback_pieces = [_Piece(f"- {_one_line(f)}\n", "feedback") for f in feedback if f.strip()]
    directive = _Piece("\n" + _directive(node, step, child_count) + "\n")
    task_piece = _Piece(render_task_spec(task))

    mandatory_cost = node_piece.cost + _H_NODE_COST + directive.cost + task_piece.cost
    if ancestor_pieces:
        mandatory_cost += _H_PATH_COST + sum(p.cost for p in ancestor_pieces)
    if instruction_piece is not None:
        mandatory_cost += _H_INSTRUCTION_COST + instruction_piece.cost
    if feedback_pieces:
        mandatory_cost += _H_FEEDBACK_COST + sum(p.cost for p in feedback_pieces)

    user_budget = budget_tokens - _SYSTEM_TOKENS[step] - 2 * MESSAGE_OVERHEAD_TOKENS
    remaining = user_budget - mandatory_cost
    if remaining < 0:
        raise ContextBudgetError(
            f"the prompt for node {node_id} needs at least {budget_tokens - remaining} tokens "
            f"(node, path, instruction, feedback and task), more than the budget of {budget_tokens}"
        )

    # Brief and style: kept whole whenever possible; shortened only when nothing optional is left.
    brief_text, style_text = artifact.brief.strip(), artifact.style.strip()
    brief_piece = _Piece(brief_text + "\n", "brief") if brief_text else None
    style_piece = _Piece(style_text + "\n", "style") if style_text else None
    brief_cost = _H_BRIEF_COST + brief_piece.cost if brief_piece else 0
    style_cost = _H_STYLE_COST + style_piece.cost if style_piece else 0
    room_for_optional = True
    if brief_cost + style_cost <= remaining:
        remaining -= brief_cost + style_cost
    else:
        room_for_optional = False
        if style_cost <= remaining:
            remaining -= style_cost
            brief_piece = _truncated(brief_text, "brief", remaining - _H_BRIEF_COST)
        else:
            brief_piece = None
            style_piece = _truncated(style_text, "style", remaining - _H_STYLE_COST)

    # Optional lists, nearest first; the first item that does not fit ends all inclusion,
    # which equals dropping covered headings, then summaries, then outline entries, farthest first.
    index = next(i for i, s in enumerate(siblings) if s.id == node_id)
    outline: dict[int, _Piece] = {}
    summaries: dict[int, _Piece] = {}
    covered: list[tuple[_DocKey, _Piece]] = []
    if room_for_optional:
        show_outline = len(siblings) > 1
        nearest = sorted(range(len(siblings)), key=lambda i: (abs(i - index), i)) if show_outline else []
        for i in nearest:
            piece = _outline_piece(siblings[i], i, i == index)
            cost = piece.cost + (_H_OUTLINE_COST if not outline else 0)
            if cost > remaining:
                room_for_optional = False
                break
            remaining -= cost
            outline[i] = piece
    if room_for_optional:
        for i in range(index - 1, -1, -1):
            sibling = siblings[i]
            if sibling.state is not NodeState.WRITTEN or not sibling.summary.strip():
                continue
            piece = _Piece(
                f"- {_title(sibling)}: {_clip(sibling.summary, MAX_SUMMARY_WORDS)}\n",
                "summary",
                sibling.id,
            )
            cost = piece.cost + (_H_SUMMARIES_COST if not summaries else 0)
            if cost > remaining:
                room_for_optional = False
                break
            remaining -= cost
            summaries[i] = piece
    if room_for_optional:
        for other, key in _covered_nearest_first(tree, node, ancestors):
            piece = _Piece(f"- {_title(other)}\n", "covered_heading", other.id)
            cost = piece.cost + (_H_COVERED_COST if not covered else 0)
            if cost > remaining:
                break
            remaining -= cost
            covered.append((key, piece))
        # Chosen by proximity, rendered in document order.
        covered.sort(key=lambda kp: kp[0])

    pieces: list[_Piece] = []
    if brief_piece is not None:
        pieces += [_Piece(_H_BRIEF), brief_piece]
    if style_piece is not None:
        pieces += [_Piece(_H_STYLE), style_piece]
    if ancestor_pieces:
        pieces += [_Piece(_H_PATH), *ancestor_pieces]
    pieces += [_Piece(_H_NODE), node_piece]
    if outline:
        pieces += [_Piece(_H_OUTLINE), *(outline[i] for i in sorted(outline))]
    if summaries:
        pieces += [_Piece(_H_SUMMARIES), *(summaries[i] for i in sorted(summaries))]
    if covered:
        pieces += [_Piece(_H_COVERED), *(p for _, p in covered)]
    if instruction_piece is not None:
        pieces += [_Piece(_H_INSTRUCTION), instruction_piece]
    if feedback_pieces:
        pieces += [_Piece(_H_FEEDBACK), *feedback_pieces]
    pieces += [directive, task_piece]

    # Every header starts with a blank-line separator; the first one needs none.
    user = "".join(p.text for p in pieces)[1:]
    manifest = tuple(
        ManifestEntry(p.kind, p.node_id, content_hash(p.text.removesuffix("\n"))) for p in pieces if p.kind is not None
    )
    estimated = _SYSTEM_TOKENS[step] + estimate_tokens(user) + 2 * MESSAGE_OVERHEAD_TOKENS
    return PromptContext(system=system, user=user, task=task, manifest=manifest, estimated_tokens=estimated)


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


def _node_piece(node: Node, step: StepKind, child_count: int) -> _Piece:
    lines = [
        f"Title: {_title(node)}",
        f"Intent: {_one_line(node.intent) or '(none given)'}",
        f"Target: {node.target_words} words",
        f"Depth: {node.depth} (the whole document is depth 0)",
    ]
    if step is StepKind.SPLIT:
        lines.append(f"Subsections to propose: {child_count}")
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


def _directive(node: Node, step: StepKind, child_count: int) -> str:
    title = _title(node)
    if step is StepKind.SPLIT:
        return (
            f'Propose exactly {child_count} subsections of "{title}" whose target_words add up to '
            f"{node.target_words}. Answer with the JSON object only."
        )
    return (
        f'Write the content of "{title}": about {node.target_words} words of blocks, and a summary '
        "of one or two sentences. Answer with the JSON object only."
    )


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

"""Artifact-level validation: structure, headings and LongWriter's length score."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from lace_engine.domain import Artifact, Block, BlockKind, Node, NodeState
from lace_engine.pipeline.quality import QualityReport
from lace_engine.pipeline.tree import Tree

MIN_HEADING_LEVEL = 1
MAX_HEADING_LEVEL = 4
# HTML and Markdown stop at h6; a node at depth d renders its own heading at level d + 1.
MAX_RENDERED_DEPTH = 6


def length_score(target: int, actual: int) -> float:
    """LongWriter's S_l (THUDM/LongWriter evaluation/eval_length.py), 0 to 100.

    Overshooting loses a third of the score per 100% over, undershooting half per 100%
    of the shortfall ratio. An empty text scores 0; a zero target is met only by nothing.
    """
    if target <= 0:
        return 100.0 if actual <= 0 else 0.0
    if actual <= 0:
        return 0.0
    if actual > target:
        return 100.0 * max(0.0, 1.0 - (actual / target - 1.0) / 3.0)
    return 100.0 * max(0.0, 1.0 - (target / actual - 1.0) / 2.0)


@dataclass(frozen=True, slots=True)
class LeafLength:
    """Length adherence of one leaf node (mirrors lace.v1.LeafLength)."""

    node_id: UUID
    target_words: int
    actual_words: int
    score: float

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": str(self.node_id),
            "target_words": self.target_words,
            "actual_words": self.actual_words,
            "score": self.score,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LeafLength:
        return cls(
            node_id=UUID(str(data["node_id"])),
            target_words=int(data.get("target_words", 0)),
            actual_words=int(data.get("actual_words", 0)),
            score=float(data.get("score", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """The end-of-run report (mirrors lace.v1.ValidationReport); `ok` iff there are no problems."""

    ok: bool
    problems: tuple[str, ...]
    nodes_planned: int
    nodes_written: int
    target_words: int
    actual_words: int
    document_length_score: float
    mean_leaf_length_score: float
    leaves: tuple[LeafLength, ...]
    quality: QualityReport | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict with the proto's field names."""
        return {
            **({"quality": self.quality.to_json()} if self.quality is not None else {}),
            "ok": self.ok,
            "problems": list(self.problems),
            "nodes_planned": self.nodes_planned,
            "nodes_written": self.nodes_written,
            "target_words": self.target_words,
            "actual_words": self.actual_words,
            "document_length_score": self.document_length_score,
            "mean_leaf_length_score": self.mean_leaf_length_score,
            "leaves": [leaf.to_json() for leaf in self.leaves],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ValidationReport:
        """Reads what to_json wrote; absent fields take their proto3 defaults."""
        return cls(
            ok=bool(data.get("ok", False)),
            problems=tuple(str(p) for p in data.get("problems", ())),
            nodes_planned=int(data.get("nodes_planned", 0)),
            nodes_written=int(data.get("nodes_written", 0)),
            target_words=int(data.get("target_words", 0)),
            actual_words=int(data.get("actual_words", 0)),
            document_length_score=float(data.get("document_length_score", 0.0)),
            mean_leaf_length_score=float(data.get("mean_leaf_length_score", 0.0)),
            leaves=tuple(LeafLength.from_json(leaf) for leaf in data.get("leaves", ())),
            quality=QualityReport.from_json(data["quality"]) if "quality" in data else None,
        )


def validate_artifact(
    artifact: Artifact,
    tree: Tree,
    blocks_by_node: Mapping[UUID, Sequence[Block]],
    scope: UUID | None = None,
) -> ValidationReport:
    """Checks the tree (or the subtree at `scope`) is complete and well-formed, and scores its length."""
    problems: list[str] = []
    if scope is None:
        if tree.root.id != artifact.root_node_id:
            problems.append(f"tree root {tree.root.id} is not the artifact's root node {artifact.root_node_id}")
        nodes = tuple(tree.preorder())
        for node_id in sorted(blocks_by_node, key=lambda i: i.int):
            if node_id not in tree and blocks_by_node[node_id]:
                problems.append(f"blocks belong to node {node_id}, which is not in the tree")
        doc_target = artifact.target_words
    else:
        nodes = tree.subtree(scope)
        doc_target = tree.get(scope).target_words

    leaves: list[LeafLength] = []
    nodes_written = 0
    total_words = 0
    for node in nodes:
        blocks = blocks_by_node.get(node.id, ())
        words = sum(b.content.words() for b in blocks)
        total_words += words
        kids = tree.children(node.id)
        problems.extend(_node_problems(node, kids, blocks))
        if not kids:
            leaves.append(LeafLength(node.id, node.target_words, words, length_score(node.target_words, words)))
            if node.state is NodeState.WRITTEN:
                nodes_written += 1

    mean_leaf = sum(leaf.score for leaf in leaves) / len(leaves) if leaves else 0.0
    return ValidationReport(
        ok=not problems,
        problems=tuple(problems),
        nodes_planned=len(nodes),
        nodes_written=nodes_written,
        target_words=doc_target,
        actual_words=total_words,
        document_length_score=length_score(doc_target, total_words),
        mean_leaf_length_score=mean_leaf,
        leaves=tuple(leaves),
    )


def _label(node: Node) -> str:
    return f'node {node.id} "{" ".join(node.title.split())}"'


def _norm(text: str) -> str:
    # Headings that differ only in case or spacing read as the same heading.
    return " ".join(text.split()).casefold()


def _node_problems(node: Node, kids: Sequence[Node], blocks: Sequence[Block]) -> list[str]:
    problems: list[str] = []
    if node.state is NodeState.PLANNED:
        problems.append(f"{_label(node)} is planned but was never written")
    elif node.state is NodeState.FAILED:
        problems.append(f"{_label(node)} failed")
    elif node.state is NodeState.SPLIT and not kids:
        problems.append(f"{_label(node)} is split but has no children")
    elif node.state is NodeState.WRITTEN and not blocks:
        problems.append(f"{_label(node)} is written but has no blocks")

    seen_titles: set[str] = set()
    for kid in kids:
        key = _norm(kid.title)
        if key in seen_titles:
            problems.append(f'{_label(node)} has two child sections titled "{kid.title}"')
        seen_titles.add(key)

    seen_headings: set[str] = set()
    for block in sorted(blocks, key=lambda b: (b.ordinal, b.id.int)):
        content = block.content
        if content.kind is not BlockKind.HEADING:
            continue
        level = content.heading_level
        if not MIN_HEADING_LEVEL <= level <= MAX_HEADING_LEVEL:
            problems.append(
                f"{_label(node)}: heading block {block.id} has level {level}, "
                f"outside {MIN_HEADING_LEVEL}..{MAX_HEADING_LEVEL}"
            )
        elif node.depth + level > MAX_RENDERED_DEPTH:
            problems.append(
                f"{_label(node)}: heading block {block.id} has level {level} at depth {node.depth}, "
                f"deeper than {MAX_RENDERED_DEPTH} levels"
            )
        key = _norm(content.text)
        if not key:
            problems.append(f"{_label(node)}: heading block {block.id} is empty")
        elif key in seen_headings:
            problems.append(f'{_label(node)} has the heading "{content.text}" twice')
        seen_headings.add(key)
    return problems

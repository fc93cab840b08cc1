"""Validator: LongWriter's length score and one problem per broken rule."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lace_engine.domain import Artifact, Block, BlockContent, BlockKind, Node, NodeState, Origin
from lace_engine.pipeline.tree import Tree
from lace_engine.pipeline.validator import LeafLength, ValidationReport, length_score, validate_artifact

AID = uuid.UUID(int=0xA)
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def test_length_score_known_values() -> None:
    assert length_score(1000, 1000) == 100.0
    assert length_score(1000, 2000) == pytest.approx(66.6667, abs=1e-3)
    assert length_score(1000, 500) == pytest.approx(50.0)
    assert length_score(1000, 4000) == 0.0
    assert length_score(1000, 5000) == 0.0
    assert length_score(1000, 250) == 0.0
    assert length_score(1000, 1300) == pytest.approx(90.0)
    assert length_score(1000, 800) == pytest.approx(87.5)
    assert length_score(1000, 0) == 0.0
    assert length_score(0, 0) == 100.0
    assert length_score(0, 10) == 0.0


@given(st.integers(1, 100_000), st.integers(0, 400_000))
def test_length_score_range(target: int, actual: int) -> None:
    score = length_score(target, actual)
    assert 0.0 <= score <= 100.0
    assert (score == 100.0) == (actual == target)


def _node(n: int, parent: Node | None, ordinal: int, title: str, target: int, state: NodeState) -> Node:
    return Node(
        id=uuid.UUID(int=n),
        artifact_id=AID,
        parent_id=parent.id if parent else None,
        ordinal=ordinal,
        depth=parent.depth + 1 if parent else 0,
        title=title,
        intent="",
        target_words=target,
        state=state,
    )


def _block(n: int, node: Node, ordinal: int, content: BlockContent) -> Block:
    return Block(uuid.UUID(int=1000 + n), AID, node.id, ordinal, content, Origin.LLM, False, 1)


def _para(words: int) -> BlockContent:
    return BlockContent(BlockKind.PARAGRAPH, text=" ".join(["word"] * words))


def _doc() -> tuple[Artifact, list[Node], dict[uuid.UUID, list[Block]]]:
    root = _node(1, None, 0, "Doc", 2000, NodeState.SPLIT)
    a = _node(2, root, 0, "A", 1000, NodeState.WRITTEN)
    b = _node(3, root, 1, "B", 1000, NodeState.WRITTEN)
    blocks = {
        a.id: [_block(1, a, 0, _para(1000))],
        b.id: [
            _block(2, b, 0, BlockContent(BlockKind.HEADING, text="Part", heading_level=1)),
            _block(3, b, 1, _para(400)),
            _block(4, b, 2, BlockContent(BlockKind.CODE, text="x = 1 " * 50, language="python")),
            _block(5, b, 3, BlockContent(BlockKind.BULLET_LIST, items=("one two", "three"))),
        ],
    }
    artifact = Artifact(AID, "Doc", "brief", "", 2000, root.id, 5, 0, None, T0, T0)
    return artifact, [root, a, b], blocks


def _validate(
    artifact: Artifact,
    nodes: Sequence[Node],
    blocks: dict[uuid.UUID, list[Block]],
    scope: uuid.UUID | None = None,
) -> ValidationReport:
    return validate_artifact(artifact, Tree(nodes), blocks, scope)


def test_valid_document() -> None:
    artifact, nodes, blocks = _doc()
    report = _validate(artifact, nodes, blocks)
    assert report.ok and report.problems == ()
    assert report.nodes_planned == 3 and report.nodes_written == 2
    assert report.target_words == 2000
    assert report.actual_words == 1000 + 1 + 400 + 3  # heading, paragraph, list; code does not count
    assert report.document_length_score == pytest.approx(length_score(2000, 1404))
    assert [leaf.actual_words for leaf in report.leaves] == [1000, 404]
    assert report.leaves[0] == LeafLength(nodes[1].id, 1000, 1000, 100.0)
    assert report.mean_leaf_length_score == pytest.approx((100.0 + length_score(1000, 404)) / 2)


def test_round_trip_json() -> None:
    artifact, nodes, blocks = _doc()
    nodes[2] = dataclasses.replace(nodes[2], state=NodeState.FAILED)
    report = _validate(artifact, nodes, blocks)
    data = json.loads(json.dumps(report.to_json()))
    assert data["leaves"][0]["node_id"] == str(nodes[1].id)
    assert ValidationReport.from_json(data) == report
    assert ValidationReport.from_json({}) == ValidationReport(False, (), 0, 0, 0, 0, 0.0, 0.0, ())


def _problems(artifact: Artifact, nodes: Sequence[Node], blocks: dict[uuid.UUID, list[Block]]) -> str:
    report = _validate(artifact, nodes, blocks)
    assert not report.ok
    return "\n".join(report.problems)


def test_unfinished_nodes_are_problems() -> None:
    artifact, nodes, blocks = _doc()
    assert "never written" in _problems(
        artifact, [*nodes[:2], dataclasses.replace(nodes[2], state=NodeState.PLANNED)], blocks
    )
    assert "failed" in _problems(artifact, [*nodes[:2], dataclasses.replace(nodes[2], state=NodeState.FAILED)], blocks)
    assert "split but has no children" in _problems(
        artifact, [*nodes[:2], dataclasses.replace(nodes[2], state=NodeState.SPLIT)], blocks
    )
    assert "no blocks" in _problems(artifact, nodes, {nodes[1].id: blocks[nodes[1].id]})


def test_heading_problems() -> None:
    artifact, nodes, blocks = _doc()
    b = nodes[2]

    def with_heading(level: int, text: str = "Other") -> dict[uuid.UUID, list[Block]]:
        extra = _block(9, b, 9, BlockContent(BlockKind.HEADING, text=text, heading_level=level))
        return {**blocks, b.id: [*blocks[b.id], extra]}

    assert "outside 1..4" in _problems(artifact, nodes, with_heading(0))
    assert "outside 1..4" in _problems(artifact, nodes, with_heading(5))
    assert "twice" in _problems(artifact, nodes, with_heading(2, "  part "))
    assert "is empty" in _problems(artifact, nodes, with_heading(1, " "))
    # Depth 3 + level 4 runs past h6.
    deep = [
        nodes[0],
        _node(10, nodes[0], 2, "X", 10, NodeState.SPLIT),
    ]
    deep.append(_node(11, deep[1], 0, "Y", 10, NodeState.SPLIT))
    deep.append(_node(12, deep[2], 0, "Z", 10, NodeState.WRITTEN))
    heading = _block(20, deep[3], 0, BlockContent(BlockKind.HEADING, text="H", heading_level=4))
    problems = _problems(artifact, [*nodes, *deep[1:]], {**blocks, deep[3].id: [heading]})
    assert "deeper than 6 levels" in problems
    fine = _block(20, deep[3], 0, BlockContent(BlockKind.HEADING, text="H", heading_level=3))
    assert _validate(artifact, [*nodes, *deep[1:]], {**blocks, deep[3].id: [fine]}).ok


def test_duplicate_sibling_titles() -> None:
    artifact, nodes, blocks = _doc()
    twin = dataclasses.replace(nodes[2], title=" a ")
    assert "two child sections titled" in _problems(artifact, [nodes[0], nodes[1], twin], blocks)


def test_tree_and_blocks_must_agree() -> None:
    artifact, nodes, blocks = _doc()
    stray = uuid.UUID(int=4242)
    assert "not in the tree" in _problems(artifact, nodes, {**blocks, stray: [_block(30, nodes[1], 0, _para(1))]})
    other_root = dataclasses.replace(artifact, root_node_id=stray)
    assert "artifact's root node" in _problems(other_root, nodes, blocks)


def test_scope_restricts_to_the_subtree() -> None:
    artifact, nodes, blocks = _doc()
    broken = [*nodes[:2], dataclasses.replace(nodes[2], state=NodeState.PLANNED)]
    scoped = _validate(artifact, broken, blocks, scope=nodes[1].id)
    assert scoped.ok
    assert scoped.nodes_planned == 1 and scoped.nodes_written == 1
    assert scoped.target_words == 1000 and scoped.actual_words == 1000
    assert scoped.document_length_score == 100.0
    assert [leaf.node_id for leaf in scoped.leaves] == [nodes[1].id]
    assert not _validate(artifact, broken, blocks, scope=nodes[2].id).ok

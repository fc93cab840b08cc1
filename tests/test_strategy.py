"""Strategy Selector: split-or-write rules and the split budget check."""

from __future__ import annotations

import math
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lace_engine.domain import Node, NodeState, RunOptions, StepKind
from lace_engine.pipeline.strategy import decide, split_budget_ok


def _node(target: int, depth: int) -> Node:
    return Node(
        id=uuid.UUID(int=1),
        artifact_id=uuid.UUID(int=2),
        parent_id=None if depth == 0 else uuid.UUID(int=3),
        ordinal=0,
        depth=depth,
        title="t",
        intent="",
        target_words=target,
        state=NodeState.PLANNED,
    )


nodes = st.builds(_node, target=st.integers(1, 200_000), depth=st.integers(0, 10))
options = st.builds(
    RunOptions,
    leaf_words=st.integers(1, 5000),
    max_depth=st.integers(1, 8),
    sibling_concurrency=st.integers(1, 64),
    max_proposal_retries=st.integers(0, 5),
)
realistic_options = st.builds(RunOptions, leaf_words=st.integers(200, 5000), max_depth=st.integers(1, 8))


@settings(max_examples=300)
@given(nodes, options)
def test_write_iff_small_or_deep(node: Node, opts: RunOptions) -> None:
    decision = decide(node, opts)
    small = node.target_words <= opts.leaf_words
    deep = node.depth >= opts.max_depth
    assert (decision.step is StepKind.WRITE) == (small or deep)
    if decision.step is StepKind.WRITE:
        assert decision.child_count == 0
    else:
        assert 2 <= decision.child_count <= 8
        expected = min(max(math.ceil(node.target_words / opts.leaf_words), 2), 8)
        assert decision.child_count == expected
    assert str(node.target_words) in decision.reason and str(opts.leaf_words) in decision.reason


@settings(max_examples=300)
@given(nodes, options)
def test_equal_split_with_remainder_passes(node: Node, opts: RunOptions) -> None:
    decision = decide(node, opts)
    if decision.step is not StepKind.SPLIT:
        return
    n, target = decision.child_count, node.target_words
    children = [target // n + (1 if i < target % n else 0) for i in range(n)]
    assert sum(children) == target
    assert split_budget_ok(target, children)


@settings(max_examples=300)
@given(nodes, realistic_options)
def test_equal_split_rounded_down_passes(node: Node, opts: RunOptions) -> None:
    decision = decide(node, opts)
    if decision.step is not StepKind.SPLIT:
        return
    n = decision.child_count
    assert split_budget_ok(node.target_words, [node.target_words // n] * n)
    assert split_budget_ok(node.target_words, [round(node.target_words / n)] * n)


def test_reasons_carry_the_numbers() -> None:
    opts = RunOptions(leaf_words=1000, max_depth=4)
    assert decide(_node(800, 2), opts).reason == "target 800 words <= leaf size 1000"
    deep = decide(_node(5000, 4), opts)
    assert deep.step is StepKind.WRITE and "depth 4 >= max depth 4" in deep.reason
    split = decide(_node(4200, 1), opts)
    assert split.step is StepKind.SPLIT and split.child_count == 5
    assert split.reason.startswith("target 4200 words > leaf size 1000 at depth 1 < max depth 4")
    assert decide(_node(1001, 0), opts).child_count == 2
    clamped = decide(_node(100_000, 0), opts)
    assert clamped.child_count == 8 and "clamped" in clamped.reason
    with pytest.raises(ValueError):
        decide(_node(10, 0), RunOptions(leaf_words=0))


def test_split_budget_ok_boundaries() -> None:
    assert split_budget_ok(1000, [500, 500])
    assert split_budget_ok(1000, [550, 550])  # +10%
    assert split_budget_ok(1000, [450, 450])  # -10%
    assert not split_budget_ok(1000, [551, 550])
    assert not split_budget_ok(1000, [449, 450])
    assert not split_budget_ok(1000, [])
    assert split_budget_ok(1000, [600, 600], tolerance=0.2)
    assert split_budget_ok(0, [])

"""The Strategy Selector: whether a node is written in one call or split one level further."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lace_engine.domain import Node, RunOptions, StepKind

MIN_CHILDREN = 2
MAX_CHILDREN = 8


@dataclass(frozen=True, slots=True)
class StrategyDecision:
    """What to do with a node, why (with the numbers), and how many children a split asks for."""

    step: StepKind
    reason: str
    child_count: int


def decide(node: Node, options: RunOptions) -> StrategyDecision:
    """WRITE a node that fits one call or sits at the depth limit; otherwise SPLIT it one level."""
    leaf, target, depth, max_depth = options.leaf_words, node.target_words, node.depth, options.max_depth
    if leaf < 1:
        raise ValueError(f"leaf_words must be positive, got {leaf}")
    if target <= leaf:
        return StrategyDecision(StepKind.WRITE, f"target {target} words <= leaf size {leaf}", 0)
    if depth >= max_depth:
        return StrategyDecision(
            StepKind.WRITE,
            f"target {target} words > leaf size {leaf} but depth {depth} >= max depth {max_depth}",
            0,
        )
    wanted = -(-target // leaf)  # ceil without float rounding
    count = min(max(wanted, MIN_CHILDREN), MAX_CHILDREN)
    clamp = "" if count == wanted else f", clamped to {MIN_CHILDREN}..{MAX_CHILDREN}"
    return StrategyDecision(
        StepKind.SPLIT,
        f"target {target} words > leaf size {leaf} at depth {depth} < max depth {max_depth}: "
        f"split into {count} children (ceil({target}/{leaf}) = {wanted}{clamp})",
        count,
    )


def split_budget_ok(parent_target: int, child_targets: Sequence[int], tolerance: float = 0.10) -> bool:
    """Whether the children's targets add up to the parent's within +-tolerance of it."""
    total = sum(child_targets)
    # Integers up to a few million are exact in floats; the epsilon only absorbs the
    # representation error of `tolerance` itself (0.1 is not exact) at the boundary.
    return abs(total - parent_target) <= tolerance * abs(parent_target) + 1e-9

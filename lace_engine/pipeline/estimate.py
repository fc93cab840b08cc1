"""The preflight estimate of a run: how many LLM calls it makes and how many tokens they may take.

Nodes the run will plan do not exist yet; they are predicted the way the strategy plans them, with
a split's budget shared evenly among its children. The estimate counts one call per split and per
written section (no re-asks) and, per call, the most it may take: a prompt within the context budget
and an answer within the call's output budget. So it is an upper bound for a run nothing is
rejected in, and a run with re-asks makes more calls.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from lace_engine.domain import Node, NodeState, RunOptions, StepKind
from lace_engine.pipeline.steps import STEPS
from lace_engine.pipeline.strategy import decide
from lace_engine.pipeline.tree import Tree


@dataclass(frozen=True, slots=True)
class Estimate:
    llm_calls: int
    total_tokens: int

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.llm_calls + other.llm_calls, self.total_tokens + other.total_tokens)

    def to_json(self) -> dict[str, int]:
        return {"llm_calls": self.llm_calls, "total_tokens": self.total_tokens}


NOTHING = Estimate(0, 0)


def preflight(tree: Tree, scope: uuid.UUID | None, options: RunOptions, *, prompt_tokens: int,
              content_style: str, stale_only: bool = False) -> Estimate:
    """The calls and tokens of a run over `tree` (a regeneration when `scope` is set; with
    `stale_only`, a rewrite of the sections marked stale only), before it starts."""

    def call(node: Node, step: StepKind, child_count: int) -> Estimate:
        schema = STEPS[step].call_schema(node, child_count, content_style)
        return Estimate(1, prompt_tokens + schema.max_output_tokens)

    def planned(node: Node) -> Estimate:
        decision = decide(node, options)
        if decision.step is StepKind.WRITE:
            return call(node, StepKind.WRITE, 0)
        total = call(node, StepKind.SPLIT, decision.child_count)
        count = decision.child_count
        for i in range(count):
            # Even shares that add up to the parent's target, as Apply's budgets must.
            share = node.target_words * (i + 1) // count - node.target_words * i // count
            child = replace(node, id=uuid.uuid5(node.id, str(i)), parent_id=node.id, ordinal=i,
                            depth=node.depth + 1, target_words=share, state=NodeState.PLANNED)
            total += planned(child)
        return total

    def existing(node: Node) -> Estimate:
        if node.state is NodeState.SPLIT:
            total = NOTHING
            for child in tree.children(node.id):
                total += existing(child)
            return total
        if node.state is NodeState.WRITTEN:
            # A regeneration rewrites written sections in place; a full run leaves them.
            rewrites = bool(node.stale_reason) if stale_only else scope is not None
            return call(node, StepKind.WRITE, 0) if rewrites else NOTHING
        return NOTHING if stale_only else planned(node)

    return existing(tree.get(scope) if scope is not None else tree.root)

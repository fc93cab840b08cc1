"""The preflight estimate, from the tree's shape and the options alone (no I/O)."""

from __future__ import annotations

import uuid
from dataclasses import replace

from lace_engine.domain import Node, NodeState, RunOptions, StepKind
from lace_engine.pipeline.estimate import preflight
from lace_engine.pipeline.steps import STEPS
from lace_engine.pipeline.tree import Tree

ROOT = Node(id=uuid.UUID(int=1), artifact_id=uuid.UUID(int=2), parent_id=None, ordinal=0, depth=0,
            title="Heat networks", intent="", target_words=8000, state=NodeState.PLANNED)
PROMPT = 6000


def output_budget(step: StepKind, words: int, child_count: int = 0) -> int:
    return STEPS[step].call_schema(replace(ROOT, target_words=words), child_count, "blocks").max_output_tokens


def test_one_split_into_leaves_is_one_call_per_node() -> None:
    est = preflight(Tree([ROOT]), None, RunOptions(leaf_words=1000, max_depth=1), prompt_tokens=PROMPT,
                    content_style="blocks")
    assert est.llm_calls == 1 + 8
    assert est.total_tokens == 9 * PROMPT + output_budget(StepKind.SPLIT, 8000, 8) + 8 * output_budget(
        StepKind.WRITE, 1000)


def test_deeper_trees_are_predicted_as_the_strategy_plans_them() -> None:
    root = replace(ROOT, target_words=16000)
    # 16,000 words: 8 sections (the clamp) of 2,000, each split into 2 leaves of 1,000.
    est = preflight(Tree([root]), None, RunOptions(leaf_words=1000, max_depth=4), prompt_tokens=PROMPT,
                    content_style="blocks")
    assert est.llm_calls == 1 + 8 + 16
    # At the depth limit a large section is written in one call instead.
    shallow = preflight(Tree([root]), None, RunOptions(leaf_words=1000, max_depth=1), prompt_tokens=PROMPT,
                        content_style="blocks")
    assert shallow.llm_calls == 1 + 8


def test_what_is_done_is_not_counted_and_a_regeneration_rewrites_what_is_written() -> None:
    split = replace(ROOT, state=NodeState.SPLIT, target_words=1500)
    written = Node(id=uuid.UUID(int=3), artifact_id=ROOT.artifact_id, parent_id=ROOT.id, ordinal=0, depth=1,
                   title="Sources", intent="", target_words=700, state=NodeState.WRITTEN)
    planned = replace(written, id=uuid.UUID(int=4), ordinal=1, title="Pipes", target_words=800,
                      state=NodeState.PLANNED)
    tree = Tree([split, written, planned])
    options = RunOptions(leaf_words=1000)
    full = preflight(tree, None, options, prompt_tokens=PROMPT, content_style="prose")
    assert full.llm_calls == 1  # only the planned section
    regen = preflight(tree, ROOT.id, options, prompt_tokens=PROMPT, content_style="prose")
    assert regen.llm_calls == 2  # the written one is rewritten, the planned one written
    one = preflight(tree, written.id, options, prompt_tokens=PROMPT, content_style="prose")
    assert one.llm_calls == 1 and one.total_tokens == PROMPT + STEPS[StepKind.WRITE].call_schema(
        written, 0, "prose").max_output_tokens

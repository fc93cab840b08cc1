"""The step table: every step kind has one entry, and each entry's parts agree with what it asks for."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from lace_engine.domain import Artifact, EventType, Node, NodeState, Origin, RunOptions, StepKind
from lace_engine.pipeline.apply import Mutation, Provenance, Rejection
from lace_engine.pipeline.context_builder import build_context
from lace_engine.pipeline.proposal_schema import content_schema, split_schema
from lace_engine.pipeline.proposals import parse_task_spec
from lace_engine.pipeline.steps import STEPS
from lace_engine.pipeline.tree import Tree

ROOT = Node(id=uuid.UUID(int=1), artifact_id=uuid.UUID(int=2), parent_id=None, ordinal=0, depth=0,
            title="Heat networks", intent="A guide to district heating.", target_words=2400,
            state=NodeState.PLANNED)
ARTIFACT = Artifact(id=ROOT.artifact_id, title=ROOT.title, brief="For planners.", style="", target_words=2400,
                    root_node_id=ROOT.id, version=1, word_count=0, active_run_id=None,
                    create_time=datetime(2026, 1, 1, tzinfo=UTC), update_time=datetime(2026, 1, 1, tzinfo=UTC))
PROV = Provenance(origin=Origin.LLM, run_id=uuid.UUID(int=3), llm_call_id=uuid.UUID(int=4), model="m")


def test_every_step_kind_has_one_step() -> None:
    assert set(STEPS) == set(StepKind)
    assert all(step.kind is kind for kind, step in STEPS.items())


def test_each_step_asks_with_its_own_schema() -> None:
    assert STEPS[StepKind.SPLIT].call_schema(ROOT, 3, "blocks") == split_schema(3, 2400)
    for style in ("blocks", "prose"):
        assert STEPS[StepKind.WRITE].call_schema(ROOT, 0, style) == content_schema(2400, style=style)


@pytest.mark.parametrize(("kind", "child_count"), [(StepKind.SPLIT, 3), (StepKind.WRITE, 0)])
def test_the_prompt_is_the_steps_own(kind: StepKind, child_count: int) -> None:
    step = STEPS[kind]
    ctx = build_context(ARTIFACT, Tree([ROOT]), ROOT.id, step, child_count=child_count)
    assert ctx.system == step.system_prompt
    assert step.directive(ROOT.title, ROOT, child_count) in ctx.user
    assert all(line in ctx.user for line in step.node_lines(ROOT, child_count))
    task = parse_task_spec(ctx.user)
    assert task["step"] == kind.value and task.items() >= step.task(ROOT, child_count).items()


@pytest.mark.parametrize("kind", list(StepKind))
@pytest.mark.parametrize("answer", [None, [], {"children": "three"}, {"blocks": 7}, {}])
def test_an_answer_of_the_wrong_shape_is_a_rejection_not_an_exception(kind: StepKind, answer: object) -> None:
    plan = STEPS[kind].plan(ROOT, answer, existing=[], options=RunOptions(), provenance=PROV)
    assert isinstance(plan, Rejection) and plan.errors


def test_each_step_plans_through_apply() -> None:
    children = [{"title": t, "intent": f"Covers {t.lower()}.", "target_words": 800}
                for t in ("Sources", "Pipes", "Prices")]
    split = STEPS[StepKind.SPLIT].plan(ROOT, {"children": children}, existing=[], options=RunOptions(),
                                       provenance=PROV)
    assert isinstance(split, Mutation) and [e.type for e in split.events] == [EventType.NODE_SPLIT]
    assert [c.title for c in split.node_inserts] == ["Sources", "Pipes", "Prices"]

    leaf = Node(id=uuid.UUID(int=5), artifact_id=ROOT.artifact_id, parent_id=ROOT.id, ordinal=0, depth=1,
                title="Sources", intent="Where heat comes from.", target_words=200, state=NodeState.PLANNED)
    text = " ".join(["heat"] * 200)
    write = STEPS[StepKind.WRITE].plan(leaf, {"blocks": [{"kind": "paragraph", "text": text}], "summary": "Heat."},
                                       existing=[], options=RunOptions(), provenance=PROV)
    assert isinstance(write, Mutation) and [e.type for e in write.events] == [EventType.BLOCKS_APPLIED]
    assert write.words_written == 200

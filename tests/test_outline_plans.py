"""The pure outline plans (apply.plan_update_node, plan_create_node, plan_delete_node, plan_move_node)
and the review states of the run lifecycle, without I/O."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from lace_engine.domain import (
    Artifact,
    Block,
    BlockContent,
    BlockKind,
    ChangeOp,
    EventType,
    Node,
    NodeState,
    Origin,
    RunState,
)
from lace_engine.errors import FailedPrecondition, InvalidArgument
from lace_engine.pipeline import apply
from lace_engine.pipeline.apply import Mutation, NodeFields, OutlineRules
from lace_engine.pipeline.tree import Tree
from lace_engine.runs.lifecycle import CLAIMABLE, OUTLINE_EDITABLE, RunAction, on_request

ART = uuid.UUID("00000000-0000-7000-8000-000000000001")
ROOT = apply.root_node_id(ART)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
RULES = OutlineRules(max_depth=3)
RUN = uuid.UUID("00000000-0000-7000-8000-0000000000ff")


def node(node_id: uuid.UUID, parent: uuid.UUID | None, ordinal: int, depth: int, title: str, words: int,
         state: NodeState = NodeState.PLANNED) -> Node:
    return Node(id=node_id, artifact_id=ART, parent_id=parent, ordinal=ordinal, depth=depth, title=title,
                intent=f"about {title}", target_words=words, state=state)


def kid(parent: uuid.UUID, i: int) -> uuid.UUID:
    return apply.child_node_id(parent, i)


def outline() -> tuple[Tree, Artifact]:
    """root (SPLIT, 3000) -> A 1000, B (SPLIT 1200) -> B0 600, B1 600, C 800."""
    a, b, c = kid(ROOT, 0), kid(ROOT, 1), kid(ROOT, 2)
    nodes = [node(ROOT, None, 0, 0, "Doc", 3000, NodeState.SPLIT), node(a, ROOT, 0, 1, "A", 1000),
             node(b, ROOT, 1, 1, "B", 1200, NodeState.SPLIT), node(c, ROOT, 2, 1, "C", 800),
             node(kid(b, 0), b, 0, 2, "B0", 600), node(kid(b, 1), b, 1, 2, "B1", 600)]
    artifact = Artifact(id=ART, title="Doc", brief="brief", style="", target_words=3000, root_node_id=ROOT,
                        version=4, word_count=0, active_run_id=None, create_time=NOW, update_time=NOW)
    return Tree(nodes), artifact


def after(tree: Tree, m: Mutation) -> Tree:
    return apply.tree_after(tree, m)


def titles(tree: Tree, parent: uuid.UUID) -> list[str]:
    return [n.title for n in tree.children(parent)]


def dense(tree: Tree) -> bool:
    return all([c.ordinal for c in tree.children(n.id)] == list(range(len(tree.children(n.id))))
               for n in tree.preorder())


def test_update_changes_the_fields_and_the_budgets_follow_up_to_the_artifact() -> None:
    tree, art = outline()
    b0 = kid(kid(ROOT, 1), 0)
    m = apply.plan_update_node(tree, art, b0, NodeFields(title="  B zero ", target_words=900), RULES)
    t = after(tree, m)
    assert t.get(b0).title == "B zero" and t.get(b0).target_words == 900
    assert t.get(kid(ROOT, 1)).target_words == 1500 and t.root.target_words == 3300
    assert m.artifact_target_words == 3300 and m.provenance.origin is Origin.HUMAN
    assert not m.events  # no run awaits review: no run event
    assert apply.plan_update_node(tree, art, b0, NodeFields(title="  B zero ", target_words=900), RULES) == m


def test_create_inserts_a_planned_node_with_a_fresh_id_and_renumbers() -> None:
    tree, art = outline()
    fresh = uuid.UUID("01900000-0000-7000-8000-000000000abc")
    m = apply.plan_create_node(tree, art, ROOT, fresh, NodeFields("New", "why", 400), 1, RULES)
    t = after(tree, m)
    assert titles(t, ROOT) == ["A", "New", "B", "C"] and dense(t)
    assert t.get(fresh).state is NodeState.PLANNED and t.get(fresh).depth == 1
    assert t.root.target_words == 3400 and m.artifact_target_words == 3400
    assert fresh not in {kid(ROOT, i) for i in range(12)}  # never an id a split derives
    appended = after(tree, apply.plan_create_node(tree, art, ROOT, fresh, NodeFields("New", "", 400), None, RULES))
    assert titles(appended, ROOT) == ["A", "B", "C", "New"]


def test_create_under_a_planned_leaf_makes_it_split_with_the_child_budget() -> None:
    tree, art = outline()
    a = kid(ROOT, 0)
    m = apply.plan_create_node(tree, art, a, uuid.uuid4(), NodeFields("A1", "", 300), None, RULES)
    t = after(tree, m)
    assert t.get(a).state is NodeState.SPLIT and t.get(a).target_words == 300
    assert t.root.target_words == 3000 - 1000 + 300


def test_delete_removes_the_subtree_renumbers_and_records_its_blocks() -> None:
    tree, art = outline()
    b = kid(ROOT, 1)
    b0 = kid(b, 0)
    block = Block(id=apply.block_id_for(b0, 0), artifact_id=ART, node_id=b0, ordinal=0,
                  content=BlockContent(BlockKind.PARAGRAPH, "five words are right here"), origin=Origin.LLM,
                  pinned=False, version=1)
    m = apply.plan_delete_node(tree, art, b, {b0: [block]}, RULES)
    t = after(tree, m)
    assert set(m.node_deletes) == {b, b0, kid(b, 1)}
    assert titles(t, ROOT) == ["A", "C"] and dense(t) and t.root.target_words == 1800
    assert [(c.operation, c.before) for c in m.block_changes] == [(ChangeOp.DELETE, block)]
    assert m.word_delta == -5


def test_move_within_and_across_parents() -> None:
    tree, art = outline()
    a, b, c = kid(ROOT, 0), kid(ROOT, 1), kid(ROOT, 2)
    t = after(tree, apply.plan_move_node(tree, art, c, None, 0, RULES))
    assert titles(t, ROOT) == ["C", "A", "B"] and dense(t) and t.root.target_words == 3000
    m = apply.plan_move_node(tree, art, a, b, 1, RULES)
    t = after(tree, m)
    assert titles(t, ROOT) == ["B", "C"] and titles(t, b) == ["B0", "A", "B1"] and dense(t)
    assert t.get(a).depth == 2 and t.get(b).target_words == 2200 and t.root.target_words == 3000
    # A subtree moves whole: its depths follow.
    t = after(tree, apply.plan_move_node(tree, art, b, c, None, RULES))
    assert t.get(kid(b, 0)).depth == 3 and t.get(c).state is NodeState.SPLIT


def test_an_edit_under_an_awaiting_run_carries_the_outline_event() -> None:
    tree, art = outline()
    rules = OutlineRules(max_depth=3, run_id=RUN)
    m = apply.plan_update_node(tree, art, kid(ROOT, 0), NodeFields(intent="sharper"), rules)
    (event,) = m.events
    assert event.type is EventType.OUTLINE_EDITED and event.payload["kind"] == "update"
    assert [n["node_id"] for n in event.payload["outline"]] == [str(n.id) for n in tree.preorder()]


@pytest.mark.parametrize(("plan", "error", "reason"), [
    (lambda t, a: apply.plan_delete_node(t, a, ROOT, {}, RULES), InvalidArgument, "ROOT_NODE"),
    (lambda t, a: apply.plan_move_node(t, a, ROOT, kid(ROOT, 0), None, RULES), InvalidArgument, "ROOT_NODE"),
    (lambda t, a: apply.plan_move_node(t, a, kid(ROOT, 1), kid(kid(ROOT, 1), 0), None, RULES), InvalidArgument,
     "MOVE_CYCLE"),
    (lambda t, a: apply.plan_move_node(t, a, kid(ROOT, 0), None, 3, RULES), InvalidArgument,
     "POSITION_OUT_OF_RANGE"),
    (lambda t, a: apply.plan_create_node(t, a, ROOT, uuid.uuid4(), NodeFields("X", "", 100), 4, RULES),
     InvalidArgument, "POSITION_OUT_OF_RANGE"),
    (lambda t, a: apply.plan_create_node(t, a, kid(ROOT, 1), uuid.uuid4(), NodeFields("X", "", 100), None,
                                         OutlineRules(max_depth=1)), InvalidArgument, "DEPTH_EXCEEDED"),
    (lambda t, a: apply.plan_move_node(t, a, kid(ROOT, 1), kid(ROOT, 2), None, OutlineRules(max_depth=2)),
     InvalidArgument, "DEPTH_EXCEEDED"),
    (lambda t, a: apply.plan_create_node(t, a, ROOT, uuid.uuid4(), NodeFields("b", "", 100), None, RULES),
     InvalidArgument, "DUPLICATE_TITLE"),
    (lambda t, a: apply.plan_update_node(t, a, kid(ROOT, 1), NodeFields(target_words=500), RULES), InvalidArgument,
     "TARGET_FOLLOWS_CHILDREN"),
    (lambda t, a: apply.plan_update_node(t, a, kid(ROOT, 0), NodeFields(target_words=199_000), RULES),
     InvalidArgument, "TARGET_WORDS_OUT_OF_RANGE"),  # the document would pass 200,000 words
    (lambda t, a: apply.plan_update_node(t, a, kid(ROOT, 0), NodeFields(title=""), RULES), InvalidArgument,
     "EMPTY_TITLE"),
    (lambda t, a: apply.plan_create_node(t, a, ROOT, uuid.uuid4(), NodeFields("X", "", None), None, RULES),
     InvalidArgument, "MISSING_FIELD"),
])
def test_illegal_edits_raise_with_their_reason(plan: Callable[[Tree, Artifact], Mutation],
                                              error: type[Exception], reason: str) -> None:
    tree, art = outline()
    with pytest.raises(error) as raised:
        plan(tree, art)
    assert isinstance(raised.value, InvalidArgument) and raised.value.reason == reason


def test_a_last_child_stays_and_written_or_pinned_sections_are_frozen_under_a_run() -> None:
    tree, art = outline()
    b = kid(ROOT, 1)
    lone = tree.with_nodes([node(kid(kid(ROOT, 0), 0), kid(ROOT, 0), 0, 2, "A0", 500)])
    with pytest.raises(FailedPrecondition) as raised:
        apply.plan_delete_node(lone, art, kid(kid(ROOT, 0), 0), {}, RULES)
    assert raised.value.reason == "LAST_CHILD"
    with pytest.raises(FailedPrecondition) as raised:
        apply.plan_move_node(lone, art, kid(kid(ROOT, 0), 0), ROOT, None, RULES)
    assert raised.value.reason == "LAST_CHILD"
    written = tree.with_nodes([node(kid(b, 0), b, 0, 2, "B0", 600, NodeState.WRITTEN)])
    under_run = OutlineRules(max_depth=3, run_id=RUN)
    plans: list[Callable[[], Mutation]] = [lambda: apply.plan_delete_node(written, art, b, {}, under_run),
                 lambda: apply.plan_update_node(written, art, kid(b, 0), NodeFields(title="Z"), under_run),
                 lambda: apply.plan_move_node(written, art, b, None, 0, under_run)]
    for plan in plans:
        with pytest.raises(FailedPrecondition) as raised:
            plan()
        assert raised.value.reason == "NODE_WRITTEN"
    assert apply.plan_delete_node(written, art, b, {}, RULES).node_deletes  # with no run it may go
    pinned = OutlineRules(max_depth=3, run_id=RUN, pinned_nodes=frozenset({kid(b, 1)}))
    with pytest.raises(FailedPrecondition) as raised:
        apply.plan_delete_node(tree, art, b, {}, pinned)
    assert raised.value.reason == "NODE_PINNED"
    with pytest.raises(FailedPrecondition) as raised:
        apply.plan_create_node(written, art, kid(b, 0), uuid.uuid4(), NodeFields("Z", "", 100), None, RULES)
    assert raised.value.reason == "PARENT_WRITTEN"


def test_the_review_states_of_the_lifecycle() -> None:
    assert on_request(RunAction.RESUME, RunState.AWAITING_REVIEW) is RunState.PENDING
    assert on_request(RunAction.CANCEL, RunState.AWAITING_REVIEW) is RunState.CANCELLED
    with pytest.raises(FailedPrecondition) as raised:
        on_request(RunAction.PAUSE, RunState.AWAITING_REVIEW)
    assert raised.value.reason == "ILLEGAL_RUN_TRANSITION"
    assert RunState.AWAITING_REVIEW not in CLAIMABLE and RunState.AWAITING_REVIEW.active
    assert {RunState.AWAITING_REVIEW} == OUTLINE_EDITABLE


def test_update_artifact_moves_the_root_with_it() -> None:
    tree, artifact = outline()
    m = apply.plan_update_artifact(tree, artifact, apply.ArtifactFields(title=" New doc ", style="Terse."), RULES)
    assert (m.artifact_title, m.artifact_brief, m.artifact_style) == ("New doc", None, "Terse.")
    assert after(tree, m).root.title == "New doc" and after(tree, m).root.intent == "about Doc"  # a person's intent
    assert m.events == () and m.artifact_target_words is None

    # An unsplit root: the brief's start is its intent, and the target its budget.
    root = Node(id=ROOT, artifact_id=ART, parent_id=None, ordinal=0, depth=0, title="Doc", intent="brief",
                target_words=3000, state=NodeState.PLANNED)
    m = apply.plan_update_artifact(Tree([root]), artifact, apply.ArtifactFields(brief="Other brief",
                                                                                target_words=5000), RULES)
    assert (after(Tree([root]), m).root.intent, m.artifact_target_words, m.artifact_brief) == \
        ("Other brief", 5000, "Other brief")

    with pytest.raises(InvalidArgument) as raised:
        apply.plan_update_artifact(tree, artifact, apply.ArtifactFields(target_words=5000), RULES)
    assert raised.value.reason == "TARGET_FOLLOWS_CHILDREN"
    with pytest.raises(InvalidArgument) as raised:
        apply.plan_update_artifact(tree, artifact, apply.ArtifactFields(title=""), RULES)
    assert raised.value.reason == "EMPTY_TITLE"
    # Awaiting review: an event of the run, with the outline after the edit.
    m = apply.plan_update_artifact(tree, artifact, apply.ArtifactFields(title="Reviewed"),
                                   OutlineRules(max_depth=3, run_id=RUN))
    [event] = m.events
    assert event.type is EventType.OUTLINE_EDITED and event.payload["kind"] == "update_artifact"
    assert event.payload["outline"][0]["title"] == "Reviewed"

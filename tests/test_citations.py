"""Citations as pure decisions: numbered passages in the prompt, the schema that bounds them, and
Apply, which accepts a citation only of a passage this call's prompt numbered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import jsonschema
import pytest

from lace_engine.domain import Artifact, Node, NodeState, Origin, Passage, StepKind
from lace_engine.llm.offline import generate_content
from lace_engine.pipeline import apply
from lace_engine.pipeline.apply import Mutation, Provenance, Rejection
from lace_engine.pipeline.context_builder import build_context, content_hash
from lace_engine.pipeline.proposal_schema import content_schema, prose_bounds
from lace_engine.pipeline.proposals import parse_content
from lace_engine.pipeline.steps import STEPS
from lace_engine.pipeline.tree import Tree

T0 = datetime(2026, 12, 1, tzinfo=UTC)
ARTIFACT = uuid.UUID(int=1)
ROOT = Node(id=uuid.UUID(int=2), artifact_id=ARTIFACT, parent_id=None, ordinal=0, depth=0, title="Storage",
            intent="", target_words=1000, state=NodeState.SPLIT)
LEAF = Node(id=uuid.UUID(int=3), artifact_id=ARTIFACT, parent_id=ROOT.id, ordinal=0, depth=1, title="Batteries",
            intent="Lithium-ion cells and their cycle life", target_words=400, state=NodeState.PLANNED)
TREE = Tree([ROOT, LEAF])
DOC = Artifact(id=ARTIFACT, title="Storage", brief="Grid storage for planners.", style="", target_words=1000,
               root_node_id=ROOT.id, version=1, word_count=0, active_run_id=None, create_time=T0, update_time=T0)
PROVENANCE = Provenance(origin=Origin.LLM, run_id=uuid.UUID(int=9), llm_call_id=uuid.UUID(int=10), model="m")


def passage(n: int, words: int = 50) -> Passage:
    text = " ".join(f"fact{n}word{i}" for i in range(words))
    return Passage(id=uuid.UUID(int=100 + n), source_id=uuid.UUID(int=99), ordinal=n, start_offset=0,
                   end_offset=len(text), text=text, content_hash=content_hash(text), source_title="Notes")


PASSAGES = [passage(n) for n in range(5)]


def test_passages_are_numbered_in_rank_order_and_recorded_in_the_manifest() -> None:
    ctx = build_context(DOC, TREE, LEAF.id, STEPS[StepKind.WRITE], passages=PASSAGES)
    assert ctx.citable == tuple(p.id for p in PASSAGES)
    assert ctx.task["citable"] == 5
    for n, p in enumerate(PASSAGES, 1):
        assert f"[{n}] (Notes) {p.text}" in ctx.user
    entries = [e for e in ctx.manifest if e.kind == "passage"]
    assert [(e.passage_id, e.content_hash) for e in entries] == [(p.id, p.content_hash) for p in PASSAGES]


def test_under_a_tight_budget_the_worst_passages_go_first_and_the_numbers_stay_contiguous() -> None:
    roomy = build_context(DOC, TREE, LEAF.id, STEPS[StepKind.WRITE], passages=PASSAGES)
    tight = build_context(DOC, TREE, LEAF.id, STEPS[StepKind.WRITE], passages=PASSAGES,
                          budget_tokens=roomy.estimated_tokens - 150)
    assert 0 < len(tight.citable) < len(PASSAGES)
    assert tight.citable == roomy.citable[:len(tight.citable)]
    assert tight.task["citable"] == len(tight.citable)
    assert tight.estimated_tokens <= roomy.estimated_tokens - 150
    assert f"[{len(tight.citable) + 1}]" not in tight.user


def test_a_prompt_without_sources_is_unchanged_by_the_citation_support() -> None:
    ctx = build_context(DOC, TREE, LEAF.id, STEPS[StepKind.WRITE])
    assert ctx.citable == () and "citable" not in ctx.task and "Source passages" not in ctx.user
    assert "cites" not in str(content_schema(LEAF.target_words).schema)


@pytest.mark.parametrize("style", ["blocks", "prose"])
def test_the_schema_admits_only_the_numbers_of_the_prompts_passages(style: str) -> None:
    plain = content_schema(400, style=style)
    call = content_schema(400, style=style, citable=3)
    assert call.max_output_tokens > plain.max_output_tokens
    answer = generate_content({"step": "write", "title": "Batteries", "target_words": 400, "citable": 3}, seed=7)
    if style == "prose":
        paragraphs, least, _ = prose_bounds(400)
        answer = {"blocks": [{"kind": "paragraph", "text": " ".join(["cells"] * least), "cites": [i % 3 + 1]}
                             for i in range(paragraphs)], "summary": "About cells."}
    jsonschema.validate(answer, call.schema)
    for bad in ([4], [0], ["1"]):
        wrong = {**answer, "blocks": [{**answer["blocks"][0], "cites": bad}, *answer["blocks"][1:]]}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, call.schema)


def plan(data: dict[str, object], citable: tuple[uuid.UUID, ...]) -> Mutation | Rejection:
    return apply.plan_content(LEAF, [], parse_content(data), provenance=PROVENANCE, citable=citable)


def answer(*cites: list[int]) -> dict[str, object]:
    text = " ".join(["word"] * 100)
    return {"blocks": [{"kind": "paragraph", "text": text, "cites": c} for c in cites], "summary": "About cells."}


def test_apply_resolves_numbers_to_the_passages_of_this_call() -> None:
    citable = tuple(p.id for p in PASSAGES[:3])
    mutation = plan(answer([2, 1], [], [3]), citable)
    assert isinstance(mutation, Mutation)
    assert [c.after.content.citations for c in mutation.block_changes if c.after] == [
        (PASSAGES[1].id, PASSAGES[0].id), (), (PASSAGES[2].id,)]
    assert mutation.repairs == ()


@pytest.mark.parametrize(("cites", "citable", "says"), [
    ([4], 3, "cites [4], but only passages 1 to 3 were given"),
    ([0, 1], 3, "cites [0], but only passages 1 to 3 were given"),
    ([1], 0, "cites [1], but no passages were given"),
])
def test_apply_rejects_an_invented_citation_with_feedback(cites: list[int], citable: int, says: str) -> None:
    rejection = plan(answer(cites, [], []), tuple(p.id for p in PASSAGES[:citable]))
    assert isinstance(rejection, Rejection)
    assert any(says in e and e.startswith("blocks[0]") for e in rejection.errors), rejection.errors


def test_apply_drops_a_repeated_citation_and_records_the_repair() -> None:
    mutation = plan(answer([1, 1, 2], [], []), tuple(p.id for p in PASSAGES[:3]))
    assert isinstance(mutation, Mutation)
    first = mutation.block_changes[0].after
    assert first is not None and first.content.citations == (PASSAGES[0].id, PASSAGES[1].id)
    assert mutation.repairs == ("dropped repeated citations in 1 blocks",)
    assert mutation.events[0].payload["repairs"] == ["dropped repeated citations in 1 blocks"]


def test_every_answer_of_the_offline_provider_cites_validly() -> None:
    for seed in range(40):
        for citable in (1, 2, 5):
            data = generate_content({"step": "write", "title": "Batteries", "target_words": 400,
                                     "citable": citable}, seed=seed)
            mutation = plan(data, tuple(p.id for p in PASSAGES[:citable]))
            assert isinstance(mutation, Mutation), mutation
            cited = {c for ch in mutation.block_changes if ch.after for c in ch.after.content.citations}
            assert cited and cited <= {p.id for p in PASSAGES[:citable]}


def test_a_human_edit_may_cite_only_known_passages() -> None:
    from lace_engine.domain import Block, BlockContent, BlockKind
    from lace_engine.errors import InvalidArgument

    block = Block(id=uuid.UUID(int=20), artifact_id=ARTIFACT, node_id=LEAF.id, ordinal=0,
                  content=BlockContent(BlockKind.PARAGRAPH, text="old"), origin=Origin.LLM, pinned=False, version=1)
    content = BlockContent(BlockKind.PARAGRAPH, text="new", citations=(PASSAGES[0].id, PASSAGES[0].id))
    mutation = apply.plan_edit_block(block, content, node=LEAF, known_passages={PASSAGES[0].id})
    after = mutation.block_changes[0].after
    assert after is not None and after.content.citations == (PASSAGES[0].id,)
    with pytest.raises(InvalidArgument, match="not passages of this artifact"):
        apply.plan_edit_block(block, content, node=LEAF, known_passages=set())

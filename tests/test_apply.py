"""Property tests of Deterministic Apply's planning half (lace_engine.pipeline.apply): pure, no I/O.

Every verdict of plan_split and plan_content is compared with an oracle written here from the
documented rules (docs/engine.md, "What Apply accepts"), and every accepted plan is checked for
the shape of the mutation it describes.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lace_engine.domain import (
    Block,
    BlockContent,
    BlockKind,
    ChangeOp,
    EventType,
    Node,
    NodeState,
    Origin,
    RunOptions,
)
from lace_engine.errors import Aborted, FailedPrecondition, InvalidArgument
from lace_engine.pipeline.apply import (
    BlockChange,
    Mutation,
    Provenance,
    Rejection,
    block_id_for,
    plan_content,
    plan_edit_block,
    plan_split,
    tree_after,
)
from lace_engine.pipeline.proposals import ChildPlan, ContentProposal, SplitProposal
from lace_engine.pipeline.tree import Tree

T = TypeVar("T")

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- Shared strategies ------------------------------------------------------------------------

VOCABULARY = (
    "storage", "grid", "battery", "lithium", "pumped", "hydro", "capacity", "cost", "siting", "policy",
    "planner", "region", "demand", "supply", "peak", "load", "market", "tariff", "risk", "safety", "cycle",
    "efficiency", "degradation", "inverter", "transmission", "permit", "zoning", "community", "finance",
    "subsidy", "carbon", "renewable", "solar", "wind", "forecast", "dispatch", "reserve",
)

word = st.sampled_from(VOCABULARY)


def weighted(draw: st.DrawFn, *choices: tuple[int, st.SearchStrategy[T]]) -> T:
    """Draws from one of `choices`, picked with the given weights (st.one_of picks evenly)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return draw(draw(st.sampled_from(pool)))


def chance(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in `one_in` draws (hypothesis favours small integers, so not integers(...) == 0)."""
    return draw(st.sampled_from([False] * (one_in - 1) + [True]))


def phrase(min_words: int = 1, max_words: int = 8) -> st.SearchStrategy[str]:
    """Space-separated vocabulary words: never empty (with min_words >= 1), never padded."""
    return st.lists(word, min_size=min_words, max_size=max_words).map(" ".join)


# sharp s, capital sharp s, dotted/dotless i, the three sigmas, the Kelvin sign.
CASEFOLD_TRICKY = "\u00df\u1e9e\u0130\u0131\u03a3\u03c3\u03c2\u212aK"
# Titles: Unicode letters and digits (casefold corner cases such as "ß"/"SS" included), no padding.
title_word = st.text(
    alphabet=st.one_of(st.characters(categories=["L", "N"]), st.sampled_from(CASEFOLD_TRICKY)),
    min_size=1, max_size=10,
)
title = st.lists(title_word, min_size=1, max_size=4).map(" ".join).filter(lambda t: len(t) <= 200)


def provenances() -> st.SearchStrategy[Provenance]:
    return st.builds(
        Provenance, origin=st.just(Origin.LLM), run_id=st.uuids(), llm_call_id=st.uuids(),
        model=st.sampled_from(["test-model", "offline-v1", "gpt-4o-mini"]),
    )


@st.composite
def planned_nodes(draw: st.DrawFn, target_words: st.SearchStrategy[int] | None = None) -> Node:
    depth = draw(st.integers(0, 6))
    return Node(
        id=draw(st.uuids()), artifact_id=draw(st.uuids()),
        parent_id=None if depth == 0 else draw(st.uuids()),
        ordinal=draw(st.integers(0, 11)), depth=depth, title=draw(title), intent=draw(phrase(0, 12)),
        target_words=draw(target_words if target_words is not None else st.integers(1, 20_000)),
        state=NodeState.PLANNED,
    )


# --- Splits -------------------------------------------------------------------------------------

def split_oracle(node: Node, proposal: SplitProposal, options: RunOptions) -> bool:
    """The documented rules for a split, written independently of plan_split."""
    children = list(proposal.children)
    keys = [c.title.casefold() for c in children]
    if len(set(keys)) != len(keys) and len(set(keys)) >= 2 and "" not in keys:
        # Siblings of one title are merged at the first one's place, unless an intent would overflow.
        groups = {k: [c for c in children if c.title.casefold() == k] for k in dict.fromkeys(keys)}
        merged = [ChildPlan(g[0].title, " ".join(dict.fromkeys(c.intent for c in g if c.intent)),
                            sum(c.target_words for c in g)) for g in groups.values()]
        if all(len(c.intent) <= 1000 for c in merged):
            children, keys = merged, list(groups)
    if not 2 <= len(children) <= 12:
        return False
    if node.depth + 1 > options.max_depth:
        return False
    if any(not c.title or len(c.title) > 200 for c in children):
        return False
    if len(set(keys)) != len(keys):
        return False
    if any(len(c.intent) > 1000 for c in children):
        return False
    if any(c.target_words < 50 for c in children):
        return False
    total = sum(c.target_words for c in children)
    # |total - target| <= 10% of target, in exact integer arithmetic.
    if 10 * abs(total - node.target_words) <= node.target_words:
        return True
    # Else Apply rescales in proportion, which only works while every child keeps 50 words.
    return all(w >= 50 for w in rescaled(node.target_words, [c.target_words for c in children]))


def rescaled(target: int, budgets: list[int]) -> list[int]:
    """Budgets in proportion to `budgets` summing to exactly `target` (Hamilton's method, ties to the first)."""
    have = sum(budgets)
    quotas = [Fraction(b * target, have) for b in budgets]
    parts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(budgets)), key=lambda i: (parts[i] - quotas[i], i))
    for i in by_remainder[: target - sum(parts)]:
        parts[i] += 1
    return parts


def apportion(total: int, weights: list[int]) -> list[int]:
    """Splits `total` into len(weights) integers in proportion to weights, summing to exactly total."""
    scale = sum(weights)
    parts = [total * w // scale for w in weights]
    for i in range(total - sum(parts)):
        parts[i % len(parts)] += 1
    return parts


@st.composite
def split_cases(draw: st.DrawFn) -> tuple[Node, SplitProposal, RunOptions]:
    """A node, a split proposal for it and run options: about half valid, the rest broken in one or more ways."""
    count = weighted(draw, (9, st.integers(2, 12)), (1, st.sampled_from([0, 1, 13, 14])))
    # Mostly a target that leaves every child room for 50 words; sometimes one that does not.
    roomy = st.integers(max(100, 60 * count), 20_000)
    target = weighted(draw, (6, roomy), (2, st.integers(100, 20_000)),
                      (1, st.sampled_from([100, 101, 500, 990, 1000, 1010, 6000])))
    node = draw(planned_nodes(st.just(target)))
    # Mostly room for one more level; sometimes exactly at the limit or past it.
    options = RunOptions(max_depth=max(1, node.depth + draw(st.sampled_from([1, 1, 2, 3, 0, -1]))))
    titles = draw(st.lists(title, min_size=count, max_size=count, unique_by=str.casefold))
    intents = draw(st.lists(phrase(0, 15), min_size=count, max_size=count))

    # The sum of the budgets: on target, on or just past either ±10% bound, or anywhere.
    low, high = -(-9 * target // 10), 11 * target // 10
    total = weighted(draw, (3, st.integers(low, high)), (1, st.just(target)),
                     (2, st.sampled_from([low, high, low - 1, high + 1])), (1, st.integers(target // 2, 2 * target)))
    spread = weighted(draw, (4, st.just(3)), (1, st.just(1)))  # 1: some children may fall below 50
    weights = draw(st.lists(st.integers(spread, 10), min_size=count, max_size=count))
    budgets = apportion(total, weights) if count else []

    if count:
        mutate = st.integers(0, count - 1)
        if chance(draw, 15):
            titles[draw(mutate)] = ""
        if chance(draw, 15):
            titles[draw(mutate)] = draw(st.sampled_from(["x" * 200, "y" * 201, "z" * 250]))
        if count >= 2 and chance(draw, 10):
            i, j = draw(mutate), draw(mutate)
            assume(i != j)
            titles[j] = draw(st.sampled_from([str.upper, str.lower, str.title, str.swapcase]))(titles[i])
        if chance(draw, 15):
            intents[draw(mutate)] = "w " * 500 + "!"  # 1001 characters
        if chance(draw, 10):
            budgets[draw(mutate)] = draw(st.one_of(st.integers(-5, 49), st.sampled_from([49, 50, 51])))

    children = tuple(ChildPlan(title=t, intent=i, target_words=b)
                     for t, i, b in zip(titles, intents, budgets, strict=True))
    return node, SplitProposal(children), options


@PROPERTY
@given(split_cases(), provenances())
def test_split_verdict_matches_the_documented_rules(
    case: tuple[Node, SplitProposal, RunOptions], prov: Provenance
) -> None:
    node, proposal, options = case
    plan = plan_split(node, proposal, options=options, provenance=prov)
    expected = split_oracle(node, proposal, options)
    assert isinstance(plan, Mutation) == expected, plan
    if isinstance(plan, Rejection):
        assert plan.errors and all(isinstance(e, str) and e for e in plan.errors)


@PROPERTY
@given(split_cases(), provenances())
def test_split_planning_is_deterministic(case: tuple[Node, SplitProposal, RunOptions], prov: Provenance) -> None:
    node, proposal, options = case
    first = plan_split(node, proposal, options=options, provenance=prov)
    second = plan_split(node, proposal, options=options, provenance=prov)
    assert first == second
    # Equal inputs built separately (not the same objects) plan the same mutation too.
    rebuilt = SplitProposal(tuple(ChildPlan(c.title, c.intent, c.target_words) for c in proposal.children))
    assert plan_split(replace(node), rebuilt, options=replace(options), provenance=replace(prov)) == first


@st.composite
def valid_splits(draw: st.DrawFn) -> tuple[Node, SplitProposal, RunOptions]:
    count = draw(st.integers(2, 12))
    target = draw(st.integers(max(100, 120 * count), 20_000))
    node = draw(planned_nodes(st.just(target)))
    options = RunOptions(max_depth=draw(st.integers(node.depth + 1, node.depth + 3)))
    titles = draw(st.lists(title, min_size=count, max_size=count, unique_by=str.casefold))
    intents = draw(st.lists(phrase(0, 15), min_size=count, max_size=count))
    total = draw(st.integers(-(-9 * target // 10), 11 * target // 10))
    budgets = apportion(total, draw(st.lists(st.integers(5, 10), min_size=count, max_size=count)))
    assume(all(b >= 50 for b in budgets))
    return node, SplitProposal(tuple(ChildPlan(t, i, b) for t, i, b in zip(titles, intents, budgets, strict=True))), \
        options


@PROPERTY
@given(valid_splits(), provenances())
def test_accepted_split_plans_children_and_one_event(
    case: tuple[Node, SplitProposal, RunOptions], prov: Provenance
) -> None:
    node, proposal, options = case
    plan = plan_split(node, proposal, options=options, provenance=prov)
    assert isinstance(plan, Mutation), plan
    children = plan.node_inserts
    assert len(children) == len(proposal.children) == plan.nodes_planned
    assert [c.ordinal for c in children] == list(range(len(children)))
    for child, asked in zip(children, proposal.children, strict=True):
        assert child.depth == node.depth + 1
        assert child.parent_id == node.id and child.artifact_id == node.artifact_id
        assert (child.title, child.intent, child.target_words) == (asked.title, asked.intent, asked.target_words)
        assert child.state is NodeState.PLANNED
        assert (child.summary, child.word_count) == ("", 0)
    assert len({c.id for c in children}) == len(children) and node.id not in {c.id for c in children}

    # The parent becomes SPLIT, checked against the state the plan was made from.
    assert [(p.node_id, p.state, p.last_run_id) for p in plan.node_patches] == [(node.id, NodeState.SPLIT, prov.run_id)]
    assert [(p.node_id, p.node_state) for p in plan.preconditions] == [(node.id, NodeState.PLANNED)]
    assert plan.block_changes == () and plan.word_delta == 0 and plan.provenance == prov

    (event,) = plan.events
    assert event.type is EventType.NODE_SPLIT
    assert event.payload["node_id"] == str(node.id)
    assert [c["node_id"] for c in event.payload["children"]] == [str(c.id) for c in children]
    assert [(c["title"], c["intent"], c["target_words"]) for c in event.payload["children"]] == [
        (c.title, c.intent, c.target_words) for c in children]


@PROPERTY
@given(valid_splits(), provenances(), provenances(), st.data())
def test_child_ids_depend_only_on_the_node_and_ordinal(
    case: tuple[Node, SplitProposal, RunOptions], prov: Provenance, other_prov: Provenance, data: st.DataObject
) -> None:
    node, proposal, options = case
    plan = plan_split(node, proposal, options=options, provenance=prov)
    assert isinstance(plan, Mutation)
    ids = [c.id for c in plan.node_inserts]

    # Same node id, everything else different: other titles, order of budgets, intents, provenance,
    # and node attributes that are not its identity.
    new_titles = data.draw(st.lists(title, min_size=len(ids), max_size=len(ids), unique_by=str.casefold))
    other = SplitProposal(tuple(
        ChildPlan(t, "something else entirely", c.target_words)
        for t, c in zip(new_titles, reversed(proposal.children), strict=True)))
    moved = replace(node, artifact_id=data.draw(st.uuids()), title=node.title + " (renamed)",
                    intent="another intent", ordinal=node.ordinal + 1)
    again = plan_split(moved, other, options=options, provenance=other_prov)
    assert isinstance(again, Mutation)
    assert [c.id for c in again.node_inserts] == ids

    # A different node gets different ids at every ordinal.
    stranger = replace(node, id=data.draw(st.uuids().filter(lambda u: u != node.id)))
    elsewhere = plan_split(stranger, proposal, options=options, provenance=prov)
    assert isinstance(elsewhere, Mutation)
    assert not {c.id for c in elsewhere.node_inserts} & set(ids)


@SMALL
@given(valid_splits(), provenances(), st.sampled_from([NodeState.SPLIT, NodeState.WRITTEN, NodeState.FAILED]))
def test_split_of_a_node_that_is_not_planned_is_refused(
    case: tuple[Node, SplitProposal, RunOptions], prov: Provenance, state: NodeState
) -> None:
    node, proposal, options = case
    with pytest.raises(FailedPrecondition) as raised:
        plan_split(replace(node, state=state), proposal, options=options, provenance=prov)
    assert raised.value.reason == "NODE_NOT_PLANNED"


PROV = Provenance(origin=Origin.LLM, run_id=uuid.UUID(int=1), llm_call_id=uuid.UUID(int=2), model="test-model")


def _plain_node(target: int) -> Node:
    return Node(id=uuid.UUID(int=7), artifact_id=uuid.UUID(int=8), parent_id=None, ordinal=0, depth=0,
                title="Heat pumps", intent="", target_words=target, state=NodeState.PLANNED)


def test_siblings_of_one_title_are_merged_in_place_with_their_budgets_and_intents() -> None:
    # What Gemma 3 270M proposed on every attempt for one brief: a title twice among five children.
    children = (ChildPlan("How they work", "The cycle.", 600), ChildPlan("Heat pump installation", "Siting.", 600),
                ChildPlan("Costs", "", 600), ChildPlan("heat pump installation ", "Permits.", 600),
                ChildPlan("Heat pump installation", "Siting.", 600))
    plan = plan_split(_plain_node(3000), SplitProposal(children), options=RunOptions(), provenance=PROV)
    assert isinstance(plan, Mutation), plan
    assert [(c.title, c.intent, c.target_words) for c in plan.node_inserts] == [
        ("How they work", "The cycle.", 600), ("Heat pump installation", "Siting. Permits.", 1800), ("Costs", "", 600)]
    assert plan.nodes_planned == 3
    trim, merge = plan.repairs
    assert "whitespace" in trim
    assert "'Heat pump installation'" in merge and "5 children proposed, 3 kept" in merge
    assert plan.events[0].payload["repairs"] == list(plan.repairs)


def test_a_merge_that_would_lose_something_is_not_made_and_the_split_is_rejected() -> None:
    node = _plain_node(1000)
    # Every child of one title: one section is not a split.
    alike = SplitProposal((ChildPlan("Costs", "", 500), ChildPlan("COSTS", "", 500)))
    # Joined intents past 1,000 characters.
    long_intent = "w " * 300
    overflow = SplitProposal((ChildPlan("A", long_intent, 400), ChildPlan("a", long_intent + "more", 300),
                              ChildPlan("B", "", 300)))
    for proposal in (alike, overflow):
        plan = plan_split(node, proposal, options=RunOptions(), provenance=PROV)
        assert isinstance(plan, Rejection), plan
        assert any("repeats an earlier sibling's title" in e for e in plan.errors), plan.errors


# --- Content ------------------------------------------------------------------------------------

@st.composite
def valid_blocks(draw: st.DrawFn) -> BlockContent:
    """One valid block, already in normalized form (what the store holds)."""
    kind = draw(st.sampled_from(list(BlockKind)))
    if kind is BlockKind.PARAGRAPH:
        return BlockContent(kind, text=draw(phrase(1, 60)))
    if kind is BlockKind.QUOTE:
        return BlockContent(kind, text=draw(phrase(1, 20)))
    if kind is BlockKind.HEADING:
        return BlockContent(kind, text=draw(phrase(1, 5)), heading_level=draw(st.integers(1, 4)))
    if kind in (BlockKind.BULLET_LIST, BlockKind.ORDERED_LIST):
        return BlockContent(kind, items=tuple(draw(st.lists(phrase(1, 8), min_size=1, max_size=6))))
    if kind is BlockKind.CODE:
        return BlockContent(kind, text=draw(st.sampled_from(["x = 1", "print('hi')\n", "SELECT 1;"])),
                            language=draw(st.sampled_from(["", "python", "sql"])))
    width = draw(st.integers(1, 4))
    header = tuple(draw(st.lists(phrase(1, 2), min_size=width, max_size=width)))
    rows = draw(st.lists(st.lists(phrase(1, 3), min_size=width, max_size=width).map(tuple), min_size=1, max_size=4))
    return BlockContent(kind, table_header=header, table_rows=tuple(rows))


def padded(content: BlockContent) -> BlockContent:
    """The same block as a model might send it: surrounding whitespace, and stray fields of other kinds."""
    kind = content.kind
    if kind is BlockKind.PARAGRAPH:
        return replace(content, text=f"  {content.text}\n", heading_level=3, items=("stray",))
    if kind in (BlockKind.QUOTE, BlockKind.HEADING):
        return replace(content, text=f"\t{content.text}  ", language="en")
    if kind in (BlockKind.BULLET_LIST, BlockKind.ORDERED_LIST):
        return replace(content, items=tuple(f" {i} " for i in content.items), text="stray text")
    if kind is BlockKind.CODE:
        return replace(content, language=f" {content.language} ", table_header=("stray",))
    return replace(content, table_header=tuple(f" {h}" for h in content.table_header),
                   table_rows=tuple(tuple(f"{c} " for c in r) for r in content.table_rows), text="stray")


def oracle_words(content: BlockContent) -> int:
    """Whitespace-separated words of every text field; code does not count."""
    fields = [content.text] if content.kind is not BlockKind.CODE else []
    fields += [*content.items, *content.table_header, *(c for r in content.table_rows for c in r)]
    return sum(len(f.split()) for f in fields)


def block_ok(content: BlockContent) -> bool:
    """The documented rules for one (normalized) block."""
    kind = content.kind
    text_kinds = (BlockKind.PARAGRAPH, BlockKind.HEADING, BlockKind.CODE, BlockKind.QUOTE)
    if kind in text_kinds and (not content.text.strip() or len(content.text) > 20_000):
        return False
    if kind is BlockKind.HEADING and content.heading_level not in (1, 2, 3, 4):
        return False
    if kind in (BlockKind.BULLET_LIST, BlockKind.ORDERED_LIST) and (
            not content.items or len(content.items) > 100 or any(not i.strip() for i in content.items)):
        return False
    if kind is BlockKind.TABLE:
        width = len(content.table_header)
        if width == 0 or any(not h.strip() for h in content.table_header) or not content.table_rows:
            return False
        if any(len(r) != width for r in content.table_rows) or width * (len(content.table_rows) + 1) > 400:
            return False
    return True


def content_oracle(node: Node, blocks: list[BlockContent], summary: str) -> bool:
    """The documented rules for a content proposal; `blocks` are the proposal's blocks, normalized."""
    if not 1 <= len(blocks) <= 200 or not all(block_ok(b) for b in blocks):
        return False
    headings = [b.text.strip().casefold() for b in blocks if b.kind is BlockKind.HEADING]
    if len(set(headings)) != len(headings) or node.title.casefold() in headings:
        return False
    words = sum(oracle_words(b) for b in blocks)
    # Between 0.5x and 1.6x the target, exactly: 2*words >= target and 10*words <= 16*target.
    if not (2 * words >= node.target_words and 10 * words <= 16 * node.target_words):
        return False
    return 0 < len(summary) <= 1500


@st.composite
def content_cases(draw: st.DrawFn) -> tuple[Node, list[BlockContent], ContentProposal]:
    """A node, the normalized blocks of a proposal, and the proposal as sent (maybe padded, maybe broken)."""
    blocks = weighted(draw, (15, st.lists(valid_blocks(), min_size=1, max_size=10)), (1, st.just([])))
    # Usually headings do not repeat, so that most proposals are valid.
    seen: set[str] = set()
    unique: list[BlockContent] = []
    for b in blocks:
        if b.kind is BlockKind.HEADING:
            if b.text.casefold() in seen:
                continue
            seen.add(b.text.casefold())
        unique.append(b)
    blocks = unique
    n = len(blocks)
    if n:
        at = st.integers(0, n - 1)
        defect = draw(st.sampled_from(["none"] * 7 + ["empty text", "ragged table", "heading level",
                                                      "repeated heading", "empty list item"]))
        if defect == "empty text":
            blocks[draw(at)] = BlockContent(draw(st.sampled_from([BlockKind.PARAGRAPH, BlockKind.QUOTE,
                                                                   BlockKind.HEADING, BlockKind.CODE])),
                                            text=draw(st.sampled_from(["", "   ", "\n\t"])), heading_level=2)
        elif defect == "ragged table":
            width = draw(st.integers(1, 3))
            rows = [tuple(["a"] * width), tuple(["b"] * draw(st.sampled_from([width - 1, width + 1])))]
            blocks[draw(at)] = BlockContent(BlockKind.TABLE, table_header=tuple(["h"] * width),
                                            table_rows=tuple(draw(st.permutations(rows))))
        elif defect == "heading level":
            blocks[draw(at)] = BlockContent(BlockKind.HEADING, text="Costs",
                                            heading_level=draw(st.sampled_from([-1, 0, 5, 6, 9])))
        elif defect == "repeated heading":
            blocks.insert(draw(st.integers(0, n)), BlockContent(BlockKind.HEADING, text="Risks", heading_level=2))
            blocks.insert(draw(st.integers(0, n + 1)), BlockContent(
                BlockKind.HEADING, text=draw(st.sampled_from(["Risks", "RISKS", "risks"])),
                heading_level=draw(st.integers(1, 4))))
        elif defect == "empty list item":
            blocks[draw(at)] = BlockContent(BlockKind.BULLET_LIST, items=draw(st.sampled_from([(), ("a", " ")])))
    summary = weighted(draw, (12, phrase(1, 20)), (1, st.sampled_from(["", "s" * 1500, "s" * 1501])))

    words = sum(oracle_words(b) for b in blocks)
    # A target that fits the words, one at either bound or just past it, or any.
    fitting = st.integers(max(1, -(-10 * words // 16)), max(1, 2 * words))
    bounds = st.sampled_from([max(1, v) for v in (2 * words, 2 * words + 1, 2 * words - 1,
                                                  -(-10 * words // 16), -(-10 * words // 16) - 1)])
    target = weighted(draw, (6, fitting), (2, bounds), (1, st.integers(1, 3000)))
    node = draw(planned_nodes(st.just(target)))
    if n and chance(draw, 12):
        # A heading that repeats the section title.
        blocks.insert(0, BlockContent(BlockKind.HEADING, text=node.title, heading_level=2))
    sent = tuple(padded(b) if draw(st.booleans()) else b for b in blocks)
    return node, blocks, ContentProposal(sent, summary)


def existing_blocks(node: Node, contents: list[BlockContent], versions: list[int]) -> list[Block]:
    """Blocks of `node` as an earlier LLM write left them (ids as Apply derives them)."""
    return [
        Block(id=block_id_for(node.id, i), artifact_id=node.artifact_id, node_id=node.id, ordinal=i,
              content=c, origin=Origin.LLM, pinned=False, version=v)
        for i, (c, v) in enumerate(zip(contents, versions, strict=True))
    ]


def _ordinal(change: BlockChange) -> int:
    block = change.after or change.before
    assert block is not None
    return block.ordinal


@PROPERTY
@given(content_cases(), provenances())
def test_content_verdict_matches_the_documented_rules(
    case: tuple[Node, list[BlockContent], ContentProposal], prov: Provenance
) -> None:
    node, blocks, proposal = case
    plan = plan_content(node, [], proposal, provenance=prov)
    assert isinstance(plan, Mutation) == content_oracle(node, blocks, proposal.summary), (plan, blocks)
    assert plan == plan_content(node, [], proposal, provenance=prov)
    if isinstance(plan, Rejection):
        assert plan.errors and all(e for e in plan.errors)
    else:
        words = sum(oracle_words(b) for b in blocks)
        assert (plan.word_delta, plan.words_written, plan.nodes_written) == (words, words, 1)
        assert [c.operation for c in plan.block_changes] == [ChangeOp.CREATE] * len(blocks)
        assert [c.after.content for c in plan.block_changes if c.after] == blocks  # normalized
        assert all(c.after is not None and c.after.version == 1 and c.after.origin is Origin.LLM
                   and not c.after.pinned for c in plan.block_changes)


@pytest.mark.parametrize(("target", "words"), [(1, 0), (3, 1), (51, 25), (101, 50), (1001, 500)])
def test_content_below_half_the_target_is_rejected(target: int, words: int) -> None:
    """Documented bound: at least 0.5x the target. For an odd target, floor(target / 2) words fall short of it."""
    node = Node(id=uuid.UUID(int=1), artifact_id=uuid.UUID(int=2), parent_id=None, ordinal=0, depth=0,
                title="Costs", intent="", target_words=target, state=NodeState.PLANNED)
    blocks = [BlockContent(BlockKind.CODE, text="x = 1")]
    if words:
        blocks.append(BlockContent(BlockKind.PARAGRAPH, text=" ".join(["storage"] * words)))
    assert 2 * words < target  # below 0.5x
    plan = plan_content(node, [], ContentProposal(tuple(blocks), "A summary."), provenance=Provenance(Origin.LLM))
    assert isinstance(plan, Rejection), f"{words} words accepted for a target of {target}"
    # One more word reaches 0.5x and is accepted.
    blocks.append(BlockContent(BlockKind.PARAGRAPH, text="storage"))
    assert isinstance(plan_content(node, [], ContentProposal(tuple(blocks), "A summary."),
                                   provenance=Provenance(Origin.LLM)), Mutation)


@st.composite
def rewrite_cases(draw: st.DrawFn) -> tuple[Node, list[Block], list[BlockContent], ContentProposal]:
    """A written node with blocks, and a valid new proposal that keeps, changes, adds and drops some."""
    old = draw(st.lists(valid_blocks().filter(lambda b: b.kind is not BlockKind.HEADING), min_size=1, max_size=8))
    new: list[BlockContent] = []
    for i in range(draw(st.integers(1, 10))):
        if i < len(old) and draw(st.booleans()):
            new.append(old[i])  # kept as it is
        else:
            new.append(draw(valid_blocks().filter(lambda b: b.kind is not BlockKind.HEADING)))
    words = sum(oracle_words(b) for b in new)
    assume(words > 0)
    node = draw(planned_nodes(st.integers(max(1, -(-10 * words // 16)), max(1, 2 * words))))
    node = replace(node, state=NodeState.WRITTEN)
    existing = existing_blocks(node, old, draw(st.lists(st.integers(1, 9), min_size=len(old), max_size=len(old))))
    sent = tuple(padded(b) if draw(st.booleans()) else b for b in new)
    return node, existing, new, ContentProposal(sent, draw(phrase(1, 20)))


@PROPERTY
@given(rewrite_cases(), provenances())
def test_content_plans_create_update_delete_against_existing_blocks(
    case: tuple[Node, list[Block], list[BlockContent], ContentProposal], prov: Provenance
) -> None:
    node, existing, new, proposal = case
    plan = plan_content(node, existing, proposal, provenance=prov)
    assert isinstance(plan, Mutation), plan
    assert plan == plan_content(node, list(existing), proposal, provenance=prov)

    by_ordinal = {b.ordinal: b for b in existing}
    expected: list[tuple[ChangeOp, int, int | None]] = []  # (operation, ordinal, new version)
    for i, content in enumerate(new):
        old = by_ordinal.get(i)
        if old is None:
            expected.append((ChangeOp.CREATE, i, 1))
        elif old.content != content:
            expected.append((ChangeOp.UPDATE, i, old.version + 1))
    expected += [(ChangeOp.DELETE, b.ordinal, None) for b in existing if b.ordinal >= len(new)]
    got = [(c.operation, _ordinal(c), c.after.version if c.after else None) for c in plan.block_changes]
    assert got == expected

    for change in plan.block_changes:
        if change.operation is ChangeOp.CREATE:
            assert change.before is None and change.after is not None
        elif change.operation is ChangeOp.UPDATE:
            assert change.before is not None and change.after is not None
            assert change.before == by_ordinal[change.after.ordinal]
            assert change.after.id == change.before.id  # the block keeps its identity
        else:
            assert change.after is None and change.before in existing
        if change.after is not None:
            assert change.after.content == new[change.after.ordinal]
            assert change.after.origin is Origin.LLM and not change.after.pinned
            assert change.after.node_id == node.id and change.after.artifact_id == node.artifact_id

    new_words = sum(oracle_words(b) for b in new)
    old_words = sum(oracle_words(b.content) for b in existing)
    assert plan.word_delta == new_words - old_words
    assert plan.words_written == new_words
    (patch,) = plan.node_patches
    assert (patch.node_id, patch.state, patch.word_count, patch.summary) == (
        node.id, NodeState.WRITTEN, new_words, proposal.summary)
    (pre,) = plan.preconditions
    assert pre.node_state is node.state and set(pre.block_versions) == {(b.id, b.version) for b in existing}
    (event,) = plan.events
    assert event.type is EventType.BLOCKS_APPLIED
    assert event.payload["word_count"] == new_words
    assert event.payload["removed_blocks"] == sum(1 for b in existing if b.ordinal >= len(new))
    # Every block of the node after the change, in order: existing ids where an ordinal survives.
    ids = event.payload["block_ids"]
    assert len(ids) == len(set(ids)) == len(new)
    assert all(ids[b.ordinal] == str(b.id) for b in existing if b.ordinal < len(new))


def as_root(node: Node) -> Node:
    return replace(node, parent_id=None, depth=0, ordinal=0)


@SMALL
@given(valid_splits(), provenances())
def test_the_tree_after_a_split_holds_its_children_under_the_split_node(
    case: tuple[Node, SplitProposal, RunOptions], prov: Provenance
) -> None:
    # The executor keeps its tree from the Mutation instead of re-reading what Apply wrote.
    node, proposal, _ = case
    root = as_root(node)
    plan = plan_split(root, proposal, options=RunOptions(max_depth=3), provenance=prov)
    assert isinstance(plan, Mutation), plan
    before = Tree([root])
    after = tree_after(before, plan)
    assert after.get(root.id) == replace(root, state=NodeState.SPLIT, last_run_id=prov.run_id)
    assert list(after.children(root.id)) == list(plan.node_inserts)
    assert before.get(root.id) == root and not before.children(root.id)  # a new tree; the old one is kept


@SMALL
@given(rewrite_cases(), provenances())
def test_the_tree_after_content_holds_the_written_node_and_keeps_the_rest(
    case: tuple[Node, list[Block], list[BlockContent], ContentProposal], prov: Provenance
) -> None:
    node, existing, new, proposal = case
    root = as_root(node)
    plan = plan_content(root, existing, proposal, provenance=prov)
    assert isinstance(plan, Mutation), plan
    after = tree_after(Tree([root]), plan).get(root.id)
    assert after == replace(root, state=NodeState.WRITTEN, summary=proposal.summary,
                            word_count=sum(oracle_words(b) for b in new), last_run_id=prov.run_id)


@PROPERTY
@given(rewrite_cases(), provenances(), provenances())
def test_block_ids_depend_only_on_the_node_and_ordinal(
    case: tuple[Node, list[Block], list[BlockContent], ContentProposal], prov: Provenance, other: Provenance
) -> None:
    node, existing, _new, proposal = case
    plan = plan_content(node, existing, proposal, provenance=prov)
    fresh = plan_content(replace(node, title=node.title + " (renamed)", state=NodeState.PLANNED), [],
                         proposal, provenance=other)
    assert isinstance(plan, Mutation) and isinstance(fresh, Mutation)
    assert plan.events[0].payload["block_ids"] == fresh.events[0].payload["block_ids"]
    assert [c.after.id for c in fresh.block_changes if c.after] == [
        uuid.UUID(i) for i in fresh.events[0].payload["block_ids"]]


@SMALL
@given(rewrite_cases(), provenances(), st.data())
def test_content_for_a_node_with_a_pinned_block_is_refused(
    case: tuple[Node, list[Block], list[BlockContent], ContentProposal], prov: Provenance, data: st.DataObject
) -> None:
    node, existing, _new, proposal = case
    at = data.draw(st.integers(0, len(existing) - 1))
    existing[at] = replace(existing[at], pinned=True, origin=Origin.HUMAN)
    # Even a proposal that would otherwise be rejected: the pin is checked first.
    broken = data.draw(st.sampled_from([proposal, ContentProposal((), ""), replace(proposal, summary="")]))
    with pytest.raises(Aborted) as raised:
        plan_content(node, existing, broken, provenance=prov)
    assert raised.value.reason == "NODE_PINNED"


# --- Human edits ----------------------------------------------------------------------------------

def invalid_blocks() -> st.SearchStrategy[BlockContent]:
    return st.one_of(
        st.builds(BlockContent, st.just(BlockKind.PARAGRAPH), text=st.sampled_from(["", "  ", "\n"])),
        st.builds(BlockContent, st.just(BlockKind.HEADING), text=phrase(1, 3),
                  heading_level=st.sampled_from([0, 5, 7, -2])),
        st.builds(BlockContent, st.just(BlockKind.TABLE), table_header=st.just(("a", "b")),
                  table_rows=st.just((("1", "2"), ("3",)))),
        st.builds(BlockContent, st.just(BlockKind.ORDERED_LIST), items=st.just(())),
    )


@st.composite
def edit_cases(draw: st.DrawFn) -> tuple[Node, Block]:
    node = replace(draw(planned_nodes()), state=NodeState.WRITTEN)
    content = draw(valid_blocks())
    block = Block(id=draw(st.uuids()), artifact_id=node.artifact_id, node_id=node.id,
                  ordinal=draw(st.integers(0, 20)), content=content,
                  origin=draw(st.sampled_from(list(Origin))), pinned=draw(st.booleans()),
                  version=draw(st.integers(1, 50)))
    node = replace(node, word_count=oracle_words(content) + draw(st.integers(0, 2000)))
    return node, block


def _expect(raises: type[Exception], fn: Callable[[], T]) -> Exception:
    with pytest.raises(raises) as raised:
        fn()
    return raised.value


@PROPERTY
@given(edit_cases(), valid_blocks(), st.booleans(), st.booleans())
def test_edit_block_pins_marks_human_and_bumps_version(
    case: tuple[Node, Block], content: BlockContent, pad: bool, check_version: bool
) -> None:
    node, block = case
    sent = padded(content) if pad else content
    expected_version = block.version if check_version else 0
    plan = plan_edit_block(block, sent, node=node, expected_version=expected_version)
    assert plan == plan_edit_block(block, sent, node=node, expected_version=expected_version)
    (change,) = plan.block_changes
    assert change.operation is ChangeOp.UPDATE and change.before == block
    after = change.after
    assert after is not None
    assert after.pinned and after.origin is Origin.HUMAN and after.version == block.version + 1
    assert after.content == content
    assert (after.id, after.node_id, after.ordinal, after.artifact_id) == (
        block.id, block.node_id, block.ordinal, block.artifact_id)
    delta = oracle_words(content) - oracle_words(block.content)
    assert plan.word_delta == delta
    (patch,) = plan.node_patches
    assert (patch.node_id, patch.state, patch.word_count) == (node.id, node.state, node.word_count + delta)
    assert plan.provenance.origin is Origin.HUMAN and plan.provenance.run_id is None
    (pre,) = plan.preconditions
    assert pre.block_versions == ((block.id, block.version),) and not pre.forbid_pinned


@PROPERTY
@given(edit_cases(), st.one_of(valid_blocks(), invalid_blocks()), st.integers(1, 60))
def test_edit_block_with_a_stale_version_is_aborted(
    case: tuple[Node, Block], content: BlockContent, expected_version: int
) -> None:
    node, block = case
    assume(expected_version != block.version)
    err = _expect(Aborted, lambda: plan_edit_block(block, content, node=node, expected_version=expected_version))
    assert isinstance(err, Aborted)
    assert err.reason == "STALE_VERSION" and err.metadata["current_version"] == str(block.version)


@SMALL
@given(edit_cases(), invalid_blocks(), st.booleans())
def test_edit_block_with_invalid_content_is_refused(
    case: tuple[Node, Block], content: BlockContent, check_version: bool
) -> None:
    node, block = case
    err = _expect(InvalidArgument, lambda: plan_edit_block(
        block, content, node=node, expected_version=block.version if check_version else 0))
    assert isinstance(err, InvalidArgument) and err.reason == "INVALID_BLOCK"

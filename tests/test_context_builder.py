"""ContextBuilder: hard budget, faithful manifest, parseable TASK line, determinism."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lace_engine.domain import Artifact, Node, NodeState
from lace_engine.pipeline.context_builder import (
    MAX_COVERED_HEADINGS,
    ContextBudgetError,
    ManifestEntry,
    PromptContext,
    build_split_context,
    build_write_context,
    content_hash,
)
from lace_engine.pipeline.proposals import parse_task_spec, render_task_spec
from lace_engine.pipeline.tree import Tree
from lace_engine.tokens import estimate_tokens

ARTIFACT_ID = uuid.UUID(int=0xA)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WORDS = ["alpha", "beta", "gamma", "delta", "ownership", "borrow", "lifetimes", "traits", "async", "cargo"]
ODD = ['"quoted"', "naïve", "数据", "a|b", "<tag>", "TASK:", "{json}", "emoji🙂", "back\\slash"]

HEADERS = {
    "brief": "# Brief",
    "style": "# Style",
    "ancestor": "# Where this section sits (outermost first)",
    "node": "# This section",
    "sibling": "# Sibling sections, in document order",
    "summary": "# What the earlier sibling sections say",
    "covered_heading": "# Headings already covered elsewhere in the document (do not repeat them)",
    "instruction": "# Instruction for this attempt",
    "feedback": "# Your previous answer was rejected; fix every point below",
}
LINE_KINDS = {"ancestor", "sibling", "summary", "covered_heading", "feedback"}
TASK_KEYS = {"step", "title", "intent", "target_words", "depth", "instruction"}


def _text(rnd: random.Random, lo: int, hi: int) -> str:
    words = [rnd.choice(WORDS) if rnd.random() > 0.1 else rnd.choice(ODD) for _ in range(rnd.randint(lo, hi))]
    return " ".join(words)


def _artifact(rnd: random.Random, root_id: uuid.UUID) -> Artifact:
    brief = "\n".join(_text(rnd, 5, 60) for _ in range(rnd.randint(0, 12)))
    return Artifact(
        id=ARTIFACT_ID,
        title="A Guide",
        brief=brief,
        style=_text(rnd, 0, 30),
        target_words=20000,
        root_node_id=root_id,
        version=3,
        word_count=0,
        active_run_id=None,
        create_time=T0,
        update_time=T0,
    )


def _random_tree(rnd: random.Random, size: int) -> list[Node]:
    states = [NodeState.PLANNED, NodeState.SPLIT, NodeState.WRITTEN, NodeState.FAILED]
    nodes = [Node(uuid.UUID(int=1), ARTIFACT_ID, None, 0, 0, "A Guide", _text(rnd, 0, 20), 20000, NodeState.SPLIT)]
    counts: dict[uuid.UUID, int] = {}
    for i in range(2, size + 1):
        parent = rnd.choice(nodes[: max(1, len(nodes) // 2 + 1)])
        ordinal = counts.get(parent.id, 0)
        counts[parent.id] = ordinal + 1
        state = rnd.choice(states)
        title = _text(rnd, 1, 6)
        if rnd.random() < 0.05:
            title = title + "\nsecond line"
        nodes.append(
            Node(
                id=uuid.UUID(int=i),
                artifact_id=ARTIFACT_ID,
                parent_id=parent.id,
                ordinal=ordinal,
                depth=parent.depth + 1,
                title=title,
                intent=_text(rnd, 0, 40),
                target_words=rnd.randint(50, 5000),
                state=state,
                summary=_text(rnd, 0, 50) if state is NodeState.WRITTEN else "",
            )
        )
    return nodes


def _build(kind: str, artifact: Artifact, tree: Tree, node_id: uuid.UUID, **kw: object) -> PromptContext:
    if kind == "split":
        return build_split_context(artifact, tree, node_id, child_count=3, **kw)  # type: ignore[arg-type]
    return build_write_context(artifact, tree, node_id, **kw)  # type: ignore[arg-type]


def _sections(user: str) -> dict[str, str]:
    """Splits the user prompt into section bodies by their headers (bodies without the blank line)."""
    body_end = user.rindex("\n\n")  # directive and TASK follow the last blank line
    found: list[tuple[int, str]] = []
    cursor = 0
    for kind, header in HEADERS.items():
        probe = header + "\n" if cursor == 0 and user.startswith(header + "\n") else "\n\n" + header + "\n"
        at = user.find(probe, cursor)
        if at >= 0:
            found.append((at, kind))
            cursor = at + len(probe)
    out: dict[str, str] = {}
    for i, (at, kind) in enumerate(found):
        start = user.index(HEADERS[kind] + "\n", at) + len(HEADERS[kind]) + 1
        end = found[i + 1][0] if i + 1 < len(found) else body_end
        out[kind] = user[start:end]
    return out


def _check_manifest(ctx: PromptContext) -> None:
    sections = _sections(ctx.user)
    by_kind: dict[str, list[ManifestEntry]] = {}
    for entry in ctx.manifest:
        by_kind.setdefault(entry.kind, []).append(entry)
    assert set(by_kind) == set(sections), (set(by_kind), set(sections))
    for kind, body in sections.items():
        parts = body.split("\n") if kind in LINE_KINDS else [body]
        hashes = [content_hash(part) for part in parts]
        assert hashes == [e.content_hash for e in by_kind[kind]], kind


def _check_invariants(ctx: PromptContext, budget: int, feedback: Sequence[str]) -> None:
    assert ctx.estimated_tokens <= budget
    assert ctx.estimated_tokens == estimate_tokens(ctx.system) + estimate_tokens(ctx.user) + 8
    assert ctx.user.endswith("\n" + render_task_spec(ctx.task))
    assert parse_task_spec(ctx.user) == ctx.task
    assert set(ctx.task) >= TASK_KEYS
    for item in feedback:
        if item.strip():
            assert "- " + " ".join(item.split()) in ctx.user
    assert sum(e.kind == "feedback" for e in ctx.manifest) == sum(1 for f in feedback if f.strip())
    _check_manifest(ctx)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 160),
    budget=st.integers(250, 7000),
    kind=st.sampled_from(["split", "write"]),
    instruction=st.sampled_from(["", "shorter, more concrete", "  Add an example.\nKeep it brief.  "]),
    feedback=st.lists(st.text(min_size=0, max_size=80), max_size=4),
)
def test_budget_is_a_hard_limit(
    seed: int, size: int, budget: int, kind: str, instruction: str, feedback: list[str]
) -> None:
    rnd = random.Random(seed)
    nodes = _random_tree(rnd, size)
    tree = Tree(nodes)
    artifact = _artifact(rnd, nodes[0].id)
    node = rnd.choice(nodes)
    try:
        ctx = _build(kind, artifact, tree, node.id, instruction=instruction, feedback=feedback, budget_tokens=budget)
    except ContextBudgetError:
        # Only legitimate when the never-dropped parts alone come close to the budget.
        path_only = Tree([*tree.ancestors(node.id), node])
        bare = dataclasses.replace(artifact, brief="", style="")
        minimal = _build(kind, bare, path_only, node.id, instruction=instruction, feedback=feedback)
        # Pieces are estimated one by one, which rounds up per piece and can only overestimate.
        slack = minimal.estimated_tokens // 8 + len(minimal.manifest) + 12
        assert minimal.estimated_tokens + slack > budget
        return
    _check_invariants(ctx, budget, feedback)

    ids = {e.node_id for e in ctx.manifest}
    assert node.id in ids
    assert all(a.id in ids for a in tree.ancestors(node.id))
    # Never the node's own subtree, and only written or split nodes count as covered.
    subtree = {n.id for n in tree.subtree(node.id)}
    for entry in ctx.manifest:
        if entry.kind == "covered_heading":
            assert entry.node_id not in subtree
            assert entry.node_id is not None
            assert tree.get(entry.node_id).state in (NodeState.WRITTEN, NodeState.SPLIT)


def _chain_tree() -> tuple[Artifact, Tree, Node]:
    """A root with 8 chapters of 6 written sections each; the target is chapter 4, section 3."""
    rnd = random.Random(7)
    root = Node(uuid.UUID(int=1), ARTIFACT_ID, None, 0, 0, "Book", "The whole book.", 48000, NodeState.SPLIT)
    nodes = [root]
    n = 1
    for c in range(8):
        n += 1
        chapter = Node(uuid.UUID(int=n), ARTIFACT_ID, root.id, c, 1, f"Chapter {c}", "", 6000, NodeState.SPLIT)
        nodes.append(chapter)
        for s in range(6):
            n += 1
            state = NodeState.WRITTEN if (c, s) < (4, 3) else NodeState.PLANNED
            nodes.append(
                Node(
                    uuid.UUID(int=n),
                    ARTIFACT_ID,
                    chapter.id,
                    s,
                    2,
                    f"Section {c}.{s}",
                    _text(rnd, 5, 15),
                    1000,
                    state,
                    summary=_text(rnd, 10, 30) if state is NodeState.WRITTEN else "",
                )
            )
    target = next(x for x in nodes if x.title == "Section 4.3")
    artifact = dataclasses.replace(_artifact(rnd, root.id), brief=_text(rnd, 300, 300), style="Plain.")
    return artifact, Tree(nodes), target


def _counts(ctx: PromptContext) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in ctx.manifest:
        out[e.kind] = out.get(e.kind, 0) + 1
    return out


def test_drop_order_and_farthest_first() -> None:
    artifact, tree, node = _chain_tree()
    full = build_write_context(artifact, tree, node.id, budget_tokens=100_000)
    full_counts = _counts(full)
    assert full_counts["sibling"] == 6 and full_counts["summary"] == 3 and full_counts["covered_heading"] > 10
    full_brief = next(e for e in full.manifest if e.kind == "brief").content_hash
    siblings = [s.id for s in tree.siblings(node.id)]
    position = siblings.index(node.id)
    seen_states: set[tuple[int, int, int, bool]] = set()

    for budget in range(full.estimated_tokens, 500, -7):
        try:
            ctx = build_write_context(artifact, tree, node.id, budget_tokens=budget)
        except ContextBudgetError:
            break
        _check_invariants(ctx, budget, ())
        c = _counts(ctx)
        covered, summaries, outline = c.get("covered_heading", 0), c.get("summary", 0), c.get("sibling", 0)
        brief = [e.content_hash for e in ctx.manifest if e.kind == "brief"]
        truncated = brief != [full_brief]
        if summaries < full_counts["summary"]:
            assert covered == 0
        if outline < full_counts["sibling"]:
            assert summaries == 0 and covered == 0
        if truncated:
            assert outline == 0
        # Outline entries kept are those nearest the node; summaries kept are the latest ones.
        kept = [siblings.index(e.node_id) for e in ctx.manifest if e.kind == "sibling" and e.node_id]
        if kept:
            assert position in kept
            assert kept == list(range(min(kept), max(kept) + 1))
            assert max(kept) - position <= position - min(kept) + 1
        kept_summaries = [siblings.index(e.node_id) for e in ctx.manifest if e.kind == "summary" and e.node_id]
        assert kept_summaries == list(range(position - len(kept_summaries), position))
        seen_states.add((covered, summaries, outline, truncated))
    # The sweep went through every stage of dropping.
    assert any(s[0] == 0 and s[1] > 0 for s in seen_states)
    assert any(s[1] == 0 and s[2] > 0 for s in seen_states)
    assert any(s[2] == 0 and s[3] for s in seen_states)


def test_covered_headings_are_nearest_first_and_in_document_order() -> None:
    artifact, tree, node = _chain_tree()
    ctx = build_write_context(artifact, tree, node.id, budget_tokens=100_000)
    covered = [e.node_id for e in ctx.manifest if e.kind == "covered_heading" and e.node_id is not None]
    assert len(covered) <= MAX_COVERED_HEADINGS
    order = {n.id: i for i, n in enumerate(tree.preorder())}
    assert covered == sorted(covered, key=lambda i: order[i])
    ancestors = {a.id for a in tree.ancestors(node.id)}
    siblings = {s.id for s in tree.siblings(node.id)}
    assert not (set(covered) & (ancestors | siblings))
    titles = {tree.get(i).title for i in covered if i}
    # Other chapters (distance 2) are covered; the planned sections after the node are not.
    assert {f"Chapter {c}" for c in range(8) if c != 4} <= titles
    assert "Section 5.0" not in titles
    assert "Section 4.4" not in titles  # a sibling: listed in the outline instead


def test_feedback_is_kept_when_everything_else_goes() -> None:
    artifact, tree, node = _chain_tree()
    feedback = ["blocks[2]: kind 'image' is not allowed", "wrote 2400 words, expected about 1000"]
    base = build_write_context(artifact, tree, node.id, feedback=feedback, budget_tokens=100_000)
    tight = base.estimated_tokens - 600
    ctx = build_write_context(artifact, tree, node.id, feedback=feedback, budget_tokens=tight)
    _check_invariants(ctx, tight, feedback)
    assert "covered_heading" not in _counts(ctx)
    huge = ["x " * 3000]
    with pytest.raises(ContextBudgetError):
        build_write_context(artifact, tree, node.id, feedback=huge, budget_tokens=2000)


def test_split_task_and_root_node() -> None:
    artifact, tree, _ = _chain_tree()
    root = tree.root
    ctx = build_split_context(artifact, tree, root.id, child_count=8, instruction="More depth")
    _check_invariants(ctx, 6000, ())
    assert ctx.task == {
        "step": "split",
        "title": "Book",
        "intent": "The whole book.",
        "target_words": 48000,
        "depth": 0,
        "instruction": "More depth",
        "child_count": 8,
    }
    kinds = _counts(ctx)
    assert "ancestor" not in kinds and "sibling" not in kinds and "covered_heading" not in kinds
    assert kinds["instruction"] == 1
    assert "exactly child_count children" in ctx.system
    with pytest.raises(ValueError):
        build_split_context(artifact, tree, root.id, child_count=0)
    with pytest.raises(KeyError):
        build_write_context(artifact, tree, uuid.UUID(int=999_999))


def test_write_prompt_mentions_the_rules() -> None:
    artifact, tree, node = _chain_tree()
    ctx = build_write_context(artifact, tree, node.id)
    for phrase in ("ONLY with one JSON object", "heading_level is 1 or 2", "summary", "table", "code"):
        assert phrase in ctx.system
    assert ctx.task["step"] == "write" and "child_count" not in ctx.task
    assert "<- this section" in ctx.user
    assert artifact.brief.strip() in ctx.user


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), budget=st.integers(400, 5000))
def test_deterministic(seed: int, budget: int) -> None:
    rnd = random.Random(seed)
    nodes = _random_tree(rnd, 80)
    artifact = _artifact(rnd, nodes[0].id)
    node = rnd.choice(nodes)
    shuffled = nodes[:]
    rnd.shuffle(shuffled)
    try:
        a = build_write_context(artifact, Tree(nodes), node.id, feedback=["x"], budget_tokens=budget)
    except ContextBudgetError:
        return
    b = build_write_context(artifact, Tree(shuffled), node.id, feedback=["x"], budget_tokens=budget)
    assert a == b
    assert a.user.encode() == b.user.encode()

"""The offline provider: deterministic, schema-valid proposals with exact budgets."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import jsonschema
import pytest

from lace_engine.domain import BlockKind, StepKind
from lace_engine.llm.base import LLMBadRequest, LLMRequest
from lace_engine.llm.offline import OfflineProvider, generate_content, generate_split
from lace_engine.pipeline.proposal_schema import content_schema, split_schema
from lace_engine.pipeline.proposals import parse_content, parse_split, render_task_spec
from lace_engine.tokens import estimate_tokens


def schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """Every way `value` breaks `schema` (JSON Schema 2020-12, bounds included), by the jsonschema library."""
    jsonschema.Draft202012Validator.check_schema(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in jsonschema.Draft202012Validator(schema).iter_errors(value)]


def split_task(target: int, count: int, *, title: str = "Designing a Payments Platform", depth: int = 0,
               ) -> dict[str, Any]:
    return {"step": "split", "title": title, "intent": "Explain the design.", "target_words": target,
            "depth": depth, "child_count": count, "instruction": ""}


def write_task(target: int, *, title: str = "Risks and Mitigations", depth: int = 2) -> dict[str, Any]:
    return {"step": "write", "title": title, "intent": "Cover the main risks.", "target_words": target,
            "depth": depth, "instruction": ""}


def request_for(task: dict[str, Any], seed: int = 7) -> LLMRequest:
    step = StepKind(task["step"])
    split = step is StepKind.SPLIT
    try:
        words = task["target_words"]
        call = split_schema(task["child_count"], words) if split else content_schema(words)
    except (TypeError, ValueError):  # an unusable task, for the provider to refuse
        call = split_schema(2, 1000) if split else content_schema(100)
    return LLMRequest(
        step=step,
        system="You are a careful technical writer.",
        user="Context goes here.\n" + render_task_spec(task),
        schema_name=call.name,
        schema=call.schema,
        task=task,
        seed=seed,
    )


# --- split -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("target", "count", "depth", "title"),
    [
        (10_000, 6, 0, "Designing a Payments Platform"),
        (3_000, 4, 1, "Design Principles"),
        (2_001, 3, 2, "Risks and Mitigations"),
        (1_999, 2, 0, "Sourdough"),
        (1_234, 2, 3, "Edge Cases"),
        (500, 1, 1, "Overview"),
        (7, 5, 1, "Tiny"),
        (50_000, 12, 0, "A Very Long Handbook on Operating Distributed Systems at Scale"),
    ],
)
def test_split_has_exact_children_and_budgets(target: int, count: int, depth: int, title: str) -> None:
    for seed in range(40):
        data = generate_split(split_task(target, count, title=title, depth=depth), seed)
        if target >= count:  # a schema needs a positive share per child
            assert schema_errors(data, split_schema(count, target).schema) == []
        proposal = parse_split(data)
        assert len(proposal.children) == count
        assert sum(c.target_words for c in proposal.children) == target
        assert all(c.target_words >= 1 for c in proposal.children)
        titles = [c.title for c in proposal.children]
        assert all(t.strip() for t in titles)
        assert len({t.casefold() for t in titles}) == count, titles
        assert title.casefold() not in {t.casefold() for t in titles}
        for child in proposal.children:
            # One sentence: it ends with a full stop and has no other sentence break.
            assert child.intent.endswith("."), child.intent
            assert not re.search(r"[.!?]\s", child.intent), child.intent
            assert title in child.intent


def test_split_budgets_are_spread_not_equal() -> None:
    budgets = [c["target_words"] for c in generate_split(split_task(10_000, 8), 3)["children"]]
    assert len(set(budgets)) > 1
    # Roughly proportional: no child gets less than half or more than twice an equal share.
    assert all(625 <= b <= 2500 for b in budgets)


def test_split_budget_below_child_count_still_sums_exactly() -> None:
    data = generate_split(split_task(2, 5), 1)
    assert sum(c["target_words"] for c in data["children"]) == 2


def test_wide_split_keeps_titles_distinct() -> None:
    data = generate_split(split_task(100_000, 80), 11)
    titles = [c["title"] for c in data["children"]]
    assert len(titles) == 80
    assert len({t.casefold() for t in titles}) == 80


def test_split_is_deterministic_per_seed_and_task() -> None:
    task = split_task(8_000, 5)
    assert generate_split(task, 42) == generate_split(dict(task), 42)
    variants = {json.dumps(generate_split(task, seed)) for seed in range(20)}
    assert len(variants) > 10
    assert generate_split(task, 42) != generate_split({**task, "title": "Another Title"}, 42)


def test_split_titles_vary_with_depth_and_read_like_sections() -> None:
    top = generate_split(split_task(10_000, 5, depth=0), 5)["children"]
    assert top[0]["title"] in {
        "Background and Context", "Introduction", "Overview", "Motivation", "Problem Statement",
        "Goals and Scope", "Purpose and Audience",
    }
    for child in top:
        assert child["title"][0].isupper()
        assert len(child["title"].split()) <= 8


@pytest.mark.parametrize("bad", [
    {"target_words": -1}, {"target_words": "many"}, {"child_count": 0}, {"child_count": None}, {"title": 3},
])
def test_split_rejects_unusable_tasks(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        generate_split({**split_task(1000, 3), **bad}, 1)


# --- write -----------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [*range(1, 70), 80, 99, 150, 199, 250, 333, 600, 1000, 1777, 4000])
def test_write_hits_the_word_budget(target: int) -> None:
    for seed in range(15):
        data = generate_content(write_task(target), seed)
        assert schema_errors(data, content_schema(target).schema) == []
        proposal = parse_content(data)
        words = sum(b.words() for b in proposal.blocks)
        assert abs(words - target) <= target * 0.05
        # Exact in fact, which keeps the length score of offline runs predictable.
        assert words == target


def test_write_zero_budget_still_writes_something() -> None:
    proposal = parse_content(generate_content(write_task(0), 1))
    assert sum(b.words() for b in proposal.blocks) == 1


def test_write_reads_as_prose() -> None:
    title = "Risks and Mitigations"
    data = generate_content(write_task(800, title=title), 3)
    blocks = parse_content(data).blocks
    paragraphs = [b for b in blocks if b.kind is BlockKind.PARAGRAPH]
    assert len(paragraphs) >= 4
    assert paragraphs[0].text.count(title) >= 1
    for p in paragraphs:
        for sentence in re.split(r"(?<=\.)\s+", p.text):
            assert sentence[0].isupper(), sentence
            assert sentence.endswith("."), sentence
        assert "lorem" not in p.text.lower()
        assert "  " not in p.text
    text = " ".join(p.text for p in paragraphs)
    # Varied, not a loop of one sentence.
    sentences = re.split(r"(?<=\.)\s+", text)
    assert len(set(sentences)) >= 0.9 * len(sentences)


def test_write_mixes_block_kinds_across_seeds() -> None:
    kinds: dict[BlockKind, int] = {}
    for seed in range(200):
        for block in parse_content(generate_content(write_task(1000), seed)).blocks:
            kinds[block.kind] = kinds.get(block.kind, 0) + 1
    assert kinds[BlockKind.PARAGRAPH] > 1000
    assert kinds.get(BlockKind.BULLET_LIST, 0) > 10
    assert kinds.get(BlockKind.ORDERED_LIST, 0) > 5
    assert kinds.get(BlockKind.TABLE, 0) > 5
    assert kinds.get(BlockKind.QUOTE, 0) > 5
    assert BlockKind.HEADING not in kinds
    assert BlockKind.CODE not in kinds


def test_write_lists_and_tables_are_well_formed() -> None:
    seen_table = seen_list = False
    for seed in range(200):
        blocks = parse_content(generate_content(write_task(1200), seed)).blocks
        assert blocks[0].kind is BlockKind.PARAGRAPH
        for b in blocks:
            if b.kind in (BlockKind.BULLET_LIST, BlockKind.ORDERED_LIST):
                seen_list = True
                assert 3 <= len(b.items) <= 6
                assert len(set(b.items)) == len(b.items)
                assert all(i and i[0].isupper() for i in b.items)
            if b.kind is BlockKind.TABLE:
                seen_table = True
                assert len(b.table_header) == 3
                assert all(len(row) == 3 for row in b.table_rows)
                assert 3 <= len(b.table_rows) <= 5
    assert seen_table and seen_list


def test_write_summary_is_one_sentence_about_the_title() -> None:
    summary = generate_content(write_task(300, title="Edge Cases"), 9)["summary"]
    assert "Edge Cases" in summary
    assert summary.endswith(".")
    assert not re.search(r"[.!?]\s", summary)


def test_write_is_deterministic_per_seed_and_task() -> None:
    task = write_task(700)
    assert generate_content(task, 5) == generate_content(dict(task), 5)
    assert generate_content(task, 5) != generate_content(task, 6)
    assert generate_content(task, 5) != generate_content({**task, "title": "Other"}, 5)


def test_write_handles_awkward_titles() -> None:
    for title in ["", "   ", "API", "A Title That Goes On For Far Too Many Words To Fit In A Sentence", "x\ny"]:
        data = generate_content(write_task(120, title=title), 2)
        assert sum(b.words() for b in parse_content(data).blocks) == 120
        assert data["summary"].strip()


# --- provider --------------------------------------------------------------------------------

async def test_provider_answers_split_and_write() -> None:
    provider = OfflineProvider()
    assert (provider.name, provider.model) == ("offline", "lace-offline-1")

    split_req = request_for(split_task(6_000, 4))
    split = await provider.complete(split_req)
    assert split.data == generate_split(split_req.task, split_req.seed)
    assert split.provider == "offline" and split.model == "lace-offline-1"
    assert split.finish_reason == "stop"
    # The engine's one token estimate (lace_engine.tokens), the same the context builder budgets with.
    assert split.prompt_tokens == estimate_tokens(split_req.system + split_req.user) > 0
    assert split.completion_tokens == estimate_tokens(json.dumps(split.data)) > 0

    write_req = request_for(write_task(400), seed=99)
    write = await provider.complete(write_req)
    assert write.data == generate_content(write_req.task, 99)
    assert sum(b.words() for b in parse_content(write.data).blocks) == 400
    assert write.completion_tokens > 400 // 4
    await provider.aclose()


async def test_provider_rejects_unusable_tasks_as_bad_requests() -> None:
    provider = OfflineProvider()
    with pytest.raises(LLMBadRequest) as info:
        await provider.complete(request_for({**write_task(100), "target_words": "lots"}))
    assert info.value.provider == "offline"
    assert not info.value.reask
    with pytest.raises(LLMBadRequest):
        await provider.complete(request_for({**split_task(100, 2), "child_count": 0}))


async def test_provider_simulates_latency() -> None:
    provider = OfflineProvider(latency_ms=60)
    started = time.perf_counter()
    response = await provider.complete(request_for(write_task(50)))
    assert time.perf_counter() - started >= 0.055
    assert response.latency_ms >= 55


async def test_provider_is_safe_under_concurrency() -> None:
    provider = OfflineProvider(latency_ms=1)
    requests = [request_for(write_task(100 + i), seed=i) for i in range(50)]
    results = await asyncio.gather(*(provider.complete(r) for r in requests))
    assert [r.data for r in results] == [generate_content(r.task, r.seed) for r in requests]


def test_negative_latency_is_refused() -> None:
    with pytest.raises(ValueError):
        OfflineProvider(latency_ms=-1)

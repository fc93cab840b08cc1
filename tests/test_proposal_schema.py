"""Per-call schemas and output budgets: pure functions of the task, checked without I/O."""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lace_engine.llm.offline import generate_content, generate_split
from lace_engine.pipeline.apply import DEFAULT_LIMITS
from lace_engine.pipeline.proposal_schema import (
    BOUND_KEYWORDS,
    content_bounds,
    content_schema,
    portable_schema,
    prose_bounds,
    split_schema,
)
from lace_engine.pipeline.proposals import parse_content, parse_split
from lace_engine.tokens import estimate_tokens
from tests.support.openai_server import schema_keys


def valid(value: Any, schema: dict[str, Any]) -> bool:
    jsonschema.Draft202012Validator.check_schema(schema)
    return bool(jsonschema.Draft202012Validator(schema).is_valid(value))


def even_split(count: int, total: int) -> dict[str, Any]:
    share, extra = divmod(total, count)
    return {"children": [{"title": f"Part {i}", "intent": "Covers one part.", "target_words": share + (i < extra)}
                         for i in range(count)]}


@settings(max_examples=200, deadline=None)
@given(count=st.integers(2, 8), share=st.integers(50, 5000))
def test_split_schema_takes_exactly_the_child_count_and_an_even_share(count: int, share: int) -> None:
    total = count * share + share // 3
    call = split_schema(count, total)
    children = call.schema["properties"]["children"]
    assert children["minItems"] == children["maxItems"] == count
    assert valid(even_split(count, total), call.schema)
    assert not valid(even_split(count + 1, total), call.schema)
    assert not valid(even_split(count - 1, total), call.schema) or count - 1 == 0
    # The per-child band never admits less than Apply's minimum.
    assert children["items"]["properties"]["target_words"]["minimum"] >= DEFAULT_LIMITS.min_child_words


@settings(max_examples=100, deadline=None)
@given(count=st.integers(2, 8), share=st.integers(50, 5000))
def test_split_budget_covers_the_schemas_largest_answer(count: int, share: int) -> None:
    call = split_schema(count, count * share)
    child = call.schema["properties"]["children"]["items"]["properties"]
    # Every string at its longest and every number at its widest, one token a character at worst.
    largest = {"children": [{"title": "t" * child["title"]["maxLength"], "intent": "i" * child["intent"]["maxLength"],
                             "target_words": child["target_words"]["maximum"]} for _ in range(count)]}
    assert valid(largest, call.schema)
    assert len(json.dumps(largest)) <= call.max_output_tokens
    assert call.max_output_tokens < 8192  # the old constant, for every split LACE makes


@pytest.mark.parametrize("target", [50, 100, 333, 600, 1000, 2500])
def test_content_budget_covers_the_longest_section_apply_accepts(target: int) -> None:
    call = content_schema(target)
    max_words, max_blocks, paragraph_chars = content_bounds(target)
    assert max_words == int(target * DEFAULT_LIMITS.max_length_ratio)
    # The longest prose Apply accepts, in as many paragraphs as the schema allows.
    per_block = -(-max_words // max_blocks)
    words = ["word"] * max_words
    blocks = [{"kind": "paragraph", "text": " ".join(words[i:i + per_block])}
              for i in range(0, max_words, per_block)]
    answer = {"blocks": blocks, "summary": "s" * call.schema["properties"]["summary"]["maxLength"]}
    assert valid(answer, call.schema)
    assert all(len(b["text"]) <= paragraph_chars for b in blocks)
    assert estimate_tokens(json.dumps(answer)) <= call.max_output_tokens


def test_content_budget_follows_the_target_not_a_constant() -> None:
    budgets = [content_schema(t).max_output_tokens for t in (100, 300, 1000, 3000)]
    assert budgets == sorted(budgets) and len(set(budgets)) == 4
    assert content_schema(1000).max_output_tokens < 8192


def test_content_schema_bounds_every_array_and_string() -> None:
    schema = content_schema(800).schema

    def unbounded(node: Any, path: str) -> list[str]:
        out: list[str] = []
        if isinstance(node, dict):
            if node.get("type") == "array" and "maxItems" not in node:
                out.append(path)
            if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
                out.append(path)
            for k, v in node.items():
                out += unbounded(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                out += unbounded(v, f"{path}[{i}]")
        return out

    assert unbounded(schema, "$") == []
    block = schema["properties"]["blocks"]
    kinds = [v["properties"]["kind"]["enum"] for v in block["items"]["anyOf"]]
    assert sorted(k for (k,) in kinds) == sorted(
        ["paragraph", "heading", "bullet_list", "ordered_list", "code", "quote", "table"])
    heading = next(v for v in block["items"]["anyOf"] if v["properties"]["kind"]["enum"] == ["heading"])
    assert heading["properties"]["heading_level"]["enum"] == [1, 2]
    # A looping table (the failure seen with a real model) cannot pass the schema.
    looping = {"kind": "table", "table_header": ["a", "b"], "table_rows": [["0", "0"]] * 500}
    assert not valid({"blocks": [looping], "summary": "s"}, schema)


@settings(max_examples=60, deadline=None)
# From 150 words a share: the offline planner spreads budgets down to half a share, and Apply's
# minimum of 50 words a child is then always kept.
@given(target=st.integers(150, 3000), seed=st.integers(0, 2**31))
def test_offline_answers_pass_their_own_schema_and_parse(target: int, seed: int) -> None:
    data = generate_content({"step": "write", "title": "Risks", "intent": "Cover risks.", "target_words": target,
                             "depth": 1, "instruction": ""}, seed)
    assert valid(data, content_schema(target).schema)
    assert parse_content(data).blocks
    count = 2 + seed % 6
    split = generate_split({"step": "split", "title": "Guide", "intent": "All of it.", "target_words": count * target,
                            "depth": 0, "child_count": count, "instruction": ""}, seed)
    assert valid(split, split_schema(count, count * target).schema)
    assert len(parse_split(split).children) == count


def test_portable_schema_drops_only_the_bound_keywords() -> None:
    for call in (split_schema(4, 2000), content_schema(500)):
        portable = portable_schema(call.schema)
        assert schema_keys(call.schema) & BOUND_KEYWORDS
        assert not schema_keys(portable) & BOUND_KEYWORDS
        assert schema_keys(portable) == schema_keys(call.schema) - BOUND_KEYWORDS
        assert portable_schema(portable) == portable
    # Everything the bounded schema accepts, the portable one accepts too.
    assert valid(even_split(4, 2000), portable_schema(split_schema(4, 2000).schema))


def _prose_answer(target: int, word: str, longest: bool) -> dict[str, Any]:
    """Every paragraph with its fewest (or most) words, one word repeated."""
    paragraphs, least, most = prose_bounds(target)
    text = " ".join([word] * (most if longest else least))
    return {"blocks": [{"kind": "paragraph", "text": text}] * paragraphs, "summary": "A summary."}


@settings(max_examples=150, deadline=None)
@given(target=st.integers(60, 3000), letters=st.integers(1, 12), longest=st.booleans())
def test_any_prose_answer_the_grammar_admits_has_a_length_apply_accepts(target: int, letters: int,
                                                                        longest: bool) -> None:
    call = content_schema(target, style="prose")
    answer = _prose_answer(target, "w" * letters, longest)
    assert valid(answer, call.schema)
    words = sum(len(b["text"].split()) for b in answer["blocks"])
    # Apply's range, and within 0.7x-1.1x of the target whatever the words' lengths.
    # One past either bound, the grammar refuses it: the bounds are the schema's, not only the helper's.
    paragraphs, least, most = prose_bounds(target)
    assert words == paragraphs * (most if longest else least)
    outside = " ".join(["w"] * (most + 1 if longest else least - 1))
    if outside:
        assert not valid({**answer, "blocks": [{"kind": "paragraph", "text": outside}] * paragraphs}, call.schema)
    assert math.ceil(0.7 * target) <= words <= int(1.1 * target)
    low, high = math.ceil(target * DEFAULT_LIMITS.min_length_ratio), int(target * DEFAULT_LIMITS.max_length_ratio)
    assert low <= words <= high
    # No answer the schema admits runs past the budget: at most one token a character.
    assert len(json.dumps(_prose_answer(target, "w" * 12, True))) <= call.max_output_tokens


def test_prose_schema_is_words_in_paragraphs_only() -> None:
    call = content_schema(600, style="prose")
    blocks = call.schema["properties"]["blocks"]
    assert blocks["minItems"] == blocks["maxItems"] == len(blocks["prefixItems"]) == 3
    answer = _prose_answer(600, "word", False)
    assert valid(answer, call.schema)
    for bad in ({"kind": "bullet_list", "items": ["a"]},  # another kind
                {"kind": "paragraph", "text": "x" * 900},  # a run without spaces: one word to Apply
                {"kind": "paragraph", "text": 'say "hi" ' * 100},  # quotes to escape
                {"kind": "paragraph", "text": "thirteenchars " * 150}):  # a word over 12 characters
        broken = {**answer, "blocks": [answer["blocks"][0], bad, answer["blocks"][2]]}
        assert not valid(broken, call.schema), bad
    with pytest.raises(ValueError):
        content_schema(600, style="poetry")

"""The JSON schema and the output-token budget of one LLM call, built from its task.

Grammar-constrained servers (llama.cpp, vLLM, SGLang, OpenAI's strict mode) decode exactly
what the schema allows, so an unbounded schema lets a model loop until the token limit.
Every array and string here is bounded by what Deterministic Apply would accept for this
task, and the output budget is derived from the largest such answer. Pure functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lace_engine.domain import BlockKind
from lace_engine.pipeline.apply import DEFAULT_LIMITS, ApplyLimits

# Keywords some providers reject in strict mode (OpenAI's rejects minLength/maxLength, for one).
# The portable schema is the same shape without them; the token budget still bounds the answer.
BOUND_KEYWORDS = frozenset({"minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum", "pattern"})

# Shorter than ApplyLimits' maxima: a model asked for a title needs tens of characters, and every
# character a schema admits is one more a looping model can spend.
TITLE_CHARS = 100
INTENT_CHARS = 400
HEADING_CHARS = 100
SUMMARY_CHARS = 400
ITEM_CHARS = 300
LIST_ITEMS = 12
QUOTE_CHARS = 800
CODE_CHARS = 3000
LANGUAGE_CHARS = 20
TABLE_COLUMNS = 5
TABLE_ROWS = 10
CELL_CHARS = 80
# Generous for English (about 6 characters a word with its space) so prose is never cut mid-sentence.
CHARS_PER_WORD = 8
MAX_PARAGRAPH_WORDS = 400
# Paragraphs of fewer words than this are lists in disguise; bounds how many blocks one section needs.
MIN_WORDS_PER_BLOCK = 40

# Prose style: about this many words a paragraph, between these shares of the target in all;
# words of ASCII letters, digits and punctuation (no quote or backslash to escape), at most 12 long.
PROSE_WORDS_PER_PARAGRAPH = 200
PROSE_MIN_RATIO = 0.7
PROSE_MAX_RATIO = 1.1
PROSE_WORD_CHARS = "A-Za-z0-9,.;:'!?()-"
PROSE_WORD_LENGTH = 12

# Output budget: BPE vocabularies spend about 1.3 tokens per English word; 1.6 leaves room for
# punctuation, numbers and JSON escapes. Structure is what one block costs beyond its words.
TOKENS_PER_WORD = 1.6
TOKENS_PER_BLOCK = 24
BUDGET_MARGIN = 1.25
BUDGET_FLOOR = 256
# A block cites at most this many passages; each citation costs a few tokens of output.
MAX_CITES_PER_BLOCK = 3
TOKENS_PER_CITE = 3


@dataclass(frozen=True, slots=True)
class CallSchema:
    """What one call asks for: a schema name, the strict schema, and the output-token budget."""

    name: str
    schema: dict[str, Any]
    max_output_tokens: int


def split_schema(child_count: int, parent_words: int, limits: ApplyLimits = DEFAULT_LIMITS) -> CallSchema:
    """Exactly `child_count` children, each with a budget that leaves a valid total reachable."""
    if child_count < 1:
        raise ValueError(f"child_count must be positive, got {child_count}")
    share = parent_words / child_count
    # A band around an even share: wide enough for uneven sections, and it always contains
    # parent_words / child_count, so a total within Apply's tolerance is always reachable.
    low = min(max(limits.min_child_words, math.floor(share * 0.4)), math.floor(share))
    high = max(low, math.ceil(share * 2.0))
    title = min(TITLE_CHARS, limits.max_title_chars)
    intent = min(INTENT_CHARS, limits.max_intent_chars)
    child = {
        "type": "object",
        "additionalProperties": False,
        "required": ["title", "intent", "target_words"],
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": title},
            "intent": {"type": "string", "minLength": 1, "maxLength": intent},
            "target_words": {"type": "integer", "minimum": low, "maximum": high},
        },
    }
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["children"],
        "properties": {
            "children": {"type": "array", "minItems": child_count, "maxItems": child_count, "items": child},
        },
    }
    # Strings are bounded by characters, so the schema's largest answer is at most one token a
    # character: the true upper bound, small enough for a split to use as it is.
    per_child = title + intent + len(str(high)) + 48
    tokens = child_count * per_child + 16
    return CallSchema("split_proposal", schema, _with_margin(tokens))


def content_bounds(target_words: int, limits: ApplyLimits = DEFAULT_LIMITS) -> tuple[int, int, int]:
    """(most words Apply accepts, most blocks, most characters of one paragraph) for a section."""
    max_words = max(1, int(target_words * limits.max_length_ratio))
    max_blocks = min(limits.max_blocks, max(2, math.ceil(max_words / MIN_WORDS_PER_BLOCK) + 2))
    paragraph_chars = min(limits.max_block_chars, max(400, min(max_words, MAX_PARAGRAPH_WORDS) * CHARS_PER_WORD))
    return max_words, max_blocks, paragraph_chars


def cites_schema(citable: int) -> dict[str, Any]:
    """A block's citations: distinct numbers of the passages its prompt numbered, 1 to `citable`."""
    return {"type": "array", "maxItems": min(citable, MAX_CITES_PER_BLOCK),
            "items": {"type": "integer", "enum": list(range(1, citable + 1))}}


def _with_cites(block: dict[str, Any], citable: int) -> dict[str, Any]:
    if citable <= 0:
        return block
    return {**block, "required": [*block["required"], "cites"],
            "properties": {**block["properties"], "cites": cites_schema(citable)}}


def content_schema(target_words: int, limits: ApplyLimits = DEFAULT_LIMITS, *, style: str = "blocks",
                   citable: int = 0) -> CallSchema:
    """Blocks as one variant per kind (only the fields it uses), every array and string bounded.

    style "prose": a fixed number of paragraphs whose lengths keep the section within Apply's
    word range, for models too small to choose block kinds well (see `prose_schema`).
    With `citable` passages in the prompt, every block also carries "cites" (see `cites_schema`).
    """
    if style == "prose":
        return prose_schema(target_words, limits, citable=citable)
    if style != "blocks":
        raise ValueError(f"content style must be 'blocks' or 'prose', not {style!r}")
    max_words, max_blocks, paragraph_chars = content_bounds(target_words, limits)
    items = min(LIST_ITEMS, limits.max_items)
    columns = TABLE_COLUMNS
    rows = max(1, min(TABLE_ROWS, limits.max_table_cells // columns - 1))

    def text(max_chars: int) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": min(max_chars, limits.max_block_chars)}

    def variant(kind: BlockKind, **fields: dict[str, Any]) -> dict[str, Any]:
        return _with_cites({
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", *fields],
            "properties": {"kind": {"type": "string", "enum": [kind.value]}, **fields},
        }, citable)

    def strings(max_items: int, max_chars: int, min_items: int = 1) -> dict[str, Any]:
        return {"type": "array", "minItems": min_items, "maxItems": max_items, "items": text(max_chars)}

    variants = [
        variant(BlockKind.PARAGRAPH, text=text(paragraph_chars)),
        variant(BlockKind.HEADING, text=text(HEADING_CHARS), heading_level={"type": "integer", "enum": [1, 2]}),
        variant(BlockKind.BULLET_LIST, items=strings(items, ITEM_CHARS)),
        variant(BlockKind.ORDERED_LIST, items=strings(items, ITEM_CHARS)),
        variant(BlockKind.CODE, text=text(CODE_CHARS), language={"type": "string", "maxLength": LANGUAGE_CHARS}),
        variant(BlockKind.QUOTE, text=text(QUOTE_CHARS)),
        variant(BlockKind.TABLE, table_header=strings(columns, CELL_CHARS, 2),
                table_rows={"type": "array", "minItems": 1, "maxItems": rows,
                            "items": strings(columns, CELL_CHARS, 2)}),
    ]
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["blocks", "summary"],
        "properties": {
            "blocks": {"type": "array", "minItems": 1, "maxItems": max_blocks, "items": {"anyOf": variants}},
            "summary": text(min(SUMMARY_CHARS, limits.max_summary_chars)),
        },
    }
    # Not the schema's largest answer (every block at its longest would be far past anything
    # Apply accepts) but Apply's: the most words it takes, with every block's structure. A
    # longer answer would be rejected anyway, so a cut-off loses nothing Apply would keep.
    tokens = math.ceil(max_words * TOKENS_PER_WORD) + max_blocks * (TOKENS_PER_BLOCK + _cite_tokens(citable)) \
        + SUMMARY_CHARS // 3
    return CallSchema("content_proposal", schema, _with_margin(tokens))


def _cite_tokens(citable: int) -> int:
    # '"cites": [' and ']' plus each number and its comma.
    return 0 if citable <= 0 else 6 + min(citable, MAX_CITES_PER_BLOCK) * TOKENS_PER_CITE


def prose_bounds(target_words: int, limits: ApplyLimits = DEFAULT_LIMITS) -> tuple[int, int, int]:
    """(paragraphs, fewest words a paragraph, most words a paragraph) of the prose style for a section."""
    paragraphs = max(1, math.ceil(target_words / PROSE_WORDS_PER_PARAGRAPH))
    # Inside Apply's 0.5x-1.6x, and close to the target: the length score stays above 75.
    low = max(limits.min_length_ratio, PROSE_MIN_RATIO) * target_words
    high = min(limits.max_length_ratio, PROSE_MAX_RATIO) * target_words
    least = max(1, math.ceil(low / paragraphs))
    return paragraphs, least, max(least, math.floor(high / paragraphs))


def prose_schema(target_words: int, limits: ApplyLimits = DEFAULT_LIMITS, *, citable: int = 0) -> CallSchema:
    """Exactly `ceil(target / 200)` paragraphs, each a `pattern` of a bounded number of words, so any
    answer the grammar admits has between PROSE_MIN_RATIO and PROSE_MAX_RATIO of the target's words.

    A tiny model asked for free-form blocks wrote lists of numbers and 20-word sections; bounded by
    characters alone it wrote runs without spaces (one "word" of 800 characters). A pattern of words
    bounds what Apply counts.
    """
    paragraphs, least, most = prose_bounds(target_words, limits)
    word = f"[{PROSE_WORD_CHARS}]{{1,{PROSE_WORD_LENGTH}}}"
    paragraph = _with_cites({
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "text"],
        "properties": {
            "kind": {"type": "string", "enum": [BlockKind.PARAGRAPH.value]},
            "text": {"type": "string", "pattern": f"^{word}( {word}){{{least - 1},{most - 1}}}$"},
        },
    }, citable)
    summary = min(SUMMARY_CHARS, limits.max_summary_chars)
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["blocks", "summary"],
        "properties": {
            "blocks": {"type": "array", "prefixItems": [paragraph] * paragraphs,
                       "minItems": paragraphs, "maxItems": paragraphs},
            "summary": {"type": "string", "minLength": 1, "maxLength": summary},
        },
    }
    # The budget is the schema's true largest answer: one token a character (a token is never
    # shorter; the words are ASCII), every word at its longest, plus the structure. No margin needed.
    chars = paragraphs * most * (PROSE_WORD_LENGTH + 1) + summary
    structure = (paragraphs + 1) * TOKENS_PER_BLOCK + paragraphs * _cite_tokens(citable)
    return CallSchema("content_proposal", schema, max(BUDGET_FLOOR, chars + structure))


def portable_schema(schema: Any) -> Any:
    """The same schema without the bound keywords, for providers that reject them."""
    if isinstance(schema, dict):
        return {k: portable_schema(v) for k, v in schema.items() if k not in BOUND_KEYWORDS}
    if isinstance(schema, list):
        return [portable_schema(v) for v in schema]
    return schema


def _with_margin(tokens: int) -> int:
    return max(BUDGET_FLOOR, math.ceil(tokens * BUDGET_MARGIN))

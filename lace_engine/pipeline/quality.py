"""The quality report of a run: how the model's proposals fared, and how repetitive the text is.

Pure functions over plain data (the run's calls, its repairs, the written leaves); the orchestrator
reads those at the end of a run and stores the report beside the validation report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from lace_engine.domain import Block, BlockKind

# Word 8-grams: long enough that ordinary phrases ("on the other hand") do not count as repetition.
NGRAM = 8
# finish_reason values that mean the call ran to its output-token limit.
AT_LIMIT = frozenset({"length", "LLMTruncated"})


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One LLM call of a run as the llm_calls table keeps it."""

    node_id: UUID
    attempt: int
    outcome: str  # "applied" or "rejected"
    finish_reason: str
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Mirrors lace.v1.QualityReport."""

    steps_applied: int
    applied_first_attempt: int
    reasks: int
    repairs: int
    steps_failed: int
    calls: int
    calls_at_limit: int
    completion_tokens: int
    words_written: int
    tokens_per_word: float
    duplicate_headings: int
    repetition: float

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QualityReport:
        def count(name: str) -> int:
            return int(data.get(name, 0))

        return cls(
            steps_applied=count("steps_applied"), applied_first_attempt=count("applied_first_attempt"),
            reasks=count("reasks"), repairs=count("repairs"), steps_failed=count("steps_failed"),
            calls=count("calls"), calls_at_limit=count("calls_at_limit"),
            completion_tokens=count("completion_tokens"), words_written=count("words_written"),
            tokens_per_word=float(data.get("tokens_per_word", 0.0)), duplicate_headings=count("duplicate_headings"),
            repetition=float(data.get("repetition", 0.0)),
        )


def quality_report(calls: Sequence[CallRecord], repairs: int, leaves: Mapping[UUID, Sequence[Block]],
                   headings: Sequence[str]) -> QualityReport:
    """The report for one run: its calls, the repairs Apply made, its written leaves and every heading."""
    applied = [c for c in calls if c.outcome == "applied"]
    applied_nodes = {c.node_id for c in applied}
    rejected_nodes = {c.node_id for c in calls if c.outcome != "applied"}
    words = sum(b.content.words() for blocks in leaves.values() for b in blocks)
    tokens = sum(c.completion_tokens for c in calls)
    seen = Counter(" ".join(h.split()).casefold() for h in headings if h.strip())
    return QualityReport(
        steps_applied=len(applied),
        applied_first_attempt=sum(1 for c in applied if c.attempt == 1),
        reasks=sum(1 for c in calls if c.outcome != "applied"),
        repairs=repairs,
        steps_failed=len(rejected_nodes - applied_nodes),
        calls=len(calls),
        calls_at_limit=sum(1 for c in calls if c.finish_reason in AT_LIMIT),
        completion_tokens=tokens,
        words_written=words,
        tokens_per_word=tokens / words if words else 0.0,
        duplicate_headings=sum(n - 1 for n in seen.values()),
        repetition=cross_leaf_repetition([_leaf_text(blocks) for blocks in leaves.values()]),
    )


def cross_leaf_repetition(leaves: Sequence[str], n: int = NGRAM) -> float:
    """The share of all leaves' word n-grams that also occur in another leaf, 0 to 1."""
    if len(leaves) < 2:
        return 0.0  # no other leaf to share with (a run that rewrote one section)
    grams = [_ngrams(text, n) for text in leaves]
    owners: Counter[tuple[str, ...]] = Counter()
    for distinct in (set(g) for g in grams):
        owners.update(distinct)
    total = sum(len(g) for g in grams)
    if total == 0:
        return 0.0
    shared = sum(1 for g in grams for gram in g if owners[gram] > 1)
    return shared / total


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    words = [w.strip(".,;:!?\"'()[]").casefold() for w in text.split()]
    words = [w for w in words if w]
    return list(zip(*(words[i:] for i in range(n)), strict=False))


def _leaf_text(blocks: Sequence[Block]) -> str:
    parts: list[str] = []
    for b in blocks:
        c = b.content
        if c.kind is BlockKind.CODE:
            continue
        parts.extend([c.text, *c.items, *c.table_header, *(cell for row in c.table_rows for cell in row)])
    return " ".join(parts)

"""Numbers the passages a document cites, for every compiled format. Pure.

A passage gets its number where it is first cited in document order, so the reference list
reads in the order a reader meets the citations and the same IR always numbers alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from uuid import UUID

from lace_engine.domain import Block, Passage


@dataclass(frozen=True, slots=True)
class Reference:
    """One entry of a document's reference list; `passage` is None if it can no longer be read."""

    number: int
    passage_id: UUID
    passage: Passage | None


@dataclass(frozen=True, slots=True)
class References:
    entries: tuple[Reference, ...]
    number_of: Mapping[UUID, int]

    def numbers(self, block: Block) -> list[int]:
        """The reference numbers a block cites, in the order it cites them, each once."""
        return list(dict.fromkeys(self.number_of[c] for c in block.content.citations))


def number_references(blocks_in_order: Iterable[Block], passages: Mapping[UUID, Passage]) -> References:
    """The document's references: every cited passage once, numbered by first citation."""
    number_of: dict[UUID, int] = {}
    for block in blocks_in_order:
        for passage_id in block.content.citations:
            number_of.setdefault(passage_id, len(number_of) + 1)
    entries = tuple(Reference(n, pid, passages.get(pid)) for pid, n in number_of.items())
    return References(entries, number_of)


def excerpt(text: str, max_words: int = 40) -> str:
    """The passage's first words on one line, marked when cut, as a reference list shows it.

    Markdown heading marks are left out: in a reference list they read as stray characters."""
    words = re.sub(r"(?m)^\s{0,3}#{1,6}\s+", "", text).split()
    return " ".join(words[:max_words]) + (" [...]" if len(words) > max_words else "")

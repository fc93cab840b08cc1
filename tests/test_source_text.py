"""Extraction and passage splitting as pure functions: bytes in, text and spans out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lace_engine.errors import InvalidArgument
from lace_engine.pipeline.source_text import (
    MAX_PDF_PAGES,
    PASSAGE_MAX_WORDS,
    extract_text,
    normalize,
    split_passages,
)
from tests.support.pdf import text_pdf

paragraphs = st.lists(st.lists(st.text("abcdefghij.!? ", min_size=1, max_size=14), min_size=1, max_size=300)
                      .map(" ".join), min_size=1, max_size=12)


@given(paragraphs)
def test_passages_cover_every_word_in_order_and_their_offsets_are_exact(paras: list[str]) -> None:
    text = normalize("\n\n".join(paras))
    spans = split_passages(text)
    assert all(text[s.start:s.end] == s.text for s in spans)
    assert [s.ordinal for s in spans] == list(range(len(spans)))
    assert " ".join(s.text for s in spans).split() == text.split()
    assert all(len(s.text.split()) <= PASSAGE_MAX_WORDS for s in spans)


def test_a_long_paragraph_is_cut_after_a_sentence() -> None:
    sentence = "Pumped hydro stores energy in water held at height for later release. "
    spans = split_passages(normalize(sentence * 40))
    assert len(spans) > 1 and all(s.text.endswith(".") for s in spans)


def test_pdf_pages_become_paragraphs() -> None:
    text = extract_text("application/pdf", text_pdf([["First page line."], ["Second page line."]]))
    assert text == "First page line.\n\nSecond page line."


def test_a_pdf_with_too_many_pages_is_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        extract_text("application/pdf", text_pdf([["p"]] * (MAX_PDF_PAGES + 1)))
    assert raised.value.reason == "SOURCE_TOO_LARGE"


def test_a_pdf_without_text_is_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        extract_text("application/pdf", text_pdf([[]]))
    assert raised.value.reason == "INVALID_SOURCE" and "no text" in raised.value.message


def test_normalize_keeps_paragraphs_and_drops_control_characters() -> None:
    assert normalize("a\r\nb \t\n\n\n\nc\x00d\x07e") == "a\nb\n\ncd e"
